"""Named scalings from calibrated flux (nanomaggies) to network input, and bad-pixel masking.

The scaling is part of the model (saved in its checkpoint), so training,
evaluation and prediction on real data go through one code path: readers convert
survey files to nanomaggies, :func:`clean_pixels` masks NaN/inf and flagged pixels,
and the model's :class:`Scaling` maps flux to network input.

Per-band normalisation is the per-band ``softening`` (a flux scale per band, e.g.
about the sky noise); :func:`estimate_softening` measures it from images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from galframe.errors import ConfigError, check_choice


def _per_band(value: Any, bands: Sequence[str], what: str) -> list[float]:
    if isinstance(value, Mapping):
        missing = [b for b in bands if b not in value]
        if missing:
            raise ConfigError(f"scaling.{what} has no value for band(s) {', '.join(missing)} (bands: {', '.join(bands)}).")
        return [float(value[b]) for b in bands]
    if isinstance(value, (int, float)):
        return [float(value)] * len(bands)
    values = [float(v) for v in value]
    if len(values) != len(bands):
        raise ConfigError(f"scaling.{what} has {len(values)} values for {len(bands)} bands ({', '.join(bands)}).")
    return values


class Scaling(nn.Module):
    """``asinh``: scale * asinh(flux / softening_b); ``linear``: scale * flux / softening_b;
    ``lupton``: the colour-preserving asinh stretch of Lupton et al. (2004): with f_b = flux / softening_b
    and I = mean_b f_b, scale * f_b * asinh(q I) / (q I), so every band of a pixel is stretched by the
    same factor and colours survive (q -> 0 gives linear)."""

    NAMES = ("asinh", "linear", "lupton")

    def __init__(self, name: str, bands: Sequence[str], softening: Any = 1.0, scale: float = 1.0, q: float = 8.0) -> None:
        super().__init__()
        self.name = check_choice("scaling", name, self.NAMES)
        soft = torch.tensor(_per_band(softening, bands, "softening"))
        if (soft <= 0).any():
            raise ConfigError("scaling.softening must be positive in every band.")
        self.register_buffer("softening", soft.view(1, -1, 1, 1), persistent=False)
        self.scale = float(scale)
        self.q = float(q)
        if self.q <= 0:
            raise ConfigError(f"scaling.q must be positive (got {q}).")

    @staticmethod
    def _asinh_ratio(t: torch.Tensor) -> torch.Tensor:
        """asinh(t) / t, 1 at t = 0."""
        small = t.abs() < 1e-4
        safe = torch.where(small, torch.ones_like(t), t)
        return torch.where(small, 1.0 - t * t / 6.0, torch.asinh(safe) / safe)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        x = flux / self.softening
        if self.name == "asinh":
            x = torch.asinh(x)
        elif self.name == "lupton":
            x = x * self._asinh_ratio(self.q * x.mean(dim=1, keepdim=True))
        return x * self.scale

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.scale
        if self.name == "asinh":
            x = torch.sinh(x)
        elif self.name == "lupton":
            # the mean over bands of the output is asinh(q I) / q, so I = sinh(q mean) / q
            m = x.mean(dim=1, keepdim=True)
            x = x / self._asinh_ratio(torch.sinh(self.q * m))  # = x * q I / asinh(q I)
        return x * self.softening


def build_scaling(cfg: Mapping[str, Any], bands: Sequence[str]) -> Scaling:
    cfg = dict(cfg)
    name = cfg.pop("name", "asinh")
    unknown = set(cfg) - {"softening", "scale", "q"}
    if unknown:
        raise ConfigError(f"scaling has no option(s) {', '.join(sorted(unknown))}; it takes name, softening, scale, q.")
    return Scaling(name, bands, **cfg)


# -- bad pixels ------------------------------------------------------------------------------------
FILLS = ("zero", "median")


def clean_pixels(flux: Any, bad: Any = None, fill: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """Mask NaN/inf pixels and the pixels flagged in ``bad``: returns (a float32 copy with them filled,
    the boolean mask of filled pixels).  ``fill``: ``zero`` (the sky level of background-subtracted
    flux) or ``median`` (the median of the band's good pixels).  ``mask.sum()`` is the count that
    catalogs report as ``n_bad_pixels``.

    Training data do not come through here: a NaN in a training shard is an error naming the file.
    """
    check_choice("data.fill", fill, FILLS)
    out = np.array(flux, dtype=np.float32, copy=True)
    mask = ~np.isfinite(out)
    if bad is not None:
        mask |= np.broadcast_to(np.asarray(bad, dtype=bool), out.shape)
    if mask.any():
        if fill == "zero" or out.ndim < 3:
            out[mask] = 0.0
        else:
            for k in range(out.shape[0]):
                good = out[k][~mask[k]]
                out[k][mask[k]] = float(np.median(good)) if good.size else 0.0
    return out, mask


def estimate_softening(images: Any, bands: Sequence[str]) -> dict[str, float]:
    """Per-band softening for the asinh/Lupton scalings: the robust (1.4826 x MAD) pixel noise of a
    (n, bands, H, W) sample of images in flux, ignoring NaN/inf."""
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[1] != len(bands):
        raise ConfigError(f"estimate_softening: images of shape {arr.shape} do not match bands {list(bands)}.")
    out = {}
    for k, band in enumerate(bands):
        v = arr[:, k][np.isfinite(arr[:, k])]
        sigma = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if v.size else 0.0
        out[str(band)] = sigma if sigma > 0 else 1.0
    return out
