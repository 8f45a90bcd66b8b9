"""Photometric redshifts: the classical template-fit baseline and the metrics photo-z is judged by.

:func:`template_fit` fits every object's broad-band fluxes (nanomaggies, with inverse variances; an inverse
variance of 0 is a missing band) with each SED of a template set redshifted to each z of a grid, the
amplitude free (>= 0, solved in closed form).  Its likelihood, the amplitude marginalised with a flat prior
(a factor ``1 / sqrt(sum m^2 ivar)``), summed over the templates with equal weight and over a flat prior in z,
is ``p(z)``; the fit gives the peak ``z_map`` (the photo-z), the mean and standard deviation of ``p(z)``
(``z_mean``, ``z_sigma``), the 68% interval, the best single fit (``z_best``, ``template_best``,
``chi2_best``) and the number of bands used.  No magnitude prior (BPZ-style) is applied.

The templates are GalSim's CWW E, Sbc, Scd and Im SEDs (:mod:`galframe.sim.seds`, the multimodal simulator's
set) and ``interpolate`` mixtures between neighbours ((1 - f) T_a + f T_b, equal rest-frame r flux).

:func:`photoz_metrics`: with dz = (z_phot - z_true) / (1 + z_true), ``bias`` = median dz, ``nmad`` =
1.4826 median |dz - median dz|, ``outlier_fraction`` = fraction with |dz| > 0.15.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import DataError

#: redshift grid of the fit by default: 0 .. 2 in steps of 0.002
Z_GRID = (0.0, 2.0, 0.002)
OUTLIER = 0.15
#: fractional error added to every band's flux error by fit_catalog
ERROR_FLOOR = 0.02


def default_z_grid() -> np.ndarray:
    lo, hi, step = Z_GRID
    return np.round(np.arange(lo, hi + 0.5 * step, step), 6)


def template_set(interpolate: int = 2, filters: Optional[Mapping[str, Any]] = None) -> tuple[list[str], list[Any]]:
    """(names, rest-frame SEDs of unit r flux): the CWW templates and ``interpolate`` mixtures between each
    pair of neighbours in the order E, Sbc, Scd, Im."""
    from galframe.sim import seds

    r = seds.bandpass("r", filters)
    base = [seds.template(t).withFlux(1.0, r) for t in seds.TEMPLATES]
    names, out = [], []
    for k, name in enumerate(seds.TEMPLATES):
        names.append(name)
        out.append(base[k])
        if k + 1 < len(base):
            for j in range(1, int(interpolate) + 1):
                f = j / (int(interpolate) + 1)
                names.append(f"{name}+{seds.TEMPLATES[k + 1]}:{f:.2f}")
                out.append(base[k] * (1.0 - f) + base[k + 1] * f)
    return names, out


def model_grid(bands: Sequence[str], z_grid: Optional[Sequence[float]] = None, interpolate: int = 2,
               filters: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The fit's model: ``{"bands", "z", "templates", "flux": (templates, z, bands) nanomaggies}``."""
    from galframe.sim import seds

    z = default_z_grid() if z_grid is None else np.asarray(z_grid, dtype=np.float64)
    names, sed_list = template_set(interpolate, filters)
    return {"bands": list(bands), "z": z, "templates": names, "flux": seds.model_fluxes(z, sed_list, bands, filters)}


