"""DESI Legacy Imaging Surveys-like galaxy cutouts, drawn with GalSim.

Every object is independent: its randomness comes only from ``(seed, i)``, so results do not
depend on the number of workers or on chunking.  Units: arcsec, nanomaggies (zero point 22.5).

Per object and band ``b`` the generator builds a list of *components* (unit-flux GalSim profiles
sharing one geometry, each with its own fraction of the r-band flux and its own g-r, r-z colours)
and draws

* ``image[b]``: sum of components with band-b fluxes, convolved with a Moffat PSF (per band, with
  one seeing factor per object), pixel-integrated, plus Gaussian sky noise of ``sky_sigma_b``;
* ``clean[b]``: the same sum without PSF and noise, pixel-integrated (drawn per component at 2x
  oversampling and binned, with a tiny ``clean_smoothing`` Gaussian so cuspy Sersic profiles and
  point-like knots draw with small FFTs); stars put their flux in the 4 pixels around their
  position (bilinear split).

Conventions of the truth columns:

* ``position_angle``: degrees in [0, 180), counter-clockwise from the +x axis (array columns)
  towards +y (array rows), i.e. as shown with ``origin="lower"``; 0 for stars.
* ``axis_ratio``: minor/major of the main component (the spheroid for ``smooth``, the disk for
  disks, the diffuse Sersic for ``irregular``, the primary galaxy for ``merger``); for inclined
  disks the second-moment axis ratio of a thick disk; 1 for stars.
* ``sersic_n``: index of the spheroid / bulge (1.0 for pure disks, the diffuse component's index for
  ``irregular``, the primary's for ``merger``); NaN for stars.
* ``half_light_radius``: radius of the circle about the flux centroid holding half the *total*
  r-band flux of the PSF-free profile (measured on a 2x oversampled drawing); 0 for stars.
* ``bulge_to_total``: r-band flux fraction in spheroids (1 for ``smooth``); NaN for stars.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from galframe.errors import ConfigError, did_you_mean
from galframe.sim import merge_settings, number_in, randomise
from galframe.sim import sample_mag as _sample_mag  # noqa: F401  (galaxy10, fields and multimodal read it here)
from galframe.sim.desi_parts import (  # noqa: F401  (the components, importable from here)
    Model, _build_disk, _build_edge_on, _build_irregular, _build_merger, _build_smooth, _Ctx, _disk_q, _project, _quantize_n,
)
from galframe.sim.drawing import (  # noqa: F401  (drawing helpers, importable from here)
    BANDS, _bilinear, _bin2, _gsparams, _hlr, _one_blas_thread, clean_truth, sky_sigma,
)

CLASSES = ("smooth", "featured_disk", "edge_on", "irregular", "merger", "star")

#: generator settings (the ``sim`` block of a data config); user values are merged over these
DEFAULTS: dict[str, Any] = {
    "generator": "desi",
    "pixel_scale": 0.262,
    "zeropoint": 22.5,
    "classes": list(CLASSES),
    "class_fractions": [0.34, 0.30, 0.12, 0.12, 0.04, 0.08],
    # total r magnitude range; counts rise as 10**(mag_slope * mag)
    "mag_r": [16.0, 19.5],
    "mag_slope": 0.3,
    # half-light radius (arcsec) vs r magnitude: log10 hlr = log10(hlr_at_r18) - slope*(mag_r - 18)
    "size": {"hlr_at_r18": 1.6, "slope": 0.15, "scatter": 0.15, "min": 0.4, "max": 4.0},
    "psf": {"beta": 3.5, "fwhm": {"g": 1.30, "r": 1.20, "z": 1.10}, "seeing_scatter": 0.15, "trunc": 0.0},
    "depth": {"g": 24.0, "r": 23.4, "z": 22.5},
    "depth_scatter": 0.25,
    # star-forming knots (RandomKnots points): scattered clumps and spiral-arm knots of a
    # featured disk, clumps of an irregular galaxy
    "knots": {"featured_disk": [15, 40], "spiral_arms": [40, 90], "irregular": [25, 70]},
    # Sersic profiles are truncated at this many half-light radii (keeps FFTs small)
    "sersic_trunc": 8.0,
    # sigma (arcsec) of the tiny Gaussian the PSF-free 'clean' images are drawn with
    "clean_smoothing": 0.08,
    "workers": None,
    "shard_size": 2048,
}

#: relative size of each class at fixed magnitude
SIZE_FACTOR = {"smooth": 0.8, "featured_disk": 1.3, "edge_on": 1.4, "irregular": 1.1, "merger": 0.8}
#: smallest half-light radius (arcsec) per class, so that knots and arms are resolved at all
SIZE_FLOOR = {"featured_disk": 1.0, "irregular": 0.8}


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
#: tables replaced as a whole (not merged), so a band missing from the user's table is an error
_REPLACE = ("sim.psf.fwhm", "sim.depth")


def _merge(base: dict, over: Mapping, where: str) -> dict:
    return merge_settings(base, over, where, "desi", _REPLACE)


def _pair(value: Any, what: str, lo: float = -math.inf, integer: bool = False) -> list:
    try:
        a, b = (float(v) for v in value)
    except Exception:
        raise ConfigError(f"{what} must be a pair [low, high] (got {value!r}).") from None
    if not (lo <= a <= b) or not (math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"{what} must satisfy {lo:g} <= low <= high (got [{a:g}, {b:g}]).")
    return [int(a), int(b)] if integer else [a, b]


def resolve(sim: Optional[Mapping[str, Any]], bands: list[str]) -> dict[str, Any]:
    """The generator settings with defaults filled in, validated; raises ConfigError."""
    sim, knobs = randomise.take(sim or {}, "desi")
    spec = _merge(DEFAULTS, sim, "sim")
    classes = spec["classes"]
    if isinstance(classes, str) or not classes:
        raise ConfigError(f"sim.classes must be a non-empty list of class names (got {classes!r}).")
    classes = [str(c) for c in classes]
    for name in classes:
        if name not in CLASSES:
            raise ConfigError(f"Unknown class '{name}' in sim.classes.{did_you_mean(name, CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"sim.classes lists a class twice: {classes}.")
    fractions = spec["class_fractions"]
    if fractions is None:  # null: equal fractions
        fractions = [1.0 / len(classes)] * len(classes)
    try:
        fractions = [float(f) for f in fractions]
    except Exception:
        raise ConfigError(f"sim.class_fractions must be a list of numbers (got {fractions!r}).") from None
    if len(fractions) != len(classes):
        raise ConfigError(
            f"sim.class_fractions has {len(fractions)} value(s) but sim.classes has {len(classes)} "
            f"({', '.join(classes)}); give one fraction per class."
        )
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ConfigError(f"sim.class_fractions must be non-negative numbers (got {fractions}).")
    total = sum(fractions)
    if abs(total - 1.0) > 0.01:
        raise ConfigError(f"sim.class_fractions must sum to 1 (they sum to {total:g}): {fractions}.")
    spec["classes"] = classes
    spec["class_fractions"] = [f / total for f in fractions]

    for band in bands:
        if band not in BANDS:
            raise ConfigError(f"The desi simulator draws only bands {list(BANDS)}; band '{band}' is not one of them.")
        for what, table in (("sim.psf.fwhm", spec["psf"]["fwhm"]), ("sim.depth", spec["depth"])):
            if not isinstance(table, Mapping) or band not in table or table[band] is None:
                raise ConfigError(f"Band '{band}' has no entry in {what}; give one for every band in data.bands.")
    for band in bands:
        fwhm = float(spec["psf"]["fwhm"][band])
        if not (0.1 <= fwhm <= 10):
            raise ConfigError(f"sim.psf.fwhm.{band} must be a FWHM in arcsec between 0.1 and 10 (got {fwhm:g}).")
        spec["psf"]["fwhm"][band] = fwhm
        spec["depth"][band] = float(spec["depth"][band])
    spec["mag_r"] = _pair(spec["mag_r"], "sim.mag_r", lo=5.0)
    for key in ("featured_disk", "spiral_arms", "irregular"):
        spec["knots"][key] = _pair(spec["knots"][key], f"sim.knots.{key}", lo=1, integer=True)
    checks = {
        "sim.pixel_scale": (spec["pixel_scale"], 1e-3, 10),
        "sim.psf.beta": (spec["psf"]["beta"], 1.6, 20),
        "sim.psf.seeing_scatter": (spec["psf"]["seeing_scatter"], 0, 1),
        "sim.psf.trunc": (spec["psf"]["trunc"], 0, 100),
        "sim.depth_scatter": (spec["depth_scatter"], 0, 2),
        "sim.mag_slope": (spec["mag_slope"], -2, 2),
        "sim.sersic_trunc": (spec["sersic_trunc"], 2.5, 100),
        "sim.clean_smoothing": (spec["clean_smoothing"], 0.0, 1.0),
        "sim.size.hlr_at_r18": (spec["size"]["hlr_at_r18"], 0.01, 100),
        "sim.size.scatter": (spec["size"]["scatter"], 0, 2),
        "sim.size.slope": (spec["size"]["slope"], -2, 2),
    }
    for what, (value, lo, hi) in checks.items():
        number_in(value, what, lo, hi)
    size_min, size_max = _pair([spec["size"]["min"], spec["size"]["max"]], "sim.size [min, max]", lo=0.01)
    spec["size"]["min"], spec["size"]["max"] = size_min, size_max
    if spec["clean_smoothing"] <= 0:
        # 0 would make cuspy profiles and knots need enormous FFTs
        raise ConfigError("sim.clean_smoothing must be > 0 (a tiny Gaussian, e.g. 0.05 arcsec).")
    return randomise.attach(spec, knobs)


# ---------------------------------------------------------------------------------------------
# one object
# ---------------------------------------------------------------------------------------------
def _start(cfg: Mapping[str, Any], i: int) -> tuple[np.random.Generator, int, int]:
    """Object ``i``'s numpy generator, GalSim seed and class index: all from (seed, i) only."""
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), int(i)]))
    gs_seed = int(rng.integers(1, 2**31 - 1))  # never 0: GalSim would seed from the clock
    cls = int(rng.choice(len(cfg["sim"]["classes"]), p=cfg["sim"]["class_fractions"]))
    return rng, gs_seed, cls


