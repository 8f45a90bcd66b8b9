"""Galaxies with SEDs at a redshift (``sim.generator: multimodal``): g, r, z images, broad-band photometry
(g, r, z, W1-, W2-like) and a low-resolution spectrum, all of the same galaxy.  See docs/multimodal.md.

Each object (its randomness from ``(seed, i)`` only) is a bulge (de Vaucouleurs, CWW E template) plus a
disk (exponential, the object's template), GalSim chromatic objects ``profile * SED``:

* SED type (the class): ``E`` (bulge only), ``Sbc`` (bulge fraction ``bulge_fraction.Sbc``), ``Scd``, ``Im``
  (disk only); bulge fractions are of the rest-frame r-band light.
* r magnitude from ``mag_r`` (counts rising as 10**(mag_slope m)); redshift log-normal about
  ``z.at_r20 * 10**(z.slope (m_r - 20))`` with ``z.scatter`` dex, clipped to [z.min, z.max].
* half-light radius: ``size_kpc`` (log-normal, per type) at the angular scale of z, clipped to
  [size_min, size_max] arcsec.
* images: ``galsim.Convolve(bulge * sed_bulge + disk * sed_disk, Moffat PSF).drawImage(bandpass)`` in each
  image band, in nanomaggies, plus Gaussian sky noise from the depth (as the ``desi`` generator); ``clean``:
  the same without PSF and noise.
* photometry ``phot_flux_<b>``, ``phot_flux_ivar_<b>`` (nanomaggies) and ``phot_mag_<b>``, ``phot_mag_err_<b>``
  for every band of ``photometry.bands``: the true band flux plus Gaussian noise of a 5-sigma depth
  ``photometry.depth.<b>``; missing (NaN, ivar 0) with probability ``photometry.missing.<b>``.  The noise-free
  magnitudes are ``mag_<b>``.
* spectrum, for a fraction ``spectrum.fraction`` of the objects: the total SED on the grid
  ``spectrum.wave_min .. wave_max`` step ``dwave`` (nm, pixel centres), f_lambda in 1e-17 erg/s/cm^2/A, with
  DESI-like noise (sigma rising at both ends of the grid and at night-sky lines) and a mask (1 = bad: random
  bad pixels, the cores of the strongest sky lines; ivar 0 there).  Stored beside the shards in ``spectra.h5``
  (:class:`SpectraWriter`, :func:`read_spectra`); catalog ``spectrum_row`` (-1: none).
* truth: ``z``, ``class``/``class_name`` (the SED type), ``bulge_to_total``, ``log_mstar`` (stellar-mass
  proxy: rest-frame r luminosity (K-corrected with the SED) times a per-template mass-to-light ratio),
  ``abs_mag_r``, structure (``sersic_n``, ``half_light_radius``, ``axis_ratio``, ``position_angle``) and
  a sky position ``ra``, ``dec`` uniform in the patch ``sky``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError
from galframe.sim import merge_settings, number_in
from galframe.sim import seds
from galframe.sim.desi import _pair, _sample_mag
from galframe.sim.drawing import BANDS, _gsparams, _one_blas_thread, clean_truth, sky_sigma

CLASSES = seds.TEMPLATES
SPECTRA = "spectra.h5"
#: strong night-sky emission (nm) and relative strength: OI, Na D, OI, then OH bands
SKY_LINES = (
    (557.7, 1.0), (589.3, 0.6), (630.0, 0.6), (636.4, 0.25), (731.6, 0.4), (734.0, 0.4), (777.8, 0.35),
    (799.3, 0.4), (827.6, 0.4), (834.5, 0.6), (839.9, 0.6), (846.5, 0.5), (885.2, 0.7), (888.6, 0.7),
    (919.0, 0.5), (937.5, 0.6), (943.9, 0.6), (958.0, 0.5), (972.0, 0.4),
)

DEFAULTS: dict[str, Any] = {
    "generator": "multimodal",
    "pixel_scale": 0.262,
    "zeropoint": 22.5,
    "classes": list(CLASSES),
    "class_fractions": [0.30, 0.30, 0.25, 0.15],
    "mag_r": [17.0, 21.5],
    "mag_slope": 0.3,
    "z": {"at_r20": 0.32, "slope": 0.17, "scatter": 0.12, "min": 0.01, "max": 1.5},
    "bulge_fraction": {"E": [1.0, 1.0], "Sbc": [0.2, 0.5], "Scd": [0.0, 0.2], "Im": [0.0, 0.0]},
    "size_kpc": {"E": 3.0, "Sbc": 4.5, "Scd": 4.0, "Im": 2.5, "scatter": 0.15},
    "size_min": 0.25,
    "size_max": 4.0,
    #: log10 (M / L_r) per template, in solar units: the stellar-mass proxy
    "log_ml_r": {"E": 0.45, "Sbc": 0.20, "Scd": 0.0, "Im": -0.25},
    "filters": {k: list(v) for k, v in seds.FILTERS.items()},
    "psf": {"beta": 3.5, "fwhm": {"g": 1.30, "r": 1.20, "z": 1.10}, "seeing_scatter": 0.15, "trunc": 4.0},
    "depth": {"g": 24.0, "r": 23.4, "z": 22.5},
    "depth_scatter": 0.25,
    "photometry": {
        "bands": ["g", "r", "z", "W1", "W2"],
        "depth": {"g": 24.5, "r": 23.9, "z": 23.0, "W1": 21.0, "W2": 20.3},
        "missing": {"g": 0.0, "r": 0.0, "z": 0.0, "W1": 0.1, "W2": 0.15},
    },
    "spectrum": {"fraction": 0.5, "wave_min": 361.0, "wave_max": 979.0, "dwave": 2.0, "sigma": 0.3,
                 "bad_pixel_rate": 0.002, "sky_mask": 0.5},
    "sky": {"ra": [150.0, 151.0], "dec": [1.0, 2.0]},
    "clean_smoothing": 0.08,
    "workers": None,
    "shard_size": 2048,
}
_REPLACE = ("sim.psf.fwhm", "sim.depth", "sim.filters", "sim.photometry.depth", "sim.photometry.missing")


def resolve(sim: Optional[Mapping[str, Any]], bands: list[str]) -> dict[str, Any]:
    """The generator settings with defaults filled in, validated; raises ConfigError."""
    spec = merge_settings(DEFAULTS, sim or {}, "sim", "multimodal", _REPLACE)
    classes = [str(c) for c in spec["classes"]]
    if classes != list(CLASSES):
        raise ConfigError(f"sim.classes of the multimodal simulator are the SED templates {list(CLASSES)} (got {classes}).")
    fractions = [float(f) for f in spec["class_fractions"]]
    if len(fractions) != len(CLASSES) or any(not math.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1) > 0.01:
        raise ConfigError(f"sim.class_fractions must be {len(CLASSES)} non-negative numbers summing to 1 (got {fractions}).")
    spec["class_fractions"] = [f / sum(fractions) for f in fractions]
    for band in bands:
        if band not in BANDS:
            raise ConfigError(f"The multimodal simulator draws images only in bands {list(BANDS)}; band '{band}' is not one of them.")
        for what, table in (("sim.psf.fwhm", spec["psf"]["fwhm"]), ("sim.depth", spec["depth"])):
            if band not in table:
                raise ConfigError(f"Band '{band}' has no entry in {what}; give one for every band in data.bands.")
            number_in(table[band], f"{what}.{band}", 0.1 if what == "sim.psf.fwhm" else 10.0, 10.0 if what == "sim.psf.fwhm" else 35.0)
    phot = spec["photometry"]
    for band in list(bands) + list(phot["bands"]):
        definition = seds.filter_definition(band, spec["filters"])
        spec["filters"][band] = definition if isinstance(definition, str) else list(definition)
    for band in phot["bands"]:
        for what in ("depth", "missing"):
            if band not in phot[what]:
                raise ConfigError(f"Band '{band}' of sim.photometry.bands has no entry in sim.photometry.{what}.")
        number_in(phot["depth"][band], f"sim.photometry.depth.{band}", 10.0, 35.0)
        number_in(phot["missing"][band], f"sim.photometry.missing.{band}", 0.0, 1.0)
    if "r" not in spec["filters"]:
        raise ConfigError("sim.filters must define band 'r' (magnitudes are set there).")
    spec["mag_r"] = _pair(spec["mag_r"], "sim.mag_r", lo=5.0)
    zc = spec["z"]
    number_in(zc["at_r20"], "sim.z.at_r20", 1e-3, 10)
    number_in(zc["scatter"], "sim.z.scatter", 0, 2)
    number_in(zc["slope"], "sim.z.slope", -2, 2)
    _pair([zc["min"], zc["max"]], "sim.z [min, max]", lo=1e-4)
    number_in(zc["max"], "sim.z.max", 1e-4, 6.0)
    for name in CLASSES:
        spec["bulge_fraction"][name] = _pair(spec["bulge_fraction"][name], f"sim.bulge_fraction.{name}", lo=0.0)
        if spec["bulge_fraction"][name][1] > 1:
            raise ConfigError(f"sim.bulge_fraction.{name} must lie in [0, 1] (got {spec['bulge_fraction'][name]}).")
        number_in(spec["size_kpc"][name], f"sim.size_kpc.{name}", 0.01, 100)
        number_in(spec["log_ml_r"][name], f"sim.log_ml_r.{name}", -3, 3)
    _pair([spec["size_min"], spec["size_max"]], "sim [size_min, size_max]", lo=0.01)
    sp = spec["spectrum"]
    number_in(sp["fraction"], "sim.spectrum.fraction", 0, 1)
    number_in(sp["dwave"], "sim.spectrum.dwave", 0.01, 100)
    number_in(sp["sigma"], "sim.spectrum.sigma", 0, 1e6)
    number_in(sp["bad_pixel_rate"], "sim.spectrum.bad_pixel_rate", 0, 1)
    number_in(sp["sky_mask"], "sim.spectrum.sky_mask", 0, 1e6)
    _pair([sp["wave_min"], sp["wave_max"]], "sim.spectrum [wave_min, wave_max]", lo=100.0)
    spec["sky"]["ra"] = _pair(spec["sky"]["ra"], "sim.sky.ra", lo=-360.0)
    spec["sky"]["dec"] = _pair(spec["sky"]["dec"], "sim.sky.dec", lo=-90.0)
    number_in(spec["sky"]["dec"][1], "sim.sky.dec (high)", -90.0, 90.0)
    checks = {"sim.pixel_scale": (spec["pixel_scale"], 1e-3, 10), "sim.psf.beta": (spec["psf"]["beta"], 1.6, 20),
              "sim.psf.seeing_scatter": (spec["psf"]["seeing_scatter"], 0, 1), "sim.depth_scatter": (spec["depth_scatter"], 0, 2),
              "sim.clean_smoothing": (spec["clean_smoothing"], 1e-3, 1.0), "sim.mag_slope": (spec["mag_slope"], -2, 2)}
    for what, (value, lo, hi) in checks.items():
        number_in(value, what, lo, hi)
    return spec


def wavelength(spec: Mapping[str, Any]) -> np.ndarray:
    """The spectra's wavelength grid (nm, pixel centres) of resolved settings ``spec``."""
    sp = spec["spectrum"]
    n = int(math.floor((float(sp["wave_max"]) - float(sp["wave_min"])) / float(sp["dwave"]) + 1e-9)) + 1
    return float(sp["wave_min"]) + float(sp["dwave"]) * np.arange(n)


