"""The pieces of a Galaxy10 DECaLS-like galaxy: observing conditions, physical parameters per population,
GalSim components (bulge, disk, bar, spiral arms, tidal light), the physical class, and the measurements
on noise-free images that decide what simulated volunteers can see."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from galframe.sim import desi, randomise
from galframe.sim.galaxy10_config import (
    BARRED, CIGAR, COLOURS, DISTURBED, EDGE_BULGE, EDGE_NO_BULGE, IN_BETWEEN, LOOSE, MERGING, ROUND, TIGHT,
)

# ---------------------------------------------------------------------------------------------
# observing conditions
# ---------------------------------------------------------------------------------------------
def psf_nea(psf: Any, pixel_scale: float) -> float:
    """Noise-equivalent area (pixels) of a PSF sampled on the pixel grid: 1 / sum(p_i^2)."""
    n = int(max(25, math.ceil(8.0 * 2.0 / pixel_scale)) | 1)
    p = psf.withFlux(1.0).drawImage(nx=n, ny=n, scale=pixel_scale).array
    return float(1.0 / np.sum(p**2))


def sky_sigma_psf(depth: float, nea: float, zeropoint: float = 22.5) -> float:
    """Per-pixel sky noise (flux units) for a 5-sigma point-source depth ``depth`` (mag), PSF NEA in pixels.

    An optimally weighted point source of flux F has S/N = F / (sigma sqrt(NEA)); S/N = 5 at the depth.
    """
    flux5 = 10.0 ** ((zeropoint - depth) / 2.5)
    return flux5 / (5.0 * math.sqrt(nea))


# ---------------------------------------------------------------------------------------------
# components
# ---------------------------------------------------------------------------------------------
@dataclass
class Comp:
    profile: Any  # unit-flux GSObject (arcsec)
    frac: float  # fraction of the object's r-band flux
    gr: float
    rz: float
    group: str  # main | arms | bar | tidal | companion
    bulge: bool = False
    #: the component's axisymmetric twin (azimuthal average in the disk plane, projected alike):
    #: the difference of their PSF-convolved images is the structure volunteers can see
    twin: Any = None


def _colour(rng: np.random.Generator, family: str) -> tuple[float, float]:
    gr, rz, sd = COLOURS[family]
    return float(rng.normal(gr, sd)), float(rng.normal(rz, 0.6 * sd))


def _smoothed_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """A unit-variance Gaussian random field (n x n) smoothed on ``sigma_px`` pixels."""
    white = rng.standard_normal((n, n))
    k = np.fft.fftfreq(n)
    kk = k[:, None] ** 2 + k[None, :] ** 2
    field = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2.0 * (math.pi * sigma_px) ** 2 * kk)).real
    sd = field.std()
    return field / sd if sd > 0 else field


def _arms_image(rng: np.random.Generator, h: float, p: Mapping[str, Any], flocculence: float, n: int = 96) -> tuple[np.ndarray, float]:
    """Face-on logarithmic spiral arms of a disk of half-light radius ``h`` (arcsec): (image, pixel scale).

    Surface brightness: an exponential envelope (scale length h / 1.678) tapered inside ``r_in``
    times ``((1 + cos(m (theta - phi0) - chi m ln(r / r_in) / tan(pitch))) / 2) ** sharpness``,
    modulated by a log-normal clumpy field (flocculence).
    """
    rs = h / 1.678
    r_in = float(p["arm_r_in"])
    ext = max(4.0 * rs, r_in + 3.0 * rs)
    scale = 2.0 * ext / n
    c = (n - 1) / 2.0
    y, x = (np.mgrid[0:n, 0:n] - c) * scale
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    m = int(p["n_arms"])
    tan_p = math.tan(math.radians(float(p["pitch_angle"])))
    u = float(p["chirality"]) * np.log(np.maximum(r, 1e-3 * rs) / r_in) / tan_p
    wave = (1.0 + np.cos(m * (theta - float(p["arm_phase"])) - m * u)) / 2.0
    env = np.exp(-r / rs) * (1.0 - np.exp(-((r / r_in) ** 3))) * np.exp(-((r / (3.2 * rs)) ** 4))
    img = env * wave ** float(p["arm_sharpness"])
    if flocculence > 0:
        clumps = np.exp(flocculence * _smoothed_noise(rng, n, max(1.0, 0.12 * rs / scale)) - 0.5 * flocculence**2)
        img = img * clumps
    return img / img.sum(), scale


def _tidal_image(rng: np.random.Generator, h: float, p: Mapping[str, Any], ext: float, n: int = 96) -> tuple[np.ndarray, float]:
    """Tidal tails, shells and a bridge (sky plane, about the primary at the origin): (image, scale)."""
    scale = 2.0 * ext / n
    c = (n - 1) / 2.0
    y, x = (np.mgrid[0:n, 0:n] - c) * scale
    img = np.zeros((n, n))
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)

    def blobs(px: np.ndarray, py: np.ndarray, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.zeros((n, n))
        for xi, yi, wi, si in zip(px, py, w, s):
            out += wi / (si * si) * np.exp(-((x - xi) ** 2 + (y - yi) ** 2) / (2.0 * si * si))
        return out

    parts = []
    for _ in range(int(p["n_tails"])):
        t = np.linspace(0.0, 1.0, 28)
        phi = rng.uniform(0, 2 * math.pi)
        r0 = h * rng.uniform(0.8, 1.4)
        length = h * rng.uniform(2.0, 4.5)
        curl = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.6)
        rr = r0 + length * t
        th = phi + curl * t
        w = np.exp(-2.0 * t)
        s = h * rng.uniform(0.12, 0.25) * (1.0 + 1.5 * t)
        part = blobs(rr * np.cos(th), rr * np.sin(th), w, s)
        parts.append(part / part.sum())
    for k in range(int(p["n_shells"])):
        rk = h * (1.4 + 0.8 * k) * rng.uniform(0.9, 1.15)
        phi = rng.uniform(0, 2 * math.pi) if k == 0 else phi + math.pi + rng.normal(0, 0.3)
        half_open = math.radians(rng.uniform(50.0, 85.0))
        width = 0.12 * rk
        radial = np.where(r < rk, np.exp(-((rk - r) ** 2) / (2 * width**2)), np.exp(-((r - rk) ** 2) / (2 * (0.25 * width) ** 2)))
        dang = np.angle(np.exp(1j * (theta - phi)))
        ang = np.clip(np.cos(0.5 * math.pi * dang / half_open), 0, None) * (np.abs(dang) < half_open)
        part = radial * ang
        if part.sum() > 0:
            parts.append(part / part.sum())
    if p.get("bridge_to") is not None:
        bx, by = p["bridge_to"]
        t = np.linspace(0.15, 0.85, 20)
        bend = rng.normal(0, 0.25)
        px = bx * t - by * bend * np.sin(math.pi * t)
        py = by * t + bx * bend * np.sin(math.pi * t)
        part = blobs(px, py, np.ones_like(t), np.full_like(t, h * 0.25))
        parts.append(part / part.sum())
    for part in parts:
        img += part * rng.uniform(0.5, 1.5)
    total = img.sum()
    return (img / total if total > 0 else img), scale


def _azimuthal_average(img: np.ndarray, step: float = 0.5) -> np.ndarray:
    """The image averaged over circles about its centre (same flux)."""
    n = img.shape[0]
    y, x = np.indices(img.shape, dtype=float) - (n - 1) / 2.0
    bins = (np.hypot(x, y) / step).astype(np.int64).ravel()
    mean = np.bincount(bins, weights=img.ravel()) / np.maximum(np.bincount(bins), 1)
    return mean[bins].reshape(img.shape)


def _twin(galsim: Any, img: np.ndarray, scale: float, gsp: Any) -> Any:
    return galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(img, dtype=np.float64), scale=scale), flux=1.0, gsparams=gsp)


def _draw_params(rng: np.random.Generator, pop: int, spec: Mapping[str, Any], host: bool = False) -> dict[str, Any]:
    """Physical parameters of a galaxy of population ``pop`` (broad, overlapping distributions)."""
    p: dict[str, Any] = {
        "pa": float(rng.uniform(0.0, 180.0)),
        "bar_strength": 0.0,
        "arm_contrast": 0.0,
        "n_arms": 0,
        "pitch_angle": math.nan,
        "asymmetry": 0.0,
        "tidal_fraction": 0.0,
        "n_tails": 0,
        "n_shells": 0,
        "companion_ratio": 0.0,
        "h_over_r": float(rng.uniform(0.08, 0.15)),
        "bar_length": 0.0,
    }
    if pop in (DISTURBED, MERGING):
        # the host: any ordinary galaxy
        base = int(rng.choice([ROUND, IN_BETWEEN, BARRED, TIGHT, LOOSE, LOOSE, EDGE_BULGE]))
        p.update(_draw_params(rng, base, spec, host=True))
        p["host"] = base
        return p
    if pop in (ROUND, IN_BETWEEN, CIGAR):
        _spheroid_params(rng, pop, p)
    else:
        _disk_params(rng, pop, spec, host, p)
    _structure_params(rng, p)
    p["host"] = pop
    return p


def _spheroid_params(rng: np.random.Generator, pop: int, p: dict[str, Any]) -> None:
    """A spheroid's index and flattening (round, in-between or cigar-shaped), sometimes with a faint disk."""
    p["family"] = "spheroid"
    p["sersic_n"] = float(rng.uniform(2.5, 5.5))
    centre, sd = {ROUND: (0.87, 0.08), IN_BETWEEN: (0.6, 0.11), CIGAR: (0.3, 0.07)}[pop]
    p["q_spheroid"] = float(np.clip(rng.normal(centre, sd), 0.18, 1.0))
    p["bt"] = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.6, 1.0))
    # a faint disk shares the spheroid's orientation and flattening
    p["cos_i"] = float(np.clip(p["q_spheroid"] * rng.uniform(0.8, 1.0), 0.12, 1.0))
    if p["bt"] < 1.0 and rng.random() < 0.3:
        p["arm_contrast"] = float(rng.uniform(0.0, 0.18))
        p["pitch_angle"] = float(rng.uniform(7.0, 20.0))


