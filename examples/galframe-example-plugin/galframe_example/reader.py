"""NpyReader: objects from a NumPy array file, written against galframe's reader contract only.

It shows what a reader must provide when its objects are rows of something (a table, an array):
derive from ``galframe.api.RowReader`` and write ``n_rows()`` and ``read_rows(start, stop)``;
galframe cuts the rows into shards (the unit ``galframe predict`` resumes by), names them and
fingerprints them with ``fingerprint_parts()``.  Each row becomes a ``Stamp`` in nanomaggies, or a
``Reject`` with a reason when that one object cannot be used.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from galframe.api import Reject, RowReader, Stamp, file_stat
from galframe.errors import ConfigError, DataError


class NpyReader(RowReader):
    """A ``.npy`` file of shape (objects, bands, H, W); ``scale`` turns its values into nanomaggies."""

    def __init__(self, path: Optional[str] = None, bands: Sequence[str] = ("g", "r", "z"), scale: float = 1.0,
                 ids: Optional[str] = None, shard_size: int = 256) -> None:
        super().__init__(shard_size)
        if path in (None, "", "???"):
            raise ConfigError("data.path is not set: give the .npy file (data.path=cube.npy).")
        self.path = os.path.expanduser(str(path))
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: no such file (data.path).")
        try:
            self.array = np.load(self.path, mmap_mode="r")  # rows are read on demand
        except Exception as exc:
            raise DataError(f"{self.path}: not a NumPy array file ({type(exc).__name__}: {exc})") from exc
        self.bands = tuple(str(b) for b in bands)
        if self.array.ndim != 4 or self.array.shape[1] != len(self.bands):
            raise DataError(
                f"{self.path}: array of shape {self.array.shape}; expected (objects, {len(self.bands)} bands {list(self.bands)}, H, W)."
            )
        self.scale = float(scale)
        self.ids = None if ids is None else [str(i) for i in np.loadtxt(os.path.expanduser(str(ids)), dtype=str, ndmin=1)]
        if self.ids is not None and len(self.ids) != len(self.array):
            raise DataError(f"{ids}: {len(self.ids)} ids for {len(self.array)} objects in {self.path} (data.ids).")

    def describe(self) -> str:
        return f"NumPy file {self.path}"

    def n_rows(self) -> int:
        return int(self.array.shape[0])

    def fingerprint_parts(self) -> list:
        return [file_stat(self.path)]  # a rewritten file is read again, not skipped as done

    def read_rows(self, start: int, stop: int) -> Iterator[Union[Stamp, Reject]]:
        for row in range(start, stop):
            oid = self.ids[row] if self.ids is not None else str(row)
            flux = np.asarray(self.array[row], dtype=np.float32) * self.scale
            if not np.isfinite(flux).any():
                yield Reject(source=f"{self.path}[{row}]", reason="no finite pixel", id=oid)
                continue
            yield Stamp(id=oid, flux=flux, bands=self.bands, meta={"source": self.path, "row": row})