def spectrum_noise(wave: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel sigma, relative sky-line strength) on ``wave`` (nm): ``sigma`` in the middle of the
    spectrograph's range, rising as the throughput falls at both ends, and at the night-sky lines."""
    mid = 0.5 * (wave[0] + wave[-1])
    half = max(0.5 * (wave[-1] - wave[0]), 1e-9)
    throughput = 1.0 - 0.6 * ((wave - mid) / half) ** 4
    step = float(wave[1] - wave[0]) if len(wave) > 1 else 1.0
    width = max(0.5 * step, 0.15)
    sky = np.zeros_like(wave)
    for line, strength in SKY_LINES:
        sky += strength * np.exp(-0.5 * ((wave - line) / width) ** 2)
    return sigma * np.sqrt(1.0 + 8.0 * sky) / throughput, sky


@dataclass
class _Part:
    profile: Any  # unit-flux GSObject
    frac: float
    bulge: bool


def _sed_setup(rng: np.random.Generator, spec: Mapping[str, Any], name: str) -> tuple[float, float, float]:
    """(r magnitude, z, bulge fraction) of one object."""
    mag_r = _sample_mag(rng, *spec["mag_r"], float(spec["mag_slope"]))
    zc = spec["z"]
    median = float(zc["at_r20"]) * 10.0 ** (float(zc["slope"]) * (mag_r - 20.0))
    z = float(np.clip(median * 10.0 ** rng.normal(0.0, float(zc["scatter"])), float(zc["min"]), float(zc["max"])))
    lo, hi = spec["bulge_fraction"][name]
    return mag_r, z, float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def disk_template(name: str) -> str:
    """The template of an SED type's disk (an E galaxy has none; Sbc stands in)."""
    return "Sbc" if name == "E" else name


