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

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, did_you_mean

CLASSES = ("smooth", "featured_disk", "edge_on", "irregular", "merger", "star")
BANDS = ("g", "r", "z")

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

#: (mean g-r, mean r-z, scatter) of the colour families
COLOURS = {
    "red": (0.95, 0.58, 0.06),  # ellipticals and bulges
    "disk": (0.62, 0.38, 0.08),  # star-forming disks
    "dusty": (0.82, 0.52, 0.08),  # edge-on disks (reddened)
    "blue": (0.42, 0.24, 0.08),  # irregulars' diffuse light, tidal debris
    "knots": (0.18, 0.08, 0.08),  # star-forming knots
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
    out = copy.deepcopy(base)
    for key, value in over.items():
        here = f"{where}.{key}"
        if key not in base:
            raise ConfigError(f"Unknown key '{here}' for the desi simulator.{did_you_mean(key, base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{here} must be a mapping (got {value!r}).")
            out[key] = dict(value) if here in _REPLACE else _merge(base[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    spec = _merge(DEFAULTS, sim or {}, "sim")
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
        try:
            value = float(value)
        except Exception:
            raise ConfigError(f"{what} must be a number (got {value!r}).") from None
        if not (lo <= value <= hi):
            raise ConfigError(f"{what} must be between {lo:g} and {hi:g} (got {value:g}).")
    size_min, size_max = _pair([spec["size"]["min"], spec["size"]["max"]], "sim.size [min, max]", lo=0.01)
    spec["size"]["min"], spec["size"]["max"] = size_min, size_max
    if spec["clean_smoothing"] <= 0:
        # 0 would make cuspy profiles and knots need enormous FFTs
        raise ConfigError("sim.clean_smoothing must be > 0 (a tiny Gaussian, e.g. 0.05 arcsec).")
    return spec


# ---------------------------------------------------------------------------------------------
# one object
# ---------------------------------------------------------------------------------------------
@dataclass
class Component:
    profile: Any  # unit-flux GSObject (arcsec)
    frac: float  # fraction of the object's r-band flux
    gr: float  # g - r
    rz: float  # r - z
    bulge: bool = False


@dataclass
class Model:
    components: list[Component]
    sersic_n: float
    axis_ratio: float
    position_angle: float  # degrees
    extra: dict = field(default_factory=dict)


class _Ctx:
    """What the builders need: numpy and GalSim generators, GalSim, gsparams, settings."""

    def __init__(self, rng: np.random.Generator, gs_rng: Any, galsim: Any, gsparams: Any, spec: Mapping) -> None:
        self.rng, self.gs_rng, self.galsim, self.gsp, self.spec = rng, gs_rng, galsim, gsparams, spec

    def colour(self, family: str) -> tuple[float, float]:
        gr, rz, sd = COLOURS[family]
        return float(self.rng.normal(gr, sd)), float(self.rng.normal(rz, sd))

    def sersic(self, n: float, hlr: float) -> Any:
        # low-index profiles fall fast: truncate only the extended ones (n >= 2)
        trunc = float(self.spec["sersic_trunc"]) * hlr if n >= 2.0 else 0.0
        return self.galsim.Sersic(
            n=n,
            half_light_radius=hlr,
            trunc=trunc,
            flux_untruncated=False,
            gsparams=self.gsp,
        )


def _quantize_n(n: float) -> float:
    """Sersic indices on a 0.1 grid: GalSim caches one Hankel table per index (at most 100)."""
    return float(np.clip(round(n * 10.0) / 10.0, 0.3, 6.2))


def _disk_q(cos_i: float, h_over_r: float) -> float:
    """Second-moment axis ratio of an inclined exponential disk with a sech^2 vertical profile."""
    q0 = 0.5236 * h_over_r  # sqrt((pi^2/12) h^2 / (3 r_s^2))
    return float(math.sqrt(cos_i**2 + (q0**2) * (1.0 - cos_i**2)))


def _project(obj: Any, cos_i: float, pa_deg: float, galsim: Any) -> Any:
    """Put a face-on disk-plane profile into a disk inclined about x, then rotate by pa."""
    if cos_i < 0.999:
        obj = obj.shear(q=cos_i, beta=0.0 * galsim.degrees).dilate(math.sqrt(cos_i))
    return obj.rotate(pa_deg * galsim.degrees)


def _knots(ctx: _Ctx, npoints: int, profile: Any, sigma: float, place: Any) -> Any:
    """Unit-flux star-forming knots: ``npoints`` ``RandomKnots`` positions shot from ``profile``,
    moved by ``place`` (a function of a profile), with lognormal fluxes, convolved with a round
    Gaussian of ``sigma``.

    Transforming the points before the convolution keeps the blobs round and the FFTs small; the
    points are drawn by ``Points`` (same sum as RandomKnots, as one matrix product: much faster).
    """
    from galframe.sim._points import Points

    g = ctx.galsim
    xy = place(g.RandomKnots(int(npoints), profile=profile, rng=ctx.gs_rng)).points
    w = ctx.rng.lognormal(0.0, 0.5, size=len(xy))
    knots = Points(xy[:, 0], xy[:, 1], w / w.sum(), gsparams=ctx.gsp)
    return g.Convolve(knots, g.Gaussian(sigma=sigma, gsparams=ctx.gsp), gsparams=ctx.gsp)


def _exp(ctx: _Ctx, hlr: float) -> Any:
    return ctx.galsim.Exponential(half_light_radius=hlr, gsparams=ctx.gsp)


def _spiral(ctx: _Ctx, h: float, cos_i: float, pa_deg: float, sigma: float) -> Any:
    """Two or three logarithmic spiral arms traced by star-forming knots, in a disk inclined about
    x by acos(cos_i) and rotated by pa_deg; unit flux.

    The knots are a ``RandomKnots`` shot from an arm-shaped profile (elongated Gaussian segments
    along each arm, fading outwards), then projected and convolved with a Gaussian of ``sigma``.
    """
    g, rng = ctx.galsim, ctx.rng
    n_arms = int(rng.choice([2, 2, 2, 3]))
    tan_pitch = math.tan(math.radians(rng.uniform(12.0, 28.0)))
    r_in, r_out = h * rng.uniform(0.3, 0.5), h * rng.uniform(1.6, 2.3)
    t_max = math.log(r_out / r_in) / tan_pitch
    phase = rng.uniform(0.0, 2.0 * math.pi)
    chirality = 1.0 if rng.random() < 0.5 else -1.0
    m = 12  # segments per arm
    t = np.linspace(0.0, t_max, m)
    r = r_in * np.exp(t * tan_pitch)
    ds = r * (t_max / (m - 1)) * math.sqrt(1.0 + tan_pitch**2)  # arc length per segment
    width = 0.07 * h
    segments = []
    for arm in range(n_arms):
        theta = chirality * t + phase + 2.0 * math.pi * arm / n_arms
        # direction of the arm: d/dt of r (cos theta, sin theta)
        along = np.degrees(
            np.arctan2(tan_pitch * np.sin(theta) + chirality * np.cos(theta), tan_pitch * np.cos(theta) - chirality * np.sin(theta))
        )
        for k in range(m):
            s_along = max(0.6 * ds[k], width)
            seg = g.Gaussian(sigma=math.sqrt(s_along * width), flux=float(np.exp(-1.2 * r[k] / h) * ds[k]), gsparams=ctx.gsp)
            seg = seg.shear(q=width / s_along, beta=float(along[k]) * g.degrees) if s_along > width else seg
            segments.append(seg.shift(float(r[k] * math.cos(theta[k])), float(r[k] * math.sin(theta[k]))))
    arms = g.Sum(segments, gsparams=ctx.gsp)
    arms = arms.withFlux(1.0)
    lo, hi = ctx.spec["knots"]["spiral_arms"]
    return _knots(ctx, int(rng.integers(lo, hi + 1)), arms, sigma, lambda k: _project(k, cos_i, pa_deg, g))


def _build_smooth(ctx: _Ctx, h: float) -> Model:
    rng, g = ctx.rng, ctx.galsim
    n = _quantize_n(rng.uniform(2.5, 6.0))
    q = float(rng.uniform(0.5, 1.0))
    pa = float(rng.uniform(0.0, 180.0))
    prof = ctx.sersic(n, h).shear(q=q, beta=pa * g.degrees)
    gr, rz = ctx.colour("red")
    return Model([Component(prof, 1.0, gr, rz, bulge=True)], n, q, pa)


def _build_disk(ctx: _Ctx, h: float, features: bool = True) -> Model:
    """Bulge + inclined exponential disk (+ knots, spiral arms, sometimes a bar)."""
    rng, g = ctx.rng, ctx.galsim
    pa = float(rng.uniform(0.0, 180.0))
    cos_i = float(rng.uniform(math.cos(math.radians(70.0)), 1.0))
    h_over_r = float(rng.uniform(0.08, 0.15))
    disk = g.InclinedExponential(
        math.acos(cos_i) * g.radians, half_light_radius=h, scale_h_over_r=h_over_r, gsparams=ctx.gsp
    ).rotate(pa * g.degrees)
    comps: list[Component] = []
    bt = 0.0 if rng.random() < 0.15 else float(rng.uniform(0.05, 0.45))
    n_bulge = 1.0
    if bt > 0:
        n_bulge = _quantize_n(rng.uniform(1.5, 4.0))
        hb = max(0.12, h * float(rng.uniform(0.12, 0.3)))
        qb = float(rng.uniform(0.75, 1.0))
        bulge = ctx.sersic(n_bulge, hb).shear(q=qb, beta=(pa + rng.normal(0, 10.0)) * g.degrees)
        comps.append(Component(bulge, bt, *ctx.colour("red"), bulge=True))
    rest = 1.0 - bt
    parts = []  # (profile, fraction of disk light, colour family)
    if features:
        lo, hi = ctx.spec["knots"]["featured_disk"]
        knots = _knots(
            ctx, rng.integers(lo, hi + 1), _exp(ctx, h * rng.uniform(0.6, 0.9)), rng.uniform(0.12, 0.2),
            lambda k: _project(k, cos_i, pa, g),
        )
        parts.append((knots, rng.uniform(0.06, 0.18), "knots"))
        if rng.random() < 0.75:
            sigma = float(np.clip(0.1 * h, 0.15, 0.3))
            parts.append((_spiral(ctx, h, cos_i, pa, sigma), rng.uniform(0.25, 0.45), "knots"))
        if rng.random() < 0.3:
            bar = ctx.sersic(0.5, h * rng.uniform(0.35, 0.6)).shear(
                q=rng.uniform(0.2, 0.35), beta=rng.uniform(0, 180) * g.degrees
            )
            parts.append((_project(bar, cos_i, pa, g), rng.uniform(0.05, 0.12), "red"))
    disk_frac = rest * (1.0 - sum(f for _, f, _ in parts))
    comps.append(Component(disk, disk_frac, *ctx.colour("disk")))
    for prof, f, family in parts:
        comps.append(Component(prof, rest * f, *ctx.colour(family)))
    return Model(comps, n_bulge, _disk_q(cos_i, h_over_r), pa)


def _build_edge_on(ctx: _Ctx, h: float) -> Model:
    rng, g = ctx.rng, ctx.galsim
    pa = float(rng.uniform(0.0, 180.0))
    incl = float(rng.uniform(80.0, 90.0))
    h_over_r = float(rng.uniform(0.04, 0.1))
    disk = g.InclinedExponential(
        incl * g.degrees, half_light_radius=h, scale_h_over_r=h_over_r, gsparams=ctx.gsp
    ).rotate(pa * g.degrees)
    comps = []
    bt, n_bulge = 0.0, 1.0
    if rng.random() < 0.6:
        bt = float(rng.uniform(0.05, 0.3))
        n_bulge = _quantize_n(rng.uniform(1.5, 4.0))
        hb = max(0.12, h * float(rng.uniform(0.15, 0.3)))
        bulge = ctx.sersic(n_bulge, hb).shear(q=rng.uniform(0.6, 0.9), beta=pa * g.degrees)
        comps.append(Component(bulge, bt, *ctx.colour("red"), bulge=True))
    comps.append(Component(disk, 1.0 - bt, *ctx.colour("dusty")))
    return Model(comps, n_bulge, _disk_q(math.cos(math.radians(incl)), h_over_r), pa)


def _build_irregular(ctx: _Ctx, h: float) -> Model:
    rng, g = ctx.rng, ctx.galsim
    n = _quantize_n(rng.uniform(0.5, 1.2))
    q = float(rng.uniform(0.3, 0.8))
    pa = float(rng.uniform(0.0, 180.0))
    off = h * rng.uniform(0.1, 0.4)
    phi = rng.uniform(0, 2 * math.pi)
    diffuse = (
        ctx.sersic(n, h * rng.uniform(0.8, 1.2))
        .shear(q=q, beta=pa * g.degrees)
        .shear(g1=rng.normal(0, 0.1), g2=rng.normal(0, 0.1))
        .shift(off * math.cos(phi), off * math.sin(phi))
    )
    f_diffuse = float(rng.uniform(0.25, 0.45))
    comps = [Component(diffuse, f_diffuse, *ctx.colour("blue"))]
    groups = int(rng.integers(1, 4))
    lo, hi = ctx.spec["knots"]["irregular"]
    total = int(rng.integers(lo, hi + 1))
    weights = rng.dirichlet(np.full(groups, 2.0))
    for k in range(groups):
        npts = max(3, int(round(total * weights[k])))
        off = h * rng.uniform(0.0, 0.6)
        phi = rng.uniform(0, 2 * math.pi)
        qk, beta = rng.uniform(0.4, 1.0), rng.uniform(0, 180) * g.degrees
        shift = (off * math.cos(phi), off * math.sin(phi))
        knots = _knots(
            ctx, npts, _exp(ctx, h * rng.uniform(0.5, 1.0)), rng.uniform(0.12, 0.22),
            lambda k: k.shear(q=qk, beta=beta).shift(*shift),
        )
        comps.append(Component(knots, (1.0 - f_diffuse) * float(weights[k]), *ctx.colour("knots")))
    return Model(comps, n, q, pa)


def _build_merger(ctx: _Ctx, h: float, image_arcsec: float) -> Model:
    rng, g = ctx.rng, ctx.galsim
    ratio = float(rng.uniform(0.25, 1.0))  # secondary / primary flux
    f1, f2 = 1.0 / (1.0 + ratio), ratio / (1.0 + ratio)
    h1 = h
    h2 = max(0.3, h1 * math.sqrt(ratio) * float(rng.uniform(0.8, 1.25)))
    sep = float(np.clip(h1 * rng.uniform(1.0, 3.0), 1.6, 0.33 * image_arcsec))
    phi = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(phi), math.sin(phi)
    pos = ((-sep * f2 * ux, -sep * f2 * uy), (sep * f1 * ux, sep * f1 * uy))
    models = []
    for hh in (h1, h2):
        models.append(_build_smooth(ctx, hh) if rng.random() < 0.45 else _build_disk(ctx, hh, features=rng.random() < 0.5))
    comps: list[Component] = []
    share = (f1, f2)
    tail = rng.random() < 0.6
    f_tail = float(rng.uniform(0.05, 0.12)) if tail else 0.0
    for model, (x, y), s in zip(models, pos, share):
        for c in model.components:
            comps.append(Component(c.profile.shift(x, y), c.frac * s * (1.0 - f_tail), c.gr, c.rz, c.bulge))
    if tail:
        # a faint, strongly elongated plume off the primary, roughly tangential to the pair axis
        ang = phi + math.pi + rng.choice([-1, 1]) * rng.uniform(math.radians(50), math.radians(110))
        dist = sep * rng.uniform(0.5, 0.9)
        tx, ty = pos[0][0] + dist * math.cos(ang), pos[0][1] + dist * math.sin(ang)
        along = math.degrees(ang) + 90.0 + rng.normal(0, 20.0)
        plume = ctx.sersic(0.5, max(0.6, h1 * rng.uniform(0.8, 1.5))).shear(
            q=rng.uniform(0.12, 0.3), beta=along * g.degrees
        )
        comps.append(Component(plume.shift(tx, ty), f_tail, *ctx.colour("blue")))
    primary = models[0]
    return Model(comps, primary.sersic_n, primary.axis_ratio, primary.position_angle)


# ---------------------------------------------------------------------------------------------
def _sample_mag(rng: np.random.Generator, lo: float, hi: float, slope: float) -> float:
    """Magnitude in [lo, hi] with density proportional to 10**(slope * m)."""
    u = rng.random()
    if abs(slope) < 1e-9 or hi <= lo:
        return float(lo + u * (hi - lo))
    a = slope * math.log(10.0)
    # inverse CDF, computed relative to lo for numerical stability
    return float(lo + math.log1p(u * math.expm1(a * (hi - lo))) / a)


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


def _start(cfg: Mapping[str, Any], i: int) -> tuple[np.random.Generator, int, int]:
    """Object ``i``'s numpy generator, GalSim seed and class index: all from (seed, i) only."""
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), int(i)]))
    gs_seed = int(rng.integers(1, 2**31 - 1))  # never 0: GalSim would seed from the clock
    cls = int(rng.choice(len(cfg["sim"]["classes"]), p=cfg["sim"]["class_fractions"]))
    return rng, gs_seed, cls


