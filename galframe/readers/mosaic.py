"""Large FITS mosaics with a WCS (``reader.mosaic``), read tile by tile through memory maps.

Layouts: one file with a ``(bands, H, W)`` cube (band names as for cutouts), one file with an image
HDU per band (``BAND``/``FILTER`` keywords), or a list of files, one per band (``path: [g.fits,
r.fits, z.fits]`` with ``bands: [g, r, z]`` when the headers do not name them).  Inverse-variance and
mask maps: extensions of the same file(s) (``IVAR``/``MASK`` names) or files given by ``ivar`` and
``mask``.  The mosaic is cut into ``tile_size`` tiles overlapping by ``overlap`` pixels (for
detection; each tile keeps its WCS), or into ``stamp_size`` cutouts at the ``centres`` of a
catalog (x, y or RA/Dec).  :func:`~galframe.readers.tiles.merge_tile_detections` removes the
duplicates the overlaps create.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np

from galframe.errors import DataError
from galframe.readers.base import StampError, list_files
from galframe.readers.fits import _band_of, _cube_bands, _role
from galframe.readers.tiles import PixelSource, TiledReader, TileGrid, merge_tile_detections
from galframe.readers.units import flux_factor

__all__ = ["MosaicReader", "FitsMosaic", "TileGrid", "merge_tile_detections"]  # the last two for detection tasks


def _open(path: str) -> Any:
    from astropy.io import fits

    try:
        return fits.open(path, memmap=True)
    except FileNotFoundError:
        raise DataError(f"{path}: mosaic file not found (data.path).") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot open the mosaic ({type(exc).__name__}: {exc})") from None


def _image_hdus(hdul: Any, role: str) -> list:
    return [h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 2 and _role(h) == role]


class FitsMosaic(PixelSource):
    """Band layers of a mosaic as memory-mapped HDUs: regions are read on demand."""

    def __init__(
        self,
        paths: Sequence[str],
        bands: Optional[Sequence[str]] = None,
        ivar: Optional[Sequence[str]] = None,
        mask: Optional[Sequence[str]] = None,
        units: Optional[str] = None,
        zeropoint: Optional[float] = None,
        mask_bits: Optional[int] = None,
    ) -> None:
        self.name = str(paths[0])
        self._hduls = [_open(p) for p in paths]
        images = [h for hdul in self._hduls for h in _image_hdus(hdul, "image")]
        if not images:
            raise DataError(f"{self.name}: no image HDU in the mosaic.")
        self.layers, names, self.factors = self._layers(images, bands, units, zeropoint)
        self.bands = tuple(names)
        shapes = {tuple(shape) for _, _, shape in self.layers}
        if len(shapes) != 1:
            raise DataError(f"{self.name}: the band images differ in size {sorted(shapes)}; a mosaic needs aligned bands.")
        self.height, self.width = next(iter(shapes))
        self.wcs = self._wcs(images[0].header)
        self.ivar_layers = self._extra(ivar, "ivar")
        self.mask_layers = self._extra(mask, "mask")
        self.mask_bits = mask_bits

    def _layers(self, images: list, bands: Optional[Sequence[str]], units: Optional[str], zp: Optional[float]) -> tuple:
        """[(hdu, index or None, (H, W))], band names and unit factors."""
        layers, names, factors = [], [], []
        if len(images) == 1 and images[0].header["NAXIS"] == 3:
            hdu = images[0]
            depth = hdu.header["NAXIS3"]
            names = _cube_bands(hdu.header, depth) or (list(bands) if bands else None)
            if names is None or len(names) != depth:
                raise DataError(f"{self.name}: a {depth}-band cube needs band names (BANDS/BAND0.. keywords or data.bands).")
            shape = (hdu.header["NAXIS2"], hdu.header["NAXIS1"])
            factor = self._factor(hdu.header, units, zp)
            return [(hdu, k, shape) for k in range(depth)], [str(n) for n in names], [factor] * depth
        for k, hdu in enumerate(images):
            if hdu.header["NAXIS"] != 2:
                raise DataError(f"{self.name}: image HDU {hdu.name or k} is {hdu.header['NAXIS']}-D; expected 2-D band images or one cube.")
            name = _band_of(hdu)
            if name is None:
                if bands and len(bands) == len(images):
                    name = str(bands[k])
                else:
                    raise DataError(f"{self.name}: image HDU {hdu.name or k} has no band name (BAND/FILTER keyword); set data.bands.")
            layers.append((hdu, None, (hdu.header["NAXIS2"], hdu.header["NAXIS1"])))
            names.append(name)
            factors.append(self._factor(hdu.header, units, zp))
        return layers, names, factors

    def _factor(self, header: Any, units: Optional[str], zp: Optional[float]) -> float:
        try:
            return flux_factor(header, units, zp)
        except StampError as exc:
            raise DataError(f"{self.name}: {exc}") from None

    def _wcs(self, header: Any) -> Any:
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            try:
                wcs = WCS(header, naxis=2)
            except Exception:
                return None
        return wcs.celestial if wcs.has_celestial else None

    def _extra(self, paths: Optional[Sequence[str]], role: str) -> Optional[list]:
        if paths:
            hdus = []
            for path in paths:
                hdul = _open(path)
                self._hduls.append(hdul)
                hdus += _image_hdus(hdul, role) or _image_hdus(hdul, "image")
        else:
            hdus = [h for hdul in self._hduls for h in _image_hdus(hdul, role)]
        if not hdus:
            return None
        if len(hdus) == 1 and hdus[0].header["NAXIS"] == 3:
            return [(hdus[0], k) for k in range(len(self.bands))]
        if len(hdus) == 1:
            return [(hdus[0], None)] * len(self.bands)
        by_band = {_band_of(h): h for h in hdus}
        if all(b in by_band for b in self.bands):
            return [(by_band[b], None) for b in self.bands]
        if len(hdus) == len(self.bands):
            return [(h, None) for h in hdus]
        raise DataError(f"{self.name}: {len(hdus)} {role} layers do not match the bands {list(self.bands)}.")

    @staticmethod
    def _section(hdu: Any, index: Optional[int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if index is None:
            return np.asarray(hdu.section[y0:y1, x0:x1], dtype=np.float32)
        return np.asarray(hdu.section[index, y0:y1, x0:x1], dtype=np.float32)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> tuple:
        try:
            flux = np.stack([self._section(h, i, y0, y1, x0, x1) for h, i, _ in self.layers])
            flux *= np.asarray(self.factors, dtype=np.float32)[:, None, None]
            ivar = mask = None
            if self.ivar_layers:
                ivar = np.stack([self._section(h, i, y0, y1, x0, x1) for h, i in self.ivar_layers])
                ivar /= (np.asarray(self.factors, dtype=np.float32) ** 2)[:, None, None]
            if self.mask_layers:
                raw = np.stack([self._section(h, i, y0, y1, x0, x1) for h, i in self.mask_layers])
                raw = np.nan_to_num(raw).astype(np.int64)
                mask = (raw & int(self.mask_bits)) != 0 if self.mask_bits is not None else raw != 0
        except (OSError, ValueError, TypeError) as exc:
            raise StampError(f"cannot read region [{y0}:{y1}, {x0}:{x1}] ({type(exc).__name__}: {exc})") from None
        return flux, ivar, mask

    def close(self) -> None:
        for hdul in self._hduls:
            hdul.close()


class MosaicReader(TiledReader):
    def __init__(
        self,
        path: Union[str, Sequence[str], None] = None,
        bands: Optional[Sequence[str]] = None,
        ivar: Union[str, Sequence[str], None] = None,
        mask: Union[str, Sequence[str], None] = None,
        units: Optional[str] = None,
        zeropoint: Optional[float] = None,
        mask_bits: Optional[int] = None,
        tile_size: Optional[int] = None,
        overlap: int = 16,
        centres: Optional[str] = None,
        stamp_size: Optional[int] = None,
        pixel_scale: Optional[float] = None,
        shard_size: int = 64,
    ) -> None:
        super().__init__(tile_size=tile_size, overlap=overlap, centres=centres, stamp_size=stamp_size, shard_size=shard_size)
        if path in (None, "", "???"):
            raise DataError("data.path is not set: give the mosaic FITS file (or one file per band).")
        self.paths = list_files(path, ("*.fits", "*.fits.fz", "*.fits.gz"))
        self.band_names = list(bands) if bands else None
        self.ivar_paths = [ivar] if isinstance(ivar, str) else (list(ivar) if ivar else None)
        self.mask_paths = [mask] if isinstance(mask, str) else (list(mask) if mask else None)
        self.units, self.zeropoint, self.mask_bits = units, zeropoint, mask_bits
        self.pixel_scale = pixel_scale
        # the source's bands are known up front: a band the model needs and the mosaic lacks is an error
        self.bands = self.source(self.paths[0]).bands

    def describe(self) -> str:
        return f"FITS mosaic {self.paths[0]}" + (f" (+{len(self.paths) - 1} band files)" if len(self.paths) > 1 else "")

    def source_names(self) -> list[str]:
        return [self.paths[0]]

    def open_source(self, name: str) -> PixelSource:
        return FitsMosaic(self.paths, self.band_names, self.ivar_paths, self.mask_paths, self.units, self.zeropoint, self.mask_bits)
