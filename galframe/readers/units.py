"""From the units of survey files to nanomaggies (flux density, zero point 22.5 AB mag).

* FITS images: ``BUNIT`` (nanomaggies, Jy, mJy, uJy, nJy) or a zero point keyword (``MAGZERO``,
  ``MAGZP``, ``ZEROPT``, ``ZP``, ``PHOTZP``: counts of that zero point, ``flux = counts *
  10**(-0.4 (zp - 22.5))``); the reader options ``units`` and ``zeropoint`` override the headers.
  A file with neither is taken to be in nanomaggies (as Legacy Surveys cutouts are).
* 8-bit RGB images (PNG/JPEG, Galaxy10) are display renderings, not flux: :func:`rgb_to_flux`
  undoes a display stretch into a *pseudo*-flux with the right order of magnitude. The numbers are
  a convention, not a calibration (see docs/data.md).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, check_choice
from galframe.readers.base import StampError

NANOMAGGY_JY = 3.631e-6
ZP_NANOMAGGY = 22.5
#: flux units -> nanomaggies per unit
UNITS = {
    "nanomaggy": 1.0,
    "nanomaggies": 1.0,
    "nmgy": 1.0,
    "nanomaggy/pixel": 1.0,
    "jy": 1.0 / NANOMAGGY_JY,
    "mjy": 1e-3 / NANOMAGGY_JY,
    "ujy": 1e-6 / NANOMAGGY_JY,
    "microjy": 1e-6 / NANOMAGGY_JY,
    "njy": 1e-9 / NANOMAGGY_JY,
}
ZEROPOINT_KEYS = ("MAGZERO", "MAGZP", "MAGZPT", "ZEROPT", "ZP", "PHOTZP")


def _norm_unit(unit: str) -> str:
    return str(unit).strip().lower().replace(" ", "").replace("µ", "u")


def zeropoint_factor(zeropoint: float) -> float:
    """Nanomaggies per count for data of AB zero point ``zeropoint``."""
    return float(10.0 ** (-0.4 * (float(zeropoint) - ZP_NANOMAGGY)))


def unit_factor(unit: str, where: str = "units") -> float:
    key = _norm_unit(unit)
    if key not in UNITS:
        raise ConfigError(f"{where}: unknown flux unit '{unit}'. Known: {', '.join(sorted(UNITS))}; or set a zero point.")
    return UNITS[key]


def flux_factor(header: Optional[Mapping[str, Any]], units: Optional[str] = None, zeropoint: Optional[float] = None) -> float:
    """Nanomaggies per stored unit for an image with this header (options win over headers).

    Raises :class:`StampError` for a ``BUNIT`` it does not know when no zero point says more."""
    if units:
        return unit_factor(units, "data.units")
    if zeropoint is not None:
        return zeropoint_factor(zeropoint)
    header = header or {}
    bunit = header.get("BUNIT")
    if bunit not in (None, ""):
        key = _norm_unit(bunit)
        if key in UNITS:
            return UNITS[key]
    for key in ZEROPOINT_KEYS:
        value = header.get(key)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return zeropoint_factor(float(value))
    if bunit not in (None, ""):
        raise StampError(
            f"unknown flux unit BUNIT='{bunit}' and no zero point keyword ({', '.join(ZEROPOINT_KEYS)}); "
            "set data.units or data.zeropoint"
        )
    return 1.0


# -- 8-bit display images ----------------------------------------------------------------------------
STRETCHES = ("asinh", "linear")
DEFAULT_WHITE = {"g": 0.5, "r": 1.0, "z": 2.0}


def rgb_to_flux(
    pixels: np.ndarray,
    bands: Sequence[str],
    stretch: str = "asinh",
    q: float = 10.0,
    white: Any = None,
    black: float = 0.0,
) -> np.ndarray:
    """Pseudo-flux (channels, H, W) float32 from an (H, W, channels) or (H, W) display image.

    A value v (0..vmax: 255 for 8-bit, 65535 for 16-bit) in channel b becomes, with
    t = max(v - black, 0) / (vmax - black):

    * ``asinh``: white_b * sinh(t asinh(q)) / q  (the inverse of t = asinh(q f / white_b) / asinh(q));
    * ``linear``: white_b * t.

    ``white_b`` is the flux (nanomaggies per pixel) shown as full white in band b.
    """
    check_choice("data.stretch", stretch, STRETCHES)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise StampError(f"wrong shape: image {tuple(np.shape(pixels))}, expected (H, W) or (H, W, channels)")
    if arr.shape[2] == 4 and len(bands) == 3:
        arr = arr[:, :, :3]  # drop alpha
    if arr.shape[2] != len(bands):
        raise StampError(f"image has {arr.shape[2]} channel(s), data.rgb_bands names {len(bands)}: {list(bands)}")
    vmax = 65535.0 if arr.dtype == np.uint16 else 255.0
    if arr.dtype.kind == "f":
        vmax = 1.0 if float(np.nanmax(arr)) <= 1.0 else 255.0
    whites = _whites(white, bands)
    t = np.clip((arr.astype(np.float32) - float(black)) / (vmax - float(black)), 0.0, None)
    out = np.empty((len(bands), arr.shape[0], arr.shape[1]), dtype=np.float32)
    for k in range(len(bands)):
        if stretch == "asinh":
            out[k] = whites[k] * np.sinh(t[:, :, k] * math.asinh(q)) / q
        else:
            out[k] = whites[k] * t[:, :, k]
    return out


def _whites(white: Any, bands: Sequence[str]) -> list[float]:
    if white is None:
        return [DEFAULT_WHITE.get(str(b), 1.0) for b in bands]
    if isinstance(white, (int, float)):
        return [float(white)] * len(bands)
    if isinstance(white, Mapping):
        missing = [b for b in bands if b not in white]
        if missing:
            raise ConfigError(f"data.white has no value for band(s) {missing}.")
        return [float(white[b]) for b in bands]
    values = [float(v) for v in white]
    if len(values) != len(bands):
        raise ConfigError(f"data.white has {len(values)} values for {len(bands)} bands.")
    return values


def read_image_file(path: str) -> np.ndarray:
    """Pixels of a PNG/JPEG (or any format Pillow reads): (H, W) or (H, W, channels), uint8 or uint16."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode in ("I", "F"):
                return np.asarray(im, dtype=np.float32)
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGB")
            return np.asarray(im)
    except FileNotFoundError:
        raise StampError("file not found") from None
    except IsADirectoryError:
        raise StampError("is a directory, not an image") from None
    except PermissionError:
        raise StampError("permission denied") from None
    except UnidentifiedImageError:
        raise StampError("not an image Pillow can read (corrupt or unknown format)") from None
    except OSError as exc:
        raise StampError(f"unreadable image ({exc})") from None
