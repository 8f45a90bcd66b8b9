"""Large images as overlapping tiles (or cutouts at given centres), and de-duplication of detections.

A :class:`TileGrid` covers an H x W image with ``size`` x ``size`` tiles overlapping by at least
``overlap`` pixels (the last tile of a row/column is aligned with the image edge, so no tile hangs
over it unless the image is smaller than a tile).  Each tile *owns* the part of the image closer
to its centre than to its neighbours' (the overlaps are split down the middle), so the owned
regions partition the image.

:func:`~galframe.readers.detections.merge_tile_detections` (importable from here too) turns per-tile
detections (boxes in tile pixels) into one list in image pixels without the duplicates that tile overlaps create.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError
from galframe.readers.base import Reader, Reject, Shard, Stamp, StampError, chunked, file_id, file_stat, fingerprint
from galframe.readers.detections import merge_tile_detections  # noqa: F401  (detection merging, next to tiling)


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Tile origins along one axis: step ``size - overlap``, the last one flush with the edge."""
    if size < 1:
        raise ConfigError(f"tile size must be positive (got {size}).")
    if not 0 <= overlap < size:
        raise ConfigError(f"tile overlap must be in [0, tile size) (got overlap {overlap}, size {size}).")
    if length <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


@dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    size: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def make(cls, height: int, width: int, size: int, overlap: int) -> "TileGrid":
        return cls(
            int(height), int(width), int(size), int(overlap),
            tuple(tile_starts(height, size, overlap)), tuple(tile_starts(width, size, overlap)),
        )

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def tiles(self) -> Iterator[tuple[int, int]]:
        """(y0, x0) of every tile, row by row."""
        for y0 in self.ys:
            for x0 in self.xs:
                yield y0, x0

    def _bounds(self, starts: tuple[int, ...], start: int) -> tuple[float, float]:
        i = starts.index(start)
        lo = (start + starts[i - 1] + self.size) / 2.0 if i > 0 else -math.inf
        hi = (starts[i + 1] + start + self.size) / 2.0 if i + 1 < len(starts) else math.inf
        return lo, hi

    def owned(self, y0: int, x0: int) -> tuple[float, float, float, float]:
        """(y_lo, y_hi, x_lo, x_hi) in image pixels of the region tile (y0, x0) owns."""
        return (*self._bounds(self.ys, y0), *self._bounds(self.xs, x0))

    def owns(self, y0: np.ndarray, x0: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether each point (y, x) (image pixels) lies in the region its tile (y0, x0) owns."""
        out = np.zeros(len(y), dtype=bool)
        for k in range(len(y)):
            ylo, yhi, xlo, xhi = self.owned(int(y0[k]), int(x0[k]))
            out[k] = ylo <= y[k] < yhi and xlo <= x[k] < xhi
        return out


# -- pixel sources: cut a region out of a large image --------------------------------------------------
class PixelSource:
    """A (bands, H, W) image that can be cut region by region (subclasses read lazily)."""

    name: str = ""
    bands: tuple[str, ...] = ()
    height: int = 0
    width: int = 0
    wcs: Any = None

    def region(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """(flux, ivar, mask) of the in-bounds region [y0:y1, x0:x1]."""
        raise NotImplementedError

    def cut(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """A (bands, h, w) cutout at origin (y0, x0); pixels outside the image are zero and masked."""
        ya, yb = max(y0, 0), min(y0 + h, self.height)
        xa, xb = max(x0, 0), min(x0 + w, self.width)
        if ya >= yb or xa >= xb:
            raise StampError(f"cutout at (y={y0}, x={x0}) size {h}x{w} lies outside the {self.height}x{self.width} image")
        flux, ivar, mask = self.region(ya, yb, xa, xb)
        nb = len(self.bands)
        if (ya, yb, xa, xb) == (y0, y0 + h, x0, x0 + w):
            full_mask = np.zeros((nb, h, w), dtype=bool) if mask is None else np.broadcast_to(mask, (nb, h, w)).copy()
            return np.asarray(flux, dtype=np.float32), ivar, full_mask
        out = np.zeros((nb, h, w), dtype=np.float32)
        out_mask = np.ones((nb, h, w), dtype=bool)
        out_ivar = np.zeros((nb, h, w), dtype=np.float32) if ivar is not None else None
        sl = (slice(None), slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        out[sl] = flux
        out_mask[sl] = False if mask is None else np.broadcast_to(mask, out[sl].shape)
        if out_ivar is not None:
            out_ivar[sl] = ivar
        return out, out_ivar, out_mask

    def pixel_to_world(self, x: np.ndarray, y: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        if self.wcs is None:
            return None
        ra, dec = self.wcs.all_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
        return np.asarray(ra), np.asarray(dec)

    def world_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.wcs is None:
            raise DataError(f"{self.name}: centres given as RA/Dec, but the image has no celestial WCS; give x, y.")
        x, y = self.wcs.all_world2pix(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float), 0)
        return np.asarray(x), np.asarray(y)

    def tile_wcs(self, y0: int, x0: int, h: int, w: int) -> Any:
        """The WCS of a cutout (the image's WCS shifted to the cutout's origin)."""
        if self.wcs is None:
            return None
        return self.wcs.slice((slice(y0, y0 + h), slice(x0, x0 + w)))


class ArraySource(PixelSource):
    def __init__(self, name: str, flux: np.ndarray, bands: Sequence[str], wcs: Any = None) -> None:
        self.name, self.flux, self.bands, self.wcs = name, flux, tuple(bands), wcs
        self.height, self.width = int(flux.shape[1]), int(flux.shape[2])

    def region(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, None, None]:
        return self.flux[:, y0:y1, x0:x1], None, None


def read_centres(path: Any) -> Any:
    """A table of cutout centres (CSV or Parquet): ``x``, ``y`` (0-based pixels) or ``ra``, ``dec`` (deg);
    an ``id`` column names the objects; other columns are carried into the catalog."""
    import pandas as pd

    file = os.path.expanduser(str(path))
    if not os.path.isfile(file):
        raise DataError(f"{file}: centres file not found (data.centres).")
    try:
        frame = pd.read_parquet(file) if file.endswith(".parquet") else pd.read_csv(file)
    except Exception as exc:
        raise DataError(f"{file}: cannot read the centres table ({type(exc).__name__}: {exc})") from exc
    if not ({"x", "y"} <= set(frame.columns) or {"ra", "dec"} <= set(frame.columns)):
        raise DataError(f"{file}: the centres table needs columns x, y (pixels) or ra, dec (degrees); it has {list(frame.columns)}.")
    return frame.reset_index(drop=True)


class TiledReader(Reader):
    """A reader of large images, each cut into overlapping tiles or into cutouts at given centres.

    Subclasses implement :meth:`source_names` and :meth:`open_source`."""

    def __init__(
        self,
        tile_size: Optional[int] = None,
        overlap: int = 16,
        centres: Optional[str] = None,
        stamp_size: Optional[int] = None,
        shard_size: int = 64,
    ) -> None:
        super().__init__(shard_size)
        self.tile_size = tile_size
        self.overlap = int(overlap)
        self.centres = centres
        self.stamp_size = stamp_size
        self._open: dict[str, PixelSource] = {}
        self._centre_table: Any = None

    # subclasses
    def source_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def open_source(self, name: str) -> PixelSource:  # pragma: no cover - abstract
        raise NotImplementedError

    # shared
    def source(self, name: str) -> PixelSource:
        if name not in self._open:
            if len(self._open) > 2:  # keep few files open: memory stays flat over many images
                self._open.pop(next(iter(self._open)))
            self._open[name] = self.open_source(name)
        return self._open[name]

    def _size(self, value: Optional[int], what: str) -> int:
        size = value if value is not None else self.target_size
        if size is None:
            raise ConfigError(f"data.{what} is not set and no model size is known.")
        return int(size)

    def tile_grid(self, source: str) -> Optional[TileGrid]:
        if self.centres is not None:
            return None
        src = self.source(source)
        return TileGrid.make(src.height, src.width, self._size(self.tile_size, "tile_size"), self.overlap)

    def pixel_to_world(self, source: str, x: np.ndarray, y: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        return self.source(source).pixel_to_world(x, y)

    def shards(self) -> list[Shard]:
        names = self.source_names()
        stats = {n: file_stat(n) for n in names}
        if self.centres is not None:
            if len(names) != 1:
                raise ConfigError(f"data.centres needs exactly one image; data.path gives {len(names)}.")
            table = self._centres()
            rows = list(range(len(table)))
            fp = file_stat(os.path.expanduser(str(self.centres)))
            return [
                Shard(key=f"{k:06d}", items=tuple(("c", names[0], r) for r in chunk), n=len(chunk),
                      fingerprint=fingerprint([stats[names[0]], fp, chunk[0], len(chunk), self._size(self.stamp_size, "stamp_size")]))
                for k, chunk in chunked(rows, self.shard_size)
            ]
        items: list[tuple] = []
        for name in names:
            try:
                grid = self.tile_grid(name)
            except StampError as exc:
                items.append(("bad", name, str(exc)))
                continue
            items.extend(("t", name, y0, x0) for y0, x0 in grid.tiles())
        return [
            Shard(key=f"{k:06d}", items=tuple(chunk), n=len(chunk),
                  fingerprint=fingerprint([*dict.fromkeys(stats[c[1]] for c in chunk), chunk[0], chunk[-1], len(chunk), self.tile_size, self.overlap]))
            for k, chunk in chunked(items, self.shard_size)
        ]

    def _centres(self) -> Any:
        if self._centre_table is None:
            self._centre_table = read_centres(self.centres)
        return self._centre_table

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        for item in shard.items:
            kind, name = item[0], item[1]
            if kind == "bad":
                yield Reject(source=name, reason=item[2], id=file_id(name))
                continue
            try:
                src = self.source(name)
            except StampError as exc:
                yield Reject(source=name, reason=str(exc), id=file_id(name))
                continue
            if kind == "t":
                y0, x0 = item[2], item[3]
                size = self._size(self.tile_size, "tile_size")
                oid = f"{file_id(name)}:{y0}:{x0}"
                meta = {"source": name, "tile_y0": y0, "tile_x0": x0, "x": x0 + (size - 1) / 2.0, "y": y0 + (size - 1) / 2.0}
                h = w = size
            else:
                row = self._centres().iloc[item[2]]
                size = self._size(self.stamp_size, "stamp_size")
                oid = str(row["id"]) if "id" in row and row["id"] is not None else f"{file_id(name)}:{item[2]}"
                if "x" in row and "y" in row and np.isfinite(row["x"]) and np.isfinite(row["y"]):
                    x, y = float(row["x"]), float(row["y"])
                else:
                    xs, ys = src.world_to_pixel([row["ra"]], [row["dec"]])
                    x, y = float(xs[0]), float(ys[0])
                if not (np.isfinite(x) and np.isfinite(y)):
                    yield Reject(source=name, reason="centre lies outside the image (no pixel position)", id=oid)
                    continue
                y0, x0 = int(math.floor(y + 0.5)) - size // 2, int(math.floor(x + 0.5)) - size // 2
                meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items() if k != "id"}
                meta.update({"source": name, "x": x, "y": y, "tile_y0": y0, "tile_x0": x0})
                h = w = size
            try:
                flux, ivar, mask = src.cut(y0, x0, h, w)
            except StampError as exc:
                yield Reject(source=name, reason=str(exc), id=oid)
                continue
            if "ra" not in meta or meta.get("ra") is None:
                world = src.pixel_to_world([meta["x"]], [meta["y"]])
                meta["ra"], meta["dec"] = (float(world[0][0]), float(world[1][0])) if world else (float("nan"), float("nan"))
            meta["wcs"] = src.tile_wcs(y0, x0, h, w)  # not a catalog column: for detection tasks
            yield Stamp(id=oid, flux=flux, bands=src.bands, ivar=ivar, mask=mask, meta=meta)
