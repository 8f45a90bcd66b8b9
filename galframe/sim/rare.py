"""Rare objects injected into the galaxy10 simulator (``sim.rare``): classes no Galaxy10 task is trained on.

* ``lens``: a galaxy-scale strong lens.  The deflector is an elliptical (the host, drawn as a round or
  in-between smooth galaxy); the source a small, blue background galaxy (an elliptical exponential)
  behind it.  The lensed image is ray-traced through a singular isothermal sphere with external shear
  (``beta = theta - theta_E theta / |theta| - Gamma theta``, surface brightness conserved) on a fine grid,
  so a source near the caustic gives tangential arcs, a well-aligned one a (partial) Einstein ring of
  radius ``theta_E``;
* ``ring``: a ring galaxy (Hoag-like): a smooth core with a detached, clumpy, blue ring of star-forming
  knots, inclined at random;
* ``polar``: a polar-ring galaxy: an edge-on lenticular host with a thin ring seen nearly edge-on,
  perpendicular to the host's major axis.

The added light is a GalSim ``InterpolatedImage`` of the drawing, observed through each band's PSF like
the rest of the stamp and added to the clean truth; it does not change the host's truth columns (its
magnitudes are the host's) nor what the simulated volunteers vote (``class`` is the host's).

Whether object ``i`` is rare, and every number of its rare light, come from their own random stream
(``(seed, i, 11)``): the other objects are the same as without ``sim.rare``, and a rare object with a zero
``*_flux`` is the same stamp without the added light.  Off (all rates 0) by default, and then absent from
the resolved settings, so the datasets made before stay valid.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from galframe.errors import ConfigError

KINDS = ("lens", "ring", "polar")
DEFAULTS: dict[str, Any] = {
    "lens": 0.0,                      # fraction of the objects that are strong lenses
    "ring": 0.0,                      # ... ring galaxies
    "polar": 0.0,                     # ... polar-ring galaxies
    "lens_flux": [0.1, 0.4],          # the arcs' r flux, a fraction of the deflector's
    "einstein_radius": [1.2, 2.8],    # theta_E (arcsec)
    "source_hlr": [0.15, 0.45],       # the unlensed source's half-light radius (arcsec)
    "ring_flux": [0.2, 0.6],          # a ring's r flux, a fraction of its host's
    "ring_radius": [1.6, 2.8],        # a ring's radius, in host half-light radii
}
#: hosts: lenses and rings around smooth galaxies (round, in-between), polar rings around edge-on S0s
HOSTS = {"lens": (2, 3), "ring": (2, 3), "polar": (9,)}


def resolve(rare: Any) -> Optional[dict[str, Any]]:
    """``sim.rare`` with defaults filled in and validated; None when every rate is 0 (nothing injected)."""
    from galframe.sim import merge_settings, number_in

    if rare in (None, {}):
        return None
    if not isinstance(rare, Mapping):
        raise ConfigError(f"sim.rare must be a mapping of rates, e.g. {{lens: 0.001, ring: 0.001}} (got {rare!r}).")
    spec = merge_settings(DEFAULTS, rare, "sim.rare", "galaxy10")
    for kind in KINDS:
        spec[kind] = number_in(spec[kind], f"sim.rare.{kind}", 0.0, 1.0)
    if sum(spec[k] for k in KINDS) > 1.0:
        raise ConfigError(f"sim.rare: the rates {', '.join(f'{k}={spec[k]:g}' for k in KINDS)} add up to more than 1.")
    for key, hi in (("lens_flux", 5.0), ("einstein_radius", 6.0), ("source_hlr", 2.0), ("ring_flux", 5.0), ("ring_radius", 6.0)):
        value = spec[key]
        try:
            lo_v, hi_v = (float(v) for v in value)
        except Exception:
            raise ConfigError(f"sim.rare.{key} must be a pair [low, high] (got {value!r}).") from None
        if not 0.0 <= lo_v <= hi_v <= hi:
            raise ConfigError(f"sim.rare.{key} must satisfy 0 <= low <= high <= {hi:g} (got [{lo_v:g}, {hi_v:g}]).")
        spec[key] = [lo_v, hi_v]
    if spec["source_hlr"][0] <= 0 or spec["einstein_radius"][0] <= 0 or spec["ring_radius"][0] <= 0:
        raise ConfigError("sim.rare: source_hlr, einstein_radius and ring_radius must be > 0.")
    return spec if any(spec[k] > 0 for k in KINDS) else None


def pick(seed: int, i: int, rare: Optional[Mapping[str, Any]]) -> tuple[str, Optional[np.random.Generator]]:
    """(the rare kind of object ``i`` or "", the random stream of its rare light)."""
    if not rare:
        return "", None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(i), 11]))
    u, edge = float(rng.random()), 0.0
    for kind in KINDS:
        edge += float(rare[kind])
        if u < edge:
            return kind, rng
    return "", None


def host_population(kind: str, rng: np.random.Generator) -> int:
    return int(rng.choice(HOSTS[kind]))


def _grid(n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (arcsec) of an n x n grid centred on the origin (as InterpolatedImage's)."""
    c = (n - 1) / 2.0
    y, x = (np.mgrid[0:n, 0:n] - c) * scale
    return x, y


