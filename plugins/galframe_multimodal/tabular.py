"""The tabular encoder (``encoder.tabular``): named catalog columns through an MLP.

In the batch, ``tabular`` is (B, C) float32, the configured ``columns`` in their order, in the catalog's own
units (magnitudes AB, their errors in mag, fluxes in nanomaggies ...), NaN where a value is missing.  The
encoder standardises each column with the training split's mean and standard deviation (``DataInfo.stats``,
kept in buffers, so a checkpoint carries them), clips to +-``clip`` standard deviations, and masks a missing
value: its standardised value is set to 0 *and* a per-column missing indicator (1) goes in beside it, so the
network always knows a value was not measured (it is never read as a measurement at the mean).  An object with
every column missing has no tabular data: :meth:`TabularEncoder.present` is False and the fusion leaves the
modality out for it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from galframe.api import DataInfo, Encoder, Field, StoredData, StoredObject
from galframe.errors import ConfigError, DataError


def _columns(columns: Any, what: str) -> list[str]:
    cols = [columns] if isinstance(columns, str) else [str(c) for c in (columns or [])]
    if not cols:
        raise ConfigError(f"{what}.columns is empty: name the catalog columns to encode.")
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise ConfigError(f"{what}.columns names {twice} more than once.")
    return cols


class TabularField(Field):
    """Loads the configured catalog columns of an object as one (C,) float32 row (NaN: missing)."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        super().__init__(name)
        self.columns = _columns(columns, f"encoders.{name}")

    def check(self, data: StoredData) -> None:
        absent = [c for c in self.columns if c not in data.catalog]
        if absent:
            raise DataError(f"{data.catalog_file}: modality '{self.name}' reads columns {absent}, which the catalog does not have.")
        bad = [c for c in self.columns if data.catalog[c].dtype.kind != "f"]
        if bad:
            raise DataError(f"{data.catalog_file}: modality '{self.name}' needs float columns (NaN: missing); {bad} are not.")

    def open(self, data: StoredData) -> Any:
        values = np.array(data.catalog[self.columns].to_numpy(np.float32))  # a copy of its own
        values[~np.isfinite(values)] = np.nan  # inf is as unmeasured as NaN
        return values

    def load(self, state: Any, obj: StoredObject) -> Any:
        return torch.from_numpy(state[obj.i].copy())


class TabularEncoder(Encoder):
    """``columns`` -> standardised values and missing indicators (2 C inputs) -> ``depth`` hidden layers of
    ``hidden`` (Linear, GELU, LayerNorm) -> ``embed_dim``."""

    def __init__(self, name: str, data: DataInfo, columns: Sequence[str] = (), hidden: int = 128, depth: int = 2,
                 embed_dim: int = 64, dropout: float = 0.0, clip: float = 8.0) -> None:
        super().__init__(name, data)
        self.columns = _columns(columns, f"encoders.{name}")
        means, stds = data.stats.get("column_mean") or {}, data.stats.get("column_std") or {}
        unknown = [c for c in self.columns if c not in means]
        if unknown:
            raise DataError(
                f"encoders.{name}: columns {unknown} have no training statistics (DataInfo.stats column_mean); "
                "they must be float columns of the training catalog."
            )
        std = [float(stds.get(c, 1.0)) for c in self.columns]
        self.register_buffer("mean", torch.tensor([float(means[c]) for c in self.columns], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([s if math.isfinite(s) and s > 0 else 1.0 for s in std], dtype=torch.float32))
        if int(depth) < 0 or int(hidden) < 1 or int(embed_dim) < 1:
            raise ConfigError(f"encoders.{name}: depth >= 0, hidden >= 1 and embed_dim >= 1 (got {depth}, {hidden}, {embed_dim}).")
        self.clip = float(clip)
        self.embed_dim = int(embed_dim)
        layers: list[nn.Module] = []
        width = 2 * len(self.columns)
        for _ in range(int(depth)):
            layers += [nn.Linear(width, int(hidden)), nn.GELU(), nn.LayerNorm(int(hidden))]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            width = int(hidden)
        layers.append(nn.Linear(width, self.embed_dim))
        self.net = nn.Sequential(*layers)

    @classmethod
    def field(cls, name: str, options: Mapping[str, Any]) -> Field:
        return TabularField(name, options.get("columns") or ())

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != len(self.columns):
            raise DataError(
                f"modality '{self.modality}': got shape {tuple(x.shape)}, expected (batch, {len(self.columns)}) "
                f"for columns {self.columns}."
            )

    def present(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.isfinite(x).any(dim=1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2 C): standardised, clipped values (0 where missing), then the missing indicators."""
        self._check(x)
        missing = ~torch.isfinite(x)
        z = ((x.to(self.mean.dtype) - self.mean) / self.std).clamp(-self.clip, self.clip)
        z = torch.where(missing, torch.zeros((), dtype=z.dtype, device=z.device), z)
        return torch.cat([z, missing.to(z.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(x))