def object_class(cfg: Mapping[str, Any], i: int) -> int:
    """The class index object ``i`` gets (cheap: nothing is drawn)."""
    return _start(cfg, i)[2]


def _conditions(rng: np.random.Generator, spec: Mapping[str, Any], bands: list, galsim: Any, gsp: Any,
                dom: randomise.Domain) -> tuple[dict, dict, dict]:
    """(PSF FWHM, sky noise, PSF) per drawn band: one seeing factor per object, depth scatter per band; the PSF
    a Moffat (``sim.psf.family`` may choose another)."""
    scale, zp = float(spec["pixel_scale"]), float(spec["zeropoint"])
    seeing = float(np.clip(math.exp(rng.normal(0.0, float(spec["psf"]["seeing_scatter"]))), 0.5, 2.0))
    depth_shift = {b: float(rng.normal(0.0, float(spec["depth_scatter"]))) for b in BANDS}
    fwhm = {b: float(spec["psf"]["fwhm"][b]) * seeing for b in bands}
    sigma = {b: sky_sigma(float(spec["depth"][b]) + depth_shift[b], fwhm[b], scale, zp) for b in bands}
    psf_trunc = float(spec["psf"]["trunc"])
    psfs = {b: dom.psf(galsim, fwhm[b], float(spec["psf"]["beta"]), gsp, psf_trunc) for b in bands}
    return fwhm, sigma, psfs


