"""Galaxy10 DECaLS-like morphology with simulated Galaxy Zoo volunteer votes, drawn with GalSim.

The ten classes of Galaxy10 DECaLS (``votes.GALAXY10``) are not drawn as ten separate recipes:
every galaxy is built from physical components with continuous parameters, and its class follows
from those parameters by thresholds that fall *inside* the distributions (``sim.truth``):

* spheroid: Sersic (n 2-5.5) of projected axis ratio q, sometimes with a faint disk (B/T 0.6-1);
* disk: Sersic bulge (B/T, n 1-4) + inclined exponential disk (inclination, thickness);
* bar: a strongly elongated low-index Sersic (n 0.3-0.6, axis ratio 0.2-0.35) of set length
  (semi-major axis, arcsec) and strength (its flux is ``strength * features.bar_flux_max`` of the
  disk light), in the disk plane;
* logarithmic spiral arms: number, pitch angle, arm-to-disk contrast (fraction of the disk light in
  the arms), arm sharpness, flocculence; drawn as an image in the disk plane
  (``_arms_image``), then a GalSim ``InterpolatedImage`` projected like the disk;
* disturbance: offset light (a displaced, sheared exponential holding the ``asymmetry`` fraction)
  and tidal features (tails, shells, bridges; an image, ``_tidal_image``) holding ``tidal_fraction``;
* merging: a companion galaxy (its own components) at a separation, with a flux ratio.

A *population* (``class_fractions``, in Galaxy10 class order) only sets from which broad,
overlapping parameter distributions a galaxy is drawn; ``true_class`` is then re-derived from the
parameters, so e.g. a "tight spiral" population galaxy of pitch 20 deg is a true loose spiral.

Observing conditions follow the DESI Legacy Surveys (DECaLS): per-band Moffat PSF FWHM and per-band
5-sigma point-source depth, each varying per object (log-normal seeing with a shared and a per-band
part, Gaussian depth scatter); the sky noise per pixel follows from depth and PSF
(``sky_sigma_psf``).  Magnitudes follow a main sample (r < 17.77, Euclidean-like counts) and a faint
extension to r = 20; half-light radii follow a size-magnitude relation.

Labels: ~40 simulated volunteers answer the Galaxy Zoo DECaLS decision tree (``galframe.sim.votes``),
seeing each feature with a probability set by its signal-to-noise after the PSF (against the sky
noise and a perceptual contrast floor).  ``class`` is the majority-vote Galaxy10 class
(``votes.galaxy10_label``); ``true_class`` the physical one.  Every object's randomness comes
only from ``(seed, i)``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from galframe.errors import ConfigError, did_you_mean
from galframe.sim import desi, votes
from galframe.sim.votes import GALAXY10

CLASSES = GALAXY10
BANDS = ("g", "r", "z")
#: bump when this generator's output changes for the same config: it is part of the resolved settings,
#: hence of the dataset cache key (``galframe.sim.SIM_VERSION`` stays, so other generators' caches stay valid)
VERSION = 3
# population indices (Galaxy10 order)
DISTURBED, MERGING, ROUND, IN_BETWEEN, CIGAR, BARRED, TIGHT, LOOSE, EDGE_NO_BULGE, EDGE_BULGE = range(10)

DEFAULTS: dict[str, Any] = {
    "generator": "galaxy10",
    "pixel_scale": 0.262,
    "zeropoint": 22.5,
    "classes": list(CLASSES),
    # mixture of the physical populations, in class order (near Galaxy10 DECaLS's class counts,
    # with more elongated spheroids and edge-on disks so that their vote classes are not too rare)
    "class_fractions": [0.06, 0.09, 0.13, 0.11, 0.05, 0.12, 0.10, 0.13, 0.10, 0.11],
    # r magnitudes: main sample and a faint extension, counts rising as 10**(slope * r) in each
    "mag_r": {"main": [14.5, 17.77], "faint": [17.77, 20.0], "faint_fraction": 0.3, "slope": 0.6},
    # half-light radius (arcsec): log10 hlr = log10(hlr_at_r17) - slope * (r - 17) + N(0, scatter)
    "size": {"hlr_at_r17": 2.6, "slope": 0.2, "scatter": 0.18, "min": 0.5, "max": 3.5},
    # seeing: FWHM_b = fwhm_b * exp(scatter * N_shared + band_scatter * N_b)
    "psf": {"beta": 3.5, "fwhm": {"g": 1.30, "r": 1.20, "z": 1.10}, "scatter": 0.15, "band_scatter": 0.08},
    # 5-sigma point-source depth (AB mag) per band, with Gaussian scatter per object and band
    "depth": {"g": 24.7, "r": 23.9, "z": 23.0},
    "depth_scatter": 0.3,
    # feature strengths (difficulty knobs)
    "features": {
        "arm_contrast": [0.03, 0.45],  # fraction of the disk light in spiral arms (spiral populations)
        "bar_flux_max": 0.25,  # bar flux (fraction of disk light) at strength 1
        "tidal_fraction": [0.02, 0.15],  # tidal light of disturbed / merging galaxies
        "asymmetry": [0.05, 0.4],  # offset light of disturbed galaxies
        "flocculence": 0.5,  # clumpiness of the arms
    },
    # physical class boundaries (true_class)
    "truth": {
        "merger_ratio": 0.25,  # companion flux ratio at or above: merging (below: disturbed)
        "disturbed_asymmetry": 0.15,
        "disturbed_tidal": 0.05,
        "edge_on_inclination": 77.0,  # deg
        "edge_on_bulge": 0.08,  # B/T at or above: edge-on with bulge
        "spheroid_bt": 0.7,  # B/T at or above: a spheroid (smooth classes)
        "arm_contrast": 0.1,  # arms this strong or more make a disk a spiral
        "bar_strength": 0.3,
        "tight_pitch": 19.0,  # deg; below: tight
        "round_q": 0.75,
        "cigar_q": 0.42,
    },
    # unrelated objects in the stamp, as in real cutouts: a projected neighbour galaxy (fainter by
    # neighbour_dmag) and a star (r relative to the galaxy: star_dmag); volunteers take a close,
    # bright neighbour for a merger with probability `confusion` (times its visibility)
    "contaminants": {"neighbour": 0.25, "neighbour_dmag": [0.3, 3.0], "star": 0.15, "star_dmag": [-1.0, 4.0], "confusion": 0.15},
    # perceptual contrast floor: volunteers cannot see structure fainter than this fraction of the
    # local light, whatever the S/N (added in quadrature to the sky noise when measuring visibility)
    "contrast_floor": 0.05,
    "volunteers": copy.deepcopy(votes.DEFAULTS),
    # Galaxy10-style agreement threshold for the label_confident column
    "label_threshold": 0.55,
    "sersic_trunc": 8.0,
    "clean_smoothing": 0.08,
    "workers": None,
    "shard_size": 2048,
}

#: (mean g-r, mean r-z, scatter) of the components' colours (low redshift, DECam bands)
COLOURS = {
    "spheroid": (0.78, 0.41, 0.04),
    "bulge": (0.74, 0.39, 0.05),
    "disk": (0.55, 0.31, 0.06),
    "arms": (0.36, 0.19, 0.07),
    "bar": (0.70, 0.37, 0.05),
    "tidal": (0.58, 0.32, 0.08),
}
#: size factor of each family at fixed magnitude
SIZE_FACTOR = {"spheroid": 0.75, "disk": 1.15, "edge_on": 1.25, "disturbed": 1.0, "merging": 0.9}

_REPLACE = ("sim.psf.fwhm", "sim.depth", "sim.classes")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def _merge(base: dict, over: Mapping, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        here = f"{where}.{key}"
        if key not in base:
            raise ConfigError(f"Unknown key '{here}' for the galaxy10 simulator.{did_you_mean(key, base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{here} must be a mapping (got {value!r}).")
            out[key] = dict(value) if here in _REPLACE else _merge(base[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    try:
        value = float(value)
    except Exception:
        raise ConfigError(f"{what} must be a number (got {value!r}).") from None
    if not (lo <= value <= hi):
        raise ConfigError(f"{what} must be between {lo:g} and {hi:g} (got {value:g}).")
    return value


def _pair(value: Any, what: str, lo: float, hi: float) -> list[float]:
    try:
        a, b = (float(v) for v in value)
    except Exception:
        raise ConfigError(f"{what} must be a pair [low, high] (got {value!r}).") from None
    if not (lo <= a <= b <= hi):
        raise ConfigError(f"{what} must satisfy {lo:g} <= low <= high <= {hi:g} (got [{a:g}, {b:g}]).")
    return [a, b]


def resolve(sim: Optional[Mapping[str, Any]], bands: list[str]) -> dict[str, Any]:
    """The generator settings with defaults filled in, validated; raises ConfigError naming the key."""
    sim = dict(sim or {})
    given = sim.pop("version", VERSION)  # a resolved spec (e.g. from a manifest) may carry it
    if given != VERSION:
        raise ConfigError(f"sim.version {given!r}: this galaxy10 generator is version {VERSION}; leave sim.version out.")
    spec = _merge(DEFAULTS, sim, "sim")
    spec["version"] = VERSION
    if [str(c) for c in (spec["classes"] or [])] != list(CLASSES):
        raise ConfigError(
            f"sim.classes: the galaxy10 simulator always draws the ten Galaxy10 classes {list(CLASSES)}; "
            "leave sim.classes out (use sim.class_fractions to change the mix)."
        )
    spec["classes"] = list(CLASSES)
    fractions = spec["class_fractions"]
    if fractions is None:
        fractions = [0.1] * 10
    try:
        fractions = [float(f) for f in fractions]
    except Exception:
        raise ConfigError(f"sim.class_fractions must be a list of numbers (got {fractions!r}).") from None
    if len(fractions) != 10:
        raise ConfigError(f"sim.class_fractions needs one fraction per Galaxy10 class (10), got {len(fractions)}.")
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ConfigError(f"sim.class_fractions must be non-negative numbers (got {fractions}).")
    total = sum(fractions)
    if abs(total - 1.0) > 0.01:
        raise ConfigError(f"sim.class_fractions must sum to 1 (they sum to {total:g}).")
    spec["class_fractions"] = [f / total for f in fractions]

    for band in bands:
        if band not in BANDS:
            raise ConfigError(f"The galaxy10 simulator draws only bands {list(BANDS)}; band '{band}' (data.bands) is not one of them.")
        for what, table in (("sim.psf.fwhm", spec["psf"]["fwhm"]), ("sim.depth", spec["depth"])):
            if not isinstance(table, Mapping) or table.get(band) is None:
                raise ConfigError(f"Band '{band}' has no entry in {what}; give one for every band in data.bands.")
    # colours tie the bands together: every band's conditions are needed for the truth columns
    for band in BANDS:
        spec["psf"]["fwhm"][band] = _number(spec["psf"]["fwhm"].get(band, DEFAULTS["psf"]["fwhm"][band]), f"sim.psf.fwhm.{band}", 0.1, 10.0)
        spec["depth"][band] = _number(spec["depth"].get(band, DEFAULTS["depth"][band]), f"sim.depth.{band}", 15.0, 35.0)

    mag = spec["mag_r"]
    mag["main"] = _pair(mag["main"], "sim.mag_r.main", 5.0, 35.0)
    mag["faint"] = _pair(mag["faint"], "sim.mag_r.faint", 5.0, 35.0)
    mag["faint_fraction"] = _number(mag["faint_fraction"], "sim.mag_r.faint_fraction", 0.0, 1.0)
    mag["slope"] = _number(mag["slope"], "sim.mag_r.slope", -2.0, 2.0)
    size = spec["size"]
    size["hlr_at_r17"] = _number(size["hlr_at_r17"], "sim.size.hlr_at_r17", 0.05, 30.0)
    size["slope"] = _number(size["slope"], "sim.size.slope", -2.0, 2.0)
    size["scatter"] = _number(size["scatter"], "sim.size.scatter", 0.0, 2.0)
    size["min"], size["max"] = _pair([size["min"], size["max"]], "sim.size [min, max]", 0.05, 30.0)
    spec["psf"]["beta"] = _number(spec["psf"]["beta"], "sim.psf.beta", 1.6, 20.0)
    spec["psf"]["scatter"] = _number(spec["psf"]["scatter"], "sim.psf.scatter", 0.0, 1.0)
    spec["psf"]["band_scatter"] = _number(spec["psf"]["band_scatter"], "sim.psf.band_scatter", 0.0, 1.0)
    spec["depth_scatter"] = _number(spec["depth_scatter"], "sim.depth_scatter", 0.0, 2.0)
    feat = spec["features"]
    feat["arm_contrast"] = _pair(feat["arm_contrast"], "sim.features.arm_contrast", 0.0, 0.9)
    feat["bar_flux_max"] = _number(feat["bar_flux_max"], "sim.features.bar_flux_max", 0.0, 0.6)
    feat["tidal_fraction"] = _pair(feat["tidal_fraction"], "sim.features.tidal_fraction", 0.0, 0.5)
    feat["asymmetry"] = _pair(feat["asymmetry"], "sim.features.asymmetry", 0.0, 0.6)
    feat["flocculence"] = _number(feat["flocculence"], "sim.features.flocculence", 0.0, 2.0)
    truth = spec["truth"]
    limits = {
        "merger_ratio": (0, 1), "disturbed_asymmetry": (0, 1), "disturbed_tidal": (0, 1),
        "edge_on_inclination": (45, 90), "edge_on_bulge": (0, 1), "spheroid_bt": (0, 1),
        "arm_contrast": (0, 1), "bar_strength": (0, 1), "tight_pitch": (1, 60), "round_q": (0, 1), "cigar_q": (0, 1),
    }
    for key, (lo, hi) in limits.items():
        truth[key] = _number(truth[key], f"sim.truth.{key}", lo, hi)
    if truth["cigar_q"] >= truth["round_q"]:
        raise ConfigError(f"sim.truth.cigar_q ({truth['cigar_q']:g}) must be below sim.truth.round_q ({truth['round_q']:g}).")
    cont = spec["contaminants"]
    cont["neighbour"] = _number(cont["neighbour"], "sim.contaminants.neighbour", 0.0, 1.0)
    cont["star"] = _number(cont["star"], "sim.contaminants.star", 0.0, 1.0)
    cont["confusion"] = _number(cont["confusion"], "sim.contaminants.confusion", 0.0, 1.0)
    cont["neighbour_dmag"] = _pair(cont["neighbour_dmag"], "sim.contaminants.neighbour_dmag", 0.0, 10.0)
    cont["star_dmag"] = _pair(cont["star_dmag"], "sim.contaminants.star_dmag", -10.0, 10.0)
    spec["contrast_floor"] = _number(spec["contrast_floor"], "sim.contrast_floor", 0.0, 1.0)
    spec["label_threshold"] = _number(spec["label_threshold"], "sim.label_threshold", 0.0, 1.0)
    vol = spec["volunteers"]
    try:
        vol["n"] = int(vol["n"])
        vol["spread"] = int(vol["spread"])
    except (TypeError, ValueError):
        raise ConfigError(f"sim.volunteers.n and sim.volunteers.spread must be integers (got {vol['n']!r}, {vol['spread']!r}).") from None
    if vol["n"] < 1 or not (0 <= vol["spread"] < vol["n"]):
        raise ConfigError(f"sim.volunteers.n must be >= 1 and sim.volunteers.spread in [0, n) (got {vol['n']}, {vol['spread']}).")
    for key, (lo, hi) in {"lapse": (0, 1), "sensitivity_scatter": (0, 3), "steepness": (0.1, 20), "q_noise": (0, 1),
                          "pitch_noise": (0, 45), "bt_noise": (0, 1), "bar_noise": (0, 2)}.items():
        vol[key] = _number(vol[key], f"sim.volunteers.{key}", lo, hi)
    for key in votes.DEFAULTS["snr_half"]:
        vol["snr_half"][key] = _number(vol["snr_half"][key], f"sim.volunteers.snr_half.{key}", 1e-3, 1e6)
    for key in votes.DEFAULTS["cuts"]:
        vol["cuts"][key] = _number(vol["cuts"][key], f"sim.volunteers.cuts.{key}", 0.0, 90.0)
    spec["pixel_scale"] = _number(spec["pixel_scale"], "sim.pixel_scale", 1e-3, 10.0)
    spec["zeropoint"] = _number(spec["zeropoint"], "sim.zeropoint", 0.0, 50.0)
    spec["sersic_trunc"] = _number(spec["sersic_trunc"], "sim.sersic_trunc", 2.5, 100.0)
    spec["clean_smoothing"] = _number(spec["clean_smoothing"], "sim.clean_smoothing", 0.0, 1.0)
    if spec["clean_smoothing"] <= 0:
        raise ConfigError("sim.clean_smoothing must be > 0 (a tiny Gaussian, e.g. 0.05 arcsec).")
    return spec


def vote_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Galaxy Zoo DECaLS vote schema this generator writes (``DatasetWriter(votes=...)``)."""
    return votes.schema()


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
    feat = spec["features"]
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
    else:
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
    p["host"] = pop
    return p


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
    if arm_f > 0:
        p["arm_r_in"] = max(p["bar_length"], 0.3 * h_disk)
        img, scale = _arms_image(rng, h_disk, p, float(feat["flocculence"]))
        arms = g.InterpolatedImage(g.Image(img, scale=scale), flux=1.0, gsparams=ctx.gsp)
        twin = _twin(g, _azimuthal_average(img), scale, ctx.gsp)
        comps.append(Comp(desi._project(arms, cos_i, pa, g), rest * arm_f, *_colour(rng, "arms"), group or "arms",
                          twin=desi._project(twin, cos_i, pa, g)))
    comps.append(Comp(disk, rest * (1.0 - bar_f - arm_f), *_colour(rng, "disk"), group or "main"))
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


