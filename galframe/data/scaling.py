"""Named scalings from calibrated flux (nanomaggies) to network input.

The scaling is part of the model (saved in its checkpoint), so training,
evaluation and prediction on real data go through one code path.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

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
    """``asinh``: scale * asinh(flux / softening_b); ``linear``: scale * flux / softening_b."""

    NAMES = ("asinh", "linear")

    def __init__(self, name: str, bands: Sequence[str], softening: Any = 1.0, scale: float = 1.0) -> None:
        super().__init__()
        self.name = check_choice("scaling", name, self.NAMES)
        soft = torch.tensor(_per_band(softening, bands, "softening"))
        if (soft <= 0).any():
            raise ConfigError("scaling.softening must be positive in every band.")
        self.register_buffer("softening", soft.view(1, -1, 1, 1), persistent=False)
        self.scale = float(scale)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        x = flux / self.softening
        if self.name == "asinh":
            x = torch.asinh(x)
        return x * self.scale

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.scale
        if self.name == "asinh":
            x = torch.sinh(x)
        return x * self.softening


def build_scaling(cfg: Mapping[str, Any], bands: Sequence[str]) -> Scaling:
    cfg = dict(cfg)
    name = cfg.pop("name", "asinh")
    unknown = set(cfg) - {"softening", "scale"}
    if unknown:
        raise ConfigError(f"scaling has no option(s) {', '.join(sorted(unknown))}; it takes name, softening, scale.")
    return Scaling(name, bands, **cfg)