def galaxy_seds(spec: Mapping[str, Any], name: str, b: float, z: float, mag_r: float) -> tuple[Any, Any, Any, Any]:
    """(bulge SED, disk SED, total SED) observed at ``z``, the total of r magnitude ``mag_r`` (a part without
    light is None), and the rest-frame total SED (unit r flux)."""
    filters = spec["filters"]
    rest = seds.mixture(b, disk_template(name), filters)
    scale = 10.0 ** (-0.4 * (mag_r - rest.atRedshift(z).calculateMagnitude(seds.bandpass("r", filters))))
    observed = [None if p is None else (p * scale).atRedshift(z) for p in seds.parts(b, disk_template(name), filters)]
    return observed[0], observed[1], (rest * scale).atRedshift(z), rest


def _structure(rng: np.random.Generator, spec: Mapping[str, Any], name: str, z: float, galsim: Any, gsp: Any) -> tuple[dict, dict]:
    """Unit-flux bulge and disk profiles and the structural truth."""
    kpc = float(spec["size_kpc"][name]) * 10.0 ** rng.normal(0.0, float(spec["size_kpc"]["scatter"]))
    hlr = float(np.clip(kpc * seds.arcsec_per_kpc(z), float(spec["size_min"]), float(spec["size_max"])))
    pa = float(rng.uniform(0.0, 180.0))
    q_disk = float(np.clip(math.sqrt(rng.uniform(0.04, 1.0)), 0.2, 1.0))
    q_bulge = float(rng.uniform(0.6, 1.0))
    bulge = galsim.DeVaucouleurs(half_light_radius=0.6 * hlr if name != "E" else hlr, trunc=8.0 * hlr, flux_untruncated=False, gsparams=gsp)
    bulge = bulge.shear(q=q_bulge, beta=pa * galsim.degrees)
    disk = galsim.Exponential(half_light_radius=hlr, gsparams=gsp).shear(q=q_disk, beta=pa * galsim.degrees)
    main_q = q_bulge if name == "E" else q_disk
    return {"bulge": bulge, "disk": disk}, {"sersic_n": 4.0 if name == "E" else 1.0, "axis_ratio": main_q, "position_angle": pa % 180.0}


