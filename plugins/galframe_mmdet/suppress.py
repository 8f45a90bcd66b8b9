"""Mask-aware, class-agnostic suppression of duplicate detections, after the detector's own NMS.

mmdet's NMS works per class and on boxes: it keeps a galaxy box and a star box on the same object,
and a small box nested inside a large one (low box IoU, but one object).  On blends a detector also
draws a box around the pair beside the boxes of its members.  This pass, on the instance masks
(boxes where there are none), in order of score:

1. **split blends win over their parent**: a detection whose mask contains (>= ``contain`` of their
   pixels) two or more other detections that are themselves disjoint (mask IoU < ``disjoint``) is the
   unsplit pair and is dropped, whatever its score;
2. **one object, one detection**: a detection is dropped when its mask overlaps a kept, higher-scoring
   one with IoU >= ``iou``, or lies inside it (containment >= ``contain``), or contains it.

Configured by ``tasks.detect.suppress`` (``enabled``, ``iou``, ``contain``, ``disjoint``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def _overlaps(boxes: np.ndarray, masks: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(iou, contain) matrices: contain[i, j] = |i & j| / |j| (j inside i)."""
    n = len(boxes)
    if masks is not None and len(masks) == n and n and np.asarray(masks).ndim == 3:
        flat = np.asarray(masks, dtype=bool).reshape(n, -1).astype(np.float32)
        inter = flat @ flat.T
        area = flat.sum(axis=1)
        empty = area == 0
        if empty.any():  # a detection with an empty mask falls back to its box
            return _overlaps(boxes, None)
    else:
        from galframe_mmdet.metrics import box_intersections

        inter, area, _ = box_intersections(boxes, boxes)
    area = np.maximum(area, 1e-9)
    union = area[:, None] + area[None, :] - inter
    return inter / np.maximum(union, 1e-9), inter / area[None, :]


def suppress(boxes: np.ndarray, scores: np.ndarray, masks: Optional[np.ndarray] = None, iou: float = 0.5,
             contain: float = 0.8, disjoint: float = 0.2, min_score: float = 0.0) -> np.ndarray:
    """Indices of the detections to keep (in decreasing score).  Only detections scoring at least
    ``min_score`` take part in the blend rule (1), so that faint junk cannot veto a real parent."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ious, cont = _overlaps(boxes, masks)
    np.fill_diagonal(ious, 0.0)
    np.fill_diagonal(cont, 0.0)
    alive = np.ones(n, dtype=bool)
    strong = scores >= min_score
    for i in range(n):  # (1) a parent of two or more disjoint children is the unsplit blend
        kids = np.flatnonzero((cont[i] >= contain) & strong)
        if len(kids) < 2:
            continue
        if _has_disjoint_pair(ious[np.ix_(kids, kids)], disjoint):
            alive[i] = False
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for j in order:  # (2) greedy, highest score first
        if not alive[j]:
            continue
        if any(ious[k, j] >= iou or cont[k, j] >= contain or cont[j, k] >= contain for k in kept):
            continue
        kept.append(int(j))
    return np.asarray(kept, dtype=np.int64)


def _has_disjoint_pair(sub: np.ndarray, disjoint: float) -> bool:
    m = sub < disjoint
    np.fill_diagonal(m, False)
    return bool(m.any())


def suppress_detections(det: dict, **options) -> dict:
    """``suppress`` applied to one image's detection dict (boxes, scores, labels, masks)."""
    keep = suppress(det["boxes"], det["scores"], det.get("masks"), **options)
    return {k: (v[keep] if v is not None and np.ndim(v) and len(v) == len(det["scores"]) else v) for k, v in det.items()}