# ---------------------------------------------------------------------------------------------
# one object
# ---------------------------------------------------------------------------------------------
def _start(cfg: Mapping[str, Any], i: int) -> tuple[np.random.Generator, int, int]:
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), int(i), 10]))
    gs_seed = int(rng.integers(1, 2**31 - 1))
    pop = int(rng.choice(10, p=cfg["sim"]["class_fractions"]))
    return rng, gs_seed, pop


def object_population(cfg: Mapping[str, Any], i: int) -> int:
    """The population (Galaxy10 class index whose parameter distributions it is drawn from) of object ``i``."""
    return _start(cfg, i)[2]


def _sample_mag(rng: np.random.Generator, mag: Mapping[str, Any]) -> float:
    lo, hi = mag["faint"] if rng.random() < float(mag["faint_fraction"]) else mag["main"]
    return desi._sample_mag(rng, lo, hi, float(mag["slope"]))


def simulate_object(cfg: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image, clean image (float32 (bands, H, W)) and catalog row (truth, conditions, votes) of object ``i``."""
    import galsim

    spec = cfg["sim"]
    bands: list[str] = list(cfg["bands"])
    size = int(cfg["image_size"])
    scale = float(spec["pixel_scale"])
    zp = float(spec["zeropoint"])
    gsp = desi._gsparams(galsim)
    truth_cfg = spec["truth"]

    rng, gs_seed, pop = _start(cfg, i)
    gs_rng = galsim.BaseDeviate(gs_seed)
    ctx = desi._Ctx(rng, gs_rng, galsim, gsp, spec)

    # observing conditions (every band, so that colours and truth do not depend on data.bands)
    psf_cfg = spec["psf"]
    shared = rng.normal(0.0, float(psf_cfg["scatter"]))
    fwhm = {b: float(psf_cfg["fwhm"][b]) * float(np.clip(math.exp(shared + rng.normal(0.0, float(psf_cfg["band_scatter"]))), 0.5, 2.5)) for b in BANDS}
    depth = {b: float(spec["depth"][b]) + float(rng.normal(0.0, float(spec["depth_scatter"]))) for b in BANDS}
    psfs = {b: galsim.Moffat(beta=float(psf_cfg["beta"]), fwhm=fwhm[b], gsparams=gsp) for b in BANDS}
    nea = {b: psf_nea(psfs[b], scale) for b in BANDS}
    sigma = {b: sky_sigma_psf(depth[b], nea[b], zp) for b in BANDS}

    mag_r = _sample_mag(rng, spec["mag_r"])
    offset = rng.uniform(-0.5, 0.5, size=2)
    size_cfg = spec["size"]
    family = {DISTURBED: "disturbed", MERGING: "merging", ROUND: "spheroid", IN_BETWEEN: "spheroid", CIGAR: "spheroid",
              EDGE_NO_BULGE: "edge_on", EDGE_BULGE: "edge_on"}.get(pop, "disk")
    log_h = (
        math.log10(float(size_cfg["hlr_at_r17"]))
        - float(size_cfg["slope"]) * (mag_r - 17.0)
        + rng.normal(0.0, float(size_cfg["scatter"]))
        + math.log10(SIZE_FACTOR[family])
    )
    h = float(np.clip(10.0**log_h, size_cfg["min"], size_cfg["max"]))

    p = _draw_params(rng, pop, spec)
    comps = _galaxy(ctx, h, p, spec)
    feat = spec["features"]
    stamp = size * scale
    companion = None
    if pop == MERGING or (pop == DISTURBED and rng.random() < 0.3):
        ratio = float(rng.uniform(0.15, 1.0)) if pop == MERGING else float(rng.uniform(0.05, 0.25))
        p2 = _draw_params(rng, int(rng.choice([ROUND, IN_BETWEEN, TIGHT, LOOSE, BARRED])), spec, host=True)
        h2 = float(np.clip(h * math.sqrt(ratio) * rng.uniform(0.8, 1.25), 0.3, size_cfg["max"]))
        sep = float(np.clip(rng.uniform(0.6, 2.0) * (h + h2), 1.0, 0.33 * stamp))
        phi = rng.uniform(0, 2 * math.pi)
        companion = (ratio, sep, phi, h2, p2)
        p["companion_ratio"] = ratio
    if pop in (DISTURBED, MERGING):
        lo, hi = feat["tidal_fraction"]
        if pop == MERGING or rng.random() < 0.75:
            p["tidal_fraction"] = float(rng.uniform(lo, hi))
            p["n_tails"] = int(rng.choice([1, 2])) if (pop == MERGING or rng.random() < 0.7) else 0
            p["n_shells"] = int(rng.integers(2, 4)) if (p["family"] == "spheroid" and rng.random() < 0.6) else 0
            if p["n_tails"] == 0 and p["n_shells"] == 0:
                p["n_tails"] = 1
        lo, hi = feat["asymmetry"]
        p["asymmetry"] = float(rng.uniform(lo, hi)) if pop == DISTURBED else float(rng.uniform(0.0, 0.5 * hi))
    else:
        p["asymmetry"] = float(rng.uniform(0.0, 0.05))

    # assemble: the primary's own light, offset light, tidal light, the companion
    f_tidal, f_asym = p["tidal_fraction"], p["asymmetry"]
    share1 = 1.0 / (1.0 + p["companion_ratio"])
    parts: list[Comp] = []
    for c in comps:
        parts.append(Comp(c.profile, c.frac * share1 * (1.0 - f_tidal - f_asym), c.gr, c.rz, c.group, c.bulge, c.twin))
    p["has_offset_light"] = int(f_asym > 0.1)
    if f_asym > 0:
        off = h * rng.uniform(0.25, 0.7)
        ang = rng.uniform(0, 2 * math.pi)
        lop = (
            galsim.Exponential(half_light_radius=h * rng.uniform(0.6, 1.2), gsparams=gsp)
            .shear(g1=rng.normal(0, 0.15), g2=rng.normal(0, 0.15))
            .shift(off * math.cos(ang), off * math.sin(ang))
        )
        parts.append(Comp(lop, share1 * f_asym, *_colour(rng, "tidal"), "tidal"))
    if companion is not None:
        ratio, sep, phi, h2, p2 = companion
        cx, cy = sep * math.cos(phi), sep * math.sin(phi)
        ctx2 = ctx
        for c in _galaxy(ctx2, h2, p2, spec, group="companion"):
            prof = c.profile.shear(g1=rng.normal(0, 0.08), g2=rng.normal(0, 0.08)).shift(cx, cy)
            parts.append(Comp(prof, c.frac * (1.0 - share1), c.gr, c.rz, "companion"))
        p["companion_separation"] = sep
        p["bridge_to"] = (cx, cy) if (pop == MERGING and rng.random() < 0.5) else None
    else:
        p["companion_separation"] = 0.0
        p["bridge_to"] = None
    if f_tidal > 0:
        img, tscale = _tidal_image(rng, h, p, 0.6 * stamp)
        tidal = galsim.InterpolatedImage(galsim.Image(img, scale=tscale), flux=1.0, gsparams=gsp)
        parts.append(Comp(tidal, share1 * f_tidal, *_colour(rng, "tidal"), "tidal"))

    # unrelated objects: (unit-flux profile, r flux, g-r, r-z, group) -- not part of the galaxy's truth
    extra: list[tuple[Any, float, float, float, str]] = []
    cont = spec["contaminants"]
    nb = {"ratio": 0.0, "separation": 0.0, "mag_r": math.nan, "close": 0.0}
    hn = 0.0
    if rng.random() < float(cont["neighbour"]):
        nb["mag_r"] = mag_r + float(rng.uniform(*cont["neighbour_dmag"]))
        hn = float(np.clip(10.0 ** (math.log10(float(size_cfg["hlr_at_r17"])) - float(size_cfg["slope"]) * (nb["mag_r"] - 17.0)
                                   + rng.normal(0.0, float(size_cfg["scatter"]))), size_cfg["min"], size_cfg["max"]))
        pn = _draw_params(rng, int(rng.choice([ROUND, IN_BETWEEN, TIGHT, LOOSE, EDGE_BULGE])), spec, host=True)
        sep = float(rng.uniform(1.2 * (h + hn), 0.45 * stamp)) if 1.2 * (h + hn) < 0.45 * stamp else 0.45 * stamp
        phi = rng.uniform(0, 2 * math.pi)
        fn = 10.0 ** ((zp - nb["mag_r"]) / 2.5)
        for c in _galaxy(ctx, hn, pn, spec, group="neighbour"):
            extra.append((c.profile.shift(sep * math.cos(phi), sep * math.sin(phi)), fn * c.frac, c.gr, c.rz, "neighbour"))
        nb.update(ratio=10.0 ** (-0.4 * (nb["mag_r"] - mag_r)), separation=sep, close=float(np.clip(2.5 - sep / (h + hn), 0.0, 1.0)))
    star_mag, star_pos = math.nan, None
    if rng.random() < float(cont["star"]):
        star_mag = mag_r + float(rng.uniform(*cont["star_dmag"]))
        gr_s = float(rng.uniform(0.3, 1.4))
        rz_s = -0.05 + 0.45 * gr_s + float(rng.normal(0.0, 0.04))
        rad, phi = float(rng.uniform(0.25, 0.48)) * stamp, rng.uniform(0, 2 * math.pi)
        star_pos = (rad * math.cos(phi), rad * math.sin(phi))
        extra.append((galsim.DeltaFunction(gsparams=gsp).shift(*star_pos), 10.0 ** ((zp - star_mag) / 2.5), gr_s, rz_s, "star"))

    fr = np.array([c.frac for c in parts]) * 10.0 ** ((zp - mag_r) / 2.5)
    fluxes = np.stack(
        [fr * 10.0 ** (-0.4 * np.array([c.gr for c in parts])), fr, fr * 10.0 ** (0.4 * np.array([c.rz for c in parts]))], axis=1
    )
    totals = fluxes.sum(axis=0)
    mags = {b: zp - 2.5 * math.log10(totals[k]) for k, b in enumerate(BANDS)}
    draw = dict(nx=size, ny=size, scale=scale, offset=(float(offset[0]), float(offset[1])))

    # observed, noise-free: r per group (for what volunteers see), every band in total
    groups: dict[str, np.ndarray] = {}
    for name in ("main", "bar", "arms", "tidal", "companion"):
        idx = [m for m, c in enumerate(parts) if c.group == name]
        if idx:
            gal = galsim.Sum([parts[m].profile * float(fluxes[m, 1]) for m in idx], gsparams=gsp)
            groups[name] = galsim.Convolve(gal, psfs["r"], gsparams=gsp).drawImage(**draw).array
    conv = {"r": sum(groups.values())}
    for b in bands:
        if b == "r":
            continue
        j = BANDS.index(b)
        gal = galsim.Sum([c.profile * float(fluxes[m, j]) for m, c in enumerate(parts)], gsparams=gsp)
        conv[b] = galsim.Convolve(gal, psfs[b], gsparams=gsp).drawImage(**draw).array

    # PSF-free truth: each unit-flux component once, 2x oversampled, then combined
    clean, hlr = desi.clean_truth(parts, fluxes, bands, spec, size, scale, offset, gsp)
    bulge_r = sum(float(fluxes[m, 1]) for m, c in enumerate(parts) if c.bulge and c.group != "companion")

    # what the volunteers can see (r band): S/N of each feature against sky noise + contrast floor
    c0 = (size - 1) / 2.0
    cx, cy = c0 + offset[0], c0 + offset[1]
    img_r = conv["r"]
    noise = np.sqrt(sigma["r"] ** 2 + (float(spec["contrast_floor"]) * np.abs(img_r)) ** 2)

    def structure(name: str) -> float:
        """S/N of a feature's non-axisymmetric part after the PSF: the group's image minus that of
        its components' axisymmetric twins."""
        idx = [m for m, c in enumerate(parts) if c.group == name and c.twin is not None]
        if not idx:
            return 0.0
        gal = galsim.Sum([parts[m].twin * float(fluxes[m, 1]) for m in idx], gsparams=gsp)
        twin = galsim.Convolve(gal, psfs["r"], gsparams=gsp).drawImage(**draw).array
        return _snr(groups[name] - twin, noise)

    primary = sum(groups[k] for k in ("main", "bar", "arms") if k in groups)
    fwhm_r = fwhm["r"]
    main_hlr = float(p["disk_hlr"]) if p["family"] == "disk" else h
    bt = float(p["bt"])
    seen = {
        "snr_total": _snr(img_r, np.full_like(img_r, sigma["r"])),
        "snr_arms": structure("arms"),
        "snr_bar": structure("bar"),
        "snr_tidal": _snr(_asymmetric(groups["tidal"], offset), noise) if "tidal" in groups else 0.0,
        "snr_companion": _snr(groups["companion"], noise) if "companion" in groups else 0.0,
        "companion_resolved": float(np.clip((p["companion_separation"] / fwhm_r - 0.8) / 1.0, 0.0, 1.0)),
        "q_obs": _observed_q(primary, sigma["r"]),
        "bt_obs": bt + (1.0 - bt) * (fwhm_r / (fwhm_r + 2.5 * main_hlr)) ** 2,
        "disk_frac": 1.0 - bt,
        "pitch": p["pitch_angle"] if p["n_arms"] else 20.0,
        "n_arms": p["n_arms"],
        "bar_strength": p["bar_strength"],
        "disturbance": f_tidal + f_asym,
        "companion_ratio": p["companion_ratio"],
        "boxy": p["bar_strength"] >= truth_cfg["bar_strength"],
        # a projected neighbour: its S/N (background-limited estimate) and how likely it passes for a partner
        "snr_neighbour": (10.0 ** ((zp - nb["mag_r"]) / 2.5) / (sigma["r"] * math.sqrt(nea["r"] + 8.0 * math.pi * (hn / 1.678 / scale) ** 2))
                          if nb["ratio"] > 0 else 0.0),
        "neighbour_ratio": nb["ratio"],
        "neighbour_confusion": float(cont["confusion"]) * nb["close"],
    }
    counts = votes.simulate_votes(rng, seen, spec["volunteers"])
    n_vol = counts.pop("n_volunteers")
    label, agreement, confident = votes.galaxy10_label(counts, float(spec["label_threshold"]))
    t_cls = true_class(p, truth_cfg)

    observed = np.stack([conv[b] for b in bands])
    if extra:
        for k, b in enumerate(bands):
            colour = {"g": lambda e: 10.0 ** (-0.4 * e[2]), "r": lambda e: 1.0, "z": lambda e: 10.0 ** (0.4 * e[3])}[b]
            scene = galsim.Sum([e[0] * (e[1] * colour(e)) for e in extra], gsparams=gsp)
            observed[k] += galsim.Convolve(scene, psfs[b], gsparams=gsp).drawImage(**draw).array
            gals = [e for e in extra if e[4] != "star"]
            if gals:
                smooth = galsim.Gaussian(sigma=float(spec["clean_smoothing"]), gsparams=gsp)  # as desi.clean_truth
                fine_b = galsim.Convolve(galsim.Sum([e[0] * (e[1] * colour(e)) for e in gals], gsparams=gsp), smooth, gsparams=gsp)
                clean[k] += desi._bin2(fine_b.drawImage(nx=2 * size, ny=2 * size, scale=scale / 2.0, offset=(2.0 * offset[0], 2.0 * offset[1])).array)
            for e in extra:
                if e[4] == "star":
                    clean[k] += desi._bilinear(np.array([e[1] * colour(e)]), c0 + offset[0] + star_pos[0] / scale,
                                               c0 + offset[1] + star_pos[1] / scale, size)[0]
    noise_draw = rng.standard_normal(size=(len(bands), size, size))
    image = observed + noise_draw * np.array([sigma[b] for b in bands])[:, None, None]

    row: dict[str, Any] = {"class": label, "class_name": CLASSES[label], "true_class": t_cls, "true_class_name": CLASSES[t_cls]}
    row["population"] = pop
    row["label_agreement"] = agreement
    row["label_confident"] = confident
    row["n_volunteers"] = int(n_vol)
    row.update({c: int(counts[c]) for c in votes.columns()})
    row["sersic_n"] = float(p["sersic_n"])
    row["half_light_radius"] = hlr
    row["axis_ratio"] = float(p["axis_ratio"])
    row["position_angle"] = float(p["pa"]) % 180.0
    for b in BANDS:
        row[f"mag_{b}"] = float(mags[b])
    row["bulge_to_total"] = bulge_r / float(totals[1])
    row["size_hlr"] = h
    row["disk_hlr"] = float(p["disk_hlr"])
    row["bulge_hlr"] = float(p["bulge_hlr"])
    row["inclination"] = float(p["inclination"])
    row["bar_strength"] = float(p["bar_strength"])
    row["bar_length"] = float(p["bar_length"])
    row["bar_sersic_n"] = float(p["bar_n"]) if p["bar_strength"] > 0 else math.nan
    row["n_arms"] = int(p["n_arms"])
    row["pitch_angle"] = float(p["pitch_angle"]) if p["n_arms"] else math.nan
    row["arm_contrast"] = float(p["arm_contrast"])
    row["asymmetry"] = float(f_asym)
    row["tidal_fraction"] = float(f_tidal)
    row["has_tails"] = int(p["n_tails"] > 0)
    row["has_shells"] = int(p["n_shells"] > 0)
    row["has_offset_light"] = int(p["has_offset_light"])
    row["has_companion"] = int(companion is not None)
    row["companion_flux_ratio"] = float(p["companion_ratio"])
    row["companion_separation"] = float(p["companion_separation"])
    row["has_neighbour"] = int(nb["ratio"] > 0)
    row["neighbour_mag_r"] = float(nb["mag_r"])
    row["neighbour_separation"] = float(nb["separation"])
    row["has_star"] = int(star_pos is not None)
    row["star_mag_r"] = float(star_mag)
    for b in BANDS:
        row[f"psf_fwhm_{b}"] = fwhm[b]
    for b in BANDS:
        row[f"depth_{b}"] = depth[b]
    for b in BANDS:
        row[f"sky_sigma_{b}"] = sigma[b]
    for b in bands:
        row[f"snr_{b}"] = _snr(conv[b], np.full_like(conv[b], sigma[b]))
    for key in ("snr_arms", "snr_bar", "snr_tidal", "snr_companion", "q_obs"):
        row[key] = float(seen[key])
    row["offset_x"] = float(offset[0])
    row["offset_y"] = float(offset[1])
    return image.astype(np.float32), clean.astype(np.float32), row


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray, list[dict]]:
    """Objects ``start .. stop-1``: (start, images, clean, rows)."""
    with desi._one_blas_thread():
        out = [simulate_object(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out]