def _star(rng: np.random.Generator, mag_r: float, zp: float, psfs: dict, bands: list, draw: dict, size: int,
          offset: Any) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(image without noise, clean image, magnitudes, truth) of a star."""
    # stellar locus, roughly: r-z grows with g-r, steeply for M dwarfs
    gr = float(rng.uniform(0.2, 1.5))
    rz = -0.05 + 0.6 * gr + 1.2 * max(gr - 1.2, 0.0) + float(rng.normal(0.0, 0.05))
    mags = {"g": mag_r + gr, "r": mag_r, "z": mag_r - rz}
    flux = {b: 10.0 ** ((zp - mags[b]) / 2.5) for b in BANDS}
    image = np.stack([psfs[b].withFlux(flux[b]).drawImage(**draw).array for b in bands])
    c = (size - 1) / 2.0
    clean = _bilinear(np.array([flux[b] for b in bands]), c + offset[0], c + offset[1], size)
    truth = dict(sersic_n=math.nan, half_light_radius=0.0, axis_ratio=1.0, position_angle=0.0, bulge_to_total=math.nan)
    return image, clean, mags, truth


def _galaxy_model(ctx: _Ctx, name: str, mag_r: float, stamp: float) -> Model:
    """The components of a galaxy of class ``name``, its size from the size-magnitude relation."""
    size_cfg = ctx.spec["size"]
    log_h = (
        math.log10(float(size_cfg["hlr_at_r18"]))
        - float(size_cfg["slope"]) * (mag_r - 18.0)
        + ctx.rng.normal(0.0, float(size_cfg["scatter"]))
    )
    lo = max(float(size_cfg["min"]), min(SIZE_FLOOR.get(name, 0.0), float(size_cfg["max"])))
    h = float(np.clip(10.0**log_h * SIZE_FACTOR[name], lo, size_cfg["max"]))
    if name == "smooth":
        return _build_smooth(ctx, h)
    if name == "featured_disk":
        return _build_disk(ctx, h)
    if name == "edge_on":
        return _build_edge_on(ctx, h)
    if name == "irregular":
        return _build_irregular(ctx, h)
    return _build_merger(ctx, h, stamp)


def _galaxy(ctx: _Ctx, model: Model, mag_r: float, psfs: dict, bands: list, draw: dict, size: int,
            offset: Any, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(image without noise, clean image, magnitudes, truth) of a galaxy made of ``model``'s components
    (with a colour gradient of log-dilation ``delta``: ``randomise.colour_split``)."""
    galsim, gsp, spec = ctx.galsim, ctx.gsp, ctx.spec
    zp, scale = float(spec["zeropoint"]), float(spec["pixel_scale"])
    comps = model.components
    fr = np.array([c.frac for c in comps]) * 10.0 ** ((zp - mag_r) / 2.5)
    # (components, g/r/z) fluxes
    fluxes = np.stack(
        [fr * 10.0 ** (-0.4 * np.array([c.gr for c in comps])), fr, fr * 10.0 ** (0.4 * np.array([c.rz for c in comps]))],
        axis=1,
    )
    totals = fluxes.sum(axis=0)
    mags = {b: zp - 2.5 * math.log10(totals[k]) for k, b in enumerate(BANDS)}
    comps, fluxes = randomise.colour_split(comps, fluxes, delta, lambda c: True)
    image = np.empty((len(bands), size, size))
    for k, b in enumerate(bands):
        j = BANDS.index(b)
        gal = galsim.Sum([c.profile * float(fluxes[m, j]) for m, c in enumerate(comps)], gsparams=gsp)
        image[k] = galsim.Convolve(gal, psfs[b], gsparams=gsp).drawImage(**draw).array
    clean, hlr = clean_truth(comps, fluxes, bands, spec, size, scale, offset, gsp)
    bulge = sum(float(fluxes[m, 1]) for m, c in enumerate(comps) if c.bulge)
    truth = dict(
        sersic_n=float(model.sersic_n),
        half_light_radius=hlr,
        axis_ratio=float(model.axis_ratio),
        position_angle=float(model.position_angle) % 180.0,
        bulge_to_total=bulge / float(totals[1]),
    )
    return image, clean, mags, truth