def object_class(cfg: Mapping[str, Any], i: int) -> int:
    """The class index object ``i`` gets (cheap: nothing is drawn)."""
    return _start(cfg, i)[2]


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
    zp = float(spec["zeropoint"])
    classes: list[str] = spec["classes"]
    gsp = _gsparams(galsim)

    rng, gs_seed, cls = _start(cfg, i)
    gs_rng = galsim.BaseDeviate(gs_seed)
    name = classes[cls]
    mag_r = _sample_mag(rng, *spec["mag_r"], float(spec["mag_slope"]))
    offset = rng.uniform(-0.5, 0.5, size=2)
    seeing = float(np.clip(math.exp(rng.normal(0.0, float(spec["psf"]["seeing_scatter"]))), 0.5, 2.0))
    depth_shift = {b: float(rng.normal(0.0, float(spec["depth_scatter"]))) for b in BANDS}
    fwhm = {b: float(spec["psf"]["fwhm"][b]) * seeing for b in bands}
    sigma = {b: sky_sigma(float(spec["depth"][b]) + depth_shift[b], fwhm[b], scale, zp) for b in bands}
    flux_r = 10.0 ** ((zp - mag_r) / 2.5)
    psf_trunc = float(spec["psf"]["trunc"])
    psfs = {
        b: galsim.Moffat(
            beta=float(spec["psf"]["beta"]), fwhm=fwhm[b], trunc=psf_trunc * fwhm[b] if psf_trunc > 0 else 0.0, gsparams=gsp
        )
        for b in bands
    }
    ctx = _Ctx(rng, gs_rng, galsim, gsp, spec)
    draw = dict(nx=size, ny=size, scale=scale, offset=(float(offset[0]), float(offset[1])))

    if name == "star":
        # stellar locus, roughly: r-z grows with g-r, steeply for M dwarfs
        gr = float(rng.uniform(0.2, 1.5))
        rz = -0.05 + 0.6 * gr + 1.2 * max(gr - 1.2, 0.0) + float(rng.normal(0.0, 0.05))
        mags = {"g": mag_r + gr, "r": mag_r, "z": mag_r - rz}
        flux = {b: 10.0 ** ((zp - mags[b]) / 2.5) for b in BANDS}
        image = np.stack([psfs[b].withFlux(flux[b]).drawImage(**draw).array for b in bands])
        c = (size - 1) / 2.0
        clean = _bilinear(np.array([flux[b] for b in bands]), c + offset[0], c + offset[1], size)
        truth = dict(sersic_n=math.nan, half_light_radius=0.0, axis_ratio=1.0, position_angle=0.0, bulge_to_total=math.nan)
    else:
        size_cfg = spec["size"]
        log_h = (
            math.log10(float(size_cfg["hlr_at_r18"]))
            - float(size_cfg["slope"]) * (mag_r - 18.0)
            + rng.normal(0.0, float(size_cfg["scatter"]))
        )
        lo = max(float(size_cfg["min"]), min(SIZE_FLOOR.get(name, 0.0), float(size_cfg["max"])))
        h = float(np.clip(10.0**log_h * SIZE_FACTOR[name], lo, size_cfg["max"]))
        if name == "smooth":
            model = _build_smooth(ctx, h)
        elif name == "featured_disk":
            model = _build_disk(ctx, h)
        elif name == "edge_on":
            model = _build_edge_on(ctx, h)
        elif name == "irregular":
            model = _build_irregular(ctx, h)
        else:
            model = _build_merger(ctx, h, size * scale)
        comps = model.components
        fr = np.array([c.frac for c in comps]) * flux_r
        # (components, g/r/z) fluxes
        fluxes = np.stack(
            [fr * 10.0 ** (-0.4 * np.array([c.gr for c in comps])), fr, fr * 10.0 ** (0.4 * np.array([c.rz for c in comps]))],
            axis=1,
        )
        totals = fluxes.sum(axis=0)
        mags = {b: zp - 2.5 * math.log10(totals[k]) for k, b in enumerate(BANDS)}
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
    noise = rng.standard_normal(size=(len(bands), size, size))
    image = image + noise * np.array([sigma[b] for b in bands])[:, None, None]

    row: dict[str, Any] = {"class": cls, "class_name": name}
    row["sersic_n"] = truth["sersic_n"]
    row["half_light_radius"] = truth["half_light_radius"]
    row["axis_ratio"] = truth["axis_ratio"]
    row["position_angle"] = truth["position_angle"]
    for b in BANDS:
        row[f"mag_{b}"] = float(mags[b])
    row["bulge_to_total"] = truth["bulge_to_total"]
    for b in bands:
        row[f"psf_fwhm_{b}"] = fwhm[b]
    for b in bands:
        row[f"sky_sigma_{b}"] = sigma[b]
    row["offset_x"] = float(offset[0])
    row["offset_y"] = float(offset[1])
    return image.astype(np.float32), clean.astype(np.float32), row


def _one_blas_thread() -> Any:
    """Single-threaded BLAS while drawing (the knots' small matrix products only lose to threads)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing: correct, only slower
        import contextlib

        return contextlib.nullcontext()


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray, list[dict]]:
    """Objects ``start .. stop-1``: (start, images, clean, rows)."""
    with _one_blas_thread():
        out = [simulate_object(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out]