def _disk_params(rng: np.random.Generator, pop: int, spec: Mapping[str, Any], host: bool, p: dict[str, Any]) -> None:
    """A disk galaxy's bulge, inclination, bar and arms (edge-on, barred, tight or loose spiral)."""
    feat = spec["features"]
    p["family"] = "disk"
    p["sersic_n"] = float(rng.uniform(1.0, 4.0))
    if pop in (EDGE_NO_BULGE, EDGE_BULGE):
        incl = float(rng.uniform(70.0, 90.0))
        p["bt"] = float(rng.uniform(0.0, 0.12)) if pop == EDGE_NO_BULGE else float(rng.uniform(0.05, 0.45))
        p["h_over_r"] = float(rng.uniform(0.06, 0.13))
        if rng.random() < 0.3:
            p["bar_strength"] = float(rng.uniform(0.0, 1.0))
        if rng.random() < 0.7:
            p["arm_contrast"] = float(rng.uniform(*feat["arm_contrast"]))
            p["pitch_angle"] = float(rng.uniform(7.0, 35.0))
    else:
        incl = float(math.degrees(math.acos(rng.uniform(math.cos(math.radians(72.0 if not host else 90.0)), 1.0))))
        p["bt"] = {
            BARRED: lambda: rng.uniform(0.03, 0.4),
            TIGHT: lambda: rng.uniform(0.05, 0.5),
            LOOSE: lambda: rng.uniform(0.0, 0.3),
        }[pop]()
        p["bt"] = float(p["bt"])
        p["arm_contrast"] = float(rng.uniform(*feat["arm_contrast"]))
        p["pitch_angle"] = float(
            {BARRED: lambda: rng.uniform(8.0, 35.0), TIGHT: lambda: rng.uniform(6.0, 22.0), LOOSE: lambda: rng.uniform(16.0, 36.0)}[pop]()
        )
        if pop == BARRED:
            p["bar_strength"] = float(rng.uniform(0.25, 1.0))
        elif rng.random() < 0.4:
            p["bar_strength"] = float(rng.uniform(0.0, 0.4))
    p["cos_i"] = float(math.cos(math.radians(incl)))


