"""On-the-fly augmentation of flux batches: 90-degree rotations, flips, small shifts, extra noise.

It runs on whole batches (on the model's device) with a generator seeded from
(seed, global step), so a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

GEOMETRIC_KEYS = ("image", "clean")


def augment_batch(batch: dict[str, Any], cfg: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
    image = batch["image"]
    n = image.shape[0]
    dev = image.device

    def draw(*shape: int, high: Optional[int] = None) -> torch.Tensor:
        if high is None:
            return torch.rand(*shape, generator=generator).to(dev)
        return torch.randint(0, high, shape, generator=generator).to(dev)

    k = draw(n, high=4) if cfg.get("rot90", False) else torch.zeros(n, dtype=torch.long, device=dev)
    flip = draw(n, high=2).bool() if cfg.get("flip", False) else torch.zeros(n, dtype=torch.bool, device=dev)
    max_shift = int(cfg.get("shift", 0) or 0)
    shifts = (draw(n, 2, high=2 * max_shift + 1) - max_shift) if max_shift else torch.zeros(n, 2, dtype=torch.long, device=dev)

    for key in GEOMETRIC_KEYS:
        if key in batch and torch.is_tensor(batch[key]) and batch[key].dim() == 4:
            batch[key] = _geometric(batch[key], k, flip, shifts)

    if "instances" in batch:
        # instance masks move with their image; boxes are the tight boxes of the moved masks
        moved = []
        for i, inst in enumerate(batch["instances"]):
            if inst["masks"].shape[0]:
                masks = _geometric(inst["masks"][None], k[i : i + 1], flip[i : i + 1], shifts[i : i + 1])[0]
                inst = {**inst, "masks": masks, "boxes": boxes_of(masks).to(inst["boxes"].dtype)}
            moved.append(inst)
        batch["instances"] = moved

    noise = float(cfg.get("noise", 0) or 0)
    if noise and "noise_sigma" in batch:
        # extra Gaussian noise: the sky noise of each object times a factor drawn in [0, noise]
        factor = draw(n) * noise
        sigma = batch["noise_sigma"].to(image.dtype) * factor[:, None]
        eps = torch.randn(image.shape, generator=generator).to(dev)
        batch["image"] = batch["image"] + eps * sigma[:, :, None, None]
    batch["aug_rot90"] = k
    batch["aug_flip"] = flip
    return batch


def _geometric(x: torch.Tensor, k: torch.Tensor, flip: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        xi = x[i]
        if flip[i]:
            xi = xi.flip(-1)
        if k[i]:
            xi = torch.rot90(xi, int(k[i]), dims=(-2, -1))
        if shifts[i].any():
            xi = torch.roll(xi, shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
        out[i] = xi
    return out


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
