"""Drawing helpers shared by the simulation generators: sky noise for a depth, the PSF-free truth of a
galaxy's components (2x oversampled, binned), half-light radii, GalSim settings, single-threaded BLAS."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

#: the bands the generators know (colours are g - r and r - z)
BANDS = ("g", "r", "z")


def sky_sigma(depth: float, fwhm: float, pixel_scale: float, zeropoint: float = 22.5) -> float:
    """Per-pixel sky noise (flux units) of a 5-sigma point-ish source depth ``depth`` (mag)."""
    flux5 = 10.0 ** ((zeropoint - depth) / 2.5)
    sigma_eff = math.sqrt((fwhm / 2.355) ** 2 + (0.45 * 0.6) ** 2) / pixel_scale
    nea = 4.0 * math.pi * sigma_eff**2
    return flux5 / (5.0 * math.sqrt(nea))


def _bilinear(flux: np.ndarray, cx: float, cy: float, size: int) -> np.ndarray:
    """(bands, size, size) images with each band's flux split bilinearly around (cx, cy)."""
    out = np.zeros((len(flux), size, size), dtype=np.float64)
    x0, y0 = int(math.floor(cx)), int(math.floor(cy))
    fx, fy = cx - x0, cy - y0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            x, y = x0 + dx, y0 + dy
            if 0 <= x < size and 0 <= y < size:
                out[:, y, x] += flux * wx * wy
    return out


def clean_truth(comps: Sequence[Any], fluxes: np.ndarray, bands: Sequence[str], spec: Mapping[str, Any], size: int,
                scale: float, offset: Sequence[float], gsp: Any) -> tuple[np.ndarray, float]:
    """The PSF-free truth of a galaxy made of ``comps`` (each with a unit-flux ``profile``):
    each component drawn once, 2x oversampled (pixel-integrated), combined with ``fluxes`` (components x
    BANDS) and binned to the stamp; plus the r-band half-light radius about the flux centroid."""
    import galsim

    smooth = galsim.Gaussian(sigma=float(spec["clean_smoothing"]), gsparams=gsp)
    fine = np.stack(
        [
            galsim.Convolve(c.profile, smooth, gsparams=gsp)
            .drawImage(nx=2 * size, ny=2 * size, scale=scale / 2.0, offset=(2.0 * offset[0], 2.0 * offset[1]))
            .array
            for c in comps
        ]
    )
    total_r = float(fluxes.sum(axis=0)[1])
    fine_r = np.einsum("c,cyx->yx", fluxes[:, 1], fine)
    centroid = sum((c.profile.centroid * float(fluxes[m, 1]) for m, c in enumerate(comps)), galsim.PositionD(0, 0))
    centroid = centroid / total_r
    cf = (2 * size - 1) / 2.0
    hlr = _hlr(fine_r, scale / 2.0, cf + 2 * offset[0] + centroid.x / (scale / 2.0), cf + 2 * offset[1] + centroid.y / (scale / 2.0), total_r)
    clean = np.einsum("cb,cyx->byx", fluxes[:, [BANDS.index(b) for b in bands]], _bin2(fine))
    return clean, hlr


def _hlr(image: np.ndarray, scale: float, cx: float, cy: float, total: float, step: float = 0.05) -> float:
    """Radius (arcsec) of the circle about (cx, cy) [pixels] holding half of ``total``.

    Pixels are binned by radius in rings of ``step`` pixels; the enclosed flux is interpolated
    linearly between ring edges.
    """
    ny, nx = image.shape
    r = np.hypot(np.arange(nx)[None, :] - cx, np.arange(ny)[:, None] - cy)
    bins = (r / step).astype(np.int64).ravel()
    enclosed = np.cumsum(np.bincount(bins, weights=image.ravel()))
    half = 0.5 * total
    k = int(np.searchsorted(enclosed, half))
    if k >= len(enclosed):
        return float("nan")  # more than half the flux is outside the drawing
    lo = enclosed[k - 1] if k > 0 else 0.0
    t = (half - lo) / (enclosed[k] - lo) if enclosed[k] > lo else 0.0
    return float((k + t) * step * scale)


def _bin2(a: np.ndarray) -> np.ndarray:
    n0, n1 = a.shape[-2] // 2, a.shape[-1] // 2
    return a.reshape(*a.shape[:-2], n0, 2, n1, 2).sum(axis=(-1, -3))


_GSPARAMS = None


def _gsparams(galsim: Any) -> Any:
    global _GSPARAMS
    if _GSPARAMS is None:
        _GSPARAMS = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=1e-3, maximum_fft_size=8192)
    return _GSPARAMS


def _one_blas_thread() -> Any:
    """Single-threaded BLAS while drawing (the knots' small matrix products only lose to threads)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing: correct, only slower
        import contextlib

        return contextlib.nullcontext()
