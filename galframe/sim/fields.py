"""Simulated survey fields for detection and instance segmentation, drawn with GalSim.

A field is a ``image_size`` x ``image_size`` patch of DESI Legacy Surveys-like sky (g, r, z,
0.262"/pixel) holding a Poisson number of galaxies (the ``desi`` generator's smooth, disk,
edge-on and irregular models) and stars, with a fraction of the galaxies placed next to another
object so that they blend.  Every field has one seeing factor and one depth per band.

Truth per object (the field's ``instances`` rows): class (``galaxy`` or ``star``), position,
magnitudes, and an instance mask: the pixels where the object's own noise-free, PSF-convolved
image (summed over bands, each in nanomaggies) is brighter than the surface-brightness threshold
``mask_sb`` (mag/arcsec^2 in r, converted per pixel).  Masks of blended objects may overlap.  An
object whose mask has fewer than ``min_area`` pixels is kept in the table with
``annotated = False``: it is below what a detector can be asked to find, but counts for
completeness versus magnitude.  Boxes are the tight boxes of the masks.

Randomness comes only from ``(seed, i)`` as in the ``desi`` generator.  Domain randomisation
(:mod:`galframe.sim.randomise`): ``sim.psf`` (family, beta range, ellipticity), ``sim.noise`` (Poisson,
gradient, cosmic rays, bad columns, saturated stars) and ``sim.morph`` (``arms``, ``dust_lane``), per field.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional

import numpy as np

from galframe.data.masks import mask_to_rle
from galframe.errors import ConfigError
from galframe.sim import desi, randomise

CLASSES = ("galaxy", "star")
GALAXY_TYPES = ("smooth", "featured_disk", "edge_on", "irregular")

DEFAULTS: dict[str, Any] = {
    "generator": "fields",
    "pixel_scale": 0.262,
    "zeropoint": 22.5,
    "classes": list(CLASSES),
    # mean number of objects per field (Poisson)
    "galaxies": 6.0,
    "stars": 1.5,
    # galaxy types and their fractions (the desi generator's models)
    "galaxy_types": list(GALAXY_TYPES),
    "galaxy_fractions": [0.4, 0.35, 0.12, 0.13],
    "mag_r": [17.0, 22.5],
    "mag_slope": 0.3,
    "star_mag_r": [16.0, 22.5],
    # fraction of galaxies placed next to an earlier object (blends), at this many half-light radii
    "blend_fraction": 0.3,
    "blend_distance": [1.0, 3.0],
    "size": {"hlr_at_r18": 1.6, "slope": 0.15, "scatter": 0.15, "min": 0.3, "max": 4.0},
    "psf": {"beta": 3.5, "fwhm": {"g": 1.30, "r": 1.20, "z": 1.10}, "seeing_scatter": 0.15, "trunc": 0.0},
    "depth": {"g": 24.0, "r": 23.4, "z": 22.5},
    "depth_scatter": 0.25,
    # instance masks: noise-free (all bands) image above this r surface brightness (mag/arcsec^2)
    "mask_sb": 24.5,
    "min_area": 6,
    # objects keep this many pixels from the field edge (their centres)
    "margin": 4,
    "knots": {"featured_disk": [15, 40], "spiral_arms": [40, 90], "irregular": [25, 70]},
    "sersic_trunc": 8.0,
    "clean_smoothing": 0.08,
    "workers": None,
    "shard_size": 512,
}

_REPLACE = ("sim.psf.fwhm", "sim.depth")


def resolve(sim: Optional[Mapping[str, Any]], bands: list[str]) -> dict[str, Any]:
    """Generator settings with defaults filled in and checked; raises ConfigError."""
    spec = copy.deepcopy(DEFAULTS)
    sim, knobs = randomise.take(sim or {}, "fields")
    for key, value in sim.items():
        if key not in DEFAULTS:
            raise ConfigError(f"Unknown key 'sim.{key}' for the fields generator.{desi.did_you_mean(key, list(DEFAULTS))}")
        if isinstance(value, Mapping) and isinstance(spec[key], dict) and f"sim.{key}" not in _REPLACE:
            for k, v in value.items():
                if isinstance(v, Mapping) and isinstance(spec[key].get(k), dict) and f"sim.{key}.{k}" not in _REPLACE:
                    spec[key][k] = {**spec[key][k], **dict(v)}
                else:
                    spec[key][k] = v
        else:
            spec[key] = value
    if list(spec["classes"]) != list(CLASSES):
        raise ConfigError(f"sim.classes of the fields generator must be {list(CLASSES)} (got {spec['classes']}).")
    types = [str(t) for t in spec["galaxy_types"]]
    for t in types:
        if t not in GALAXY_TYPES:
            raise ConfigError(f"Unknown galaxy type '{t}' in sim.galaxy_types.{desi.did_you_mean(t, GALAXY_TYPES)}")
    fr = [float(f) for f in spec["galaxy_fractions"]]
    if len(fr) != len(types) or any(f < 0 for f in fr) or sum(fr) <= 0:
        raise ConfigError(f"sim.galaxy_fractions must give one non-negative number per galaxy type (got {fr}).")
    spec["galaxy_types"], spec["galaxy_fractions"] = types, [f / sum(fr) for f in fr]
    for key in ("galaxies", "stars"):
        if not 0 <= float(spec[key]) <= 200:
            raise ConfigError(f"sim.{key} is a mean number of objects per field, between 0 and 200 (got {spec[key]}).")
    for band in bands:
        if band not in desi.BANDS:
            raise ConfigError(f"The fields simulator draws only bands {list(desi.BANDS)}; band '{band}' is not one of them.")
        for what, table in (("sim.psf.fwhm", spec["psf"]["fwhm"]), ("sim.depth", spec["depth"])):
            if band not in table:
                raise ConfigError(f"Band '{band}' has no entry in {what}; give one for every band in data.bands.")
    spec["mag_r"] = desi._pair(spec["mag_r"], "sim.mag_r", lo=5.0)
    spec["star_mag_r"] = desi._pair(spec["star_mag_r"], "sim.star_mag_r", lo=5.0)
    spec["blend_distance"] = desi._pair(spec["blend_distance"], "sim.blend_distance", lo=0.0)
    if not 0 <= float(spec["blend_fraction"]) <= 1:
        raise ConfigError(f"sim.blend_fraction must be in [0, 1] (got {spec['blend_fraction']}).")
    if int(spec["min_area"]) < 1:
        raise ConfigError(f"sim.min_area must be at least 1 pixel (got {spec['min_area']}).")
    return randomise.attach(spec, knobs)


def _mask_threshold(spec: Mapping[str, Any]) -> float:
    """Per-pixel flux (nanomaggies, summed over bands) of the surface-brightness threshold."""
    scale = float(spec["pixel_scale"])
    return 10.0 ** ((float(spec["zeropoint"]) - float(spec["mask_sb"])) / 2.5) * scale**2


def _conditions(rng: np.random.Generator, spec: Mapping[str, Any], bands: list, galsim: Any, gsp: Any,
                dom: randomise.Domain) -> tuple[dict, dict, dict]:
    """(PSF FWHM, sky noise, PSF: Moffat unless ``sim.psf.family``) per band of one field."""
    scale, zp = float(spec["pixel_scale"]), float(spec["zeropoint"])
    seeing = float(np.clip(math.exp(rng.normal(0.0, float(spec["psf"]["seeing_scatter"]))), 0.5, 2.0))
    fwhm = {b: float(spec["psf"]["fwhm"][b]) * seeing for b in bands}
    sigma = {
        b: desi.sky_sigma(float(spec["depth"][b]) + float(rng.normal(0.0, float(spec["depth_scatter"]))), fwhm[b], scale, zp)
        for b in bands
    }
    psfs = {b: dom.psf(galsim, fwhm[b], float(spec["psf"]["beta"]), gsp) for b in bands}
    return fwhm, sigma, psfs


def _star(rng: np.random.Generator, spec: Mapping[str, Any], psfs: dict, bands: list) -> tuple[dict, dict, float, str, float]:
    """(magnitudes, PSF-convolved profile per band, radius in pixels, type, half-light radius) of a star."""
    zp = float(spec["zeropoint"])
    mag_r = desi._sample_mag(rng, *spec["star_mag_r"], float(spec["mag_slope"]))
    gr = float(rng.uniform(0.2, 1.5))
    rz = -0.05 + 0.6 * gr + 1.2 * max(gr - 1.2, 0.0) + float(rng.normal(0.0, 0.05))
    mags = {"g": mag_r + gr, "r": mag_r, "z": mag_r - rz}
    profiles = {b: psfs[b].withFlux(10.0 ** ((zp - mags[b]) / 2.5)) for b in bands}
    return mags, profiles, 1.0, "star", 0.0


def _galaxy(ctx: Any, spec: Mapping[str, Any], psfs: dict, bands: list) -> tuple[dict, dict, float, str, float]:
    """(magnitudes, PSF-convolved profile per band, radius in pixels, type, half-light radius) of a galaxy."""
    rng, galsim, gsp = ctx.rng, ctx.galsim, ctx.gsp
    zp, scale = float(spec["zeropoint"]), float(spec["pixel_scale"])
    mag_r = desi._sample_mag(rng, *spec["mag_r"], float(spec["mag_slope"]))
    gtype = str(rng.choice(spec["galaxy_types"], p=spec["galaxy_fractions"]))
    sc = spec["size"]
    log_h = math.log10(float(sc["hlr_at_r18"])) - float(sc["slope"]) * (mag_r - 18.0) + rng.normal(0.0, float(sc["scatter"]))
    hlr = float(np.clip(10.0**log_h * desi.SIZE_FACTOR.get(gtype, 1.0), float(sc["min"]), float(sc["max"])))
    build = {"smooth": desi._build_smooth, "featured_disk": desi._build_disk, "edge_on": desi._build_edge_on,
             "irregular": desi._build_irregular}[gtype]
    model = build(ctx, hlr)
    flux_r = 10.0 ** ((zp - mag_r) / 2.5)
    fr = np.array([c.frac for c in model.components]) * flux_r
    per_band = {
        "g": fr * 10.0 ** (-0.4 * np.array([c.gr for c in model.components])),
        "r": fr,
        "z": fr * 10.0 ** (0.4 * np.array([c.rz for c in model.components])),
    }
    mags = {b: zp - 2.5 * math.log10(float(per_band[b].sum())) for b in desi.BANDS}
    profiles = {
        b: galsim.Convolve(
            galsim.Sum([c.profile * float(f) for c, f in zip(model.components, per_band[b])], gsparams=gsp),
            psfs[b], gsparams=gsp,
        )
        for b in bands
    }
    return mags, profiles, hlr / scale, gtype, hlr


def _place(rng: np.random.Generator, spec: Mapping[str, Any], kind: str, placed: list, radius: float, size: int) -> tuple[float, float]:
    """An object's position (pixels): next to an earlier object (a blend) or anywhere, inside the margin."""
    margin = float(spec["margin"])
    if kind == "galaxy" and placed and rng.random() < float(spec["blend_fraction"]):
        x0, y0, r0 = placed[int(rng.integers(len(placed)))]
        dist = max(2.0, float(rng.uniform(*spec["blend_distance"])) * 0.5 * (r0 + radius))
        ang = rng.uniform(0.0, 2.0 * math.pi)
        x, y = x0 + dist * math.cos(ang), y0 + dist * math.sin(ang)
    else:
        x, y = rng.uniform(margin, size - 1 - margin, size=2)
    return float(np.clip(x, margin, size - 1 - margin)), float(np.clip(y, margin, size - 1 - margin))


