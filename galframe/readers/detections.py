"""Detections of tasks that find several objects per image, from the model's input to the source image.

:func:`to_source_pixels` takes a batch's per-image detections (boxes in the model input's continuous pixel
coordinates) to the stamp's own pixels; :func:`merge_detections` puts them in the source image's pixels,
removes the duplicates that tile overlaps make (:func:`merge_tile_detections`, on tiled sources) and adds
RA/Dec where the source has a WCS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError

BOX = ["x_min", "y_min", "x_max", "y_max"]
_RENAME = {"x0": "x_min", "y0": "y_min", "x1": "x_max", "y1": "y_max", "x": "centre_x", "y": "centre_y"}


# -- from the model's input to the source image -------------------------------------------------------------
def to_source_pixels(batch: list, dets: Sequence[tuple[str, Any]], rebin: int = 1) -> list:
    """One DataFrame per image with detections: ``dets`` is ``[(task name, per-image detections)]`` for a
    batch of ``(stamp, conformed)``; boxes (and the task's own centres ``x, y``) go to the stamp's pixels,
    with the object's ``id``, ``task``, ``source`` and tile origin ``tile_x0, tile_y0``."""
    frames = []
    for task_name, per_image in dets:
        if len(per_image) != len(batch):
            raise DataError(f"task '{task_name}': predict_sources gave {len(per_image)} results for {len(batch)} images.")
        for (stamp, conformed), found in zip(batch, per_image):
            found = _image_detections(task_name, found)
            if len(found):
                frames.append(_in_stamp_pixels(found, task_name, stamp, conformed.offset, rebin))
    return frames


def _image_detections(task_name: str, found: Any) -> Any:
    import pandas as pd

    found = pd.DataFrame(found if isinstance(found, list) else {k: np.asarray(v) for k, v in dict(found).items()})
    if len(found) == 0:
        return found
    found = found.rename(columns=_RENAME)
    missing = [c for c in (*BOX, "score") if c not in found]
    if missing:
        raise DataError(f"task '{task_name}': its detections lack {missing} (a box x0, y0, x1, y1 and a score).")
    return found


def _in_stamp_pixels(found: Any, task_name: str, stamp: Any, offset: tuple, rebin: int) -> Any:
    oy, ox = offset
    for a, off in (("x_min", ox), ("x_max", ox), ("y_min", oy), ("y_max", oy)):
        found[a] = (found[a].astype(float) + off) * rebin  # input pixels -> the stamp's own pixels
    for a, off in (("centre_x", ox), ("centre_y", oy)):
        if a in found:
            found[a] = (found[a].astype(float) + 0.5 + off) * rebin - 0.5
    found.insert(0, "task", task_name)
    found.insert(0, "id", str(stamp.id))
    found["source"] = str(stamp.meta.get("source", ""))
    found["tile_x0"] = int(stamp.meta.get("tile_x0", 0))
    found["tile_y0"] = int(stamp.meta.get("tile_y0", 0))
    return found


def merge_detections(files: Sequence[Path], reader: Any, out: Path) -> int:
    """Every shard's detections (Parquet parts ``files``) in the source images' pixels, one per object on
    tiled sources, with RA/Dec, written to ``out``; returns how many."""
    import pandas as pd

    frames = [pd.read_parquet(f) for f in files]
    if not frames:
        pd.DataFrame(columns=["id", "task", *BOX, "score"]).to_parquet(out)
        return 0
    det = pd.concat(frames, ignore_index=True)
    for a, off in (("centre_x", "tile_x0"), ("centre_y", "tile_y0")):
        if a in det:
            det[a] = det[a] + det[off]  # the task's own centres, in the source image's pixels
    merged = [_source_detections(reader, source, group) for (source, _), group in det.groupby(["source", "task"], sort=False)]
    table = pd.concat(merged, ignore_index=True)
    table.to_parquet(out, index=False)
    return len(table)


def _source_detections(reader: Any, source: str, group: Any) -> Any:
    """One source's detections of one task, in its pixels (merged across tiles where it is tiled), with RA/Dec."""
    grid = reader.tile_grid(source) if source else None
    if grid is not None:
        group = merge_tile_detections(group, grid, coords="tile")
    else:
        group = group.copy()
        for a, off in (("x_min", "tile_x0"), ("x_max", "tile_x0"), ("y_min", "tile_y0"), ("y_max", "tile_y0")):
            group[a] = group[a] + group[off]
        group["x"] = (group["x_min"] + group["x_max"]) / 2.0 - 0.5  # box centre, 0-based pixel centres
        group["y"] = (group["y_min"] + group["y_max"]) / 2.0 - 0.5
    if "centre_x" in group:  # the task's own centre (e.g. a mask centroid) where it gave one
        group["x"] = group["centre_x"].where(group["centre_x"].notna(), group["x"])
        group["y"] = group["centre_y"].where(group["centre_y"].notna(), group["y"])
    world = reader.pixel_to_world(source, group["x"].to_numpy(), group["y"].to_numpy()) if source else None
    group["ra"], group["dec"] = world if world is not None else (np.nan, np.nan)
    return group


# -- de-duplication across tile overlaps ------------------------------------------------------------------
def merge_tile_detections(
    detections: Any,
    grid: Any,  # a galframe.readers.tiles.TileGrid
    iou: float = 0.5,
    containment: float = 0.8,
    edge_margin: float = 2.0,
    coords: str = "tile",
) -> Any:
    """One detection per object from detections made tile by tile.

    ``detections``: a DataFrame (or dict of columns) with ``tile_y0``, ``tile_x0`` (the tile's
    origin in image pixels), a box ``x_min, y_min, x_max, y_max`` (in the tile's pixels, or the
    image's with ``coords='image'``; max exclusive), ``score``, and any other columns (class,
    mask, ...), which are carried along.

    Two detections from *different* tiles are the same object when, both clipped to the region the
    two tiles share (an object cut by a tile edge gives a partial box there), their boxes overlap with
    an intersection over union of at least ``iou``, or the smaller lies at least ``containment``
    inside the other.  Of each
    group the kept one is, in order: one not touching an inner tile edge (within ``edge_margin``
    pixels), one whose centre its tile owns, the highest score.  Detections from the same tile are
    never merged (the detector's own non-maximum suppression did that).

    Boxes are continuous pixel coordinates (pixel i spans [i, i + 1), as in COCO and mmdet).
    Returns a DataFrame with the boxes in image pixels, ``x``, ``y`` (the box centre as a 0-based
    pixel-centre coordinate, what a WCS takes: ``(x_min + x_max) / 2 - 0.5``) and ``n_merged`` (how
    many detections it absorbed), sorted by y then x.
    """
    import pandas as pd

    frame = pd.DataFrame(detections).reset_index(drop=True)
    need = ["tile_y0", "tile_x0", *BOX, "score"]
    missing = [c for c in need if c not in frame]
    if missing:
        raise DataError(f"merge_tile_detections: detections lack column(s) {missing}.")
    if len(frame) == 0:
        return frame.assign(x=[], y=[], n_merged=[])
    ty0, tx0 = frame["tile_y0"].to_numpy(np.int64), frame["tile_x0"].to_numpy(np.int64)
    box, local = _image_and_tile_boxes(frame[BOX].to_numpy(np.float64).copy(), tx0, ty0, coords)
    cx, cy = (box[:, 0] + box[:, 2]) / 2.0, (box[:, 1] + box[:, 3]) / 2.0
    order = _keep_order(grid, local, tx0, ty0, cx, cy, frame["score"].to_numpy(np.float64), edge_margin)
    kept, absorbed = _deduplicate(grid, box, tx0, ty0, order, iou, containment)
    out = frame.iloc[kept].copy()
    out[BOX] = box[kept]
    out["x"], out["y"] = cx[kept] - 0.5, cy[kept] - 0.5
    out["n_merged"] = absorbed[kept]
    return out.sort_values(["y", "x"]).reset_index(drop=True)


def _image_and_tile_boxes(box: np.ndarray, tx0: np.ndarray, ty0: np.ndarray, coords: str) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in image pixels, the same in their tile's pixels) from boxes given in ``coords``."""
    local = box.copy()
    if coords == "tile":
        box[:, [0, 2]] += tx0[:, None]
        box[:, [1, 3]] += ty0[:, None]
    elif coords == "image":
        local[:, [0, 2]] -= tx0[:, None]
        local[:, [1, 3]] -= ty0[:, None]
    else:
        raise ConfigError(f"merge_tile_detections: coords must be 'tile' or 'image' (got {coords!r}).")
    return box, local


def _keep_order(grid: Any, local: np.ndarray, tx0: np.ndarray, ty0: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                score: np.ndarray, edge_margin: float) -> np.ndarray:
    """The detections in the order they are preferred: not touching an inner tile edge, centre owned by
    their tile, highest score."""
    s = grid.size
    touches = (
        ((local[:, 0] <= edge_margin) & (tx0 > 0))
        | ((local[:, 1] <= edge_margin) & (ty0 > 0))
        | ((local[:, 2] >= s - edge_margin) & (tx0 + s < grid.width))
        | ((local[:, 3] >= s - edge_margin) & (ty0 + s < grid.height))
    )
    owned = grid.owns(ty0, tx0, cy, cx)
    return np.lexsort((-score, ~owned, touches))  # last key sorts first: untouched, owned, score


def _deduplicate(grid: Any, box: np.ndarray, tx0: np.ndarray, ty0: np.ndarray, order: np.ndarray,
                 iou: float, containment: float) -> tuple[list[int], np.ndarray]:
    """(the kept detections, how many each absorbed): each in ``order`` is kept unless it shows the object
    of one kept before it from another tile (looked up in a grid of cells as large as the largest box)."""
    cell = float(max(grid.size - grid.overlap, np.max(box[:, 2] - box[:, 0]), np.max(box[:, 3] - box[:, 1]), 1.0))
    cells: dict[tuple[int, int], list[int]] = {}
    kept: list[int] = []
    absorbed = np.zeros(len(box), dtype=np.int64)
    tile_of = ty0 * (grid.width + 1) + tx0
    for i in order:
        span = [(gy, gx) for gy in range(int(box[i, 1] // cell), int(box[i, 3] // cell) + 1)
                for gx in range(int(box[i, 0] // cell), int(box[i, 2] // cell) + 1)]
        duplicate_of = next(
            (j for c in span for j in cells.get(c, ())
             if tile_of[j] != tile_of[i]
             and _same_object(box[i], box[j], (tx0[i], ty0[i]), (tx0[j], ty0[j]), grid.size, iou, containment)),
            -1,
        )
        if duplicate_of >= 0:
            absorbed[duplicate_of] += 1 + absorbed[i]
            continue
        kept.append(i)
        for c in span:
            cells.setdefault(c, []).append(i)
    return kept, absorbed


def _area(b: np.ndarray) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def _same_object(a: np.ndarray, b: np.ndarray, ta: tuple, tb: tuple, size: int, iou: float, containment: float) -> bool:
    """Whether boxes ``a`` and ``b`` (image pixels) from tiles with origins ``ta``, ``tb`` show one object.

    Both are first clipped to the region the two tiles share, so a box cut by its tile's edge is
    compared with the part of the other box that tile could see."""
    x0, y0 = max(ta[0], tb[0]), max(ta[1], tb[1])
    x1, y1 = min(ta[0], tb[0]) + size, min(ta[1], tb[1]) + size
    ca = np.array([max(a[0], x0), max(a[1], y0), min(a[2], x1), min(a[3], y1)])
    cb = np.array([max(b[0], x0), max(b[1], y0), min(b[2], x1), min(b[3], y1)])
    inter_box = np.array([max(ca[0], cb[0]), max(ca[1], cb[1]), min(ca[2], cb[2]), min(ca[3], cb[3])])
    inter = _area(inter_box)
    if inter <= 0:
        return False
    area_a, area_b = _area(ca), _area(cb)
    union = area_a + area_b - inter
    small = min(area_a, area_b)
    return (union > 0 and inter / union >= iou) or (small > 0 and inter / small >= containment)