def _photometry(rng: np.random.Generator, spec: Mapping[str, Any], total: Any) -> tuple[dict, dict]:
    """(true magnitudes, catalog columns of the observed photometry) of the observed-frame SED ``total``."""
    phot = spec["photometry"]
    true, cols = {}, {}
    for b in phot["bands"]:
        bp = seds.bandpass(b, spec["filters"])
        flux = seds.nanomaggies(total.calculateFlux(bp), bp)
        true[b] = seds.ab_magnitude(flux)
        sigma = 10.0 ** (-0.4 * (float(phot["depth"][b]) - 22.5)) / 5.0
        measured = flux + sigma * float(rng.standard_normal())
        if rng.random() < float(phot["missing"][b]):
            cols.update({f"phot_flux_{b}": math.nan, f"phot_flux_ivar_{b}": 0.0, f"phot_mag_{b}": math.nan, f"phot_mag_err_{b}": math.nan})
            continue
        mag = seds.ab_magnitude(measured)
        err = 2.5 / math.log(10.0) * sigma / measured if measured > 0 else math.nan
        cols.update({f"phot_flux_{b}": measured, f"phot_flux_ivar_{b}": 1.0 / sigma**2, f"phot_mag_{b}": mag, f"phot_mag_err_{b}": err})
    return true, cols


