"""HDF5 image sets: the self-supervised DESI Legacy Surveys layout (``reader.hdf5``) and Galaxy10
DECaLS (``reader.galaxy10``).

DESI SSL layout: a dataset ``images`` of shape (N, bands, H, W) (or (N, H, W, bands)) in
nanomaggies, and catalog columns as 1-D datasets of length N (``ra``, ``dec``, ``z_phot_median``,
``flux_r``, ...).  Band names come from an ``images.attrs['bands']`` (or file) attribute, else
``bands`` (default g, r, z).  Ids from ``id_column`` (default: the first of ``id``, ``objid``,
``inds``, ``targetid`` present), else ``<file stem>:<row>``.  Rows are read shard by shard, so
memory stays flat however large the file.

Galaxy10 DECaLS: ``images`` (N, 256, 256, 3) uint8 RGB rendered from g, r, z (0.262"/pixel), ``ans``
the class (0-9), ``ra``, ``dec``, ``redshift``, ``pxscale``.  Pixels are converted to pseudo-flux as
for PNG/JPEG images (R, G, B = z, r, g by default): they are not calibrated flux.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from galframe.errors import DataError
from galframe.readers.base import Reader, Reject, Shard, Stamp, StampError, file_id, file_stat, fingerprint, list_files
from galframe.readers.image import RGBConversion
from galframe.readers.units import flux_factor

ID_COLUMNS = ("id", "objid", "inds", "targetid", "iauname")
from galframe.sim.votes import GALAXY10 as GALAXY10_CLASSES  # noqa: E402  (Galaxy10 DECaLS label order)


def _open_h5(path: str) -> Any:
    import h5py

    if not os.path.lexists(path):
        raise DataError(f"{path}: HDF5 file not found (data.path).")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StampError(f"unreadable HDF5 ({exc})") from None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


class Hdf5Reader(Reader):
    images_key = "images"
    default_bands: tuple[str, ...] = ("g", "r", "z")

    def __init__(
        self,
        path: Any = None,
        images: str = "images",
        bands: Optional[Sequence[str]] = None,
        ivar: Optional[str] = None,
        mask: Optional[str] = None,
        id_column: Optional[str] = None,
        columns: Union[str, Sequence[str], None] = "all",
        units: Optional[str] = None,
        zeropoint: Optional[float] = None,
        pixel_scale: Optional[float] = 0.262,
        shard_size: int = 1024,
    ) -> None:
        super().__init__(shard_size)
        self.paths = list_files(path, ("*.h5", "*.hdf5", "*.hdf"))
        self.images_key = images
        self.ivar_key, self.mask_key = ivar, mask
        self.id_column = id_column
        self.columns = columns
        self.units, self.zeropoint = units, zeropoint
        self.pixel_scale = pixel_scale
        self._layout: dict[str, dict] = {}
        self.bands = self._bands_of(self.paths[0], bands)
        for p in self.paths[1:]:
            if os.path.isfile(p):
                other = self._bands_of(p, bands, quiet=True)
                if other is not None and other != self.bands:
                    raise DataError(f"{p}: bands {list(other)} differ from {self.paths[0]}'s {list(self.bands)}.")

    def describe(self) -> str:
        return f"HDF5 images at {self.paths[0]}" + (f" (+{len(self.paths) - 1} files)" if len(self.paths) > 1 else "")

    # -- layout -----------------------------------------------------------------------------------
    def _bands_of(self, path: str, bands: Optional[Sequence[str]], quiet: bool = False) -> Optional[tuple[str, ...]]:
        try:
            layout = self.layout(path)
        except StampError as exc:
            if quiet:
                return None
            raise DataError(f"{path}: {exc}") from None
        names = layout["bands"] or (list(bands) if bands else list(self.default_bands))
        if len(names) != layout["n_bands"]:
            raise DataError(
                f"{path}: '{self.images_key}' has {layout['n_bands']} band(s) per image, but the band names are {list(names)} "
                "(set data.bands)."
            )
        return tuple(str(b) for b in names)

    def layout(self, path: str) -> dict:
        if path in self._layout:
            return self._layout[path]
        with _open_h5(path) as h5:
            if self.images_key not in h5:
                raise StampError(f"no '{self.images_key}' dataset (it has {sorted(h5.keys())[:12]})")
            ds = h5[self.images_key]
            if ds.ndim != 4:
                raise StampError(f"wrong shape: '{self.images_key}' is {ds.shape}; expected (N, bands, H, W) or (N, H, W, bands)")
            channels_last = ds.shape[3] <= 16 and ds.shape[1] > 16
            n = int(ds.shape[0])
            attr = ds.attrs.get("bands", h5.attrs.get("bands"))
            names = [_decode(b) for b in attr] if attr is not None else None
            if isinstance(attr, (str, bytes)):
                text = _decode(attr)
                names = text.split(",") if "," in text else list(text)
            cols = [
                k for k, v in h5.items()
                if k not in (self.images_key, self.ivar_key, self.mask_key)
                and hasattr(v, "shape") and len(v.shape) == 1 and v.shape[0] == n
            ]
            units = ds.attrs.get("units", ds.attrs.get("BUNIT", h5.attrs.get("units")))
            header = {"BUNIT": _decode(units)} if units is not None else {}
            for key in ("zeropoint", "ZP", "MAGZERO"):
                if key in ds.attrs or key in h5.attrs:
                    header["MAGZERO"] = float(ds.attrs.get(key, h5.attrs.get(key)))
            info = {
                "n": n,
                "n_bands": int(ds.shape[3] if channels_last else ds.shape[1]),
                "channels_last": channels_last,
                "bands": names,
                "columns": cols,
                "header": header,
                "dtype": ds.dtype,
            }
        self._layout[path] = info
        return info

    def shards(self) -> list[Shard]:
        out = []
        for f, path in enumerate(self.paths):
            stat = file_stat(path)
            try:
                n = self.layout(path)["n"]
            except StampError as exc:
                out.append(Shard(key=f"{f:04d}-bad", items=(path, 0, 0, str(exc)), n=0, fingerprint=fingerprint([stat])))
                continue
            for k, start in enumerate(range(0, n, self.shard_size)):
                stop = min(start + self.shard_size, n)
                out.append(Shard(key=f"{f:04d}-{k:06d}", items=(path, start, stop, None), n=stop - start,
                                 fingerprint=fingerprint([stat, start, stop])))
        return out

    # -- reading ----------------------------------------------------------------------------------
    def _id_column(self, cols: Sequence[str]) -> Optional[str]:
        if self.id_column:
            if self.id_column not in cols:
                raise DataError(f"{self.paths[0]}: id column '{self.id_column}' not found; columns: {list(cols)[:20]}.")
            return self.id_column
        return next((c for c in ID_COLUMNS if c in cols), None)

    def _wanted(self, cols: Sequence[str]) -> list[str]:
        if self.columns in (None, "none"):
            return [c for c in cols if c in ("ra", "dec")]
        if self.columns == "all":
            return list(cols)
        return [c for c in cols if c in set(self.columns) | {"ra", "dec"}]

    def convert(self, pixels: np.ndarray, layout: dict) -> np.ndarray:
        """(n, bands, H, W) float32 nanomaggies from the stored images."""
        arr = np.asarray(pixels)
        if layout["channels_last"]:
            arr = np.moveaxis(arr, -1, 1)
        try:
            factor = flux_factor(layout["header"], self.units, self.zeropoint)
        except StampError as exc:
            raise DataError(f"{self.paths[0]}: {exc}") from None
        return arr.astype(np.float32) * np.float32(factor)

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        path, start, stop, problem = shard.items
        if problem is not None:
            yield Reject(source=path, reason=problem, id=None)
            return
        layout = self.layout(path)
        try:
            h5 = _open_h5(path)
        except StampError as exc:
            yield Reject(source=path, reason=str(exc))
            return
        with h5:
            try:
                pixels = h5[self.images_key][start:stop]
                ivar = np.asarray(h5[self.ivar_key][start:stop], dtype=np.float32) if self.ivar_key and self.ivar_key in h5 else None
                mask = np.asarray(h5[self.mask_key][start:stop]) if self.mask_key and self.mask_key in h5 else None
                id_col = self._id_column(layout["columns"])
                cols = {c: h5[c][start:stop] for c in self._wanted(layout["columns"])}
                ids = h5[id_col][start:stop] if id_col else None
            except (OSError, KeyError) as exc:
                yield Reject(source=path, reason=f"cannot read rows {start}..{stop} ({exc})")
                return
        flux = self.convert(pixels, layout)
        factor = None
        if ivar is not None:
            factor = flux_factor(layout["header"], self.units, self.zeropoint)
            ivar = ivar / np.float32(factor * factor)
        if layout["channels_last"]:
            ivar = np.moveaxis(ivar, -1, 1) if ivar is not None and ivar.ndim == 4 else ivar
            mask = np.moveaxis(mask, -1, 1) if mask is not None and mask.ndim == 4 else mask
        stem = file_id(path)
        for k in range(stop - start):
            oid = str(_decode(ids[k])) if ids is not None else f"{stem}:{start + k}"
            meta = {c: _decode(v[k]) for c, v in cols.items()}
            meta.setdefault("ra", float("nan"))
            meta.setdefault("dec", float("nan"))
            meta["source"] = path
            meta["row"] = start + k
            try:
                yield self.stamp(oid, flux[k], ivar[k] if ivar is not None else None, mask[k] if mask is not None else None, meta)
            except StampError as exc:
                yield Reject(source=f"{path}[{start + k}]", reason=str(exc), id=oid)

    def stamp(self, oid: str, flux: np.ndarray, ivar: Any, mask: Any, meta: dict) -> Stamp:
        return Stamp(id=oid, flux=flux, bands=self.bands, ivar=ivar, mask=mask, meta=meta)


class Galaxy10Reader(Hdf5Reader):
    """Galaxy10 DECaLS: 8-bit RGB stamps with a class (``ans``) each."""

    classes = GALAXY10_CLASSES

    def __init__(
        self,
        path: Any = None,
        rgb_bands: Sequence[str] = ("z", "r", "g"),
        stretch: str = "asinh",
        q: float = 10.0,
        white: Any = None,
        black: float = 0.0,
        columns: Union[str, Sequence[str], None] = "all",
        pixel_scale: Optional[float] = 0.262,
        shard_size: int = 512,
    ) -> None:
        self.conversion = RGBConversion(rgb_bands, stretch, q, white, black)
        super().__init__(path=path, images="images", bands=self.conversion.rgb_bands, id_column=None, columns=columns,
                         pixel_scale=pixel_scale, shard_size=shard_size)

    def describe(self) -> str:
        return f"Galaxy10 DECaLS at {self.paths[0]}"

    def layout(self, path: str) -> dict:
        info = super().layout(path)
        if "ans" not in info["columns"]:
            raise StampError("no 'ans' dataset (the class of each image): not a Galaxy10 DECaLS file")
        return info

    def convert(self, pixels: np.ndarray, layout: dict) -> np.ndarray:
        arr = np.asarray(pixels)
        if not layout["channels_last"]:
            arr = np.moveaxis(arr, 1, -1)
        return np.stack([self.conversion(im) for im in arr]) if len(arr) else np.zeros((0, 3, 1, 1), np.float32)

    def stamp(self, oid: str, flux: np.ndarray, ivar: Any, mask: Any, meta: dict) -> Stamp:
        ans = meta.pop("ans", None)
        if ans is not None:
            k = int(ans)
            if not 0 <= k < len(self.classes):
                raise StampError(f"class index ans={k} outside 0..{len(self.classes) - 1}")
            meta["class"] = k
            meta["class_name"] = self.classes[k]
        return Stamp(id=oid, flux=flux, bands=self.bands, meta=meta)