def catalog_photometry(catalog: Any, bands: Sequence[str], prefix: str = "phot_flux_") -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) arrays (objects, bands) from catalog columns ``<prefix><band>`` and ``<prefix>ivar_<band>``
    (missing values: ivar 0)."""
    missing = [c for b in bands for c in (f"{prefix}{b}", f"{prefix}ivar_{b}") if c not in catalog]
    if missing:
        raise DataError(f"the catalog has no photometry column(s) {missing} (looked for {prefix}<band>, {prefix}ivar_<band>).")
    flux = np.stack([np.asarray(catalog[f"{prefix}{b}"], dtype=np.float64) for b in bands], axis=1)
    ivar = np.stack([np.asarray(catalog[f"{prefix}ivar_{b}"], dtype=np.float64) for b in bands], axis=1)
    return measured(flux, ivar)


def measured(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) with every value that is not a measurement (a non-finite flux or ivar, ivar <= 0) set to
    flux 0, ivar 0: a missing band."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    return np.where(good, flux, 0.0), np.where(good, ivar, 0.0)


def with_error_floor(flux: np.ndarray, ivar: np.ndarray, floor: float) -> np.ndarray:
    """``ivar`` with a fractional error ``floor`` of ``|flux|`` added in quadrature to each measured band (the
    templates' mismatch and calibration, as template-fit codes add); missing bands keep ivar 0."""
    with np.errstate(divide="ignore"):
        var = np.where(ivar > 0, 1.0 / ivar, np.inf) + (float(floor) * np.abs(flux)) ** 2
    return np.where(ivar > 0, 1.0 / var, 0.0)


def template_fit(flux: np.ndarray, ivar: np.ndarray, grid: Mapping[str, Any], error_floor: float = 0.0,
                 chunk: int = 256) -> dict[str, np.ndarray]:
    """The template fit of ``flux`` / ``ivar`` (objects, bands; bands as ``grid["bands"]``) on ``grid``
    (:func:`model_grid`), ``error_floor`` (fractional) added to the errors (:func:`with_error_floor`).  Returns arrays per object: ``z_map``, ``z_mean``, ``z_sigma``, ``z_lo``, ``z_hi``
    (16th / 84th percentiles of p(z)), ``z_best``, ``template_best`` (index into ``grid["templates"]``),
    ``chi2_best``, ``n_bands``, and ``pdf`` (objects, z) normalised to sum 1 on the grid.  Non-finite values
    and ivar <= 0 are missing bands; an object without any band gets NaN (``template_best`` -1)."""
    flux, ivar = np.asarray(flux, dtype=np.float64), np.asarray(ivar, dtype=np.float64)
    models = np.asarray(grid["flux"], dtype=np.float64)
    n_t, n_z, n_b = models.shape
    if flux.ndim != 2 or flux.shape[1] != n_b or ivar.shape != flux.shape:
        raise DataError(f"template_fit: flux {flux.shape} and ivar {ivar.shape} must be (objects, {n_b}) for bands {grid['bands']}.")
    z = np.asarray(grid["z"], dtype=np.float64)
    flux, ivar = measured(flux, ivar)
    ivar = with_error_floor(flux, ivar, error_floor) if error_floor else ivar
    flat = models.reshape(n_t * n_z, n_b)
    out: dict[str, list] = {k: [] for k in ("z_map", "z_mean", "z_sigma", "z_lo", "z_hi", "z_best", "template_best", "chi2_best", "pdf")}
    for lo in range(0, len(flux), chunk):
        f, w = flux[lo : lo + chunk], ivar[lo : lo + chunk]
        s_fm = (f * w) @ flat.T  # (n, templates * z)
        s_mm = w @ (flat**2).T
        s_ff = np.sum(w * f**2, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            amp = np.where(s_mm > 0, np.maximum(s_fm, 0.0) / s_mm, 0.0)
            chi2 = s_ff - 2 * amp * s_fm + amp**2 * s_mm
            log_like = -0.5 * chi2 - 0.5 * np.log(np.where(s_mm > 0, s_mm, np.inf))
        log_like = log_like.reshape(len(f), n_t, n_z)
        peak = np.max(log_like, axis=(1, 2), keepdims=True)
        with np.errstate(invalid="ignore"):  # no band at all: -inf everywhere, NaN below
            pdf = np.exp(log_like - peak).sum(axis=1)
            pdf /= pdf.sum(axis=1, keepdims=True)
        best = np.argmin(chi2, axis=1)
        mean = pdf @ z
        cdf = np.cumsum(pdf, axis=1)
        out["z_map"].append(z[np.argmax(pdf, axis=1)])
        out["z_mean"].append(mean)
        out["z_sigma"].append(np.sqrt(np.maximum(pdf @ z**2 - mean**2, 0.0)))
        out["z_lo"].append(z[np.argmax(cdf >= 0.16, axis=1)])
        out["z_hi"].append(z[np.argmax(cdf >= 0.84, axis=1)])
        out["z_best"].append(z[best % n_z])
        out["template_best"].append(best // n_z)
        out["chi2_best"].append(chi2[np.arange(len(f)), best])
        out["pdf"].append(pdf)
    result = {k: np.concatenate(v) if v else np.zeros((0, n_z) if k == "pdf" else 0) for k, v in out.items()}
    result["n_bands"] = np.sum(ivar > 0, axis=1)
    empty = result["n_bands"] == 0
    if empty.any():
        for key in ("z_map", "z_mean", "z_sigma", "z_lo", "z_hi", "z_best", "chi2_best", "pdf"):
            result[key][empty] = np.nan
        result["template_best"][empty] = -1
    return result


def photoz_metrics(z_phot: Sequence[float], z_true: Sequence[float], outlier: float = OUTLIER) -> dict[str, float]:
    """``bias`` (median dz), ``nmad`` (1.4826 median |dz - median dz|), ``outlier_fraction`` (|dz| > ``outlier``)
    and ``n``, with dz = (z_phot - z_true) / (1 + z_true); objects with a non-finite z are left out."""
    zp = np.asarray(z_phot, dtype=np.float64)
    zt = np.asarray(z_true, dtype=np.float64)
    if zp.shape != zt.shape:
        raise DataError(f"photoz_metrics: z_phot {zp.shape} and z_true {zt.shape} differ in shape.")
    ok = np.isfinite(zp) & np.isfinite(zt)
    dz = (zp[ok] - zt[ok]) / (1.0 + zt[ok])
    if dz.size == 0:
        return {"bias": float("nan"), "nmad": float("nan"), "outlier_fraction": float("nan"), "n": 0}
    bias = float(np.median(dz))
    return {"bias": bias, "nmad": float(1.4826 * np.median(np.abs(dz - bias))),
            "outlier_fraction": float(np.mean(np.abs(dz) > outlier)), "n": int(dz.size)}


def fit_catalog(catalog: Any, bands: Sequence[str] = ("g", "r", "z", "W1", "W2"), z_grid: Optional[Sequence[float]] = None,
                interpolate: int = 2, filters: Optional[Mapping[str, Any]] = None, error_floor: float = ERROR_FLOOR) -> Any:
    """The template fit of a catalog's ``phot_flux_<band>`` / ``phot_flux_ivar_<band>`` columns: a DataFrame with
    the catalog's ``id`` (if any) and the fit's columns (``photoz_`` + z_map, z_mean, z_sigma, z_lo, z_hi,
    z_best, template, chi2, n_bands)."""
    import pandas as pd

    grid = model_grid(bands, z_grid, interpolate, filters)
    flux, ivar = catalog_photometry(catalog, bands)
    fit = template_fit(flux, ivar, grid, error_floor=error_floor)
    frame = pd.DataFrame({f"photoz_{k}": fit[k] for k in ("z_map", "z_mean", "z_sigma", "z_lo", "z_hi", "z_best", "chi2_best", "n_bands")})
    frame.insert(len(frame.columns) - 2, "photoz_template", np.asarray(grid["templates"], dtype=object)[fit["template_best"]])
    if "id" in catalog:
        frame.insert(0, "id", np.asarray(catalog["id"]))
    return frame