def observe_spectrum(rng: np.random.Generator, spec: Mapping[str, Any], total: Any) -> dict[str, np.ndarray]:
    """``flux``, ``ivar`` (float32) and ``mask`` (uint8, 1 = bad) of the observed-frame SED ``total`` on the grid."""
    sp = spec["spectrum"]
    wave = wavelength(spec)
    model = seds.f_lambda(total, wave)
    sigma, sky = spectrum_noise(wave, float(sp["sigma"]))
    flux = model + sigma * rng.standard_normal(len(wave))
    mask = (rng.random(len(wave)) < float(sp["bad_pixel_rate"])) | (sky > float(sp["sky_mask"]))
    ivar = np.where(mask, 0.0, 1.0 / sigma**2)
    return {"flux": flux.astype(np.float32), "ivar": ivar.astype(np.float32), "mask": mask.astype(np.uint8)}


@dataclass
class Galaxy:
    """One object's SED side: its class, SEDs (observed frame; rest-frame total of unit r flux) and the truth
    and photometry catalog columns (which need no drawing)."""

    cls: int
    name: str
    z: float
    bulge_fraction: float
    sed_bulge: Any
    sed_disk: Any
    total: Any
    row: dict


def _streams(cfg: Mapping[str, Any], i: int) -> list[np.random.Generator]:
    """Object ``i``'s independent random streams: (galaxy, image, photometry, spectrum), from (seed, i) only, so
    the catalog columns do not depend on whether images are drawn."""
    root = np.random.SeedSequence([int(cfg["seed"]), int(i), 22])
    return [np.random.default_rng(s) for s in root.spawn(4)]


def galaxy(cfg: Mapping[str, Any], i: int, with_spectrum: bool = True) -> Galaxy:
    """Object ``i`` without its images: SED type, redshift, SEDs, truth, photometry and (``row["spectrum"]``,
    when ``with_spectrum``) the observed spectrum or None."""
    spec = cfg["sim"]
    rng, _, rng_phot, rng_spec = _streams(cfg, i)
    cls = int(rng.choice(len(CLASSES), p=spec["class_fractions"]))
    name = CLASSES[cls]
    mag_r, z, b = _sed_setup(rng, spec, name)
    sed_bulge, sed_disk, total, rest = galaxy_seds(spec, name, b, z, mag_r)
    abs_r = mag_r - seds.luminosity_distance_modulus(z) - seds.k_correction(rest, z, "r", spec["filters"])
    ml = b * 10.0 ** float(spec["log_ml_r"]["E"]) + (1.0 - b) * 10.0 ** float(spec["log_ml_r"][disk_template(name)])
    has_spec = bool(rng.random() < float(spec["spectrum"]["fraction"]))
    ra_lo, ra_hi = spec["sky"]["ra"]
    dec_lo, dec_hi = spec["sky"]["dec"]
    sin_dec = rng.uniform(math.sin(math.radians(dec_lo)), math.sin(math.radians(dec_hi)))
    row: dict[str, Any] = {"class": cls, "class_name": name, "z": z, "log_mstar": -0.4 * (abs_r - 4.65) + math.log10(ml),
                           "abs_mag_r": abs_r, "bulge_to_total": b}
    true_mags, phot_cols = _photometry(rng_phot, spec, total)
    for band, mag in true_mags.items():
        row[f"mag_{band}"] = mag
    row.update(phot_cols)
    row.update(ra=float(rng.uniform(ra_lo, ra_hi)) % 360.0, dec=math.degrees(math.asin(sin_dec)))
    if with_spectrum:
        row["spectrum"] = observe_spectrum(rng_spec, spec, total) if has_spec else None
    return Galaxy(cls, name, z, b, sed_bulge, sed_disk, total, row)


