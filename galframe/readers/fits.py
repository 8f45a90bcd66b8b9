"""FITS cutouts, one file per object (``reader.fits``).

A file holds either a ``(bands, H, W)`` cube (band names from ``BANDS = 'grz'`` / ``'g,r,z'`` or
``BAND0``, ``BAND1``, ... as the Legacy Surveys cutout service writes them) or one image HDU per
band (``BAND`` or ``FILTER`` keyword, or an extension name like ``IMAGE_G``).  Extensions named
``IVAR``/``INVVAR``/``WEIGHT`` (optionally ``_<band>``) are inverse variances; ``MASK``,
``MASKBITS``, ``BITMASK`` or ``DQ`` are masks (nonzero = bad, or ``mask_bits`` to pick bits).
Flux units come from ``BUNIT`` or a zero-point keyword (see :mod:`galframe.readers.units`);
RA/Dec from the celestial WCS at the stamp centre, else ``RA``/``DEC`` keywords.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from galframe.readers.base import Reader, Reject, Shard, Stamp, StampError, chunked, file_id, file_stat, fingerprint, list_files
from galframe.readers.units import flux_factor

PATTERNS = ("*.fits", "*.fit", "*.fits.gz", "*.fits.fz", "*.fts")
IVAR_NAMES = ("IVAR", "INVVAR", "WEIGHT", "WHT")
MASK_NAMES = ("MASK", "MASKBITS", "BITMASK", "DQ", "FLAGS")
BAND_KEYS = ("BAND", "FILTER", "FILTNAME")


def _role(hdu: Any) -> str:
    name = str(hdu.name or "").upper()
    base = re.split(r"[_\-]", name)[0] if name else ""
    if base in IVAR_NAMES or name in IVAR_NAMES:
        return "ivar"
    if base in MASK_NAMES or name in MASK_NAMES:
        return "mask"
    return "image"


def _band_of(hdu: Any) -> Optional[str]:
    for key in BAND_KEYS:
        value = hdu.header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    name = str(hdu.name or "")
    parts = re.split(r"[_\-]", name, maxsplit=1)
    if len(parts) == 2 and parts[1]:
        return parts[1].lower() if len(parts[1]) == 1 else parts[1]
    return None


def _cube_bands(header: Any, depth: int) -> Optional[list[str]]:
    value = header.get("BANDS")
    if isinstance(value, str) and value.strip():
        text = value.strip()
        names = [b for b in re.split(r"[,\s]+", text) if b] if re.search(r"[,\s]", text) else list(text)
        return names
    for prefix in ("BAND", "FILTER"):
        names = [header.get(f"{prefix}{k}") for k in range(depth)]
        if all(isinstance(n, str) and n.strip() for n in names) and depth > 0:
            return [n.strip() for n in names]
    return None


def _sky_position(header: Any, shape: Sequence[int]) -> tuple[float, float]:
    """RA/Dec (deg) of the stamp centre from a celestial WCS, else RA/DEC keywords, else NaN."""
    try:
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2) if header.get("CTYPE1") else None
        if wcs is not None and wcs.has_celestial:
            h, w = shape[-2], shape[-1]
            ra, dec = wcs.celestial.all_pix2world([[(w - 1) / 2.0, (h - 1) / 2.0]], 0)[0]
            return float(ra), float(dec)
    except Exception:
        pass
    ra, dec = header.get("RA", header.get("RA_OBJ")), header.get("DEC", header.get("DEC_OBJ"))
    if isinstance(ra, (int, float)) and isinstance(dec, (int, float)):
        return float(ra), float(dec)
    if isinstance(ra, str) and isinstance(dec, str):
        try:
            from astropy import units as u
            from astropy.coordinates import SkyCoord

            c = SkyCoord(ra, dec, unit=(u.hourangle, u.deg))
            return float(c.ra.deg), float(c.dec.deg)
        except Exception:
            pass
    return float("nan"), float("nan")


def open_fits(path: str) -> Any:
    """Open a FITS file fully (no memory map); truncation and corruption are :class:`StampError` s."""
    from astropy.io import fits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # reads the data: a truncated file fails (or warns) here
        except FileNotFoundError:
            raise StampError("file not found") from None
        except IsADirectoryError:
            raise StampError("is a directory, not a FITS file") from None
        except PermissionError:
            raise StampError("permission denied") from None
        except Exception as exc:
            _raise_if_truncated(caught)
            raise StampError(f"unreadable FITS ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    try:
        _raise_if_truncated(caught)
    except StampError:
        hdul.close()
        raise
    return hdul


def _raise_if_truncated(caught: list) -> None:
    for w in caught:
        text = str(w.message)
        if any(word in text.lower() for word in ("truncated", "corrupt", "multiple of 2880")):
            raise StampError(f"truncated or corrupt FITS ({' '.join(text.split())})")


def read_fits_stamp(
    path: str,
    bands: Optional[Sequence[str]] = None,
    units: Optional[str] = None,
    zeropoint: Optional[float] = None,
    use_ivar: bool = True,
    use_mask: bool = True,
    mask_bits: Optional[int] = None,
    object_id: Optional[str] = None,
) -> Stamp:
    """One object from a FITS cutout file; raises :class:`StampError` with the reason when it cannot."""
    hdul = open_fits(path)
    try:
        images, ivars, masks = [], [], []
        for hdu in hdul:
            data = hdu.data
            if data is None or not hasattr(data, "ndim") or getattr(hdu, "is_image", True) is False:
                continue
            {"image": images, "ivar": ivars, "mask": masks}[_role(hdu)].append(hdu)
        if not images:
            raise StampError("no image HDU with data")
        flux, names, factors, header = _stack(images, bands, units, zeropoint)
        scale = np.asarray(factors, dtype=np.float32)[:, None, None]
        flux = flux.astype(np.float32) * scale
        ivar = mask = None
        if use_ivar and ivars:
            ivar = _matched(ivars, names, flux.shape, "inverse variance").astype(np.float32) / (scale * scale)
        if use_mask and masks:
            raw = _matched(masks, names, flux.shape, "mask")
            raw = np.nan_to_num(raw).astype(np.int64)
            mask = (raw & int(mask_bits)) != 0 if mask_bits is not None else raw != 0
        ra, dec = _sky_position(header, flux.shape)
        if not np.isfinite(ra) and header is not hdul[0].header:
            ra, dec = _sky_position(hdul[0].header, flux.shape)
        meta: dict[str, Any] = {"ra": ra, "dec": dec, "source": str(path)}
        for key in ("OBJID", "OBJECT"):
            if key in header and isinstance(header[key], (str, int)):
                meta[key.lower()] = header[key]
        return Stamp(id=object_id or file_id(path), flux=flux, bands=tuple(names), ivar=ivar, mask=mask, meta=meta)
    finally:
        hdul.close()


def _stack(hdus: list, bands: Optional[Sequence[str]], units: Optional[str] = None, zeropoint: Optional[float] = None) -> tuple[np.ndarray, list[str], list[float], Any]:
    """Flux cube, band names, per-band unit factors and the header of the first HDU."""
    first = hdus[0]
    data = np.asarray(first.data)
    header = first.header
    if len(hdus) == 1 and data.ndim == 3:
        names = _cube_bands(header, data.shape[0]) or (list(bands) if bands else None)
        if names is None:
            raise StampError(f"{data.shape[0]}-band cube without band names (BANDS or BAND0.. keywords); set data.bands")
        if len(names) != data.shape[0]:
            raise StampError(f"wrong shape: image {tuple(data.shape)} but the header names {len(names)} band(s) {names}")
        factor = flux_factor(header, units, zeropoint)
        return data, [str(n) for n in names], [factor] * len(names), header
    if any(np.asarray(h.data).ndim != 2 for h in hdus):
        shapes = [tuple(np.shape(h.data)) for h in hdus]
        raise StampError(f"wrong shape: image HDUs have shapes {shapes}; expected one (bands, H, W) cube or 2-D images")
    names = [_band_of(h) for h in hdus]
    if any(n is None for n in names):
        if bands and len(bands) == len(hdus):
            names = [str(b) for b in bands]
        else:
            raise StampError(f"{len(hdus)} image HDU(s) without band names (BAND/FILTER keyword); set data.bands")
    shapes = {tuple(h.data.shape) for h in hdus}
    if len(shapes) != 1:
        raise StampError(f"wrong shape: the band images differ in size {sorted(shapes)}")
    if len(set(names)) != len(names):
        raise StampError(f"band names repeat: {names}")
    return np.stack([np.asarray(h.data) for h in hdus]), [str(n) for n in names], [flux_factor(h.header, units, zeropoint) for h in hdus], header


def _matched(hdus: list, names: list[str], shape: tuple, what: str) -> np.ndarray:
    """An ivar/mask layer matched to the image bands (one cube, one 2-D layer for all, or one per band)."""
    if len(hdus) == 1:
        data = np.asarray(hdus[0].data)
        if data.ndim == 2 and data.shape == shape[1:]:
            return np.broadcast_to(data, shape)
        if data.shape == shape:
            return data
        raise StampError(f"wrong shape: {what} {tuple(data.shape)} for image {tuple(shape)}")
    by_band = {}
    for h in hdus:
        band = _band_of(h)
        if band is not None:
            by_band[band] = h
    if all(n in by_band for n in names):
        layers = [np.asarray(by_band[n].data) for n in names]
    elif len(hdus) == len(names):
        layers = [np.asarray(h.data) for h in hdus]
    else:
        raise StampError(f"{len(hdus)} {what} HDUs do not match the bands {names}")
    if any(layer.shape != shape[1:] for layer in layers):
        raise StampError(f"wrong shape: {what} layers {[l.shape for l in layers]} for images {shape[1:]}")
    return np.stack(layers)


class FitsReader(Reader):
    """FITS cutouts: ``path`` is a directory (searched recursively), a glob, one file or a list."""

    def __init__(
        self,
        path: Any = None,
        pattern: Union[str, Sequence[str]] = PATTERNS,
        bands: Optional[Sequence[str]] = None,
        units: Optional[str] = None,
        zeropoint: Optional[float] = None,
        ivar: bool = True,
        mask: bool = True,
        mask_bits: Optional[int] = None,
        pixel_scale: Optional[float] = None,
        shard_size: int = 256,
    ) -> None:
        super().__init__(shard_size)
        self.path = path
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        self.band_names = [str(b) for b in bands] if bands else None
        self.units, self.zeropoint = units, zeropoint
        self.use_ivar, self.use_mask, self.mask_bits = bool(ivar), bool(mask), mask_bits
        self.pixel_scale = pixel_scale
        self._files: Optional[list[str]] = None

    def describe(self) -> str:
        return f"FITS cutouts at {self.path}"

    def files(self) -> list[str]:
        if self._files is None:
            self._files = list_files(self.path, self.patterns)
        return self._files

    def shards(self) -> list[Shard]:
        return [
            Shard(key=f"{k:06d}", items=tuple(chunk), n=len(chunk), fingerprint=fingerprint(file_stat(f) for f in chunk))
            for k, chunk in chunked(self.files(), self.shard_size)
        ]

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        for path in shard.items:
            try:
                stamp = read_fits_stamp(
                    path, self.band_names, self.units, self.zeropoint, self.use_ivar, self.use_mask, self.mask_bits
                )
                yield stamp
            except StampError as exc:
                yield Reject(source=str(path), reason=str(exc), id=file_id(path))