def _instance(kind: str, gtype: str, x: float, y: float, hlr: float, mags: dict, mask: np.ndarray, min_area: int) -> dict[str, Any]:
    """The instance row of one object: class, position, size, magnitudes, its mask (area, box, RLE)."""
    area = int(mask.sum())
    row: dict[str, Any] = {
        "class": CLASSES.index(kind),
        "type": gtype,
        "x": x,
        "y": y,
        "half_light_radius": hlr,
        **{f"mag_{b}": float(mags[b]) for b in desi.BANDS},
        "area": area,
        "annotated": area >= min_area,
    }
    if area:
        ys, xs = np.nonzero(mask)
        row["bbox"] = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
    else:
        row["bbox"] = [x, y, 0.0, 0.0]
    row["rle"] = mask_to_rle(mask)
    return row


def simulate_field(cfg: Mapping[str, Any], i: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Field ``i``: image (bands, H, W) float32 and its catalog row (with an ``instances`` list)."""
    import galsim

    spec = cfg["sim"]
    bands = list(cfg["bands"])
    size = int(cfg["image_size"])
    scale = float(spec["pixel_scale"])
    gsp = desi._gsparams(galsim)
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), int(i), 17]))
    gs_rng = galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1)))
    dom = randomise.Domain(spec, "fields", cfg["seed"], i)
    ctx = desi._Ctx(rng, gs_rng, galsim, gsp, spec, dom)
    fwhm, sigma, psfs = _conditions(rng, spec, bands, galsim, gsp, dom)
    threshold = _mask_threshold(spec)
    centre = (size - 1) / 2.0

    n_gal = int(rng.poisson(float(spec["galaxies"])))
    n_star = int(rng.poisson(float(spec["stars"])))
    image = np.zeros((len(bands), size, size))
    placed: list[tuple[float, float, float]] = []  # (x, y, radius in pixels) of earlier objects
    instances: list[dict[str, Any]] = []

    kinds = ["galaxy"] * n_gal + ["star"] * n_star
    order = rng.permutation(len(kinds))
    for k in order:
        kind = kinds[k]
        mags, profiles, radius, gtype, hlr = _star(rng, spec, psfs, bands) if kind == "star" else _galaxy(ctx, spec, psfs, bands)
        x, y = _place(rng, spec, kind, placed, radius, size)
        placed.append((x, y, radius))
        own = np.stack(
            [profiles[b].drawImage(nx=size, ny=size, scale=scale, offset=(x - centre, y - centre)).array for b in bands]
        )
        image += own
        instances.append(_instance(kind, gtype, x, y, hlr, mags, own.sum(axis=0) > threshold, int(spec["min_area"])))

    noise = rng.standard_normal(size=image.shape) * np.array([sigma[b] for b in bands])[:, None, None]
    observed, image = image, image + noise
    if dom.noise_on:
        draw = dict(nx=size, ny=size, scale=scale, offset=(0.0, 0.0))
        image = dom.add_noise(observed, image, [sigma[b] for b in bands], [psfs[b] for b in bands], draw, bands,
                              float(spec["zeropoint"]))
    field: dict[str, Any] = {
        "n_objects": len(instances),
        "n_annotated": int(sum(r["annotated"] for r in instances)),
        "n_galaxies": n_gal,
        "n_stars": n_star,
        **{f"psf_fwhm_{b}": fwhm[b] for b in bands},
        **{f"sky_sigma_{b}": sigma[b] for b in bands},
        "instances": instances,
        **dom.columns(bands),
    }
    return image.astype(np.float32), field


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, Optional[np.ndarray], list[dict]]:
    """Fields ``start .. stop-1``: (start, images, None, rows); fields carry no clean images."""
    with desi._one_blas_thread():
        out = [simulate_field(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), None, [o[1] for o in out]
