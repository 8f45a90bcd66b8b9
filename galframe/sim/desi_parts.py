"""The components of DESI Legacy Surveys-like galaxies (``sim.generator: desi``): unit-flux GalSim profiles
with colours, and one builder per class (smooth, featured disk, edge-on, irregular, merger)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from galframe.sim import randomise

#: (mean g-r, mean r-z, scatter) of the colour families
COLOURS = {
    "red": (0.95, 0.58, 0.06),  # ellipticals and bulges
    "disk": (0.62, 0.38, 0.08),  # star-forming disks
    "dusty": (0.82, 0.52, 0.08),  # edge-on disks (reddened)
    "blue": (0.42, 0.24, 0.08),  # irregulars' diffuse light, tidal debris
    "knots": (0.18, 0.08, 0.08),  # star-forming knots
}


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
    """What the builders need: numpy and GalSim generators, GalSim, gsparams, settings, and the object's
    domain-randomisation knobs (``randomise.Domain``; None: none, as today)."""

    def __init__(self, rng: np.random.Generator, gs_rng: Any, galsim: Any, gsparams: Any, spec: Mapping,
                 domain: Any = None) -> None:
        self.rng, self.gs_rng, self.galsim, self.gsp, self.spec = rng, gs_rng, galsim, gsparams, spec
        self.domain = domain

    def colour(self, family: str, rng: Any = None) -> tuple[float, float]:
        gr, rz, sd = COLOURS[family]
        rng = self.rng if rng is None else rng
        return float(rng.normal(gr, sd)), float(rng.normal(rz, sd))

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
    along each arm, fading outwards), then projected and convolved with a Gaussian of ``sigma``;
    with ``sim.morph.arms`` ``logspiral`` the arms are that profile itself, continuous (the knots are
    still drawn, so the object's other random draws stay as they are).
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
    knots = _knots(ctx, int(rng.integers(lo, hi + 1)), arms, sigma, lambda k: _project(k, cos_i, pa_deg, g))
    if ctx.domain is not None and ctx.domain.arms() == "logspiral":
        return g.Convolve(_project(arms, cos_i, pa_deg, g), g.Gaussian(sigma=sigma, gsparams=ctx.gsp), gsparams=ctx.gsp)
    return knots


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
    if ctx.domain is not None:
        randomise.add_dust_lane(ctx.domain, g, comps, incl * g.degrees, h, h_over_r, pa, ctx.gsp)
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
    # sim.morph.tidal may force the tail on or off; today's draws stay on the main stream either way
    want = tail if ctx.domain is None else ctx.domain.tidal()
    want = tail if want is None else want
    src = rng if tail or ctx.domain is None else ctx.domain.rng("tidal")
    f_tail = plume = colour = None
    if want or tail:
        f_tail = float(src.uniform(0.05, 0.12))
        # a faint, strongly elongated plume off the primary, roughly tangential to the pair axis
        ang = phi + math.pi + src.choice([-1, 1]) * src.uniform(math.radians(50), math.radians(110))
        dist = sep * src.uniform(0.5, 0.9)
        tx, ty = pos[0][0] + dist * math.cos(ang), pos[0][1] + dist * math.sin(ang)
        along = math.degrees(ang) + 90.0 + src.normal(0, 20.0)
        plume = ctx.sersic(0.5, max(0.6, h1 * src.uniform(0.8, 1.5))).shear(
            q=src.uniform(0.12, 0.3), beta=along * g.degrees
        ).shift(tx, ty)
        colour = ctx.colour("blue", src)
    f_tail = f_tail if want else 0.0
    for model, (x, y), s in zip(models, pos, share):
        for c in model.components:
            comps.append(Component(c.profile.shift(x, y), c.frac * s * (1.0 - f_tail), c.gr, c.rz, c.bulge))
    if want:
        comps.append(Component(plume, f_tail, *colour))
    primary = models[0]
    return Model(comps, primary.sersic_n, primary.axis_ratio, primary.position_angle)
