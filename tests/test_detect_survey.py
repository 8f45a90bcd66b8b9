"""Detection figures as astronomers read them, and duplicate suppression, on hand-made fields with known
answers (no detector needed)."""
from __future__ import annotations

import numpy as np
import pytest

from galframe_mmdet.metrics import DetectionRecord
from galframe_mmdet.suppress import suppress, suppress_detections
from galframe_mmdet.survey_metrics import (
    blend_recovery,
    blended_pairs,
    completeness_purity,
    depth,
    detection_mags,
    duplicates,
    f1_bright,
    survey_summary,
    threshold_at_purity,
)

H = W = 64


def _mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _pred(boxes, scores, mags=None, masks=None) -> dict:
    p = {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.asarray(scores, dtype=np.float32),
         "labels": np.zeros(len(scores), dtype=np.int64)}
    if mags is not None:
        p["mag_r"] = np.asarray(mags, dtype=float)
    if masks is not None:
        p["masks"] = np.asarray(masks, dtype=bool).reshape(-1, H, W)
    return p


def _truth(boxes, mags) -> dict:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.zeros(len(boxes), dtype=np.int64), "mag_r": np.asarray(mags, dtype=float),
            "masks": np.stack([_mask(*map(int, b)) for b in boxes]) if len(boxes) else np.zeros((0, H, W), bool)}


def _record(*pairs) -> DetectionRecord:
    rec = DetectionRecord()
    for pred, truth in pairs:
        rec.add(pred, truth, (H, W))
    return rec


THREE = [[2, 2, 12, 12], [30, 30, 40, 40], [50, 2, 60, 12]]


def test_completeness_and_purity_per_magnitude_bin() -> None:
    truth = _truth(THREE, [17.0, 19.0, 21.0])
    pred = _pred([THREE[0], THREE[1], [2, 50, 10, 58]], [0.9, 0.8, 0.7], mags=[17.1, 19.2, 21.2])
    c = completeness_purity(_record((pred, truth)), [16, 18, 20, 22], threshold=0.5)
    assert c["completeness"] == [1.0, 1.0, 0.0] and c["n_true"] == [1, 1, 1]
    assert c["purity"] == [1.0, 1.0, 0.0] and c["n_detected"] == [1, 1, 1]
    assert c["purity_all"] == pytest.approx(2 / 3)
    # the false detection goes when the threshold rises above its score: the most complete pure catalog
    assert threshold_at_purity(_record((pred, truth)), 0.95) == pytest.approx(0.8)
    assert threshold_at_purity(_record((_pred([[2, 50, 10, 58]], [0.9]), truth)), 0.95) is None


def test_depth_interpolates_the_crossing_and_skips_sparse_bins() -> None:
    curve = {"edges": [16, 17, 18, 19, 20, 21, 22], "completeness": [1.0, 1.0, 0.9, 0.6, 0.4, 0.1], "n_true": [10] * 6}
    assert depth(curve, 0.5) == pytest.approx(20.0)   # between 19.5 (0.6) and 20.5 (0.4)
    assert depth(curve, 0.9) == pytest.approx(18.5)   # 0.9 at 18.5 still counts, 0.6 at 19.5 does not
    assert depth({**curve, "completeness": [0.3] * 6}, 0.5) is None
    assert depth({**curve, "completeness": [1.0] * 6}, 0.5) == pytest.approx(21.5)
    sparse = {**curve, "n_true": [10, 10, 10, 2, 10, 10]}  # the 19.5 bin has too few objects to count
    assert depth(sparse, 0.5) == pytest.approx(18.5 + (0.9 - 0.5) / 0.5 * 2.0)


def test_blend_recovery_counts_touching_pairs_split_or_not() -> None:
    pair = [[10, 10, 20, 20], [20, 10, 30, 20], [45, 45, 55, 55]]  # the first two touch; the third is alone
    truth = _truth(pair, [19.0, 19.5, 18.0])
    assert blended_pairs(truth) == [(0, 1)]
    split = _pred(pair, [0.9, 0.9, 0.9])
    merged = _pred([[10, 10, 30, 20], pair[2]], [0.9, 0.9])  # one box over the pair
    assert blend_recovery(_record((split, truth)))["recovered"] == 1.0
    r = blend_recovery(_record((merged, truth)))
    assert r["pairs"] == 1.0 and r["recovered"] == 0.0


