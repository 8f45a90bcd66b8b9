"""Settings of the Galaxy10 DECaLS-like generator (``sim.generator: galaxy10``): the populations, their
defaults and their validation (:func:`resolve`).  The drawing is :mod:`galframe.sim.galaxy10`."""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional

from galframe.errors import ConfigError
from galframe.sim import merge_settings, number_in, randomise, rare, votes
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
    return merge_settings(base, over, where, "galaxy10", _REPLACE)


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    return number_in(value, what, lo, hi)


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
    rare_spec = rare.resolve(sim.pop("rare", None))
    sim, knobs = randomise.take(sim, "galaxy10")  # domain randomisation (galframe.sim.randomise)
    if given != VERSION:
        raise ConfigError(f"sim.version {given!r}: this galaxy10 generator is version {VERSION}; leave sim.version out.")
    spec = _merge(DEFAULTS, sim, "sim")
    spec["version"] = VERSION
    if rare_spec is not None:  # only when on: the settings (and the cache key) without it are unchanged
        spec["rare"] = rare_spec
    _check_classes(spec)
    _check_bands(spec, bands)
    _check_population(spec)
    _check_features(spec)
    _check_contaminants(spec)
    _check_volunteers(spec["volunteers"])
    spec["pixel_scale"] = _number(spec["pixel_scale"], "sim.pixel_scale", 1e-3, 10.0)
    spec["zeropoint"] = _number(spec["zeropoint"], "sim.zeropoint", 0.0, 50.0)
    spec["sersic_trunc"] = _number(spec["sersic_trunc"], "sim.sersic_trunc", 2.5, 100.0)
    spec["clean_smoothing"] = _number(spec["clean_smoothing"], "sim.clean_smoothing", 0.0, 1.0)
    if spec["clean_smoothing"] <= 0:
        raise ConfigError("sim.clean_smoothing must be > 0 (a tiny Gaussian, e.g. 0.05 arcsec).")
    return randomise.attach(spec, knobs)


def _check_classes(spec: dict) -> None:
    """The ten Galaxy10 classes, always, and their mix ``class_fractions`` (normalised)."""
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


def _check_bands(spec: dict, bands: list[str]) -> None:
    """Every band drawn, with its seeing and depth (those of all three bands: colours tie them together)."""
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


def _check_population(spec: dict) -> None:
    """Magnitudes, sizes and observing-condition scatter."""
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


def _check_features(spec: dict) -> None:
    """Feature strengths and the physical class boundaries (``sim.truth``)."""
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


def _check_contaminants(spec: dict) -> None:
    """Neighbours and stars in the stamp, and the volunteers' contrast and agreement thresholds."""
    cont = spec["contaminants"]
    cont["neighbour"] = _number(cont["neighbour"], "sim.contaminants.neighbour", 0.0, 1.0)
    cont["star"] = _number(cont["star"], "sim.contaminants.star", 0.0, 1.0)
    cont["confusion"] = _number(cont["confusion"], "sim.contaminants.confusion", 0.0, 1.0)
    cont["neighbour_dmag"] = _pair(cont["neighbour_dmag"], "sim.contaminants.neighbour_dmag", 0.0, 10.0)
    cont["star_dmag"] = _pair(cont["star_dmag"], "sim.contaminants.star_dmag", -10.0, 10.0)
    spec["contrast_floor"] = _number(spec["contrast_floor"], "sim.contrast_floor", 0.0, 1.0)
    spec["label_threshold"] = _number(spec["label_threshold"], "sim.label_threshold", 0.0, 1.0)


def _check_volunteers(vol: dict) -> None:
    """The simulated volunteers (``sim.volunteers``)."""
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


def vote_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Galaxy Zoo DECaLS vote schema this generator writes (``DatasetWriter(votes=...)``)."""
    return votes.schema()