def _structure_params(rng: np.random.Generator, p: dict[str, Any]) -> None:
    """Arm count, bulge and bar geometry, arm shape and chirality (drawn for every galaxy, used where present)."""
    if p["arm_contrast"] > 0:
        p["n_arms"] = int(rng.choice([1, 2, 3, 4, 5], p=[0.04, 0.6, 0.2, 0.12, 0.04]))
    p["bulge_frac_h"] = float(rng.uniform(0.12, 0.3))  # bulge hlr / disk hlr
    p["q_bulge"] = float(rng.uniform(0.7, 1.0))
    p["bar_length_h"] = float(rng.uniform(0.5, 1.1))  # bar semi-major axis / disk hlr
    p["bar_q"] = float(rng.uniform(0.2, 0.35))
    p["bar_angle"] = float(rng.uniform(0.0, 180.0))  # in the disk plane
    p["bar_n"] = float(np.round(rng.uniform(0.3, 0.6), 1))
    p["arm_sharpness"] = float(rng.uniform(1.5, 5.0))
    p["arm_phase"] = float(rng.uniform(0.0, 2.0 * math.pi))
    p["chirality"] = 1.0 if rng.random() < 0.5 else -1.0


def _galaxy(ctx: Any, h: float, p: dict[str, Any], spec: Mapping[str, Any], group: Optional[str] = None) -> list[Comp]:
    """Unit-total-flux components of one (undisturbed) galaxy of size ``h`` centred at the origin.

    Fills ``p`` with derived values (bulge and disk sizes, bar length, arm radius, axis ratio).
    """
    rng, g = ctx.rng, ctx.galsim
    feat = spec["features"]
    pa = p["pa"]
    comps: list[Comp] = []
    cos_i = float(p["cos_i"])
    p["inclination"] = math.degrees(math.acos(min(1.0, cos_i)))
    bt = float(p["bt"])
    if p["family"] == "spheroid":
        n = desi._quantize_n(p["sersic_n"])
        p["sersic_n"] = n
        q = float(p["q_spheroid"])
        sph = ctx.sersic(n, h * (0.9 if bt < 1 else 1.0)).shear(q=q, beta=pa * g.degrees)
        comps.append(Comp(sph, bt, *_colour(rng, "spheroid"), group or "main", bulge=True))
        p["bulge_hlr"] = h * (0.9 if bt < 1 else 1.0)
        h_disk = 1.4 * h
        p["disk_hlr"] = h_disk if bt < 1 else math.nan
        q_disk = desi._disk_q(cos_i, p["h_over_r"])
        p["axis_ratio"] = float(bt * q + (1 - bt) * q_disk)
        p["q_disk"] = q_disk
        if bt >= 1.0:
            return comps
    else:
        h_disk = h
        p["disk_hlr"] = h
        if bt > 0:
            n = desi._quantize_n(p["sersic_n"])
            p["sersic_n"] = n
            hb = max(0.15, h * p["bulge_frac_h"])
            p["bulge_hlr"] = hb
            bulge = ctx.sersic(n, hb).shear(q=p["q_bulge"], beta=(pa + rng.normal(0, 8.0)) * g.degrees)
            comps.append(Comp(bulge, bt, *_colour(rng, "bulge"), group or "main", bulge=True))
        else:
            p["sersic_n"] = 1.0
            p["bulge_hlr"] = 0.0
        q_disk = desi._disk_q(cos_i, p["h_over_r"])
        p["q_disk"] = q_disk
        p["axis_ratio"] = float(bt * p["q_bulge"] + (1 - bt) * q_disk)
    incl = math.acos(min(1.0, cos_i))
    disk = g.InclinedExponential(incl * g.radians, half_light_radius=h_disk, scale_h_over_r=p["h_over_r"], gsparams=ctx.gsp).rotate(pa * g.degrees)
    rest = 1.0 - bt
    bar_f = float(p["bar_strength"]) * float(feat["bar_flux_max"])
    arm_f = float(p["arm_contrast"])
    p["bar_length"] = float(p["bar_length_h"] * h_disk) if bar_f > 0 else 0.0
    if bar_f > 0:
        hl_major = p["bar_length"] / 1.6
        bar = ctx.sersic(p["bar_n"], hl_major * math.sqrt(p["bar_q"])).shear(q=p["bar_q"], beta=p["bar_angle"] * g.degrees)
        ext = 1.6 * p["bar_length"]
        face_on = bar.drawImage(nx=64, ny=64, scale=2.0 * ext / 64, method="no_pixel").array
        twin = _twin(g, _azimuthal_average(face_on), 2.0 * ext / 64, ctx.gsp)
        comps.append(Comp(desi._project(bar, cos_i, pa, g), rest * bar_f, *_colour(rng, "bar"), group or "bar",
                          twin=desi._project(twin, cos_i, pa, g)))
    dom = ctx.domain
    if arm_f > 0:
        p["arm_r_in"] = max(p["bar_length"], 0.3 * h_disk)
        img, scale = _arms_image(rng, h_disk, p, float(feat["flocculence"]))
        if dom is not None and dom.arms() == "knots":  # sim.morph.arms: knots placed by the same arm pattern
            arms = randomise.knotty_arms(g, dom.rng("arms"), img, scale, ctx.gsp)
        else:
            arms = g.InterpolatedImage(g.Image(img, scale=scale), flux=1.0, gsparams=ctx.gsp)
        twin = _twin(g, _azimuthal_average(img), scale, ctx.gsp)
        comps.append(Comp(desi._project(arms, cos_i, pa, g), rest * arm_f, *_colour(rng, "arms"), group or "arms",
                          twin=desi._project(twin, cos_i, pa, g)))
    comps.append(Comp(disk, rest * (1.0 - bar_f - arm_f), *_colour(rng, "disk"), group or "main"))
    if dom is not None and p["family"] == "disk" and p["inclination"] >= float(spec["truth"]["edge_on_inclination"]):
        randomise.add_dust_lane(dom, g, comps, incl * g.radians, h_disk, p["h_over_r"], pa, ctx.gsp)
    return comps


