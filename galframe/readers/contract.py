"""The reader contract (re-exported by :mod:`galframe.api`): what a ``reader`` plugin yields.

A reader turns survey files into :class:`Stamp` objects: an id, a ``(bands, H, W)`` float32 cube in
calibrated flux (nanomaggies, zero point 22.5, the unit of the simulations), the band names, an
optional inverse variance and mask, and metadata (RA/Dec, the source file, catalog columns).
Plugins import these names from ``galframe.api``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

#: reader-config keys the pipeline (predict, ingest) uses; the rest are the plugin's own options
READER_CORE_KEYS = ("plugin", "fit", "rebin", "fill", "max_bad_fraction")


class StampError(Exception):
    """A problem with one object (or one file): it becomes a reject with this message as the reason."""


@dataclass
class Stamp:
    """One object a reader yields: ``flux`` (bands, H, W) float32 in nanomaggies (zero point 22.5)."""

    id: str
    flux: np.ndarray  # (bands, H, W) float32, nanomaggies
    bands: tuple[str, ...]
    ivar: Optional[np.ndarray] = None  # same shape (or (H, W)), 1 / nanomaggies^2; 0 = no data
    mask: Optional[np.ndarray] = None  # bool, same shape or (H, W); True = bad pixel
    meta: dict = field(default_factory=dict)  # ra, dec, source, catalog columns; non-scalars are not written out


@dataclass
class Reject:
    """An object that could not be read: where, why, and its id when known."""

    source: str
    reason: str
    id: Optional[str] = None


@dataclass(frozen=True)
class Shard:
    """A unit of work: ``key`` names it (stable across runs), ``items`` is what the reader needs to read
    it, ``n`` the number of objects expected and ``fingerprint`` changes when its inputs change."""

    key: str
    items: tuple
    n: int
    fingerprint: str


def fingerprint(parts: Iterable[Any]) -> str:
    """A short hash of ``parts`` (file stats, row ranges): it changes when the inputs change."""
    h = hashlib.sha1()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_stat(path: str) -> tuple:
    """(path, size, mtime) of a file, for fingerprints; (path, "missing") when it is gone."""
    try:
        st = os.stat(path)
        return (path, st.st_size, st.st_mtime_ns)
    except OSError:
        return (path, "missing")


class Reader:
    """Base class of reader plugins (entry points ``reader.<name>``): survey files to :class:`Stamp` s.

    A reader works in *shards* (a group of files, or a range of rows) so that ``galframe predict`` can
    stream any number of objects with flat memory and skip finished shards after a restart.
    Subclasses implement :meth:`shards` (cheap and deterministic: it is called again on a restart)
    and :meth:`read` (or derive from :class:`RowReader`).  Per-object problems are :class:`Reject` s
    with a reason (raise :class:`StampError` in helpers); problems with the whole source are
    :class:`~galframe.errors.DataError` s.  The pipeline then matches bands by name, masks bad pixels
    and cuts each stamp to the model's size (``fit``, ``rebin``, ``fill``, ``max_bad_fraction``:
    :data:`READER_CORE_KEYS`, the config keys that are not the plugin's own options).
    ``bands`` is set when every object of the source has the same bands (a missing band is then an
    error for the whole source instead of a reject per object).
    """

    kind: ClassVar[str] = "reader"
    bands: Optional[tuple[str, ...]] = None
    #: class names, when the source carries labels (``class`` in the metadata is an index into them)
    classes: tuple[str, ...] = ()
    #: a Galaxy Zoo style vote schema, when the source carries vote counts
    votes: Optional[dict] = None
    #: arcsec per pixel, when known
    pixel_scale: Optional[float] = None

    def __init__(self, shard_size: int = 256) -> None:
        from galframe.errors import ConfigError

        self.shard_size = int(shard_size)
        if self.shard_size < 1:
            raise ConfigError(f"data.shard_size must be at least 1 (got {shard_size}).")
        self.target_bands: Optional[tuple[str, ...]] = None
        self.target_size: Optional[int] = None

    def bind(self, bands: Sequence[str], image_size: int) -> None:
        """Called before :meth:`shards` with the bands and stamp size the consumer (a model) wants."""
        from galframe.errors import DataError

        self.target_bands = tuple(str(b) for b in bands)
        self.target_size = int(image_size)
        if self.bands is not None:
            missing = [b for b in self.target_bands if b not in self.bands]
            if missing:
                raise DataError(
                    f"{self.describe()}: has bands {list(self.bands)}, which lack {missing} needed by the model "
                    f"(bands {list(self.target_bands)})."
                )

    def describe(self) -> str:
        return type(self).__name__

    def shards(self) -> list[Shard]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- hooks used by predict for tiled sources ----------------------------------------------
    def tile_grid(self, source: str) -> Any:
        """The :class:`~galframe.readers.tiles.TileGrid` of a tiled source (for de-duplicating detections)."""
        return None

    def pixel_to_world(self, source: str, x: np.ndarray, y: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """RA/Dec (degrees) of pixel positions of a source with a WCS, else None."""
        return None


class RowReader(Reader):
    """A reader of objects addressed by row (a table, an array file): write :meth:`n_rows` and
    :meth:`read_rows`; shards of ``shard_size`` rows, their keys and fingerprints come from here.
    Override :meth:`fingerprint_parts` to name what the rows are read from (``[file_stat(path)]``), so
    that a changed source is read again instead of being skipped as finished."""

    def n_rows(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_rows(self, start: int, stop: int) -> Iterable[Union[Stamp, Reject]]:  # pragma: no cover - abstract
        """The objects of rows ``start`` to ``stop`` (exclusive), one Stamp or Reject per row."""
        raise NotImplementedError

    def fingerprint_parts(self) -> Sequence[Any]:
        return ()

    def shards(self) -> list[Shard]:
        n, parts = int(self.n_rows()), list(self.fingerprint_parts())
        out = []
        for k, start in enumerate(range(0, n, self.shard_size)):
            stop = min(start + self.shard_size, n)
            out.append(Shard(key=f"{k:06d}", items=(start, stop), n=stop - start,
                             fingerprint=fingerprint([*parts, start, stop])))
        return out

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        start, stop = shard.items
        yield from self.read_rows(start, stop)
