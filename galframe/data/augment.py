"""On-the-fly augmentation of flux batches: 90-degree rotations, flips, small shifts, extra noise.

It runs on whole batches (on the model's device) with a generator seeded from
(seed, global step), so a resumed run draws exactly what an uninterrupted one would.
The image always moves; every other key moves as its batch field declares (``Field.move``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from galframe.api import Geometry
from galframe.data.fields import resolve


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

    geometry = Geometry(k, flip, shifts)
    batch["image"] = geometry(image)
    for key, field in resolve(k for k in batch if k != "image").items():
        batch[key] = field.move(batch[key], geometry)

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