def true_class(p: Mapping[str, Any], truth: Mapping[str, float]) -> int:
    """The physical Galaxy10 class of a parameter set (thresholds ``sim.truth``)."""
    if p["companion_ratio"] > 0:
        return MERGING if p["companion_ratio"] >= truth["merger_ratio"] else DISTURBED
    if p["asymmetry"] >= truth["disturbed_asymmetry"] or p["tidal_fraction"] >= truth["disturbed_tidal"]:
        return DISTURBED
    disky = p["bt"] < truth["spheroid_bt"]
    if disky and p["inclination"] >= truth["edge_on_inclination"]:
        return EDGE_BULGE if p["bt"] >= truth["edge_on_bulge"] else EDGE_NO_BULGE
    if disky and (p["bar_strength"] >= truth["bar_strength"] or p["arm_contrast"] >= truth["arm_contrast"]):
        if p["bar_strength"] >= truth["bar_strength"]:
            return BARRED
        return TIGHT if p["pitch_angle"] < truth["tight_pitch"] else LOOSE
    q = p["axis_ratio"]
    return ROUND if q >= truth["round_q"] else (CIGAR if q < truth["cigar_q"] else IN_BETWEEN)


# ---------------------------------------------------------------------------------------------
# measurements on the noise-free images (what volunteers get to see)
# ---------------------------------------------------------------------------------------------
def _snr(part: np.ndarray, noise: np.ndarray) -> float:
    return float(np.sqrt(np.sum((part / noise) ** 2)))


