"""Galaxy SED templates and broad-band filters for the multimodal simulator and the template-fit photo-z.

Templates: the four Coleman, Wu & Weedman (1980) SEDs GalSim ships (``share/SEDs/CWW_{E,Sbc,Scd,Im}_ext.sed``,
wavelengths in Angstrom, f_lambda; extended below 140 nm and to 2.205 um by Bolzonella et al. 2000).  The
WISE-like bands need the rest frame to 5.2 um, so beyond the file's last point each template continues as
the Rayleigh-Jeans tail of its stars, f_lambda ~ lambda**-4, to 10 um (no dust emission, no PAH features).
No intergalactic absorption is applied.

Filters (all with AB zero points, :func:`bandpass`), in nm:

=======  ===============  ================================================================
band     default          what
=======  ===============  ================================================================
g        top-hat 400-550  DECam-like g (GalSim ships no DECam curves)
r        top-hat 560-710  DECam-like r
z        top-hat 840-1000 DECam-like z
W1       top-hat 2800-3900  WISE W1-like (3.4 um)
W2       top-hat 4100-5300  WISE W2-like (4.6 um)
=======  ===============  ================================================================

A band's entry in ``FILTERS`` (or a config's ``sim.filters``) is either ``[blue, red]`` in nm (a top-hat of
throughput 1) or the name of a bandpass file GalSim ships (e.g. ``LSST_g.dat``, wavelengths in nm).

Fluxes: ``galsim`` gives photons/cm^2/s; :func:`nanomaggies` turns them into nanomaggies (AB 22.5), the
unit of galframe's images and photometry.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from galframe.errors import ConfigError

#: template names, blue-ward order of their colours reversed (red to blue)
TEMPLATES = ("E", "Sbc", "Scd", "Im")
FILTERS: dict[str, Any] = {
    "g": [400.0, 550.0],
    "r": [560.0, 710.0],
    "z": [840.0, 1000.0],
    "W1": [2800.0, 3900.0],
    "W2": [4100.0, 5300.0],
}
#: reddest rest-frame wavelength (nm) the extended templates reach
RED_LIMIT_NM = 10000.0
#: h c in erg nm
HC_ERG_NM = 1.98644586e-9


def _galsim() -> Any:
    import galsim

    return galsim


def template_file(name: str) -> str:
    """Path of GalSim's shipped CWW template ``name`` (one of TEMPLATES)."""
    if name not in TEMPLATES:
        raise ConfigError(f"Unknown SED template '{name}'; the templates are {list(TEMPLATES)}.")
    return os.path.join(_galsim().meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")


@functools.lru_cache(maxsize=None)
def template(name: str) -> Any:
    """Rest-frame template ``name`` as a ``galsim.SED`` (f_lambda, arbitrary normalisation), extended redward
    as f_lambda ~ lambda**-4 beyond the file's last point."""
    galsim = _galsim()
    wave, flam = np.loadtxt(template_file(name), comments="#", unpack=True)  # Angstrom, f_lambda
    last = wave[-1]
    tail = np.geomspace(last, RED_LIMIT_NM * 10.0, 40)[1:]
    wave = np.concatenate([wave, tail])
    flam = np.concatenate([flam, flam[-1] * (tail / last) ** -4])
    table = galsim.LookupTable(wave, flam, interpolant="linear")
    return galsim.SED(table, wave_type="Ang", flux_type="flambda")


@functools.lru_cache(maxsize=None)
def _bandpass(band: str, definition: Any) -> Any:
    galsim = _galsim()
    if isinstance(definition, str):
        path = os.path.join(galsim.meta_data.share_dir, "bandpasses", definition)
        if not os.path.isfile(path):
            raise ConfigError(f"sim.filters.{band}: GalSim ships no bandpass file '{definition}' (looked in {os.path.dirname(path)}).")
        return galsim.Bandpass(path, wave_type="nm").thin().withZeropoint("AB")
    blue, red = definition
    return galsim.Bandpass("1", wave_type="nm", blue_limit=float(blue), red_limit=float(red)).withZeropoint("AB")


def filter_definition(band: str, filters: "Mapping[str, Any] | None" = None) -> Any:
    """A band's definition (``[blue, red]`` nm or a GalSim file name), checked; raises ConfigError."""
    table = FILTERS if filters is None else filters
    if band not in table:
        raise ConfigError(f"Band '{band}' has no filter in sim.filters (known: {', '.join(table)}).")
    value = table[band]
    if isinstance(value, str):
        return value
    try:
        blue, red = (float(v) for v in value)
    except Exception:
        raise ConfigError(f"sim.filters.{band} must be [blue, red] in nm or a GalSim bandpass file (got {value!r}).") from None
    if not (50.0 <= blue < red <= RED_LIMIT_NM / 1.0):
        raise ConfigError(f"sim.filters.{band} must satisfy 50 <= blue < red <= {RED_LIMIT_NM:g} nm (got [{blue:g}, {red:g}]).")
    return (blue, red)


def bandpass(band: str, filters: "Mapping[str, Any] | None" = None) -> Any:
    """The ``galsim.Bandpass`` (AB zero point) of ``band``."""
    return _bandpass(band, filter_definition(band, filters))


def nanomaggies(flux: float, bp: Any) -> float:
    """A GalSim flux (photons/cm^2/s) through ``bp`` in nanomaggies: 10**(-0.4 (m_AB - 22.5))."""
    return float(flux) * 10.0 ** (-0.4 * (float(bp.zeropoint) - 22.5))


def to_nanomaggies(bp: Any) -> float:
    """The factor from GalSim flux through ``bp`` to nanomaggies."""
    return nanomaggies(1.0, bp)


def parts(bulge_fraction: float, disk: str, filters: "Mapping[str, Any] | None" = None) -> tuple[Any, Any]:
    """Rest-frame SEDs (bulge, disk) of a bulge (template E) holding ``bulge_fraction`` of the rest-frame
    r-band flux and a disk of template ``disk`` holding the rest, together unit r flux (photons/cm^2/s);
    a part without light is None."""
    r = bandpass("r", filters)
    b = float(bulge_fraction)
    bulge = template("E").withFlux(b, r) if b > 0 else None
    disk_sed = template(disk).withFlux(1.0 - b, r) if b < 1 else None
    return bulge, disk_sed


def mixture(bulge_fraction: float, disk: str, filters: "Mapping[str, Any] | None" = None) -> Any:
    """The sum of :func:`parts`: the rest-frame SED of the whole galaxy (unit r flux)."""
    found = [p for p in parts(bulge_fraction, disk, filters) if p is not None]
    return found[0] if len(found) == 1 else found[0] + found[1]


def magnitudes(sed: Any, bands: Sequence[str], filters: "Mapping[str, Any] | None" = None) -> dict[str, float]:
    """AB magnitudes of ``sed`` through ``bands`` (GalSim's ``calculateMagnitude``)."""
    return {b: float(sed.calculateMagnitude(bandpass(b, filters))) for b in bands}


def k_correction(sed_rest: Any, z: float, band: str = "r", filters: "Mapping[str, Any] | None" = None) -> float:
    """K(z) in ``band``: m_obs = M + DM(z) + K(z) for the rest-frame SED ``sed_rest`` (AB, same band in both frames).

    GalSim's ``atRedshift`` keeps the photon density's shape, N_obs(lambda) = N_rest(lambda / (1 + z)), which is
    f_nu,obs(lambda) = (1 + z) f_nu,rest(lambda / (1 + z)): the (1 + z) bandwidth term of the K-correction is then
    already in the magnitude difference."""
    bp = bandpass(band, filters)
    return float(sed_rest.atRedshift(z).calculateMagnitude(bp) - sed_rest.calculateMagnitude(bp))


def model_fluxes(z_grid: Sequence[float], seds: Sequence[Any], bands: Sequence[str],
                 filters: "Mapping[str, Any] | None" = None) -> np.ndarray:
    """(templates, redshifts, bands) nanomaggies of each rest-frame SED in ``seds`` (normalised as given)
    redshifted to each z of ``z_grid``: the model grid of a template fit."""
    bps = [bandpass(b, filters) for b in bands]
    factors = np.array([to_nanomaggies(bp) for bp in bps])
    out = np.empty((len(seds), len(z_grid), len(bands)))
    for t, sed in enumerate(seds):
        for k, z in enumerate(z_grid):
            shifted = sed.atRedshift(float(z))
            out[t, k] = [shifted.calculateFlux(bp) for bp in bps]
    return out * factors


def f_lambda(sed: Any, wave_nm: np.ndarray, oversample: int = 5) -> np.ndarray:
    """``sed`` (photons/nm/cm^2/s) as f_lambda in 1e-17 erg/s/cm^2/Angstrom (the DESI unit), averaged over
    each pixel of the (uniform) grid ``wave_nm`` with ``oversample`` points per pixel."""
    wave_nm = np.asarray(wave_nm, dtype=np.float64)
    step = float(wave_nm[1] - wave_nm[0]) if len(wave_nm) > 1 else 1.0
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    fine = (wave_nm[:, None] + sub[None, :] * step).ravel()
    photons = np.asarray(sed(fine), dtype=np.float64)
    flam = photons * HC_ERG_NM / fine / 10.0 / 1e-17  # erg/s/cm^2/nm -> per Angstrom, in 1e-17
    return flam.reshape(len(wave_nm), oversample).mean(axis=1)


def luminosity_distance_modulus(z: float) -> float:
    """Distance modulus (mag) in a flat LambdaCDM cosmology, H0 = 70, Omega_m = 0.3 (astropy)."""
    return float(_cosmology().distmod(float(z)).value)


def arcsec_per_kpc(z: float) -> float:
    """Angular scale (arcsec per proper kpc) at redshift ``z`` in the same cosmology."""
    return float(_cosmology().arcsec_per_kpc_proper(float(z)).value)


@functools.lru_cache(maxsize=1)
def _cosmology() -> Any:
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=70.0, Om0=0.3)


def ab_magnitude(flux_nmgy: float) -> float:
    """AB magnitude of a flux in nanomaggies (NaN for a flux <= 0)."""
    return 22.5 - 2.5 * math.log10(flux_nmgy) if flux_nmgy > 0 else math.nan
