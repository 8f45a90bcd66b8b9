"""Detection and instance segmentation: an mmdet two-stage detector (Mask R-CNN by default) on any
galframe backbone, trained by galframe's Lightning loop.

The detector is built from the mmdet model config in the task config (``galframe_mmdet/conf/task/detect.yaml``):
its ``backbone`` is replaced by ``GalframeBackbone``, which receives the shared backbone's feature
maps, and ``auto`` entries (neck input channels, anchor and RoI strides, number of classes) are
filled from the galframe backbone and the data.  Another mmdet two-stage detector config (Cascade
Mask R-CNN, say) can be swapped in through the YAML.

Needs the ``mmdet`` extra (mmcv with ops, mmengine, mmdet, pycocotools; scripts/install_mmdet.sh).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Features, Task
from galframe.errors import ConfigError, PluginError

AUTO = "auto"


def _import_mmdet() -> None:
    try:
        import mmcv.ops  # noqa: F401  (Mask R-CNN's RoIAlign)
        import mmdet  # noqa: F401
    except Exception as exc:
        raise PluginError(
            "task 'detect' needs mmdet with mmcv ops: run scripts/install_mmdet.sh "
            f"(builds mmcv 2.1.0 once for this torch). Import failed: {type(exc).__name__}: {exc}"
        ) from exc


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def build_detector_config(model: Mapping[str, Any], feature_channels: Sequence[int], feature_strides: Sequence[int],
                          num_classes: int) -> dict:
    """The mmdet config with galframe's backbone adapter and every ``auto`` value filled in."""
    from galframe_mmdet.modules import pyramid_strides

    cfg = copy.deepcopy(_plain(model))
    for key in ("neck", "rpn_head", "roi_head"):
        if key not in cfg:
            raise ConfigError(f"tasks.detect.model has no '{key}': give a two-stage mmdet detector config (see galframe_mmdet/conf/task/detect.yaml).")
    cfg["backbone"] = {"type": "GalframeBackbone"}
    neck = cfg["neck"]
    num_outs = int(neck.get("num_outs", 5))
    if neck.get("in_channels", AUTO) == AUTO:
        neck["in_channels"] = [int(c) for c in feature_channels]
    if neck.get("type") == "SimpleFeaturePyramid":
        if neck.get("in_stride", AUTO) == AUTO:
            neck["in_stride"] = int(feature_strides[int(neck.get("in_index", -1))])
        base = [int(s) for s in neck.get("strides", (4, 8, 16, 32))]
        strides = pyramid_strides(base, num_outs)
    else:
        strides = pyramid_strides(feature_strides, num_outs)
    rpn = cfg["rpn_head"]
    anchors = rpn.get("anchor_generator", {})
    if anchors.get("strides", AUTO) == AUTO:
        anchors["strides"] = strides
    roi = cfg["roi_head"]
    for ext in ("bbox_roi_extractor", "mask_roi_extractor"):
        if ext in roi and roi[ext].get("featmap_strides", AUTO) == AUTO:
            roi[ext]["featmap_strides"] = strides[:4]
    for head in ("bbox_head", "mask_head"):
        heads = roi.get(head)
        for h in heads if isinstance(heads, list) else [heads] if heads else []:
            if h.get("num_classes", AUTO) == AUTO:
                h["num_classes"] = int(num_classes)
    return cfg


class DetectionMetrics(nn.Module):
    """Accumulates a split's predictions and truth (per process)."""

    def __init__(self) -> None:
        super().__init__()
        from galframe_mmdet.metrics import DetectionRecord

        self.record = DetectionRecord()

    def reset(self) -> None:
        from galframe_mmdet.metrics import DetectionRecord

        self.record = DetectionRecord()


