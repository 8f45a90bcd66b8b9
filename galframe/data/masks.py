"""Instance masks as run-length encodings, in the COCO convention (uncompressed RLE).

The mask is read in column-major order (down the first column, then the next) and ``counts``
alternates runs of 0 and 1, starting with a (possibly empty) run of 0.  pycocotools reads these
counts as they are (``{"size": [h, w], "counts": [...]}``), so COCO JSON export needs no conversion.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def mask_to_rle(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def rle_to_mask(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, not {height}x{width}={height * width}.")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight (x0, y0, x1, y1) box of a mask, in pixel edges; (0, 0, 0, 0) when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
