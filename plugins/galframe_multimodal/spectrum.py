"""The spectrum encoder (``encoder.spectrum``): flux, inverse variance and mask through a 1-D CNN.

In the batch, ``spectrum`` is (B, 3, L) float32 on the dataset's wavelength grid (L pixels): channel 0 the
flux (f_lambda, 1e-17 erg/s/cm^2/Angstrom, the DESI unit of sim_multimodal's ``spectra.h5``), channel 1 its
inverse variance, channel 2 the mask (1 = bad).  A pixel is good where the mask is 0, ivar > 0 and the flux
finite; an object without a spectrum has every pixel bad (flux 0, ivar 0, mask 1) and is absent
(:meth:`SpectrumEncoder.present`).  Masked pixels carry no flux: the network's three input channels are
``asinh(flux / s)``, ``asinh(sqrt(ivar) s)`` and the good-pixel indicator, all 0 at bad pixels, whatever
their stored values.  ``s`` is the training split's median |flux| of good pixels (``DataInfo.stats``,
``<modality>_flux_scale``) unless ``flux_scale`` is given; it is kept in a buffer.

The data: :class:`SpectrumField` reads a galframe dataset's ``spectra.h5`` (written by the multimodal
simulator, galframe/sim/multimodal.py) through the catalog's ``spectrum_row`` (-1: no spectrum).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from galframe.api import DataInfo, Encoder, Field, StoredData, StoredObject
from galframe.errors import ConfigError, DataError
from galframe.sim.multimodal import SPECTRA

ROW = "spectrum_row"
#: spectra read from the training split for the flux scale
SCALE_SAMPLE = 512


class SpectrumRows:
    """One split's spectra: the ``spectra.h5`` file, each object's row in it (-1: none) and the grid length;
    opens the file lazily in each process (it pickles for DataLoader workers)."""

    def __init__(self, path: Path, rows: np.ndarray, length: int) -> None:
        self.path, self.rows, self.length = Path(path), rows, int(length)
        self._h5: Any = None
        self._pid = os.getpid()

    def h5(self) -> Any:
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            try:
                self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as exc:
                raise DataError(f"{self.path}: cannot open the spectra file ({exc})") from exc
        return self._h5

    def read(self, i: int) -> np.ndarray:
        """(3, L) float32: flux, ivar, mask of object ``i`` of the split (all bad when it has no spectrum)."""
        out = np.zeros((3, self.length), dtype=np.float32)
        out[2] = 1.0
        row = int(self.rows[i])
        if row < 0:
            return out
        h5 = self.h5()
        flux = np.asarray(h5["flux"][row], dtype=np.float32)
        ivar = np.asarray(h5["ivar"][row], dtype=np.float32)
        bad = (np.asarray(h5["mask"][row]) != 0) | ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
        out[0] = np.where(bad, 0.0, flux)
        out[1] = np.where(bad, 0.0, ivar)
        out[2] = bad
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None}


class SpectrumField(Field):
    """Loads an object's spectrum as (3, L) float32 (flux, ivar, mask) from the dataset's ``spectra.h5``."""

    def _file(self, data: StoredData) -> Path:
        return Path(data.root) / SPECTRA

    def check(self, data: StoredData) -> None:
        if ROW not in data.catalog:
            raise DataError(f"{data.catalog_file}: modality '{self.name}' needs the column '{ROW}' (the object's row in "
                            f"{SPECTRA}, -1 for none), which the catalog does not have.")
        if not self._file(data).is_file():
            raise DataError(f"{self._file(data)}: no spectra file (modality '{self.name}'; a multimodal dataset with "
                            "sim.spectrum.fraction > 0 has one).")
        import h5py

        rows = data.catalog[ROW].to_numpy(np.int64)
        with h5py.File(self._file(data), "r") as h5:
            ids = np.asarray(h5["ids"][:])
        held = rows >= 0
        if not held.any():
            return
        if (rows[held] >= len(ids)).any():
            raise DataError(f"{data.catalog_file}: '{ROW}' points past the {len(ids)} spectra of {self._file(data)}.")
        wrong = held & (ids[np.where(held, rows, 0)] != data.catalog["id"].to_numpy())
        if wrong.any():
            raise DataError(f"{self._file(data)}: {int(wrong.sum())} spectra belong to other ids than the catalog rows "
                            f"that point at them (e.g. id {int(data.catalog['id'].to_numpy()[wrong][0])}).")

    def open(self, data: StoredData) -> Any:
        import h5py

        with h5py.File(self._file(data), "r") as h5:
            length = len(h5["wavelength"])
        return SpectrumRows(self._file(data), data.catalog[ROW].to_numpy(np.int64), length)

    def load(self, state: Any, obj: StoredObject) -> Any:
        return torch.from_numpy(state.read(obj.i))

    def stats(self, data: StoredData) -> dict:
        """The wavelength grid (nm) and the median |flux| of good pixels of (at most 512) training spectra."""
        import h5py

        state = self.open(data)
        with h5py.File(self._file(data), "r") as h5:
            wave = np.asarray(h5["wavelength"][:], dtype=np.float64)
        have = np.flatnonzero(state.rows >= 0)[:SCALE_SAMPLE]
        good = [s[0][s[2] == 0] for s in (state.read(int(i)) for i in have)]
        values = np.abs(np.concatenate(good)) if good else np.zeros(0)
        scale = float(np.median(values)) if values.size else 1.0
        return {f"{self.name}_wavelength": wave.tolist(), f"{self.name}_flux_scale": scale if scale > 0 else 1.0}


class SpectrumEncoder(Encoder):
    """(B, 3, L) -> ``channels`` strided Conv1d blocks (kernel ``kernel``, stride 2, GELU, GroupNorm per
    object) -> mean and max over wavelength -> Linear to ``embed_dim``."""

    def __init__(self, name: str, data: DataInfo, channels: Sequence[int] = (16, 32, 64), kernel: int = 5,
                 embed_dim: int = 64, flux_scale: Optional[float] = None, dropout: float = 0.0) -> None:
        super().__init__(name, data)
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or int(kernel) < 1 or int(embed_dim) < 1:
            raise ConfigError(f"encoders.{name}: channels (one or more, each >= 1), kernel >= 1 and embed_dim >= 1 "
                              f"(got {channels}, {kernel}, {embed_dim}).")
        scale = float(flux_scale) if flux_scale is not None else float(data.stats.get(f"{name}_flux_scale", 1.0))
        if not scale > 0:
            raise ConfigError(f"encoders.{name}.flux_scale must be positive (got {scale}).")
        self.register_buffer("flux_scale", torch.tensor(scale, dtype=torch.float32))
        self.n_pixels = len(data.stats.get(f"{name}_wavelength") or ())  # 0: not known, not checked
        self.embed_dim = int(embed_dim)
        layers: list[nn.Module] = []
        width = 3
        for c in channels:
            layers += [nn.Conv1d(width, c, int(kernel), stride=2, padding=int(kernel) // 2), nn.GELU(), nn.GroupNorm(1, c)]
            width = c
        self.net = nn.Sequential(*layers)
        self.drop = nn.Dropout(float(dropout)) if dropout else nn.Identity()
        self.out = nn.Linear(2 * width, self.embed_dim)

    @classmethod
    def field(cls, name: str, options: Mapping[str, Any]) -> Field:
        return SpectrumField(name)

    def good(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the good pixels (mask 0, ivar > 0, flux finite)."""
        if x.dim() != 3 or x.shape[1] != 3 or (self.n_pixels and x.shape[2] != self.n_pixels):
            length = self.n_pixels or "L"
            raise DataError(f"modality '{self.modality}': got shape {tuple(x.shape)}, expected (batch, 3 (flux, ivar, "
                            f"mask), {length}) on the wavelength grid the model was trained on.")
        return (x[:, 2] == 0) & (x[:, 1] > 0) & torch.isfinite(x[:, 0]) & torch.isfinite(x[:, 1])

    def present(self, x: torch.Tensor) -> torch.Tensor:
        return self.good(x).any(dim=1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, L) network input: scaled flux, scaled sigma^-1 and the good-pixel indicator, 0 where bad."""
        good = self.good(x)
        zero = torch.zeros((), dtype=self.flux_scale.dtype, device=x.device)
        flux = torch.where(good, torch.asinh(x[:, 0] / self.flux_scale), zero)
        weight = torch.where(good, torch.asinh(torch.sqrt(x[:, 1].clamp_min(0)) * self.flux_scale), zero)
        return torch.stack([flux, weight, good.to(flux.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(self.inputs(x))
        return self.out(self.drop(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)))
