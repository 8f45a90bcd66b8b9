"""Domain randomisation shared by the simulators (``desi``, ``galaxy10``, ``fields``): the knobs, their
validation and the ``randomise`` preset, and the pieces every generator draws with them (PSF families,
noise extras and defect masks, dust lanes, colour gradients, background galaxies, the pixel-grid offset).

Knobs (under ``sim:``; docs/sim_galaxy10.md "Domain randomisation" lists each with its range and the
direction it moves the images):

* ``psf.family``: ``moffat`` | ``kolmogorov`` | ``double_gaussian`` or a list of them (one drawn per
  object); ``psf.beta``: a number (the generator's own setting) or a range ``[lo, hi]`` drawn per object;
  ``psf.ellipticity``: the largest |g| of a PSF shear (|g| uniform in [0, ellipticity], one per object);
* ``noise``: ``poisson`` (source Poisson noise; true = ``GAIN`` electrons per nanomaggy, or the gain as a
  number), ``gradient`` (a residual linear sky gradient: ``gradient`` sky sigmas at the stamp edge; a
  number or a range), ``cosmic_rays``, ``bad_columns``, ``saturated_stars`` (probabilities per stamp);
* ``morph``: ``arms`` (``knots`` and/or ``logspiral``), ``tidal`` (``[with, without]``: each merger as the
  generator draws it today; ``[with]``, ``[without]`` or a probability), ``dust_lane`` (probability for
  an edge-on disk);
* ``colour_gradient``: g-z falls outwards by this many mag per half-light radius (number or range);
* ``subpixel_offset``: true (the default: the centre uniform within +-0.5 px), false (on a pixel centre)
  or the half-width in pixels;
* ``contaminants.background``: mean number (Poisson) of faint background galaxies per stamp;
* ``randomise: true``: every knob left at its default takes its ``PRESET`` value.

Every knob draws from its own random stream of ``(seed, i)``, so turning one on changes that aspect of
an object and nothing else; at their defaults the knobs draw nothing and the images are those of a
generator without them, bit for bit.  Only knobs away from their defaults enter the resolved settings
(``sim.domain``), so the dataset cache key of a default config is unchanged.

Defects (cosmic rays, bad columns, saturated stars and their bleed trails) are left in the image as a
survey stamp would show them (a training shard may not hold NaN) and recorded per band in the catalog:
``bad_rle_<band>`` (the COCO run-length encoding of ``galframe.data.masks``, see :func:`defect_mask`)
and ``n_bad_pixels`` (the count ``galframe ingest`` reports for real data).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, check_choice, did_you_mean
from galframe.sim import number_in
# the pieces the generators draw with (re-exported: randomise.<name> is the one interface)
from galframe.sim.randomise_draw import (  # noqa: F401
    DOUBLE_GAUSSIAN, KNOTS, SATURATION, LANE_GR, LANE_RZ, _double_gaussian_fwhm, psf_profile, poisson_noise,
    sky_gradient, _saturated_star, saturate, cosmic_rays, bad_columns, defect_mask, dust_lane, add_dust_lane,
    colour_split, knotty_arms, background, draw_sources,
)

FAMILIES = ("moffat", "kolmogorov", "double_gaussian")
ARMS = ("knots", "logspiral")
TIDAL = ("with", "without")
#: electrons per nanomaggy that ``noise.poisson: true`` assumes (about a 90-s DECam exposure at zero point 22.5)
GAIN = 1000.0
#: d(g - z)/d(r / hlr) of an exponential per unit of the log-dilation delta: 2 x 2.5 log10(e) x 1.678
_GRADIENT_PER_DELTA = 2.0 * 2.5 * math.log10(math.e) * 1.678

#: the knobs each generator has (``fields`` draws whole fields: no centred galaxy, no mergers)
SUPPORTED = {
    "galaxy10": ("psf", "noise", "arms", "tidal", "dust_lane", "colour_gradient", "subpixel_offset", "background"),
    "desi": ("psf", "noise", "arms", "tidal", "dust_lane", "colour_gradient", "subpixel_offset", "background"),
    "fields": ("psf", "noise", "arms", "dust_lane"),
}
#: today's spiral arms of each generator: galaxy10 draws continuous log-spirals, desi and fields knots
TODAY_ARMS = {"galaxy10": "logspiral", "desi": "knots", "fields": "knots"}

#: ``randomise: true``: the value of every knob left at its default (ranges are drawn per object)
PRESET: dict[str, Any] = {
    "psf": {"family": list(FAMILIES), "beta": [2.5, 5.0], "ellipticity": 0.06},
    "noise": {"poisson": GAIN, "gradient": [0.0, 3.0], "cosmic_rays": 0.3, "bad_columns": 0.2, "saturated_stars": 0.1},
    "morph": {"arms": list(ARMS), "tidal": 0.5, "dust_lane": 0.5},
    "colour_gradient": [0.0, 0.4],
    "subpixel_offset": 1.0,
    "background": 2.0,
}

_STREAMS = ("psf", "noise", "gradient", "cosmic", "columns", "saturated", "arms", "tidal", "dust", "colour", "background")


def defaults(generator: str) -> dict[str, Any]:
    """The knobs at their defaults (today's images), in the resolved form."""
    return {
        "psf": {"family": ["moffat"], "beta": None, "ellipticity": 0.0},
        "noise": {"poisson": 0.0, "gradient": [0.0, 0.0], "cosmic_rays": 0.0, "bad_columns": 0.0, "saturated_stars": 0.0},
        "morph": {"arms": [TODAY_ARMS[generator]], "tidal": None, "dust_lane": 0.0},
        "colour_gradient": [0.0, 0.0],
        "subpixel_offset": 0.5,
        "background": 0.0,
    }


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def _probability(value: Any, what: str) -> float:
    return number_in(value, what, 0.0, 1.0)


def _range(value: Any, what: str, lo: float, hi: float) -> list[float]:
    """A number (a fixed value) or a pair [low, high] (drawn uniformly), as [low, high]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{what} must be a number or a pair [low, high] (got {list(value)!r}).")
        a, b = (number_in(v, what, lo, hi) for v in value)
        if a > b:
            raise ConfigError(f"{what} must be [low, high] with low <= high (got [{a:g}, {b:g}]).")
        return [a, b]
    v = number_in(value, what, lo, hi)
    return [v, v]


def _choices(value: Any, what: str, options: Sequence[str]) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{what} must be one of {list(options)} or a non-empty list of them (got {value!r}).")
    out = [check_choice(what, str(v), options) for v in values]
    return list(dict.fromkeys(out))


def _switch(value: Any, what: str, on: float, hi: float) -> float:
    """true -> ``on``, false -> 0, a number as it is (in [0, hi])."""
    if isinstance(value, bool):
        return on if value else 0.0
    return number_in(value, what, 0.0, hi)


def _tidal(value: Any) -> Optional[float]:
    """None (each merger as the generator draws it), or the probability that a merger has tidal features."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _probability(value, "sim.morph.tidal")
    kinds = _choices(value, "sim.morph.tidal", TIDAL)
    return None if len(kinds) == 2 else (1.0 if kinds == ["with"] else 0.0)


def _table(value: Any, what: str, keys: Sequence[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a mapping (got {value!r}).")
    for key in value:
        if key not in keys:
            raise ConfigError(f"Unknown key '{what}.{key}'.{did_you_mean(str(key), keys)}")
    return dict(value)


def take(sim: Mapping[str, Any], generator: str) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Split a ``sim`` block into (the generator's own settings, the resolved knobs or None when every knob
    is at its default).  Raises ConfigError naming the key of a bad value."""
    sim = copy.deepcopy(dict(sim or {}))
    knobs = defaults(generator)
    stored = _table(sim.pop("domain", None), "sim.domain", tuple(knobs))  # the resolved form a manifest carries
    raw: dict[str, Any] = {}
    for key in ("psf", "noise", "morph"):
        raw[key] = _table(stored.get(key), f"sim.domain.{key}", tuple(knobs[key]))
    for key in ("colour_gradient", "subpixel_offset", "background"):
        if key in stored:
            raw[key] = stored[key]
    psf = sim.get("psf")
    if isinstance(psf, Mapping):
        psf = dict(psf)
        for key in ("family", "ellipticity"):
            if key in psf:
                raw["psf"][key] = psf.pop(key)
        if isinstance(psf.get("beta"), (list, tuple)):
            raw["psf"]["beta"] = psf.pop("beta")
        sim["psf"] = psf
    raw["noise"].update(_table(sim.pop("noise", None), "sim.noise", tuple(knobs["noise"])))
    raw["morph"].update(_table(sim.pop("morph", None), "sim.morph", tuple(knobs["morph"])))
    for key in ("colour_gradient", "subpixel_offset"):
        if key in sim:
            raw[key] = sim.pop(key)
    cont = sim.get("contaminants")
    if isinstance(cont, Mapping) and "background" in cont:
        cont = dict(cont)
        raw["background"] = cont.pop("background")
        if cont:
            sim["contaminants"] = cont
        else:
            sim.pop("contaminants")
    preset = sim.pop("randomise", False)
    if not isinstance(preset, bool):
        raise ConfigError(f"sim.randomise must be true or false (got {preset!r}).")
    _apply(knobs, raw)
    if preset:
        base = defaults(generator)
        over = _preset(generator)
        for key, value in over.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    if knobs[key][sub] == base[key][sub]:
                        knobs[key][sub] = v
            elif knobs[key] == base[key]:
                knobs[key] = value
        _apply(knobs, {})  # the preset in the resolved form
    _check_supported(knobs, generator)
    return sim, (None if knobs == defaults(generator) else knobs)


def _preset(generator: str) -> dict[str, Any]:
    """``PRESET`` in the resolved form, limited to the knobs ``generator`` has."""
    over = copy.deepcopy(PRESET)
    have = SUPPORTED[generator]
    out: dict[str, Any] = {}
    for key, value in over.items():
        if key in ("psf", "noise"):
            out[key] = value if key in have else {}
        elif key == "morph":
            out[key] = {k: v for k, v in value.items() if k in have}
        elif key in have:
            out[key] = value
    return out


def _apply(knobs: dict, raw: Mapping[str, Any]) -> None:
    """``raw`` (user or stored values) into ``knobs``, each validated into the resolved form."""
    psf, noise, morph = knobs["psf"], knobs["noise"], knobs["morph"]
    rp, rn, rm = raw.get("psf", {}), raw.get("noise", {}), raw.get("morph", {})
    psf["family"] = _choices(rp.get("family", psf["family"]), "sim.psf.family", FAMILIES)
    beta = rp.get("beta", psf["beta"])
    psf["beta"] = None if beta is None else _range(beta, "sim.psf.beta", 1.6, 20.0)
    psf["ellipticity"] = number_in(rp.get("ellipticity", psf["ellipticity"]), "sim.psf.ellipticity", 0.0, 0.5)
    noise["poisson"] = _switch(rn.get("poisson", noise["poisson"]), "sim.noise.poisson", GAIN, 1e9)
    if 0.0 < noise["poisson"] < 1e-3:
        raise ConfigError(f"sim.noise.poisson is a gain in electrons per nanomaggy, at least 0.001 (got {noise['poisson']:g}).")
    noise["gradient"] = _range(rn.get("gradient", noise["gradient"]), "sim.noise.gradient", 0.0, 100.0)
    for key in ("cosmic_rays", "bad_columns", "saturated_stars"):
        noise[key] = _probability(rn.get(key, noise[key]), f"sim.noise.{key}")
    morph["arms"] = _choices(rm.get("arms", morph["arms"]), "sim.morph.arms", ARMS)
    morph["tidal"] = _tidal(rm.get("tidal", morph["tidal"]))
    morph["dust_lane"] = _probability(rm.get("dust_lane", morph["dust_lane"]), "sim.morph.dust_lane")
    knobs["colour_gradient"] = _range(raw.get("colour_gradient", knobs["colour_gradient"]), "sim.colour_gradient", -2.0, 2.0)
    knobs["subpixel_offset"] = _switch(raw.get("subpixel_offset", knobs["subpixel_offset"]), "sim.subpixel_offset", 0.5, 4.0)
    knobs["background"] = number_in(raw.get("background", knobs["background"]), "sim.contaminants.background", 0.0, 50.0)


def _check_supported(knobs: Mapping[str, Any], generator: str) -> None:
    base, have = defaults(generator), SUPPORTED[generator]
    names = {"arms": "sim.morph.arms", "tidal": "sim.morph.tidal", "dust_lane": "sim.morph.dust_lane",
             "colour_gradient": "sim.colour_gradient", "subpixel_offset": "sim.subpixel_offset",
             "background": "sim.contaminants.background"}
    for key, what in names.items():
        value, default = (knobs["morph"][key], base["morph"][key]) if key in knobs["morph"] else (knobs[key], base[key])
        if key not in have and value != default:
            raise ConfigError(f"{what}: the {generator} simulator has no such knob (it has {', '.join(have)}).")


def attach(spec: dict, knobs: Optional[Mapping[str, Any]]) -> dict:
    """The resolved settings with the knobs (only when one is away from its default: the cache key of a
    default config is unchanged)."""
    if knobs is not None:
        spec["domain"] = copy.deepcopy(dict(knobs))
    return spec


# ---------------------------------------------------------------------------------------------
# one object
# ---------------------------------------------------------------------------------------------
class Domain:
    """The knobs of one object ``i``, its random streams (one per knob, from ``(seed, i)`` only) and the
    catalog columns of what they drew (:meth:`columns`)."""

    def __init__(self, spec: Mapping[str, Any], generator: str, seed: int, i: int) -> None:
        self.k = spec.get("domain") or defaults(generator)
        self.base = defaults(generator)
        self.seed, self.i = int(seed), int(i)
        self._rngs: dict[str, np.random.Generator] = {}
        self._psf: Optional[tuple] = None
        self.truth: dict[str, Any] = {}
        self.mask: Optional[np.ndarray] = None
        if self.psf_on:
            self.truth.update(psf_family="", psf_beta=math.nan, psf_g1=0.0, psf_g2=0.0)
        if self.k["morph"]["arms"] != self.base["morph"]["arms"]:
            self.truth["n_knotty_arms"] = 0
        if self.k["morph"]["dust_lane"] > 0:
            self.truth["dust_lane"] = 0.0
        if self.k["colour_gradient"] != self.base["colour_gradient"]:
            self.truth["colour_gradient"] = 0.0
        if self.k["background"] > 0:
            self.truth["n_background"] = 0
        noise = self.k["noise"]
        if noise["gradient"][1] > 0:
            self.truth.update(sky_gradient=0.0, sky_gradient_angle=0.0)
        if noise["saturated_stars"] > 0:
            self.truth["saturated_star_mag_r"] = math.nan
        if noise["cosmic_rays"] > 0:
            self.truth["n_cosmic_rays"] = 0
        if noise["bad_columns"] > 0:
            self.truth["n_bad_columns"] = 0

    def rng(self, name: str) -> np.random.Generator:
        if name not in self._rngs:
            self._rngs[name] = np.random.default_rng(np.random.SeedSequence([self.seed, self.i, 21, _STREAMS.index(name)]))
        return self._rngs[name]

    # -- the PSF -------------------------------------------------------------------------------
    @property
    def psf_on(self) -> bool:
        return self.k["psf"] != self.base["psf"]

    def psf(self, galsim: Any, fwhm: float, beta: float, gsp: Any, trunc: float = 0.0) -> Any:
        """One band's PSF of FWHM ``fwhm`` (arcsec): the object's family, beta and shear (drawn once per
        object); at the defaults exactly the generator's Moffat (``beta``, truncated at ``trunc`` FWHM)."""
        if not self.psf_on:
            return psf_profile(galsim, "moffat", fwhm, beta, gsp, trunc)
        if self._psf is None:
            rng, knobs = self.rng("psf"), self.k["psf"]
            family = knobs["family"][int(rng.integers(len(knobs["family"])))]
            b = float(rng.uniform(*knobs["beta"])) if knobs["beta"] is not None else float(beta)
            g = float(rng.uniform(0.0, knobs["ellipticity"]))
            angle = float(rng.uniform(0.0, math.pi))
            self._psf = (family, b, g * math.cos(2 * angle), g * math.sin(2 * angle))
            self.truth.update(psf_family=family, psf_beta=b if family == "moffat" else math.nan, psf_g1=self._psf[2], psf_g2=self._psf[3])
        family, b, g1, g2 = self._psf
        psf = psf_profile(galsim, family, fwhm, b, gsp, trunc)
        return psf.shear(g1=g1, g2=g2) if (g1 or g2) else psf

    # -- the centre ----------------------------------------------------------------------------
    def offset(self, drawn: np.ndarray) -> np.ndarray:
        """The galaxy's offset from the stamp centre (pixels): the generator's uniform draw in +-0.5,
        scaled to +-``subpixel_offset``."""
        half = float(self.k["subpixel_offset"])
        return drawn if half == 0.5 else drawn * (half / 0.5)

    # -- morphology ----------------------------------------------------------------------------
    def arms(self) -> str:
        """How this galaxy's spiral arms are drawn: ``knots`` or ``logspiral``."""
        kinds = self.k["morph"]["arms"]
        kind = kinds[0] if len(kinds) == 1 else kinds[int(self.rng("arms").integers(len(kinds)))]
        if kind == "knots" and "n_knotty_arms" in self.truth:
            self.truth["n_knotty_arms"] += 1
        return kind

    def tidal(self) -> Optional[bool]:
        """Whether a merger has tidal features: None keeps the generator's own draw."""
        p = self.k["morph"]["tidal"]
        if p is None:
            return None
        return bool(self.rng("tidal").random() < p)

    def dust_lane(self) -> float:
        """The fraction of an edge-on disk's light its dust lane takes out (0: none)."""
        p = self.k["morph"]["dust_lane"]
        if p <= 0 or not self.rng("dust").random() < p:
            return 0.0
        tau = float(self.rng("dust").uniform(0.08, 0.2))
        self.truth["dust_lane"] = max(self.truth.get("dust_lane", 0.0), tau)
        return tau

    def colour_delta(self) -> float:
        """The log-dilation of the g (+) and z (-) profiles that gives the object's colour gradient."""
        lo, hi = self.k["colour_gradient"]
        if lo == hi == 0.0:
            return 0.0
        grad = float(self.rng("colour").uniform(lo, hi)) if hi > lo else lo
        self.truth["colour_gradient"] = grad
        return math.asinh(grad / _GRADIENT_PER_DELTA)

    # -- catalog ---------------------------------------------------------------------------------
    def columns(self, bands: Sequence[str]) -> dict[str, Any]:
        """The catalog columns of the knobs that are on (none at the defaults)."""
        row = dict(self.truth)
        if self.defects_on:
            from galframe.data.masks import mask_to_rle

            mask = self.mask if self.mask is not None else np.zeros((len(bands), 1, 1), dtype=bool)
            row["n_bad_pixels"] = int(mask.sum())
            for k, b in enumerate(bands):
                row[f"bad_rle_{b}"] = mask_to_rle(mask[k]) if self.mask is not None else []
        return row

    @property
    def defects_on(self) -> bool:
        noise = self.k["noise"]
        return any(noise[key] > 0 for key in ("cosmic_rays", "bad_columns", "saturated_stars"))

    @property
    def noise_on(self) -> bool:
        return self.k["noise"] != self.base["noise"]

    # -- noise extras ----------------------------------------------------------------------------
    def add_noise(self, observed: np.ndarray, image: np.ndarray, sigma: Sequence[float], psfs: Sequence[Any], draw: Mapping,
                  bands: Sequence[str], zeropoint: float = 22.5) -> np.ndarray:
        """``image`` (noise-free ``observed`` + sky noise, (bands, H, W)) with the noise knobs: a saturated
        star, source Poisson noise, a sky gradient, cosmic rays and bad columns; defects go to ``self.mask``."""
        noise = self.k["noise"]
        observed, image = observed.copy(), image.copy()
        mask = np.zeros(image.shape, dtype=bool)
        sigma = np.asarray(sigma, dtype=float)
        star = None
        if noise["saturated_stars"] > 0 and self.rng("saturated").random() < noise["saturated_stars"]:
            star = _saturated_star(self.rng("saturated"), observed, psfs, draw, bands, zeropoint)
            observed += star[0]
            image += star[0]
            self.truth["saturated_star_mag_r"] = star[2]
        if noise["poisson"] > 0:
            image += poisson_noise(self.rng("noise"), observed, noise["poisson"])
        lo, hi = noise["gradient"]
        if hi > 0:
            rng = self.rng("gradient")
            amp = float(rng.uniform(lo, hi)) if hi > lo else lo
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            image += sky_gradient(image.shape[-1], amp, angle)[None] * sigma[:, None, None]
            self.truth.update(sky_gradient=amp, sky_gradient_angle=math.degrees(angle))
        if star is not None:
            mask |= saturate(image, star[1])
        if noise["cosmic_rays"] > 0 and self.rng("cosmic").random() < noise["cosmic_rays"]:
            n = cosmic_rays(self.rng("cosmic"), image, mask, sigma)
            self.truth["n_cosmic_rays"] = n
        if noise["bad_columns"] > 0 and self.rng("columns").random() < noise["bad_columns"]:
            self.truth["n_bad_columns"] = bad_columns(self.rng("columns"), image, mask, sigma)
        if self.defects_on:
            self.mask = mask
        return image