def test_duplicates_are_extra_boxes_on_found_objects_and_suppression_removes_them() -> None:
    truth = _truth([[10, 10, 30, 30], [40, 40, 50, 50]], [18.0, 20.0])
    boxes = [[10, 10, 30, 30], [15, 15, 25, 25], [40, 40, 50, 50], [2, 50, 8, 58]]  # exact, nested, exact, false
    masks = [_mask(*b) for b in boxes]
    det = _pred(boxes, [0.9, 0.6, 0.8, 0.7], masks=masks)
    before = duplicates(_record((det, truth)))
    assert before["duplicates"] == 1.0 and before["per_field"] == 1.0  # the nested one; the far false one is no duplicate
    after = suppress_detections(det)
    assert len(after["scores"]) == 3 and duplicates(_record((after, truth)))["duplicates"] == 0.0
    np.testing.assert_array_equal(after["boxes"][:, 0], [10, 40, 2])  # score order, the nested box gone


def test_suppression_prefers_split_blend_members_to_their_parent_and_merges_classes() -> None:
    a, b = [10, 10, 20, 20], [21, 10, 31, 20]
    parent = [10, 10, 31, 20]
    det = _pred([parent, a, b], [0.95, 0.7, 0.6], masks=[_mask(*parent), _mask(*a), _mask(*b)])
    keep = suppress(det["boxes"], det["scores"], det["masks"], min_score=0.5)
    assert sorted(keep.tolist()) == [1, 2]  # the unsplit pair is dropped although it scores highest
    # children below the operating score cannot veto the parent
    assert suppress(det["boxes"], det["scores"], det["masks"], min_score=0.65).tolist() == [0]
    # a galaxy box and a star box on the same object: one object, one detection (the higher score)
    same = _pred([a, [10, 10, 20, 21]], [0.5, 0.8])
    same["labels"] = np.array([0, 1])
    out = suppress_detections(same)
    assert len(out["scores"]) == 1 and out["labels"][0] == 1
    # two separate objects stay two, with or without masks
    apart = _pred([a, [40, 40, 50, 50]], [0.9, 0.8])
    assert len(suppress(apart["boxes"], apart["scores"])) == 2


def test_detection_photometry_and_the_bright_sample_f1() -> None:
    img = np.zeros((H, W))
    img[10:20, 10:20] = 0.1  # 10 nanomaggies in the box: r = 22.5 - 2.5 = 20.0
    mags = detection_mags(img, np.array([[10, 10, 20, 20], [40, 40, 50, 50]]), zero_point=22.5)
    assert mags[0] == pytest.approx(20.0) and np.isinf(mags[1])
    with_mask = detection_mags(img, np.array([[0, 0, 64, 64]]), np.array([_mask(10, 10, 15, 20)]))
    assert with_mask[0] == pytest.approx(22.5 - 2.5 * np.log10(5.0))
    truth = _truth(THREE, [17.0, 19.0, 22.0])  # the third is fainter than the bright cut (r < 21)
    pred = _pred([THREE[0], THREE[1], [2, 50, 10, 58], [20, 50, 28, 58]], [0.9, 0.9, 0.9, 0.9], mags=[17, 19, 22.3, 18.0])
    r = f1_bright(_record((pred, truth)), 0.5, bright=21.0)
    # two bright objects found, the faint miss does not count; one false detection is faint (ignored), one bright
    assert r["recall"] == 1.0 and r["precision"] == pytest.approx(2 / 3)
    s = survey_summary(_record((pred, truth)), [16, 18, 20, 22, 23], 0.5)
    assert s["f1_bright"] == pytest.approx(0.8) and s["threshold_at_purity95"] is None
    assert s["duplicates"]["duplicates"] == 0.0 and s["blend_recovery"]["pairs"] == 0.0
