"""The pieces the domain-randomised simulators draw with (galframe/sim/randomise.py holds the knobs, their
checks, the ``randomise`` preset and :class:`~galframe.sim.randomise.Domain`): PSF families, source Poisson
noise, the sky gradient, cosmic rays, bad columns and saturated stars with their masks, dust lanes, colour
gradients, knotty arms and faint background galaxies.  Every name here is re-exported by ``randomise``; ``dom`` arguments are its ``Domain`` (one object's knobs
and random streams), not imported here so that the two modules do not import each other."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

#: the double Gaussian PSF: fraction of the flux in the wide Gaussian, and its sigma over the core's
DOUBLE_GAUSSIAN = (0.15, 2.5)
#: knotty arms (``morph.arms: knots`` where today's arms are continuous): 15-40 knots of sigma 0.1"
KNOTS = (15, 40, 0.1)
#: the saturation level (nanomaggies per pixel: 40,000 electrons at ``GAIN``); never below 1.5x the stamp's peak
SATURATION = 40.0
#: a dust lane's colour relative to its disk (removed light is bluer: g, r, z absorbed as 1.4 : 1 : 0.6)
LANE_GR, LANE_RZ = -2.5 * math.log10(1.4), 2.5 * math.log10(0.6)


# ---------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------
_DG_FWHM: Any = None


def _double_gaussian_fwhm() -> float:
    """FWHM of the double Gaussian with a unit core sigma (bisection on the profile's half maximum)."""
    global _DG_FWHM
    if _DG_FWHM is None:
        f, k = DOUBLE_GAUSSIAN

        def profile(r: float) -> float:
            return (1.0 - f) * math.exp(-0.5 * r * r) + f / (k * k) * math.exp(-0.5 * r * r / (k * k))

        half, lo, hi = 0.5 * profile(0.0), 0.0, 3.0 * k
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if profile(mid) > half else (lo, mid)
        _DG_FWHM = lo + hi
    return _DG_FWHM


def psf_profile(galsim: Any, family: str, fwhm: float, beta: float, gsp: Any, trunc: float = 0.0) -> Any:
    """A round PSF of ``family`` with FWHM ``fwhm`` (arcsec); ``beta`` and ``trunc`` (in FWHM) for Moffat."""
    if family == "moffat":
        return galsim.Moffat(beta=beta, fwhm=fwhm, trunc=trunc * fwhm if trunc > 0 else 0.0, gsparams=gsp)
    if family == "kolmogorov":
        return galsim.Kolmogorov(fwhm=fwhm, gsparams=gsp)
    f, k = DOUBLE_GAUSSIAN
    s = fwhm / _double_gaussian_fwhm()
    return galsim.Sum([galsim.Gaussian(sigma=s, flux=1.0 - f, gsparams=gsp), galsim.Gaussian(sigma=k * s, flux=f, gsparams=gsp)],
                      gsparams=gsp)


def poisson_noise(rng: np.random.Generator, observed: np.ndarray, gain: float) -> np.ndarray:
    """Source Poisson noise (nanomaggies) of the noise-free image ``observed`` at ``gain`` electrons per
    nanomaggy: variance ``observed / gain`` per pixel (negative pixels have none)."""
    mean = np.clip(observed, 0.0, None) * gain
    return (rng.poisson(mean) - mean) / gain


def sky_gradient(size: int, amplitude: float, angle: float) -> np.ndarray:
    """A plane, 0 at the stamp centre and ``amplitude`` at the edge (half a stamp along ``angle``)."""
    c = (size - 1) / 2.0
    y, x = np.indices((size, size), dtype=float) - c
    return amplitude * (x * math.cos(angle) + y * math.sin(angle)) / (size / 2.0)


def _saturated_star(rng: np.random.Generator, observed: np.ndarray, psfs: Sequence[Any], draw: Mapping, bands: Sequence[str],
                    zeropoint: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(the star's noise-free image, each band's saturation level, its r magnitude): a star 2-50 times
    brighter at its peak than the saturation level, 20-45% of the stamp from the centre."""
    size, scale = int(draw["nx"]), float(draw["scale"])
    rad, phi = float(rng.uniform(0.2, 0.45)) * size * scale, float(rng.uniform(0.0, 2.0 * math.pi))
    gr = float(rng.uniform(0.3, 1.4))
    rz = -0.05 + 0.45 * gr + float(rng.normal(0.0, 0.04))
    colour = {"g": 10.0 ** (-0.4 * gr), "r": 1.0, "z": 10.0 ** (0.4 * rz)}
    level = np.array([max(SATURATION, 1.5 * float(observed[k].max())) for k in range(len(bands))])
    unit = [p.withFlux(1.0).shift(rad * math.cos(phi), rad * math.sin(phi)).drawImage(**draw).array for p in psfs]
    ref = bands.index("r") if "r" in bands else 0
    flux_r = float(level[ref]) * float(rng.uniform(2.0, 50.0)) / float(unit[ref].max()) / colour[bands[ref]]
    star = np.stack([u * flux_r * colour[b] for u, b in zip(unit, bands)])
    return star, level, zeropoint - 2.5 * math.log10(flux_r)


def saturate(image: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Clip each band at its saturation level and bleed the excess charge along the columns (rows up and
    down from the saturated run, at the level); returns the mask of the pixels changed."""
    mask = np.zeros(image.shape, dtype=bool)
    size = image.shape[1]
    for k in range(image.shape[0]):
        band, top = image[k], float(level[k])
        for x in np.flatnonzero((band >= top).any(axis=0)):
            col = band[:, x]
            rows = np.flatnonzero(col >= top)
            excess = float((col[rows] - top).sum())
            lo, hi = int(rows.min()), int(rows.max())
            bleed = int(min(size, excess // top))
            lo, hi = max(0, lo - (bleed + 1) // 2), min(size - 1, hi + bleed // 2)
            col[lo : hi + 1] = top
            mask[k, lo : hi + 1, x] = True
    return mask


def cosmic_rays(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, sigma: np.ndarray) -> int:
    """1-3 cosmic-ray tracks (sharp, 1 pixel wide, 3-20 pixels long, 20-300 sky sigmas), each in one band;
    returns how many."""
    bands, size = image.shape[0], image.shape[1]
    n = int(rng.integers(1, 4))
    for _ in range(n):
        k = int(rng.integers(bands))
        x0, y0 = rng.uniform(0, size - 1, size=2)
        length, angle = float(rng.uniform(3.0, 20.0)), float(rng.uniform(0.0, math.pi))
        t = np.linspace(0.0, length, int(2 * length) + 1)
        xs = np.clip(np.round(x0 + t * math.cos(angle)), 0, size - 1).astype(int)
        ys = np.clip(np.round(y0 + t * math.sin(angle)), 0, size - 1).astype(int)
        hit = np.zeros((size, size), dtype=bool)
        hit[ys, xs] = True
        image[k][hit] += float(rng.uniform(20.0, 300.0)) * float(sigma[k])
        mask[k] |= hit
    return n


def bad_columns(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, sigma: np.ndarray) -> int:
    """One bad column (two adjacent ones 30% of the time) in one band, over the whole stamp or from a row to
    an edge: dead (exactly 0) or hot (a constant 5-50 sky sigmas); returns how many columns."""
    bands, size = image.shape[0], image.shape[1]
    k, x = int(rng.integers(bands)), int(rng.integers(size))
    width = 2 if rng.random() < 0.3 else 1
    cols = slice(x, min(size, x + width))
    if rng.random() < 0.5:
        rows = slice(0, size)
    else:
        start = int(rng.integers(size))
        rows = slice(start, size) if rng.random() < 0.5 else slice(0, start + 1)
    value = 0.0 if rng.random() < 0.5 else float(rng.uniform(5.0, 50.0)) * float(sigma[k])
    image[k, rows, cols] = value
    mask[k, rows, cols] = True
    return cols.stop - cols.start


def defect_mask(row: Mapping[str, Any], bands: Sequence[str], size: int) -> np.ndarray:
    """The (bands, size, size) boolean defect mask of a catalog row (``bad_rle_<band>``); all False when the
    row has none."""
    from galframe.data.masks import rle_to_mask

    out = np.zeros((len(bands), size, size), dtype=bool)
    for k, b in enumerate(bands):
        counts = row.get(f"bad_rle_{b}")
        if counts is not None and len(counts):
            out[k] = rle_to_mask(list(counts), size, size)
    return out


def dust_lane(galsim: Any, inclination: Any, hlr: float, h_over_r: float, pa_deg: float, gsp: Any) -> Any:
    """The light a midplane dust lane takes out of an inclined exponential disk (major axis along x before
    the rotation by ``pa_deg``): the disk itself squeezed three times along its minor axis (unit flux).  Given
    minus ``tau`` of the disk's flux it takes ``3 tau`` of the midplane's light and less off it, since the
    disk's light falls away from the midplane; no pixel goes negative while ``3 tau x 1.4`` (g) is below 1."""
    disk = galsim.InclinedExponential(inclination, half_light_radius=hlr, scale_h_over_r=h_over_r, gsparams=gsp)
    return disk.transform(1.0, 0.0, 0.0, 1.0 / 3.0).withFlux(1.0).rotate(pa_deg * galsim.degrees)


def add_dust_lane(dom: Any, galsim: Any, comps: list, inclination: Any, hlr: float, h_over_r: float, pa_deg: float,
                  gsp: Any) -> None:
    """With probability ``morph.dust_lane``, a dust lane in the disk ``comps[-1]`` (an inclined exponential of
    ``hlr``, ``h_over_r``, ``pa_deg``): a negative component taking ``tau`` (0.08-0.2) of its light, bluer
    than the disk (g, r, z absorbed as 1.4 : 1 : 0.6), so that the midplane is darker and redder."""
    tau = dom.dust_lane()
    if tau > 0:
        disk = comps[-1]
        lane = dust_lane(galsim, inclination, hlr, h_over_r, pa_deg, gsp)
        comps.append(replace(disk, profile=lane, frac=-tau * disk.frac, gr=disk.gr + LANE_GR, rz=disk.rz + LANE_RZ))


def colour_split(comps: list, fluxes: np.ndarray, delta: float, select: Callable[[Any], bool]) -> tuple[list, np.ndarray]:
    """A colour gradient: each selected component (centred on the galaxy) becomes one per band, its profile
    dilated by exp(+delta) in g, 1 in r and exp(-delta) in z (flux kept), so that g - z falls outwards
    (delta > 0); ``fluxes`` (components x g, r, z) gets one row per new component."""
    if delta == 0.0:
        return comps, fluxes
    out, rows = [], []
    for c, f in zip(comps, fluxes):
        if not select(c):
            out.append(c)
            rows.append(f)
            continue
        for j, d in enumerate((delta, 0.0, -delta)):
            only = np.zeros(3)
            only[j] = f[j]
            out.append(replace(c, profile=c.profile.dilate(math.exp(d))) if d else c)
            rows.append(only)
    return out, np.array(rows)


def knotty_arms(galsim: Any, rng: np.random.Generator, img: np.ndarray, scale: float, gsp: Any,
                knots: tuple = KNOTS) -> Any:
    """Spiral arms as star-forming knots placed by the face-on arm image ``img`` (pixel ``scale`` arcsec;
    positions drawn from it as a density): ``knots`` = (lo, hi) of their number, their Gaussian sigma
    (arcsec, below a pixel: HII regions are unresolved), lognormal fluxes; unit flux."""
    from galframe.sim._points import Points

    lo, hi, sigma = knots
    p = np.clip(img, 0.0, None).ravel()
    idx = rng.choice(p.size, size=int(rng.integers(lo, hi + 1)), p=p / p.sum())
    c = (img.shape[0] - 1) / 2.0
    y, x = np.divmod(idx, img.shape[1])
    xs = (x - c + rng.uniform(-0.5, 0.5, size=len(idx))) * scale
    ys = (y - c + rng.uniform(-0.5, 0.5, size=len(idx))) * scale
    w = rng.lognormal(0.0, 0.5, size=len(idx))
    knots = Points(xs, ys, w / w.sum(), gsparams=gsp)
    return galsim.Convolve(knots, galsim.Gaussian(sigma=sigma, gsparams=gsp), gsparams=gsp)


def background(dom: Any, galsim: Any, gsp: Any, stamp: float, zeropoint: float) -> list[tuple]:
    """Faint background galaxies of one stamp (a Poisson number, mean ``contaminants.background``):
    ``[(unit-flux profile, r flux, g-r, r-z, "neighbour")]``, r 20.5-23.5, exponential disks of 0.3-1.2",
    anywhere but the central 10% of the stamp."""
    mean = float(dom.k["background"])
    if mean <= 0:
        return []
    from galframe.sim import sample_mag as _sample_mag

    rng = dom.rng("background")
    out = []
    for _ in range(int(rng.poisson(mean))):
        mag = _sample_mag(rng, 20.5, 23.5, 0.6)
        hlr = float(rng.uniform(0.3, 1.2))
        prof = galsim.Exponential(half_light_radius=hlr, gsparams=gsp).shear(q=float(rng.uniform(0.3, 1.0)),
                                                                             beta=float(rng.uniform(0, 180)) * galsim.degrees)
        rad, phi = float(rng.uniform(0.1, 0.48)) * stamp, float(rng.uniform(0.0, 2.0 * math.pi))
        gr = float(rng.uniform(0.3, 1.2))
        out.append((prof.shift(rad * math.cos(phi), rad * math.sin(phi)), 10.0 ** ((zeropoint - mag) / 2.5), gr, 0.5 * gr, "neighbour"))
    dom.truth["n_background"] = len(out)
    return out


def draw_sources(galsim: Any, gsp: Any, sources: list, psfs: Mapping[str, Any], bands: Sequence[str], draw: Mapping,
                 smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """(observed, clean) images (bands, H, W) of extra galaxies ``[(unit-flux profile, r flux, g-r, r-z, ...)]``:
    through each band's PSF, and PSF-free with the generators' tiny ``smoothing`` Gaussian (2x oversampled,
    binned, as ``drawing.clean_truth``)."""
    from galframe.sim.drawing import _bin2

    size, scale, offset = int(draw["nx"]), float(draw["scale"]), draw["offset"]
    observed = np.zeros((len(bands), size, size))
    clean = np.zeros_like(observed)
    smooth = galsim.Gaussian(sigma=float(smoothing), gsparams=gsp)
    for k, b in enumerate(bands):
        factor = {"g": lambda e: 10.0 ** (-0.4 * e[2]), "r": lambda e: 1.0, "z": lambda e: 10.0 ** (0.4 * e[3])}[b]
        gal = galsim.Sum([e[0] * (e[1] * factor(e)) for e in sources], gsparams=gsp)
        observed[k] = galsim.Convolve(gal, psfs[b], gsparams=gsp).drawImage(**draw).array
        fine = galsim.Convolve(gal, smooth, gsparams=gsp).drawImage(nx=2 * size, ny=2 * size, scale=scale / 2.0,
                                                                      offset=(2.0 * offset[0], 2.0 * offset[1]))
        clean[k] = _bin2(fine.array)
    return observed, clean
