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

Rare objects (``sim.rare``, off by default): strong-lens arcs around ellipticals, ring galaxies and
polar rings injected at set rates, flagged in the ``rare`` column (:mod:`galframe.sim.rare`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from galframe.sim import desi, randomise, rare, votes
from galframe.sim.galaxy10_config import (  # noqa: F401  (the generator's settings, importable from here)
    BANDS, BARRED, CIGAR, CLASSES, DEFAULTS, DISTURBED, EDGE_BULGE, EDGE_NO_BULGE, IN_BETWEEN, LOOSE, MERGING, ROUND,
    SIZE_FACTOR, TIGHT, VERSION, resolve, vote_schema,
)
from galframe.sim.galaxy10_parts import (  # noqa: F401  (the galaxy's pieces, importable from here)
    Comp, _asymmetric, _colour, _draw_params, _galaxy, _observed_q, _snr, _tidal_image, psf_nea, sky_sigma_psf, true_class,
)


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


@dataclass
class _Scene:
    """How one object is observed: GalSim, the stamp's grid and offset, and each band's conditions."""

    galsim: Any
    gsp: Any
    spec: Mapping[str, Any]
    bands: list
    size: int
    scale: float
    zp: float
    offset: Any = None
    fwhm: Any = None
    depth: Any = None
    psfs: Any = None
    nea: Any = None
    sigma: Any = None
    #: the object's domain-randomisation knobs (``randomise.Domain``)
    dom: Any = None

    @property
    def draw(self) -> dict:
        return dict(nx=self.size, ny=self.size, scale=self.scale, offset=(float(self.offset[0]), float(self.offset[1])))

    def observe(self, profile: Any, band: str) -> np.ndarray:
        """``profile`` through band ``band``'s PSF on the stamp's pixels."""
        return self.galsim.Convolve(profile, self.psfs[band], gsparams=self.gsp).drawImage(**self.draw).array


def _conditions(rng: np.random.Generator, scene: _Scene) -> None:
    """Seeing, depth and sky noise of every band (so that colours and truth do not depend on data.bands)."""
    galsim, spec, gsp = scene.galsim, scene.spec, scene.gsp
    psf_cfg = spec["psf"]
    shared = rng.normal(0.0, float(psf_cfg["scatter"]))
    scene.fwhm = {b: float(psf_cfg["fwhm"][b]) * float(np.clip(math.exp(shared + rng.normal(0.0, float(psf_cfg["band_scatter"]))), 0.5, 2.5)) for b in BANDS}
    scene.depth = {b: float(spec["depth"][b]) + float(rng.normal(0.0, float(spec["depth_scatter"]))) for b in BANDS}
    scene.psfs = {b: scene.dom.psf(galsim, scene.fwhm[b], float(psf_cfg["beta"]), gsp) for b in BANDS}
    scene.nea = {b: psf_nea(scene.psfs[b], scene.scale) for b in BANDS}
    scene.sigma = {b: sky_sigma_psf(scene.depth[b], scene.nea[b], scene.zp) for b in BANDS}


def _size(rng: np.random.Generator, size_cfg: Mapping[str, Any], mag_r: float, pop: int) -> float:
    """Half-light radius (arcsec) from the size-magnitude relation and the population's size factor."""
    family = {DISTURBED: "disturbed", MERGING: "merging", ROUND: "spheroid", IN_BETWEEN: "spheroid", CIGAR: "spheroid",
              EDGE_NO_BULGE: "edge_on", EDGE_BULGE: "edge_on"}.get(pop, "disk")
    log_h = (
        math.log10(float(size_cfg["hlr_at_r17"]))
        - float(size_cfg["slope"]) * (mag_r - 17.0)
        + rng.normal(0.0, float(size_cfg["scatter"]))
        + math.log10(SIZE_FACTOR[family])
    )
    return float(np.clip(10.0**log_h, size_cfg["min"], size_cfg["max"]))


def _disturbance(rng: np.random.Generator, pop: int, p: dict, h: float, spec: Mapping[str, Any], stamp: float,
                 dom: Optional[randomise.Domain] = None) -> Optional[tuple]:
    """A companion (``(ratio, separation, angle, size, params)`` or None), tidal light and offset light
    (``sim.morph.tidal`` may force a merger's tidal features on or off)."""
    feat, size_cfg = spec["features"], spec["size"]
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
    # sim.morph.tidal: a merger's tidal light forced off (still drawn, unused, so that the main random
    # stream runs as today) or on (drawn from the knob's own stream)
    forced = dom.tidal() if (dom is not None and companion is not None) else None
    if forced is False and p["tidal_fraction"] > 0:
        p["tidal_fraction"], p["tidal_unused"] = 0.0, True
    elif forced and p["tidal_fraction"] <= 0:
        trng = p["tidal_rng"] = dom.rng("tidal")
        p["tidal_fraction"] = float(trng.uniform(*feat["tidal_fraction"]))
        p["n_tails"], p["n_shells"] = int(trng.choice([1, 2])), 0
    return companion


def _assemble(ctx: Any, scene: _Scene, pop: int, p: dict, comps: list, companion: Optional[tuple], h: float) -> list[Comp]:
    """The object's components: the primary's own light, offset light, the companion, tidal light."""
    rng, galsim, gsp, spec = ctx.rng, scene.galsim, scene.gsp, scene.spec
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
        for c in _galaxy(ctx, h2, p2, spec, group="companion"):
            prof = c.profile.shear(g1=rng.normal(0, 0.08), g2=rng.normal(0, 0.08)).shift(cx, cy)
            parts.append(Comp(prof, c.frac * (1.0 - share1), c.gr, c.rz, "companion"))
        p["companion_separation"] = sep
        p["bridge_to"] = (cx, cy) if (pop == MERGING and rng.random() < 0.5) else None
    else:
        p["companion_separation"] = 0.0
        p["bridge_to"] = None
    if f_tidal > 0 or p.get("tidal_unused"):
        trng = p.get("tidal_rng", rng)
        img, tscale = _tidal_image(trng, h, p, 0.6 * scene.size * scene.scale)
        tidal = galsim.InterpolatedImage(galsim.Image(img, scale=tscale), flux=1.0, gsparams=gsp)
        colour = _colour(trng, "tidal")
        if p.get("tidal_unused"):
            p["n_tails"], p["n_shells"] = 0, 0
        else:
            parts.append(Comp(tidal, share1 * f_tidal, *colour, "tidal"))
    return parts


def _contaminants(ctx: Any, scene: _Scene, mag_r: float, h: float) -> tuple[list, dict, float, float, Optional[tuple]]:
    """Unrelated objects, not part of the galaxy's truth: (``[(unit-flux profile, r flux, g-r, r-z, group)]``,
    the neighbour's numbers, its size, the star's magnitude, the star's position)."""
    rng, galsim, spec, zp = ctx.rng, scene.galsim, scene.spec, scene.zp
    size_cfg, cont = spec["size"], spec["contaminants"]
    stamp = scene.size * scene.scale
    extra: list[tuple[Any, float, float, float, str]] = []
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
        extra.append((galsim.DeltaFunction(gsparams=scene.gsp).shift(*star_pos), 10.0 ** ((zp - star_mag) / 2.5), gr_s, rz_s, "star"))
    return extra, nb, hn, star_mag, star_pos


def _band_fluxes(parts: list[Comp], mag_r: float, zp: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(each component's g, r, z flux, the totals, the total magnitudes)."""
    fr = np.array([c.frac for c in parts]) * 10.0 ** ((zp - mag_r) / 2.5)
    fluxes = np.stack(
        [fr * 10.0 ** (-0.4 * np.array([c.gr for c in parts])), fr, fr * 10.0 ** (0.4 * np.array([c.rz for c in parts]))], axis=1
    )
    totals = fluxes.sum(axis=0)
    mags = {b: zp - 2.5 * math.log10(totals[k]) for k, b in enumerate(BANDS)}
    return fluxes, totals, mags


def _observed_groups(scene: _Scene, parts: list[Comp], fluxes: np.ndarray) -> tuple[dict, dict]:
    """Observed, noise-free: (r per group, for what volunteers see; every drawn band in total)."""
    galsim, gsp = scene.galsim, scene.gsp
    groups: dict[str, np.ndarray] = {}
    for name in ("main", "bar", "arms", "tidal", "companion"):
        idx = [m for m, c in enumerate(parts) if c.group == name]
        if idx:
            gal = galsim.Sum([parts[m].profile * float(fluxes[m, 1]) for m in idx], gsparams=gsp)
            groups[name] = scene.observe(gal, "r")
    conv = {"r": sum(groups.values())}
    for b in scene.bands:
        if b == "r":
            continue
        j = BANDS.index(b)
        gal = galsim.Sum([c.profile * float(fluxes[m, j]) for m, c in enumerate(parts)], gsparams=gsp)
        conv[b] = scene.observe(gal, b)
    return groups, conv


def _seen(scene: _Scene, parts: list[Comp], fluxes: np.ndarray, groups: dict, conv: dict, p: Mapping[str, Any], h: float,
          nb: Mapping[str, float], hn: float) -> dict[str, Any]:
    """What the volunteers can see (r band): S/N of each feature against sky noise + contrast floor."""
    galsim, gsp, spec, sigma, offset = scene.galsim, scene.gsp, scene.spec, scene.sigma, scene.offset
    img_r = conv["r"]
    noise = np.sqrt(sigma["r"] ** 2 + (float(spec["contrast_floor"]) * np.abs(img_r)) ** 2)

    def structure(name: str) -> float:
        """S/N of a feature's non-axisymmetric part after the PSF: the group's image minus that of
        its components' axisymmetric twins."""
        idx = [m for m, c in enumerate(parts) if c.group == name and c.twin is not None]
        if not idx:
            return 0.0
        gal = galsim.Sum([parts[m].twin * float(fluxes[m, 1]) for m in idx], gsparams=gsp)
        return _snr(groups[name] - scene.observe(gal, "r"), noise)

    primary = sum(groups[k] for k in ("main", "bar", "arms") if k in groups)
    fwhm_r, zp, scale = scene.fwhm["r"], scene.zp, scene.scale
    main_hlr = float(p["disk_hlr"]) if p["family"] == "disk" else h
    bt = float(p["bt"])
    cont = spec["contaminants"]
    return {
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
        "disturbance": p["tidal_fraction"] + p["asymmetry"],
        "companion_ratio": p["companion_ratio"],
        "boxy": p["bar_strength"] >= spec["truth"]["bar_strength"],
        # a projected neighbour: its S/N (background-limited estimate) and how likely it passes for a partner
        "snr_neighbour": (10.0 ** ((zp - nb["mag_r"]) / 2.5) / (sigma["r"] * math.sqrt(scene.nea["r"] + 8.0 * math.pi * (hn / 1.678 / scale) ** 2))
                          if nb["ratio"] > 0 else 0.0),
        "neighbour_ratio": nb["ratio"],
        "neighbour_confusion": float(cont["confusion"]) * nb["close"],
    }


def _add_contaminants(scene: _Scene, observed: np.ndarray, clean: np.ndarray, extra: list, star_pos: Optional[tuple]) -> None:
    """The unrelated objects into the observed images and the clean truth (galaxies smoothed as in
    ``desi.clean_truth``, the star as a point)."""
    galsim, gsp, spec, size, scale, offset = scene.galsim, scene.gsp, scene.spec, scene.size, scene.scale, scene.offset
    c0 = (size - 1) / 2.0
    for k, b in enumerate(scene.bands):
        colour = {"g": lambda e: 10.0 ** (-0.4 * e[2]), "r": lambda e: 1.0, "z": lambda e: 10.0 ** (0.4 * e[3])}[b]
        scene_b = galsim.Sum([e[0] * (e[1] * colour(e)) for e in extra], gsparams=gsp)
        observed[k] += scene.observe(scene_b, b)
        gals = [e for e in extra if e[4] != "star"]
        if gals:
            smooth = galsim.Gaussian(sigma=float(spec["clean_smoothing"]), gsparams=gsp)  # as desi.clean_truth
            fine_b = galsim.Convolve(galsim.Sum([e[0] * (e[1] * colour(e)) for e in gals], gsparams=gsp), smooth, gsparams=gsp)
            clean[k] += desi._bin2(fine_b.drawImage(nx=2 * size, ny=2 * size, scale=scale / 2.0, offset=(2.0 * offset[0], 2.0 * offset[1])).array)
        for e in extra:
            if e[4] == "star":
                clean[k] += desi._bilinear(np.array([e[1] * colour(e)]), c0 + offset[0] + star_pos[0] / scale,
                                           c0 + offset[1] + star_pos[1] / scale, size)[0]


def _truth_row(p: Mapping[str, Any], h: float, hlr: float, mags: dict, bulge_to_total: float, companion: Optional[tuple],
               nb: Mapping[str, float], star_mag: float, star_pos: Optional[tuple]) -> dict[str, Any]:
    """The catalog's truth columns of the galaxy and of the unrelated objects in its stamp."""
    row: dict[str, Any] = {}
    row["sersic_n"] = float(p["sersic_n"])
    row["half_light_radius"] = hlr
    row["axis_ratio"] = float(p["axis_ratio"])
    row["position_angle"] = float(p["pa"]) % 180.0
    for b in BANDS:
        row[f"mag_{b}"] = float(mags[b])
    row["bulge_to_total"] = bulge_to_total
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
    row["asymmetry"] = float(p["asymmetry"])
    row["tidal_fraction"] = float(p["tidal_fraction"])
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
    return row


def _conditions_row(scene: _Scene, conv: dict, seen: Mapping[str, Any]) -> dict[str, Any]:
    """The catalog's observing-condition and visibility columns."""
    row: dict[str, Any] = {}
    for b in BANDS:
        row[f"psf_fwhm_{b}"] = scene.fwhm[b]
    for b in BANDS:
        row[f"depth_{b}"] = scene.depth[b]
    for b in BANDS:
        row[f"sky_sigma_{b}"] = scene.sigma[b]
    for b in scene.bands:
        row[f"snr_{b}"] = _snr(conv[b], np.full_like(conv[b], scene.sigma[b]))
    for key in ("snr_arms", "snr_bar", "snr_tidal", "snr_companion", "q_obs"):
        row[key] = float(seen[key])
    row["offset_x"] = float(scene.offset[0])
    row["offset_y"] = float(scene.offset[1])
    return row


def simulate_object(cfg: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image, clean image (float32 (bands, H, W)) and catalog row (truth, conditions, votes) of object ``i``."""
    import galsim

    spec = cfg["sim"]
    gsp = desi._gsparams(galsim)
    scene = _Scene(galsim, gsp, spec, list(cfg["bands"]), int(cfg["image_size"]), float(spec["pixel_scale"]),
                   float(spec["zeropoint"]))
    rng, gs_seed, pop = _start(cfg, i)
    kind, rare_rng = rare.pick(cfg["seed"], i, spec.get("rare"))
    if kind:  # its own random stream: the main one, hence every other object, is as without sim.rare
        pop = rare.host_population(kind, rare_rng)
    # the domain-randomisation knobs draw from streams of their own too
    scene.dom = dom = randomise.Domain(spec, "galaxy10", cfg["seed"], i)
    ctx = desi._Ctx(rng, galsim.BaseDeviate(gs_seed), galsim, gsp, spec, dom)
    _conditions(rng, scene)
    mag_r = _sample_mag(rng, spec["mag_r"])
    scene.offset = offset = dom.offset(rng.uniform(-0.5, 0.5, size=2))
    h = _size(rng, spec["size"], mag_r, pop)
    p = _draw_params(rng, pop, spec)
    comps = _galaxy(ctx, h, p, spec)
    companion = _disturbance(rng, pop, p, h, spec, scene.size * scene.scale, dom)
    parts = _assemble(ctx, scene, pop, p, comps, companion, h)
    extra, nb, hn, star_mag, star_pos = _contaminants(ctx, scene, mag_r, h)
    extra += randomise.background(dom, galsim, gsp, scene.size * scene.scale, scene.zp)
    fluxes, totals, mags = _band_fluxes(parts, mag_r, scene.zp)
    # a colour gradient across the primary galaxy's own (centred) light
    parts, fluxes = randomise.colour_split(parts, fluxes, dom.colour_delta(), lambda c: c.group in ("main", "bar", "arms"))
    rare_truth = None
    if kind:
        light, rare_truth = rare.rare_light(galsim, gsp, rare_rng, kind, spec["rare"], h, float(p["pa"]), float(totals[1]),
                                            scene.size * scene.scale)
        extra.append(light)
    groups, conv = _observed_groups(scene, parts, fluxes)
    # PSF-free truth: each unit-flux component once, 2x oversampled, then combined
    clean, hlr = desi.clean_truth(parts, fluxes, scene.bands, spec, scene.size, scene.scale, offset, gsp)
    bulge_r = sum(float(fluxes[m, 1]) for m, c in enumerate(parts) if c.bulge and c.group != "companion")
    seen = _seen(scene, parts, fluxes, groups, conv, p, h, nb, hn)
    counts = votes.simulate_votes(rng, seen, spec["volunteers"])
    n_vol = counts.pop("n_volunteers")
    label, agreement, confident = votes.galaxy10_label(counts, float(spec["label_threshold"]))
    t_cls = true_class(p, spec["truth"])

    observed = np.stack([conv[b] for b in scene.bands])
    if extra:
        _add_contaminants(scene, observed, clean, extra, star_pos)
    noise_draw = rng.standard_normal(size=(len(scene.bands), scene.size, scene.size))
    sigmas = [scene.sigma[b] for b in scene.bands]
    image = observed + noise_draw * np.array(sigmas)[:, None, None]
    if dom.noise_on:
        image = dom.add_noise(observed, image, sigmas, [scene.psfs[b] for b in scene.bands], scene.draw, scene.bands, scene.zp)

    row: dict[str, Any] = {"class": label, "class_name": CLASSES[label], "true_class": t_cls, "true_class_name": CLASSES[t_cls]}
    row["population"] = pop
    row["label_agreement"] = agreement
    row["label_confident"] = confident
    row["n_volunteers"] = int(n_vol)
    row.update({c: int(counts[c]) for c in votes.columns()})
    row.update(_truth_row(p, h, hlr, mags, bulge_r / float(totals[1]), companion, nb, star_mag, star_pos))
    row.update(_conditions_row(scene, conv, seen))
    if spec.get("rare"):
        row.update(rare.columns(kind, rare_truth))
    row.update(dom.columns(scene.bands))
    return image.astype(np.float32), clean.astype(np.float32), row


def simulate_range(cfg: Mapping[str, Any], start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray, list[dict]]:
    """Objects ``start .. stop-1``: (start, images, clean, rows)."""
    with desi._one_blas_thread():
        out = [simulate_object(cfg, i) for i in range(start, stop)]
    return start, np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out]
