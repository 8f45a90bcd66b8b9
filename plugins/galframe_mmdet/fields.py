"""The detection task's batch field (entry point ``field.instances``): per-object truth of a field image.

A dataset with instances has ``instances.parquet`` beside its catalog: one row per annotated object
(``image_id``, ``class``, ``bbox_x/y/w/h`` in pixels, ``rle`` mask counts, optional ``mag_r``).  Each
image's value is a dict of ``boxes`` (N, 4) x0 y0 x1 y1, ``labels`` (N,), ``masks`` (N, H, W) uint8 and
``mag_r`` (N,); the batch holds a list of them (N differs), and under augmentation the masks move
with the image and the boxes become the tight boxes of the moved masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from galframe.api import LIST, Field, Geometry, StoredData, StoredObject
from galframe.data.format import INSTANCES
from galframe.errors import DataError

COLUMNS = ("image_id", "class", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "rle")


def load_instances(root: Path, ids: set) -> dict[int, dict[str, np.ndarray]]:
    """``instances.parquet`` (annotated rows only) grouped by image id."""
    import pandas as pd

    file = Path(root) / INSTANCES
    if not file.is_file():
        raise DataError(f"{root}: a task needs object instances (boxes, masks) but the dataset has no {INSTANCES}.")
    try:
        frame = pd.read_parquet(file)
    except Exception as exc:
        raise DataError(f"{file}: cannot read the instances ({type(exc).__name__}: {exc})") from exc
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise DataError(f"{file}: instance table lacks column(s) {sorted(missing)}.")
    if "annotated" in frame:
        frame = frame[frame["annotated"].astype(bool)]
    frame = frame[frame["image_id"].isin(ids)]
    out: dict[int, dict[str, np.ndarray]] = {}
    cols = [c for c in ("class", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "rle", "mag_r") if c in frame]
    for image_id, group in frame.groupby("image_id", sort=False):
        out[int(image_id)] = {c: group[c].to_numpy() for c in cols}
    return out


class InstancesField(Field):
    collate = LIST
    geometric = True

    def open(self, data: StoredData) -> Any:
        size = int(data.manifest["image_size"])
        return load_instances(data.root, set(data.catalog["id"].to_numpy().tolist())), (size, size)

    def load(self, state: Any, obj: StoredObject) -> dict[str, torch.Tensor]:
        """Annotated instances of one image: boxes (N, 4) x0 y0 x1 y1, labels (N,), masks (N, H, W) uint8, mag_r (N,)."""
        from galframe.data.masks import rle_to_mask

        table, (h, w) = state
        rows = table.get(obj.id)
        if rows is None or len(rows) == 0:
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                    "masks": torch.zeros(0, h, w, dtype=torch.uint8), "mag_r": torch.zeros(0)}
        boxes = np.stack([rows["bbox_x"], rows["bbox_y"], rows["bbox_x"] + rows["bbox_w"], rows["bbox_y"] + rows["bbox_h"]], 1)
        masks = np.stack([rle_to_mask(c, h, w) for c in rows["rle"]]).astype(np.uint8)
        mag = rows["mag_r"] if "mag_r" in rows else np.full(len(boxes), np.nan)
        return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(np.asarray(rows["class"], dtype=np.int64)),
                "masks": torch.from_numpy(masks), "mag_r": torch.tensor(np.asarray(mag, dtype=np.float32))}

    def move(self, value: list, geometry: Geometry) -> list:
        """Instance masks move with their image; boxes are the tight boxes of the moved masks."""
        moved = []
        for i, inst in enumerate(value):
            if inst["masks"].shape[0]:
                masks = geometry.item(i, inst["masks"])
                inst = {**inst, "masks": masks, "boxes": boxes_of(masks).to(inst["boxes"].dtype)}
            moved.append(inst)
        return moved


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """Tight (N, 4) x0, y0, x1, y1 boxes (pixel edges) of (N, H, W) masks; zeros for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    cols, rows = masks.bool().any(dim=1), masks.bool().any(dim=2)  # (N, W), (N, H)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    big = torch.tensor(10**9, device=masks.device)
    x0 = torch.where(cols, xs, big).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values + 1
    y0 = torch.where(rows, ys, big).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values + 1
    empty = ~cols.any(dim=1)
    out = torch.stack([x0, y0, x1, y1], dim=1).float()
    out[empty] = 0.0
    return out