class DetectTask(Task):
    """Boxes, classes and instance masks of every object in a field."""

    requires = ("instances",)
    monitor = ("f1", "max")
    finds_sources = True

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        model: Mapping[str, Any],
        score_threshold: Any = "auto",
        iou_threshold: float = 0.5,
        completeness_bins: Sequence[float] = (16.0, 17.0, 18.0, 19.0, 20.0, 20.5, 21.0, 21.5, 22.0, 22.5),
        suppress: Optional[Mapping[str, Any]] = None,
        purity: float = 0.95,
        bright_mag: float = 21.0,
        zero_point: float = 22.5,
    ) -> None:
        super().__init__(name, backbone, data)
        _import_mmdet()
        from mmdet.registry import MODELS

        from galframe_mmdet.modules import register

        register()
        if not data.classes:
            raise ConfigError("task 'detect' needs object classes in the data (e.g. data=sim_fields: galaxy, star).")
        self.classes = tuple(data.classes)
        cfg = build_detector_config(model, backbone.feature_channels, backbone.feature_strides, len(self.classes))
        from mmengine.config import ConfigDict

        try:
            self.detector = MODELS.build(ConfigDict(cfg))
        except Exception as exc:
            raise ConfigError(f"tasks.detect.model: mmdet could not build the detector: {type(exc).__name__}: {exc}") from exc
        self.detector.init_weights()
        self.stride0 = int(backbone.feature_strides[0])
        # the operating point: a fixed score, or "auto": the score that maximises F1 on the validation
        # split, chosen at each validation and kept in the checkpoint (so test and predict use it)
        self.auto_threshold = isinstance(score_threshold, str)
        if self.auto_threshold and score_threshold.strip().lower() != "auto":
            raise ConfigError(f"tasks.{name}.score_threshold must be a number in [0, 1] or 'auto' (got {score_threshold!r}).")
        start = 0.5 if self.auto_threshold else float(score_threshold)
        if not 0.0 <= start <= 1.0:
            raise ConfigError(f"tasks.{name}.score_threshold must be a number in [0, 1] or 'auto' (got {score_threshold!r}).")
        self.register_buffer("operating_threshold", torch.tensor(start, dtype=torch.float32))
        self.iou_threshold = float(iou_threshold)
        self.completeness_bins = [float(b) for b in completeness_bins]
        self.last_completeness: Optional[dict] = None
        self.last_survey: Optional[dict] = None
        opts = dict(suppress or {})
        self.suppress_enabled = bool(opts.pop("enabled", True))
        unknown = set(opts) - {"iou", "contain", "disjoint"}
        if unknown:
            raise ConfigError(f"tasks.{name}.suppress: unknown keys {sorted(unknown)} (known: enabled, iou, contain, disjoint).")
        self.suppress_options = {k: float(v) for k, v in opts.items()}
        self.purity = float(purity)
        self.bright_mag = float(bright_mag)
        self.zero_point = float(zero_point)
        self.r_index = list(data.bands).index("r") if "r" in data.bands else None

    @property
    def score_threshold(self) -> float:
        """Detections scoring at least this are kept (metrics, catalogs, overlays)."""
        return float(self.operating_threshold)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # checkpoints written before the operating threshold was kept load with the configured one
        state_dict.setdefault(prefix + "operating_threshold", self.operating_threshold.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- mmdet plumbing ------------------------------------------------------
    def _shape(self, maps: Sequence[torch.Tensor]) -> tuple[int, int]:
        h, w = maps[0].shape[-2:]
        return int(h) * self.stride0, int(w) * self.stride0

    def _samples(self, n: int, shape: tuple[int, int], instances: Optional[list] = None) -> list:
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData

        h, w = shape
        out = []
        for i in range(n):
            s = DetDataSample()
            s.set_metainfo({"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w),
                            "batch_input_shape": (h, w), "scale_factor": (1.0, 1.0)})
            if instances is not None:
                inst = instances[i]
                gt = InstanceData()
                gt.bboxes = inst["boxes"].float()
                gt.labels = inst["labels"].long()
                gt.masks = BitmapMasks(inst["masks"].detach().cpu().numpy().astype(np.uint8), h, w)
                s.gt_instances = gt
            out.append(s)
        return out

    # -- Task contract -------------------------------------------------------
    def forward(self, features: Features) -> dict[str, Any]:
        maps = tuple(features.maps)
        out: dict[str, Any] = {"maps": maps}
        if not self.training:
            shape = self._shape(maps)
            results = self.detector.predict(maps, self._samples(maps[0].shape[0], shape), rescale=False)
            dets = []
            for r in results:
                p = r.pred_instances
                det = {
                    "boxes": p.bboxes.detach().float().cpu().numpy(),
                    "scores": p.scores.detach().float().cpu().numpy(),
                    "labels": p.labels.detach().cpu().numpy(),
                    "masks": p.masks.detach().cpu().numpy().astype(bool) if "masks" in p else None,
                }
                if self.suppress_enabled:  # nested / cross-class duplicates and unsplit blends (suppress.py)
                    from galframe_mmdet.suppress import suppress_detections

                    det = suppress_detections(det, min_score=self.score_threshold, **self.suppress_options)
                dets.append(det)
            out["detections"] = dets
            out["shape"] = shape
        return out

    def loss(self, out: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        maps = out["maps"]
        samples = self._samples(maps[0].shape[0], self._shape(maps), batch["instances"])
        losses = self.detector.loss(maps, samples)
        total, _ = self.detector.parse_losses(losses)
        return total

    def make_metrics(self) -> nn.Module:
        return DetectionMetrics()

    def update_metrics(self, metrics: nn.Module, out: dict[str, Any], batch: dict[str, Any]) -> None:
        from galframe_mmdet.survey_metrics import record_pred

        images = batch.get("image")
        for i, (det, inst) in enumerate(zip(out["detections"], batch["instances"])):
            truth = {k: inst[k].detach().cpu().numpy() for k in ("boxes", "labels", "masks", "mag_r") if k in inst}
            # the detections' own r photometry (purity against magnitude) where the image has an r band
            flux_r = images[i, self.r_index].detach().float().cpu().numpy() if images is not None and self.r_index is not None else None
            metrics.record.add(record_pred(det, flux_r, self.zero_point), truth, out["shape"])

    def calibrate(self, metrics: nn.Module) -> None:
        """Choose the operating score on the validation split (score_threshold: auto)."""
        from galframe_mmdet.metrics import best_threshold

        if self.auto_threshold and len(metrics.record):
            self.operating_threshold.fill_(best_threshold(metrics.record, self.iou_threshold))

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        from galframe_mmdet.metrics import coco_eval, completeness, prf

        rec = metrics.record
        if len(rec) == 0:
            return {}
        agnostic = prf(rec, self.score_threshold, self.iou_threshold)
        aware = prf(rec, self.score_threshold, self.iou_threshold, class_aware=True)
        result = {
            "precision": agnostic["precision"], "recall": agnostic["recall"], "f1": agnostic["f1"],
            "f1_class": aware["f1"], "score_threshold": self.score_threshold,
        }
        box = coco_eval(rec, self.classes, "bbox")
        result.update(ap50=box["ap50"], ap=box["ap"])
        if all(p.get("masks") is not None and p["masks"].ndim == 3 for p in rec.preds) and all("masks" in t for t in rec.truths):
            seg = coco_eval(rec, self.classes, "segm")
            result.update(mask_ap50=seg["ap50"], mask_ap=seg["ap"])
        self.last_completeness = completeness(rec, self.completeness_bins, self.score_threshold, self.iou_threshold)
        if all("mag_r" in t for t in rec.truths):  # the astronomers' figures (survey_metrics.py)
            from galframe_mmdet.survey_metrics import survey_summary

            survey = survey_summary(rec, self.completeness_bins, self.score_threshold, self.iou_threshold,
                                    self.purity, self.bright_mag)
            self.last_survey = survey
            tag = f"purity{int(round(self.purity * 100))}"
            result.update(f1_bright=survey["f1_bright"], duplicates_per_field=survey["duplicates"]["per_field"],
                          blend_recovery=survey["blend_recovery"]["recovered"])
            for key in (f"depth50_at_{tag}", f"depth90_at_{tag}"):
                result[key] = float("nan") if survey[key] is None else survey[key]
        return {k: torch.tensor(float(v)) for k, v in result.items()}

    def predict_columns(self, out: dict[str, Any]) -> dict[str, Any]:
        dets = out["detections"]
        keep = [d["scores"] >= self.score_threshold for d in dets]
        cols = {f"{self.name}_n": np.array([int(k.sum()) for k in keep])}
        for c, cls in enumerate(self.classes):
            cols[f"{self.name}_n_{cls}"] = np.array([int(((d["labels"] == c) & k).sum()) for d, k in zip(dets, keep)])
        return cols

    def predict_sources(self, out: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """One row per detected object (score above the threshold), per image: box, class, score,
        mask area and centroid (pixels; x along columns, y along rows)."""
        rows_per_image = []
        for d in out["detections"]:
            rows = []
            for k in np.flatnonzero(d["scores"] >= self.score_threshold):
                x0, y0, x1, y1 = (float(v) for v in d["boxes"][k])
                row = {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": float(d["scores"][k]),
                       "class": self.classes[int(d["labels"][k])]}
                m = d["masks"][k] if d.get("masks") is not None else None
                if m is not None and m.any():
                    ys, xs = np.nonzero(m)
                    row.update(mask_area=int(m.sum()), x=float(xs.mean()), y=float(ys.mean()))
                else:
                    row.update(mask_area=0, x=0.5 * (x0 + x1) - 0.5, y=0.5 * (y0 + y1) - 0.5)
                rows.append(row)
            rows_per_image.append(rows)
        return rows_per_image

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        from galframe_mmdet.report import completeness_plot, overlay_grid

        written = []
        run_dir = Path(run_dir)
        if model is not None:
            written.append(overlay_grid(model, self.name, dm, run_dir / f"detections_{self.name}.png"))
        if self.last_completeness is not None:
            written.append(completeness_plot(self.last_completeness, run_dir / f"completeness_{self.name}.png"))
            import json

            (run_dir / f"completeness_{self.name}.json").write_text(json.dumps(self.last_completeness, indent=2))
        if self.last_survey is not None:
            import json

            from galframe_mmdet.report import completeness_purity_plot

            (run_dir / f"survey_{self.name}.json").write_text(json.dumps(self.last_survey, indent=2))
            written.append(completeness_purity_plot({"": self.last_survey}, run_dir / f"completeness_purity_{self.name}.png"))
        return written