def simulate_object(cfg: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image, clean image (float32 (bands, H, W)) and catalog row of object ``i``; the row's ``spectrum`` is
    the observed spectrum (``observe_spectrum``) or None."""
    import galsim

    spec = cfg["sim"]
    bands = list(cfg["bands"])
    size, scale = int(cfg["image_size"]), float(spec["pixel_scale"])
    gsp = _gsparams(galsim)
    gal = galaxy(cfg, i)
    rng = _streams(cfg, i)[1]
    profiles, truth = _structure(rng, spec, gal.name, gal.z, galsim, gsp)
    offset = rng.uniform(-0.5, 0.5, size=2)

    seeing = float(np.clip(math.exp(rng.normal(0.0, float(spec["psf"]["seeing_scatter"]))), 0.5, 2.0))
    chromatic = [profiles[k] * s for k, s in (("bulge", gal.sed_bulge), ("disk", gal.sed_disk)) if s is not None]
    model = chromatic[0] if len(chromatic) == 1 else galsim.Add(chromatic)
    draw = dict(nx=size, ny=size, scale=scale, offset=(float(offset[0]), float(offset[1])))
    image = np.empty((len(bands), size, size))
    fwhm, sigma = {}, {}
    for k, band in enumerate(bands):
        bp = seds.bandpass(band, spec["filters"])
        fwhm[band] = float(spec["psf"]["fwhm"][band]) * seeing
        depth = float(spec["depth"][band]) + float(rng.normal(0.0, float(spec["depth_scatter"])))
        sigma[band] = sky_sigma(depth, fwhm[band], scale, float(spec["zeropoint"]))
        psf = galsim.Moffat(beta=float(spec["psf"]["beta"]), fwhm=fwhm[band], trunc=float(spec["psf"]["trunc"]) * fwhm[band], gsparams=gsp)
        image[k] = galsim.Convolve(model, psf, gsparams=gsp).drawImage(bp, **draw).array * seds.to_nanomaggies(bp)
    fluxes = np.zeros((2, len(BANDS)))
    for j, band in enumerate(BANDS):
        bp = seds.bandpass(band, spec["filters"])
        for m, part in enumerate((gal.sed_bulge, gal.sed_disk)):
            fluxes[m, j] = seds.nanomaggies(part.calculateFlux(bp), bp) if part is not None else 0.0
    parts = [_Part(profiles["bulge"], gal.bulge_fraction, True), _Part(profiles["disk"], 1.0 - gal.bulge_fraction, False)]
    clean, hlr = clean_truth(parts, fluxes, bands, spec, size, scale, offset, gsp)
    image = image + rng.standard_normal(image.shape) * np.array([sigma[b] for b in bands])[:, None, None]

    row = dict(gal.row)
    row.update(sersic_n=truth["sersic_n"], half_light_radius=hlr, axis_ratio=truth["axis_ratio"], position_angle=truth["position_angle"])
    for band in bands:
        row[f"psf_fwhm_{band}"] = fwhm[band]
    for band in bands:
        row[f"sky_sigma_{band}"] = sigma[band]
    row.update(offset_x=float(offset[0]), offset_y=float(offset[1]))
    return image.astype(np.float32), clean.astype(np.float32), row


def simulate_catalog(cfg: Mapping[str, Any], n: Optional[int] = None) -> Any:
    """The truth and photometry columns of objects ``0 .. n-1`` (default ``data.n``) of the data config ``cfg``
    as a pandas DataFrame, without drawing images or spectra: the same values as the simulated dataset's
    catalog (``id`` is the object number), at a few milliseconds an object."""
    import pandas as pd

    from galframe.sim import resolve_config

    run = resolve_config(cfg)
    rows = [{"id": i, **galaxy(run, i, with_spectrum=False).row} for i in range(int(run["n"] if n is None else n))]
    return pd.DataFrame(rows)


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray, list[dict]]:
    """Objects ``start .. stop-1``: (start, images, clean, rows)."""
    with _one_blas_thread():
        out = [simulate_object(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out]


# ---------------------------------------------------------------------------------------------
# the spectra beside the shards
# ---------------------------------------------------------------------------------------------
class SpectraWriter:
    """Writes the rows' ``spectrum`` entries to ``spectra.h5`` in the dataset's (temporary) directory and puts
    ``spectrum_row`` (the row in that file, -1 for none) in their place.

    ``spectra.h5``: ``wavelength`` (L,) nm, ``ids`` (M,) int64 (the catalog ids), ``flux`` and ``ivar`` (M, L)
    float32 (1e-17 erg/s/cm^2/A and its inverse variance), ``mask`` (M, L) uint8 (1 = bad, ivar 0);
    attributes ``flux_unit``, ``wave_unit``."""

    def __init__(self, directory: Path, run: Mapping[str, Any]) -> None:
        self.path = Path(directory) / SPECTRA
        self.wave = wavelength(run["sim"])
        self.n_objects = 0
        self.n = 0
        self._h5: Any = None

    def _open(self) -> Any:
        import h5py

        h5 = h5py.File(self.path, "w")
        length = len(self.wave)
        h5.create_dataset("wavelength", data=self.wave)
        h5.create_dataset("ids", dtype="int64", shape=(0,), maxshape=(None,), chunks=(1024,))
        for key, dtype in (("flux", "float32"), ("ivar", "float32"), ("mask", "uint8")):
            h5.create_dataset(key, dtype=dtype, shape=(0, length), maxshape=(None, length), chunks=(64, length))
        h5.attrs["flux_unit"] = "1e-17 erg/s/cm^2/Angstrom"
        h5.attrs["wave_unit"] = "nm"
        return h5

    def add(self, rows: Sequence[dict]) -> list[dict]:
        rows = [dict(r) for r in rows]
        taken = [(k, r.pop("spectrum", None)) for k, r in enumerate(rows)]
        taken = [(k, s) for k, s in taken if s is not None]
        for k, row in enumerate(rows):
            row["spectrum_row"] = -1
        if taken:
            if self._h5 is None:
                self._h5 = self._open()
            lo, hi = self.n, self.n + len(taken)
            for key in ("ids", "flux", "ivar", "mask"):
                self._h5[key].resize(hi, axis=0)
            self._h5["ids"][lo:hi] = [self.n_objects + k for k, _ in taken]
            for key in ("flux", "ivar", "mask"):
                self._h5[key][lo:hi] = np.stack([s[key] for _, s in taken])
            for j, (k, _) in enumerate(taken):
                rows[k]["spectrum_row"] = lo + j
            self.n = hi
        self.n_objects += len(rows)
        return rows

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def side_writer(directory: Path, run: Mapping[str, Any]) -> SpectraWriter:
    """What ``galframe.sim.simulate`` writes beside the shards for this generator: the spectra."""
    return SpectraWriter(directory, run)


def read_spectra(root: "str | Path") -> dict[str, np.ndarray]:
    """``wavelength``, ``ids``, ``flux``, ``ivar``, ``mask`` of a multimodal dataset's ``spectra.h5``."""
    import h5py

    path = Path(root) / SPECTRA
    if not path.is_file():
        raise DataError(f"{path}: no spectra file (is this a multimodal dataset with spectrum.fraction > 0?).")
    try:
        with h5py.File(path, "r") as h5:
            return {key: np.asarray(h5[key][:]) for key in ("wavelength", "ids", "flux", "ivar", "mask")}
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: unreadable spectra file ({type(exc).__name__}: {exc})") from exc