def simulate_object(cfg: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image, clean image (both float32 (bands, H, W)) and catalog row of object ``i``.

    ``cfg`` is the resolved run config: ``seed``, ``bands``, ``image_size`` and ``sim`` (as
    returned by ``resolve``).  Only ``(seed, i)`` drive the randomness.
    """
    import galsim

    spec = cfg["sim"]
    bands: list[str] = list(cfg["bands"])
    size = int(cfg["image_size"])
    scale = float(spec["pixel_scale"])
    gsp = _gsparams(galsim)

    rng, gs_seed, cls = _start(cfg, i)
    dom = randomise.Domain(spec, "desi", cfg["seed"], i)
    name = spec["classes"][cls]
    mag_r = _sample_mag(rng, *spec["mag_r"], float(spec["mag_slope"]))
    offset = dom.offset(rng.uniform(-0.5, 0.5, size=2))
    fwhm, sigma, psfs = _conditions(rng, spec, bands, galsim, gsp, dom)
    ctx = _Ctx(rng, galsim.BaseDeviate(gs_seed), galsim, gsp, spec, dom)
    draw = dict(nx=size, ny=size, scale=scale, offset=(float(offset[0]), float(offset[1])))
    if name == "star":
        image, clean, mags, truth = _star(rng, mag_r, float(spec["zeropoint"]), psfs, bands, draw, size, offset)
    else:
        model = _galaxy_model(ctx, name, mag_r, size * scale)
        delta = dom.colour_delta() if name != "merger" else 0.0  # a merger's pieces are not centred
        image, clean, mags, truth = _galaxy(ctx, model, mag_r, psfs, bands, draw, size, offset, delta)
    extra = randomise.background(dom, galsim, gsp, size * scale, float(spec["zeropoint"]))
    if extra:
        more, more_clean = randomise.draw_sources(galsim, gsp, extra, psfs, bands, draw, float(spec["clean_smoothing"]))
        image, clean = image + more, clean + more_clean
    noise = rng.standard_normal(size=(len(bands), size, size))
    sigmas = [sigma[b] for b in bands]
    observed, image = image, image + noise * np.array(sigmas)[:, None, None]
    if dom.noise_on:
        image = dom.add_noise(observed, image, sigmas, [psfs[b] for b in bands], draw, bands, float(spec["zeropoint"]))

    row: dict[str, Any] = {"class": cls, "class_name": name}
    row.update({k: truth[k] for k in ("sersic_n", "half_light_radius", "axis_ratio", "position_angle")})
    for b in BANDS:
        row[f"mag_{b}"] = float(mags[b])
    row["bulge_to_total"] = truth["bulge_to_total"]
    for b in bands:
        row[f"psf_fwhm_{b}"] = fwhm[b]
    for b in bands:
        row[f"sky_sigma_{b}"] = sigma[b]
    row["offset_x"] = float(offset[0])
    row["offset_y"] = float(offset[1])
    row.update(dom.columns(bands))
    return image.astype(np.float32), clean.astype(np.float32), row


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray, list[dict]]:
    """Objects ``start .. stop-1``: (start, images, clean, rows)."""
    with _one_blas_thread():
        out = [simulate_object(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out]