def lens_image(rng: np.random.Generator, spec: Mapping[str, Any], extent: float, n: int = 256) -> tuple[np.ndarray, float, dict]:
    """The lensed source about the deflector at the origin: (image, pixel scale, truth)."""
    scale = 2.0 * extent / n
    x, y = _grid(n, scale)
    theta_e = float(rng.uniform(*spec["einstein_radius"]))
    g1, g2 = rng.normal(0.0, 0.05, size=2)
    r = np.maximum(np.hypot(x, y), 1e-9)
    bx = x - theta_e * x / r - (g1 * x + g2 * y)
    by = y - theta_e * y / r - (g2 * x - g1 * y)
    # the source: near the optical axis (inside the caustic), so that the images are arcs and rings
    offset = theta_e * float(rng.uniform(0.02, 0.35))
    phi = float(rng.uniform(0, 2 * math.pi))
    sx, sy = offset * math.cos(phi), offset * math.sin(phi)
    hlr = float(rng.uniform(*spec["source_hlr"]))
    q, beta = float(rng.uniform(0.4, 1.0)), float(rng.uniform(0, math.pi))
    dx, dy = bx - sx, by - sy
    u = dx * math.cos(beta) + dy * math.sin(beta)
    v = -dx * math.sin(beta) + dy * math.cos(beta)
    image = np.exp(-1.678 * np.sqrt(u * u * q + v * v / q) / hlr)
    truth = {"rare_radius": theta_e, "source_offset": offset, "source_hlr": hlr}
    return image / image.sum(), scale, truth


def ring_image(rng: np.random.Generator, kind: str, spec: Mapping[str, Any], h: float, pa: float, extent: float,
               n: int = 192) -> tuple[np.ndarray, float, dict]:
    """A clumpy ring about the origin (``polar``: thin, nearly edge-on, across the host's major axis ``pa``, deg)."""
    scale = 2.0 * extent / n
    x, y = _grid(n, scale)
    radius = float(np.clip(h * rng.uniform(*spec["ring_radius"]), 1.5, 0.8 * extent))
    if kind == "polar":
        q, angle = float(rng.uniform(0.08, 0.3)), math.radians(pa + 90.0 + rng.normal(0.0, 5.0))
    else:
        q, angle = math.cos(math.radians(rng.uniform(0.0, 60.0))), float(rng.uniform(0, math.pi))
    width = max(0.25, radius * float(rng.uniform(0.08, 0.18)))
    u = x * math.cos(angle) + y * math.sin(angle)
    v = (-x * math.sin(angle) + y * math.cos(angle)) / q  # the ring's own plane
    rr, az = np.hypot(u, v), np.arctan2(v, u)
    image = np.exp(-0.5 * ((rr - radius) / width) ** 2)
    image *= 1.0 + 0.4 * np.cos(float(rng.integers(1, 3)) * az + rng.uniform(0, 2 * math.pi))  # lopsided
    for _ in range(int(rng.integers(4, 10))):  # star-forming knots on the ring
        a = rng.uniform(0, 2 * math.pi)
        kx, ky = radius * math.cos(a), radius * math.sin(a)
        image += float(rng.uniform(0.5, 2.0)) * np.exp(-((u - kx) ** 2 + (v - ky) ** 2) / (2.0 * (0.6 * width) ** 2))
    return image / image.sum(), scale, {"rare_radius": radius, "source_offset": math.nan, "source_hlr": math.nan}


def rare_light(galsim: Any, gsp: Any, rng: np.random.Generator, kind: str, spec: Mapping[str, Any], h: float, pa: float,
               host_flux_r: float, stamp: float) -> tuple[tuple, dict]:
    """The rare light as an extra component of the stamp, ``(unit-flux profile, r flux, g-r, r-z, group)``,
    and its truth columns."""
    if kind == "lens":
        image, scale, truth = lens_image(rng, spec, 0.5 * stamp)
        fraction = float(rng.uniform(*spec["lens_flux"]))
        gr, rz = float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.0, 0.3))  # a blue, star-forming source
    else:
        image, scale, truth = ring_image(rng, kind, spec, h, pa, 0.5 * stamp)
        fraction = float(rng.uniform(*spec["ring_flux"]))
        gr, rz = float(rng.normal(0.35, 0.07)), float(rng.normal(0.18, 0.04))
    profile = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(image), scale=scale), flux=1.0, gsparams=gsp)
    truth["rare_flux_fraction"] = fraction
    return (profile, fraction * host_flux_r, gr, rz, kind), truth


def columns(kind: str, truth: Optional[Mapping[str, float]]) -> dict[str, Any]:
    """The catalog's rare-object columns of one object (every object has them when ``sim.rare`` is on)."""
    truth = truth or {}
    return {"rare": kind, "rare_flux_fraction": float(truth.get("rare_flux_fraction", 0.0)),
            "rare_radius": float(truth.get("rare_radius", math.nan)), "lens_source_offset": float(truth.get("source_offset", math.nan)),
            "lens_source_hlr": float(truth.get("source_hlr", math.nan))}