def _asymmetric(img: np.ndarray, offset: Any) -> np.ndarray:
    """The part of an image that a 180-degree rotation about the object's centre does not map onto
    itself, (img - rot180(img)) / sqrt(2) (the centre is the stamp centre moved by ``offset`` pixels)."""
    from scipy.ndimage import shift

    rotated = shift(img[::-1, ::-1], (2.0 * float(offset[1]), 2.0 * float(offset[0])), order=1, mode="constant")
    return (img - rotated) / math.sqrt(2.0)


def _observed_q(img: np.ndarray, sky: float) -> float:
    """Axis ratio a person reads off a noise-free image: the second moments of the area inside the
    isophote that holds 75% of the light, or the 3-sigma sky isophote if that one is smaller (faint,
    small objects look rounder: the PSF)."""
    flat = np.sort(img.ravel())[::-1]
    total = float(flat.sum())
    if not total > 0:
        return 1.0
    level = flat[min(int(np.searchsorted(np.cumsum(flat), 0.75 * total)), len(flat) - 1)]
    w = (img >= max(3.0 * sky, float(level))).astype(float)
    f = w.sum()
    if f < 3:
        return 1.0
    y, x = np.indices(img.shape, dtype=float)
    cx, cy = (w * x).sum() / f, (w * y).sum() / f
    qxx, qyy, qxy = (w * (x - cx) ** 2).sum() / f, (w * (y - cy) ** 2).sum() / f, (w * (x - cx) * (y - cy)).sum() / f
    root = math.sqrt(((qxx - qyy) / 2.0) ** 2 + qxy**2)
    major, minor = (qxx + qyy) / 2.0 + root, max((qxx + qyy) / 2.0 - root, 0.0)
    return float(math.sqrt(minor / major)) if major > 0 else 1.0
