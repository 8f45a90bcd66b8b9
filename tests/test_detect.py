"""Detection: simulated fields with instance masks, RLE, augmentation of instances, metrics, SEP,
COCO export/import, and the mmdet Mask R-CNN task trained by galframe's loop."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from galframe.data.masks import mask_box, mask_to_rle, rle_to_mask
from galframe.errors import ConfigError, DataError
from tests.helpers import compose_train


def _fields_dm(path, *overrides):
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.train import to_dict

    cfg = to_dict(compose_train("data=sim_fields", f"data.path={path}", *overrides))
    dm = GalaxyDataModule(cfg["data"], requires=["instances"], progress=False)
    dm.prepare()
    return dm


# -- masks ------------------------------------------------------------------------------------
def test_rle_round_trip_matches_pycocotools() -> None:
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (16, 16), (1, 1)]:
        m = rng.random(shape) > 0.6
        counts = mask_to_rle(m)
        assert np.array_equal(rle_to_mask(counts, *shape), m)
        ours = mask_util.frPyObjects({"size": list(shape), "counts": counts}, *shape)
        assert np.array_equal(mask_util.decode(ours).astype(bool), m)
    full = np.ones((3, 4), bool)
    assert mask_to_rle(full) == [0, 12]
    assert mask_box(np.pad(np.ones((2, 3), bool), ((4, 1), (2, 5)))) == (2.0, 4.0, 5.0, 6.0)
    with pytest.raises(ValueError, match="sum to"):
        rle_to_mask([3, 4], 3, 3)


# -- the field simulator ------------------------------------------------------------------------
def test_fields_have_masks_boxes_blends_and_depth(tiny_fields) -> None:
    manifest = json.loads((tiny_fields / "manifest.json").read_text())
    assert manifest["classes"] == ["galaxy", "star"] and manifest["image_size"] == 128 and manifest["has_instances"]
    cat = pd.read_parquet(tiny_fields / "catalog.parquet")
    inst = pd.read_parquet(tiny_fields / "instances.parquet")
    assert len(cat) == 24 and set(inst["image_id"]) <= set(cat["id"])
    assert (cat["n_objects"] == inst.groupby("image_id").size().reindex(cat["id"]).fillna(0).to_numpy()).all()
    ann = inst[inst["annotated"]]
    assert set(ann["class"]) == {0, 1} and len(ann) > 50
    for row in ann.head(40).itertuples():
        m = rle_to_mask(row.rle, 128, 128)
        x0, y0, x1, y1 = mask_box(m)
        assert (x0, y0, x1 - x0, y1 - y0) == (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h)
        assert m.sum() == row.area >= 6
        # the object's position lies inside its own mask's box
        assert x0 - 1 <= row.x <= x1 and y0 - 1 <= row.y <= y1
    # brighter galaxies have bigger masks
    gal = ann[ann["class"] == 0]
    assert gal[gal["mag_r"] < 19.5]["area"].median() > 2 * gal[gal["mag_r"] > 21.5]["area"].median()
    # blends: some masks of one field overlap
    overlaps = 0
    for _, group in ann.groupby("image_id"):
        masks = [rle_to_mask(c, 128, 128) for c in group["rle"]]
        overlaps += sum(bool((a & b).any()) for i, a in enumerate(masks) for b in masks[i + 1:])
    assert overlaps > 0


def test_fields_are_reproducible_and_configs_are_checked() -> None:
    from galframe.sim import resolve_config
    from galframe.sim.fields import simulate_field

    cfg = resolve_config({"name": "f", "n": 2, "seed": 5, "bands": ["g", "r", "z"], "image_size": 64,
                          "sim": {"generator": "fields", "galaxies": 3, "stars": 1}})
    a, ra = simulate_field(cfg, 1)
    b, rb = simulate_field(cfg, 1)
    assert np.array_equal(a, b) and ra["n_objects"] == rb["n_objects"]
    with pytest.raises(ConfigError, match="Unknown key 'sim.galaxys'"):
        resolve_config({"name": "f", "n": 2, "sim": {"generator": "fields", "galaxys": 3}})
    with pytest.raises(ConfigError, match="Unknown galaxy type 'spiral'"):
        resolve_config({"name": "f", "n": 2, "sim": {"generator": "fields", "galaxy_types": ["spiral"], "galaxy_fractions": [1]}})


# -- data path -------------------------------------------------------------------------------
def test_instances_are_delivered_collated_and_augmented_consistently(tiny_fields) -> None:
    from galframe.data.augment import augment_batch
    from galframe_mmdet.fields import boxes_of
    from galframe.data.datamodule import collate

    dm = _fields_dm(tiny_fields)
    ds = dm.dataset("train")
    items = [ds[i] for i in range(4)]
    for it in items:
        inst = it["instances"]
        assert inst["masks"].shape[1:] == (128, 128) and inst["masks"].shape[0] == inst["boxes"].shape[0] == inst["labels"].shape[0]
        assert torch.equal(boxes_of(inst["masks"]), inst["boxes"])
    batch = collate([dict(it) for it in items])
    assert batch["image"].shape == (4, 3, 128, 128) and isinstance(batch["instances"], list) and len(batch["instances"]) == 4
    # mark each object's mask pixels in the image, augment, and check the masks still cover the marks
    for i, inst in enumerate(batch["instances"]):
        batch["image"][i, 0] = inst["masks"].any(0).float() * 1000.0
    gen = torch.Generator().manual_seed(3)
    out = augment_batch(batch, {"rot90": True, "flip": True, "shift": 0, "noise": 0}, gen)
    assert (out["aug_rot90"] != 0).any() or out["aug_flip"].any()
    for i, inst in enumerate(out["instances"]):
        assert torch.equal(inst["masks"].any(0), out["image"][i, 0] > 500)
        assert torch.equal(inst["boxes"], boxes_of(inst["masks"]))


def test_missing_instances_table_is_a_clear_error(tiny_dataset) -> None:
    from galframe.data.datamodule import GalaxyDataModule

    dm = GalaxyDataModule({"path": str(tiny_dataset)}, requires=["instances"], progress=False)
    with pytest.raises(DataError, match="has no instances.parquet"):
        dm.dataset("train")


# -- metrics ---------------------------------------------------------------------------------
def test_matching_and_prf_against_hand_values() -> None:
    from galframe_mmdet.metrics import DetectionRecord, box_iou, completeness, match, prf

    assert np.allclose(box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]), [[1 / 7, 1.0, 0.0]])
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    pred = np.array([[0, 0, 10, 9], [1, 0, 10, 10], [20, 21, 30, 30], [60, 60, 70, 70]], float)
    scores = np.array([0.9, 0.95, 0.8, 0.7])
    assign, taken = match(pred, scores, gt)
    # the higher-scored duplicate takes truth 0; the other becomes a false positive
    assert assign.tolist() == [-1, 0, 1, -1] and taken.tolist() == [True, True, False]
    rec = DetectionRecord()
    rec.add({"boxes": pred, "scores": scores, "labels": np.array([0, 0, 1, 0])},
            {"boxes": gt, "labels": np.array([0, 0, 1]), "mag_r": np.array([18.0, 21.2, 22.3])}, (64, 64))
    r = prf(rec, 0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 2, 1)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(2 / 3) and r["f1"] == pytest.approx(4 / 7)
    # class-aware: truth 1 is class 0, its detection says 1
    assert prf(rec, 0.5, class_aware=True)["tp"] == 1
    assert prf(rec, 0.85)["tp"] == 1  # only scores >= 0.85 count
    c = completeness(rec, [17, 20, 22, 23])
    assert c["count"] == [1, 1, 1] and c["completeness"] == [1.0, 1.0, 0.0]
    # the operating threshold: F1 is 4/7 up to 0.70, 2/3 from 0.75 to 0.80 (the 0.7 false positive goes),
    # 0.4 from 0.85 (a true detection goes); the best is the lowest of the best
    from galframe_mmdet.metrics import best_threshold

    assert best_threshold(rec) == pytest.approx(0.75)


def test_coco_ap_is_one_for_perfect_and_lower_for_worse_detections() -> None:
    from galframe_mmdet.metrics import DetectionRecord, coco_eval

    rng = np.random.default_rng(1)
    perfect, noisy = DetectionRecord(), DetectionRecord()
    for _ in range(5):
        xy = rng.uniform(0, 50, size=(4, 2))
        gt = np.concatenate([xy, xy + rng.uniform(6, 12, size=(4, 2))], 1)
        labels = rng.integers(0, 2, 4)
        masks = np.zeros((4, 64, 64), bool)
        for k, (x0, y0, x1, y1) in enumerate(gt.astype(int)):
            masks[k, y0:y1, x0:x1] = True
        gt = np.array([mask_box(m) for m in masks])
        truth = {"boxes": gt, "labels": labels, "masks": masks}
        perfect.add({"boxes": gt, "scores": np.ones(4), "labels": labels, "masks": masks}, truth, (64, 64))
        shifted = gt + np.array([4, 4, 4, 4])
        noisy.add({"boxes": shifted, "scores": np.ones(4), "labels": labels, "masks": np.roll(masks, 4, axis=(1, 2))}, truth, (64, 64))
    assert coco_eval(perfect, ["galaxy", "star"])["ap"] == pytest.approx(1.0)
    assert coco_eval(perfect, ["galaxy", "star"], "segm")["ap50"] == pytest.approx(1.0)
    worse = coco_eval(noisy, ["galaxy", "star"])
    assert worse["ap"] < 0.6


# -- classical baseline ------------------------------------------------------------------------
def test_sep_finds_isolated_sources_and_scores_against_truth(tiny_fields) -> None:
    from galframe_mmdet.sep_baseline import sep_detect, sep_record, summarise

    img = np.random.default_rng(0).normal(0, 0.01, (3, 64, 64))
    yy, xx = np.mgrid[:64, :64]
    for x, y in [(15, 20), (45, 40)]:
        img += 0.5 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    det = sep_detect(img, [0.01, 0.01, 0.01])
    assert len(det["boxes"]) == 2
    centres = sorted(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in det["boxes"])
    assert np.allclose(centres, [(15.5, 20.5), (45.5, 40.5)], atol=1.0)
    dm = _fields_dm(tiny_fields)
    summary = summarise(sep_record(dm.dataset("test")), ["galaxy", "star"], [16, 20, 23])
    assert 0.3 < summary["recall"] <= 1.0 and 0.3 < summary["precision"] <= 1.0


# -- COCO ----------------------------------------------------------------------------------------
def test_coco_export_import_round_trip(tiny_fields, tmp_path) -> None:
    from galframe_mmdet.coco import export_coco, import_coco, main

    coco = export_coco(tiny_fields, tmp_path / "fields.json", tmp_path / "images")
    inst = pd.read_parquet(tiny_fields / "instances.parquet")
    assert len(coco["images"]) == 24 and len(coco["annotations"]) == int(inst["annotated"].sum())
    assert [c["name"] for c in coco["categories"]] == ["galaxy", "star"]
    back = import_coco(tmp_path / "fields.json", tmp_path / "images", tmp_path / "back")
    orig = _fields_dm(tiny_fields, "data.split={train:1.0,val:0.0,test:0.0}").dataset("train")
    again = _fields_dm(back, "data.split={train:1.0,val:0.0,test:0.0}").dataset("train")
    for i in (0, 5, 23):
        a, b = orig[i], again[i]
        assert torch.allclose(a["image"], b["image"])
        assert torch.equal(a["instances"]["masks"], b["instances"]["masks"])
        assert torch.equal(a["instances"]["labels"], b["instances"]["labels"])
    # a broken COCO file names itself
    (tmp_path / "bad.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert main(["import", str(tmp_path / "bad.json"), str(tmp_path), str(tmp_path / "x")]) == 2


# -- the mmdet task ------------------------------------------------------------------------------
FAST_DET = ["data=sim_fields", "task=detect", "data.batch_size=4", "logger=none", "trainer.progress_bar=false"]


def _detect_model(fields, *overrides):
    from tests.helpers import build_model

    return build_model(fields, *FAST_DET, *overrides)


@pytest.mark.parametrize("backbone,task", [("lvm_tiny", "detect"), ("lvm_tiny", "detect_vitdet"), ("resnet50", "detect")])
def test_mask_rcnn_loss_falls_on_a_fixed_batch(tiny_fields, backbone, task) -> None:
    from galframe.data.datamodule import collate

    extra = ["backbone.img_size=null"] if backbone.startswith("lvm") else []
    model, dm = _detect_model(tiny_fields, f"backbone={backbone}", f"task={task}", *extra)
    batch = collate([dm.dataset("train")[i] for i in range(2 if backbone == "resnet50" else 4)])
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(6):
        total, _ = model._losses(model(batch["image"]), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses


def test_detect_trains_evaluates_and_writes_a_source_catalog(tiny_fields, tmp_path) -> None:
    from galframe.train import run

    metrics = run(compose_train(
        *FAST_DET, f"data.path={tiny_fields}", "backbone=lvm_tiny", "backbone.img_size=null", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "data.split={train:0.5,val:0.17,test:0.33}",
    ), run_dir=tmp_path / "run")
    for key in ("precision", "recall", "f1", "f1_class", "ap50", "ap", "mask_ap", "f1_bright"):
        assert 0.0 <= metrics[f"test/detect/{key}"] <= 1.0
    assert metrics["test/detect/duplicates_per_field"] >= 0.0 and "test/detect/depth50_at_purity95" in metrics
    run_dir = tmp_path / "run"
    survey = json.loads((run_dir / "survey_detect.json").read_text())
    assert len(survey["curves"]["purity"]) == len(survey["curves"]["edges"]) - 1 and survey["blend_recovery"]["pairs"] >= 0
    assert (run_dir / "completeness_purity_detect.png").stat().st_size > 10_000
    assert (run_dir / "detections_detect.png").stat().st_size > 10_000
    comp = json.loads((run_dir / "completeness_detect.json").read_text())
    assert len(comp["completeness"]) == len(comp["edges"]) - 1 and sum(comp["count"]) > 0
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    assert {"detect_n", "detect_n_galaxy", "detect_n_star"} <= set(pred.columns) and len(pred) == 8
    sources_file = run_dir / "sources_test.parquet"
    if pred["detect_n"].sum() > 0:
        sources = pd.read_parquet(sources_file)
        assert len(sources) == pred["detect_n"].sum()
        assert set(sources["image_id"]) <= set(pred["id"]) and set(sources["class"]) <= {"galaxy", "star"}
        assert ((sources["x0"] >= 0) & (sources["x1"] <= 128) & (sources["x0"] < sources["x1"])).all()
        assert (sources["score"] >= metrics["test/detect/score_threshold"] - 1e-6).all()
    # the operating threshold was chosen on validation data and travels in the checkpoint
    import torch

    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert float(state["tasks.detect.operating_threshold"]) == pytest.approx(metrics["test/detect/score_threshold"])
    assert 0.05 <= metrics["test/detect/score_threshold"] <= 0.95


def test_detect_config_errors_are_clear(tiny_fields, tiny_dataset) -> None:
    from galframe.errors import ConfigError as CE

    with pytest.raises(CE, match=r"tasks.detect.score_threshold must be a number in \[0, 1\] or 'auto'"):
        _detect_model(tiny_fields, "backbone=resnet18", "tasks.detect.score_threshold=best")
    with pytest.raises(CE, match=r"tasks.detect.score_threshold must be a number"):
        _detect_model(tiny_fields, "backbone=resnet18", "tasks.detect.score_threshold=1.5")
    with pytest.raises(CE, match="tasks.detect.model: mmdet could not build the detector"):
        _detect_model(tiny_fields, "backbone=resnet18", "tasks.detect.model.rpn_head.type=RPNHeed")
    with pytest.raises(DataError, match="has no instances.parquet"):
        from tests.helpers import build_model

        model, dm = build_model(tiny_dataset, "task=detect", "backbone=resnet18", "logger=none")
        dm.dataset("train")


def test_galframe_backbone_works_inside_a_plain_mmdet_config() -> None:
    """A third party can name galframe's backbones from their own mmdet configs."""
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    from galframe_mmdet import build_detector_config
    from galframe_mmdet.modules import register

    register()
    backbone = MODELS.build(ConfigDict(type="GalframeBackbone", plugin="lvm", options={"img_size": 64, "embed_dim": 16,
                                       "num_heads": [1, 2, 4]}, bands=["g", "r", "z"], image_size=64))
    maps = backbone(torch.randn(2, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [16, 32, 64] and maps[0].shape[-1] == 16
    assert backbone(maps) == maps  # precomputed maps pass through
    cfg = build_detector_config(compose_train("data=sim_fields", "task=detect").tasks.detect.model, [16, 32, 64], [4, 8, 16], 2)
    assert cfg["neck"]["in_channels"] == [16, 32, 64]
    assert cfg["rpn_head"]["anchor_generator"]["strides"] == [4, 8, 16, 32, 64]
    assert cfg["roi_head"]["bbox_roi_extractor"]["featmap_strides"] == [4, 8, 16, 32]
    assert cfg["roi_head"]["bbox_head"]["num_classes"] == 2


def test_predict_writes_a_merged_source_catalog_for_a_tiled_real_jpeg(tiny_fields, tmp_path) -> None:
    """The Hubble Deep Field (scikit-image's JPEG) through the JPEG reader, tiled, a real Mask R-CNN,
    detections merged across tile overlaps into one source catalog; the benchmark compares with SEP."""
    import subprocess
    import sys

    from PIL import Image
    from skimage import data

    from galframe.train import run
    from tests.helpers import ROOT

    run(compose_train(*FAST_DET, f"data.path={tiny_fields}", "backbone=resnet18", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "evaluate=false"), run_dir=tmp_path / "run")
    Image.fromarray(data.hubble_deep_field()[:300, :300]).save(tmp_path / "hdf.jpg", quality=95)
    out = tmp_path / "hdf.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "galframe.cli", "predict", f"ckpt={tmp_path / 'run'}", "data=image",
         f"data.path={tmp_path / 'hdf.jpg'}", "data.tile_size=128", "data.overlap=42", "data.white=0.2", f"out={out}",
         "progress=false"], capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    tiles = pd.read_parquet(out)
    assert len(tiles) == 9 and {"detect_n", "detect_n_galaxy", "detect_n_star"} <= set(tiles.columns)
    det_file = tmp_path / "hdf.detections.parquet"
    assert det_file.is_file()
    det = pd.read_parquet(det_file)
    # merged across overlaps: never more sources than the tiles reported, boxes inside the image
    assert len(det) <= int(tiles["detect_n"].sum())
    if len(det):
        assert ((det["x_min"] >= 0) & (det["x_max"] <= 300) & (det["y_min"] >= 0) & (det["y_max"] <= 300)).all()
        assert set(det["class"]) <= {"galaxy", "star"} and det["ra"].isna().all()


def test_bench_survey_records_measure_duplicates_before_and_after_suppression(tiny_fields) -> None:
    """The bench's one inference pass: raw detections and the same suppressed, each with r photometry."""
    from galframe_bench.detect import survey_records
    from galframe_mmdet.survey_metrics import survey_summary

    torch.manual_seed(0)
    model, dm = _detect_model(tiny_fields, "backbone=lvm_tiny", "backbone.img_size=null")
    task = model.tasks["detect"]
    task.operating_threshold.fill_(0.0)  # an untrained detector's every box counts: many overlapping ones
    raw, kept = survey_records(model, dm, batch=4)
    assert len(raw) == len(kept) == len(dm.dataset("test")) and task.suppress_enabled  # restored afterwards
    n_raw = sum(len(p["scores"]) for p in raw.preds)
    n_kept = sum(len(p["scores"]) for p in kept.preds)
    assert 0 < n_kept <= n_raw  # (how many an untrained detector duplicates varies; test_detect_survey checks the rule)
    assert all(len(p["mag_r"]) == len(p["scores"]) for p in kept.preds)
    before, after = (survey_summary(r, [16, 18, 20, 22, 23], 0.0)["duplicates"]["duplicates"] for r in (raw, kept))
    assert after <= before
