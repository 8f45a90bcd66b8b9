"""Detection figures as astronomers read them: completeness and purity against r magnitude, the
depth reached at a fixed purity, blend recovery and duplicate detections.

They work on a :class:`galframe_mmdet.metrics.DetectionRecord`.  Truth carries ``mag_r`` per object
(and ``masks``); a prediction may carry ``mag_r`` (its own photometry: :func:`detection_mags`), which
places false detections on the magnitude axis of the purity curve.  Without it, a matched detection
takes its object's magnitude and an unmatched one is counted in the "all magnitudes" purity only.

Definitions (docs/detection.md):

* completeness(m): of the true objects in the magnitude bin, the fraction matched one-to-one at IoU
  >= 0.5 (highest score first);
* purity(m): of the detections whose measured magnitude falls in the bin, the fraction matched;
* the operating point at purity p: the lowest score threshold whose overall purity is >= p, i.e. the
  most complete catalog at that purity; depth_X: the faintest magnitude where the differential
  completeness at that operating point is still >= X (linear interpolation between bin centres);
* blend recovery: of the pairs of true objects whose masks touch or overlap, the fraction where both
  members are matched (hence by two different detections);
* a duplicate: a detection matching no object whose area lies mostly (>= 50%) on an object that
  another detection already matched: a second box on a found object, nested or overlapping.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from galframe_mmdet.metrics import DetectionRecord, box_intersections, box_iou, f1_from_counts, match


def detection_mags(flux_r: np.ndarray, boxes: np.ndarray, masks: Optional[np.ndarray] = None,
                   zero_point: float = 22.5) -> np.ndarray:
    """r magnitude of each detection from the flux in its mask (or its box without one): sky-subtracted
    flux in the units of the zero point (nanomaggies: 22.5).  Non-positive flux gives +inf (fainter than
    any bin)."""
    img = np.asarray(flux_r, dtype=np.float64)
    out = np.full(len(boxes), np.inf)
    for k, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        if masks is not None and len(masks) > k and np.asarray(masks[k]).any():
            flux = float(img[np.asarray(masks[k], dtype=bool)].sum())
        else:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            flux = float(img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)].sum())
        if flux > 0:
            out[k] = zero_point - 2.5 * np.log10(flux)
    return out


def record_pred(det: dict, flux_r: Optional[np.ndarray] = None, zero_point: float = 22.5) -> dict:
    """What a DetectionRecord keeps of one image's detections: boxes, scores, labels, masks (when there are
    any) and, given the image's r-band flux, each detection's own r magnitude."""
    pred = {k: det[k] for k in ("boxes", "scores", "labels")}
    if det.get("masks") is not None:
        pred["masks"] = det["masks"]
    if flux_r is not None:
        pred["mag_r"] = detection_mags(flux_r, det["boxes"], det.get("masks"), zero_point)
    return pred


def _matches(record: DetectionRecord, threshold: float, iou: float):
    """Per image: kept-prediction indices, their assignment to truth (-1: none), truth matched flags."""
    for pred, truth in zip(record.preds, record.truths):
        keep = np.flatnonzero(pred["scores"] >= threshold)
        assign, taken = match(pred["boxes"][keep], pred["scores"][keep], truth["boxes"], iou)
        yield pred, truth, keep, assign, taken


def completeness_purity(record: DetectionRecord, bins: Sequence[float], threshold: float = 0.5,
                        iou: float = 0.5) -> dict[str, Any]:
    """Completeness (by true magnitude) and purity (by measured magnitude) per bin, with counts."""
    edges = np.asarray(bins, dtype=float)
    nb = len(edges) - 1
    n_true, n_found, n_det, n_good = (np.zeros(nb, dtype=np.int64) for _ in range(4))
    det_all = good_all = 0
    for pred, truth, keep, assign, taken in _matches(record, threshold, iou):
        tmag = np.asarray(truth.get("mag_r", np.full(len(taken), np.nan)), dtype=float)
        tb = np.digitize(tmag, edges) - 1
        for k in range(nb):
            sel = tb == k
            n_true[k] += int(sel.sum())
            n_found[k] += int(taken[sel].sum())
        pmag = pred.get("mag_r")
        if pmag is not None and len(pmag) == len(pred["scores"]):
            dmag = np.asarray(pmag, dtype=float)[keep]
        else:  # no photometry: a matched detection takes its object's magnitude, the others none
            dmag = np.where(assign >= 0, tmag[np.clip(assign, 0, None)] if len(tmag) else np.nan, np.nan)
        db = np.digitize(dmag, edges) - 1
        for k in range(nb):
            sel = db == k
            n_det[k] += int(sel.sum())
            n_good[k] += int((assign[sel] >= 0).sum())
        det_all += len(keep)
        good_all += int((assign >= 0).sum())

    def ratio(a: np.ndarray, b: np.ndarray) -> list:
        return [float(x / y) if y else float("nan") for x, y in zip(a, b)]

    return {"edges": edges.tolist(), "completeness": ratio(n_found, n_true), "n_true": n_true.tolist(),
            "purity": ratio(n_good, n_det), "n_detected": n_det.tolist(),
            "purity_all": float(good_all / det_all) if det_all else float("nan"), "threshold": float(threshold)}


def threshold_at_purity(record: DetectionRecord, purity: float = 0.95, iou: float = 0.5) -> Optional[float]:
    """The lowest score threshold at which the whole catalog's purity is >= ``purity`` (the most complete
    catalog at that purity); None when no threshold reaches it."""
    scores = np.unique(np.concatenate([p["scores"] for p in record.preds])) if record.preds else np.zeros(0)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return None
    grid = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, min(len(scores), 201))))
    for t in grid:  # purity rises (roughly) with the threshold: the first that reaches it
        tp = det = 0
        for _, _, keep, assign, _ in _matches(record, float(t), iou):
            det += len(keep)
            tp += int((assign >= 0).sum())
        if det and tp / det >= purity:
            return float(t)
    return None


def depth(curve: dict[str, Any], level: float, min_count: int = 5) -> Optional[float]:
    """The faintest magnitude where the differential completeness is still >= ``level``: walking from
    bright to faint, the crossing below the level, linearly interpolated between bin centres (bins with
    fewer than ``min_count`` objects are skipped).  None when the brightest bin is already below it; the
    faintest bin centre when completeness never falls below it."""
    edges = np.asarray(curve["edges"], dtype=float)
    mid = 0.5 * (edges[1:] + edges[:-1])
    comp = np.asarray(curve["completeness"], dtype=float)
    ok = (np.asarray(curve["n_true"]) >= min_count) & np.isfinite(comp)
    mid, comp = mid[ok], comp[ok]
    if not len(comp) or comp[0] < level:
        return None
    for k in range(1, len(comp)):
        if comp[k] < level:
            f = (comp[k - 1] - level) / max(comp[k - 1] - comp[k], 1e-12)
            return float(mid[k - 1] + f * (mid[k] - mid[k - 1]))
    return float(mid[-1])


def blended_pairs(truth: dict) -> list[tuple[int, int]]:
    """Pairs of true objects whose masks overlap or touch (8-connected), or, without masks, whose boxes
    overlap."""
    boxes = np.asarray(truth["boxes"], dtype=float).reshape(-1, 4)
    masks = truth.get("masks")
    pairs = []
    if masks is not None and len(masks) == len(boxes) and len(boxes):
        from scipy.ndimage import binary_dilation

        m = np.asarray(masks, dtype=bool)
        grown = np.stack([binary_dilation(x, np.ones((3, 3), bool)) for x in m])
        near = box_iou(boxes + np.array([-1, -1, 1, 1]), boxes) > 0
        for i in range(len(m)):
            for j in range(i + 1, len(m)):
                if near[i, j] and (grown[i] & m[j]).any():
                    pairs.append((i, j))
        return pairs
    iou = box_iou(boxes, boxes)
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if iou[i, j] > 0]


def blend_recovery(record: DetectionRecord, threshold: float = 0.5, iou: float = 0.5) -> dict[str, float]:
    """Of the truly blended pairs, the fraction with both members detected (by two detections)."""
    n = both = 0
    for _, truth, _, _, taken in _matches(record, threshold, iou):
        for i, j in blended_pairs(truth):
            n += 1
            both += int(taken[i] and taken[j])
    return {"pairs": float(n), "recovered": float(both / n) if n else float("nan")}


def duplicates(record: DetectionRecord, threshold: float = 0.5, iou: float = 0.5, cover: float = 0.5) -> dict[str, float]:
    """Duplicate detections per field: unmatched detections whose area lies mostly (>= ``cover``) on
    objects that another detection matched."""
    total = 0
    for pred, truth, keep, assign, taken in _matches(record, threshold, iou):
        if not len(keep) or not len(taken):
            continue
        inter, area, _ = box_intersections(pred["boxes"][keep], truth["boxes"])
        on_found = (inter * taken[None, :]).sum(axis=1) / np.maximum(area, 1e-9)
        total += int(((assign < 0) & (on_found >= cover)).sum())
    n = max(len(record), 1)
    return {"duplicates": float(total), "per_field": float(total / n)}


def f1_bright(record: DetectionRecord, threshold: float = 0.5, iou: float = 0.5, bright: float = 21.0,
              margin: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 on the bright sample (true r < ``bright``), matched against everything:
    a detection of a fainter object neither counts for nor against it; an unmatched detection counts
    against it unless its own photometry puts it fainter than ``bright + margin``."""
    tp = fp = fn = 0
    for pred, truth, keep, assign, taken in _matches(record, threshold, iou):
        tmag = np.asarray(truth.get("mag_r", np.zeros(len(taken))), dtype=float)
        is_bright = tmag < bright
        fn += int((is_bright & ~taken).sum())
        hit = assign >= 0
        tp += int(is_bright[assign[hit]].sum()) if hit.any() else 0
        miss = ~hit
        pmag = pred.get("mag_r")
        if pmag is not None and len(pmag) == len(pred["scores"]):
            miss &= np.asarray(pmag, dtype=float)[keep] < bright + margin
        fp += int(miss.sum())
    return f1_from_counts(tp, fp, fn)


def survey_summary(record: DetectionRecord, bins: Sequence[float], threshold: float, iou: float = 0.5,
                   purity: float = 0.95, bright: float = 21.0) -> dict[str, Any]:
    """Every figure above for one detector: at its own operating ``threshold`` (F1 on everything and on
    the bright sample, curves, blends, duplicates) and at the purity-``purity`` operating point (depths)."""
    from galframe_mmdet.metrics import prf

    tag = f"purity{int(round(purity * 100))}"
    t_p = threshold_at_purity(record, purity, iou)
    curve_p = completeness_purity(record, bins, t_p, iou) if t_p is not None else None
    return {
        "threshold": float(threshold),
        "f1_all": prf(record, threshold, iou)["f1"],
        "f1_bright": f1_bright(record, threshold, iou, bright)["f1"],
        "curves": completeness_purity(record, bins, threshold, iou),
        f"threshold_at_{tag}": t_p,
        f"curves_at_{tag}": curve_p,
        f"depth50_at_{tag}": depth(curve_p, 0.5) if curve_p else None,
        f"depth90_at_{tag}": depth(curve_p, 0.9) if curve_p else None,
        "blend_recovery": blend_recovery(record, threshold, iou),
        "duplicates": duplicates(record, threshold, iou),
    }
