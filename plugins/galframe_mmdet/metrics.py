"""Detection metrics: precision, recall and F1 at an IoU threshold (what the reference work calls
accuracy), AP50 and COCO AP (boxes and masks, through pycocotools), completeness versus magnitude.

Inputs are per image: predictions ``boxes`` (N, 4) x0 y0 x1 y1, ``scores`` (N,), ``labels`` (N,),
optional ``masks`` (N, H, W) bool; truth ``boxes``, ``labels``, optional ``masks`` and ``mag_r``.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from galframe.data.masks import mask_to_rle


def box_intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(len(a), len(b)) intersection areas of x0 y0 x1 y1 boxes, and the areas of a and of b."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter, (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x0 y0 x1 y1 boxes."""
    inter, area_a, area_b = box_intersections(a, b)
    if inter.size == 0:
        return inter
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match(pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5,
          pred_labels: Optional[np.ndarray] = None, gt_labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching, highest score first: (matched gt index per prediction or -1,
    matched flag per truth).  With labels, only same-class pairs match."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    ious = box_iou(pred_boxes, gt_boxes)
    if pred_labels is not None and gt_labels is not None and ious.size:
        ious = np.where(np.asarray(pred_labels)[:, None] == np.asarray(gt_labels)[None, :], ious, 0.0)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    assign = np.full(len(pred_boxes), -1, dtype=np.int64)
    for p in order:
        if ious.shape[1] == 0:
            break
        cand = np.where(taken, -1.0, ious[p])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            assign[p] = j
            taken[j] = True
    return assign, taken


@dataclass
class DetectionRecord:
    """Everything accumulated over a split, one entry per image."""

    preds: list[dict] = field(default_factory=list)
    truths: list[dict] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)

    def add(self, pred: dict, truth: dict, shape: tuple[int, int]) -> None:
        self.preds.append({k: np.asarray(v) for k, v in pred.items()})
        self.truths.append({k: np.asarray(v) for k, v in truth.items()})
        self.shapes.append((int(shape[0]), int(shape[1])))

    def __len__(self) -> int:
        return len(self.preds)


def prf(record: DetectionRecord, score_threshold: float = 0.5, iou: float = 0.5, class_aware: bool = False) -> dict[str, float]:
    tp = fp = fn = 0
    for pred, truth in zip(record.preds, record.truths):
        keep = pred["scores"] >= score_threshold
        assign, taken = match(
            pred["boxes"][keep], pred["scores"][keep], truth["boxes"], iou,
            pred["labels"][keep] if class_aware else None, truth["labels"] if class_aware else None,
        )
        tp += int((assign >= 0).sum())
        fp += int((assign < 0).sum())
        fn += int((~taken).sum())
    return {**f1_from_counts(tp, fp, fn), "tp": float(tp), "fp": float(fp), "fn": float(fn)}


def f1_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from true positives, false positives and false negatives (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def best_threshold(record: DetectionRecord, iou: float = 0.5, grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))) -> float:
    """The score threshold (on a grid) with the highest class-agnostic F1; the lowest one on ties."""
    f1 = [prf(record, float(t), iou)["f1"] for t in grid]
    return float(grid[int(np.argmax(f1))])


def completeness(record: DetectionRecord, bins: Sequence[float], score_threshold: float = 0.5, iou: float = 0.5) -> dict[str, list]:
    """Fraction of true objects found (class-agnostic) per bin of r magnitude."""
    found, mags = [], []
    for pred, truth in zip(record.preds, record.truths):
        keep = pred["scores"] >= score_threshold
        _, taken = match(pred["boxes"][keep], pred["scores"][keep], truth["boxes"], iou)
        found.append(taken)
        mags.append(truth.get("mag_r", np.full(len(taken), np.nan)))
    found_a = np.concatenate(found) if found else np.zeros(0, bool)
    mag_a = np.concatenate(mags) if mags else np.zeros(0)
    edges = np.asarray(bins, dtype=float)
    which = np.digitize(mag_a, edges) - 1
    frac, count = [], []
    for k in range(len(edges) - 1):
        sel = which == k
        count.append(int(sel.sum()))
        frac.append(float(found_a[sel].mean()) if sel.any() else float("nan"))
    return {"edges": edges.tolist(), "completeness": frac, "count": count}


def coco_eval(record: DetectionRecord, classes: Sequence[str], iou_type: str = "bbox") -> dict[str, float]:
    """COCO AP (0.5:0.95) and AP50 through pycocotools, for boxes or masks (``segm``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for img_id, (pred, truth, (h, w)) in enumerate(zip(record.preds, record.truths, record.shapes), start=1):
        images.append({"id": img_id, "height": h, "width": w})
        for k, box in enumerate(truth["boxes"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": int(truth["labels"][k]) + 1,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            if iou_type == "segm":
                m = truth["masks"][k].astype(bool)
                ann["segmentation"] = {"size": [h, w], "counts": mask_to_rle(m)}
                ann["area"] = float(m.sum())
            anns.append(ann)
        for k, box in enumerate(pred["boxes"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            det = {"image_id": img_id, "category_id": int(pred["labels"][k]) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "score": float(pred["scores"][k])}
            if iou_type == "segm":
                from pycocotools import mask as mask_util

                enc = mask_util.encode(np.asfortranarray(pred["masks"][k].astype(np.uint8)))
                enc["counts"] = enc["counts"].decode("ascii")
                det["segmentation"] = enc
            dets.append(det)
    if not anns:
        return {"ap": float("nan"), "ap50": float("nan")}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return {"ap": 0.0, "ap50": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": float(max(ev.stats[0], 0.0)), "ap50": float(max(ev.stats[1], 0.0))}
