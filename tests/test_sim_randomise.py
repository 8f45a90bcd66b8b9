"""Domain randomisation in the simulators (galframe.sim.randomise): each knob moves the images in its
documented direction, the defaults are today's images, and a bad value is one clear ConfigError."""
from __future__ import annotations

import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
galsim = pytest.importorskip("galsim")

from galframe.errors import ConfigError  # noqa: E402
from galframe.sim import cache_key, desi, fields, galaxy10, randomise, resolve_config, simulate  # noqa: E402
from galframe.sim.galaxy10_config import EDGE_NO_BULGE, LOOSE, MERGING, ROUND  # noqa: E402


def data_cfg(*overrides: str) -> dict:
    """The data config as ``galframe simulate`` composes it (plain)."""
    from omegaconf import OmegaConf

    from galframe.build import compose

    return OmegaConf.to_container(compose("simulate", list(overrides), fresh=True).data, resolve=True)


SIZE = 48
SCALE = 0.262


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))


def run(generator: str = "galaxy10", stamp: int = SIZE, seed: int = 5, **sim) -> dict:
    cfg = {"name": "rand", "n": 8, "seed": seed, "bands": ["g", "r", "z"], "image_size": stamp, "sim": {"generator": generator, **sim}}
    return resolve_config(cfg)


def only(pop: int) -> list[float]:
    return [1.0 if k == pop else 0.0 for k in range(10)]


BRIGHT = {"mag_r": {"main": [14.5, 15.0], "faint_fraction": 0.0}, "contaminants": {"neighbour": 0.0, "star": 0.0}}


def g10(i: int, stamp: int = SIZE, **sim):
    """(image, clean, row) of galaxy10 object ``i`` on a ``stamp`` pixel stamp."""
    return galaxy10.simulate_object(run("galaxy10", stamp=stamp, **sim), i)


def star(i: int, **sim):
    """(image, clean, row) of a bright desi star."""
    return desi.simulate_object(run("desi", classes=["star"], class_fractions=[1.0], mag_r=[16.0, 16.2], **sim), i)


def moments(img: np.ndarray) -> tuple[float, float, float]:
    """Unweighted (e1, e2, <r^2>) in pixels of a (noise-free or background-subtracted) image about its centroid."""
    y, x = np.indices(img.shape, dtype=float)
    f = img.sum()
    cx, cy = (img * x).sum() / f, (img * y).sum() / f
    qxx, qyy, qxy = (img * (x - cx) ** 2).sum() / f, (img * (y - cy) ** 2).sum() / f, (img * (x - cx) * (y - cy)).sum() / f
    return (qxx - qyy) / (qxx + qyy), 2 * qxy / (qxx + qyy), qxx + qyy


# ---------------------------------------------------------------------------------------------
# defaults, cache keys, presets, errors
# ---------------------------------------------------------------------------------------------
YAML_DEFAULTS = {
    "psf": {"family": "moffat", "ellipticity": 0.0},
    "noise": {"poisson": False, "gradient": 0.0, "cosmic_rays": 0.0, "bad_columns": 0.0, "saturated_stars": 0.0},
    "colour_gradient": 0.0, "subpixel_offset": True, "randomise": False,
}


@pytest.mark.parametrize("generator, arms", [("galaxy10", "logspiral"), ("desi", "knots")])
def test_knobs_at_their_defaults_change_nothing(generator, arms):
    """Spelled out at their defaults the knobs leave the settings (hence the cache key) and the images as
    without them, bit for bit."""
    knobs = {**YAML_DEFAULTS, "morph": {"arms": [arms], "tidal": ["with", "without"], "dust_lane": 0.0},
             "contaminants": {"background": 0.0}}
    plain, spelled = run(generator), run(generator, **knobs)
    assert "domain" not in spelled["sim"] and spelled == plain
    sim = {"galaxy10": galaxy10, "desi": desi}[generator]
    for i in range(3):
        a, b = sim.simulate_object(plain, i), sim.simulate_object(spelled, i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_fields_defaults_change_nothing():
    small = {"galaxies": 2.0, "stars": 1.0}
    plain = run("fields", stamp=32, **small)
    spelled = run("fields", stamp=32, **small, psf={"family": "moffat", "ellipticity": 0.0}, noise=YAML_DEFAULTS["noise"],
                  morph={"arms": ["knots"], "dust_lane": 0.0}, randomise=False)
    assert spelled == plain
    a, b = fields.simulate_field(plain, 1), fields.simulate_field(spelled, 1)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_the_yaml_defaults_keep_the_cache_key_and_a_knob_changes_it():
    cfg = data_cfg("data=sim_galaxy10")
    bare = {**cfg, "sim": {k: v for k, v in cfg["sim"].items() if k not in ("noise", "morph", "colour_gradient", "subpixel_offset", "randomise")}}
    bare["sim"]["psf"] = {k: v for k, v in cfg["sim"]["psf"].items() if k not in ("family", "ellipticity")}
    bare["sim"]["contaminants"] = {k: v for k, v in cfg["sim"]["contaminants"].items() if k != "background"}
    assert cache_key(cfg) == cache_key(bare)
    noisy = {**cfg, "sim": {**cfg["sim"], "noise": {**cfg["sim"]["noise"], "poisson": True}}}
    assert cache_key(noisy) != cache_key(cfg)
    # the resolved settings (as a manifest stores them) resolve to themselves
    resolved = resolve_config(noisy)
    assert resolve_config({**noisy, "sim": resolved["sim"]})["sim"] == resolved["sim"]


def test_randomise_preset_turns_every_knob_on_and_explicit_values_win():
    spec = run(randomise=True)["sim"]
    knobs, base = spec["domain"], randomise.defaults("galaxy10")
    for key in ("psf", "noise", "morph"):
        for sub in base[key]:
            assert knobs[key][sub] != base[key][sub], (key, sub)
    for key in ("colour_gradient", "subpixel_offset", "background"):
        assert knobs[key] != base[key], key
    assert knobs["psf"]["family"] == list(randomise.FAMILIES) and knobs["morph"]["arms"] == ["knots", "logspiral"]
    mine = run(randomise=True, psf={"family": "kolmogorov"}, noise={"cosmic_rays": 0.05})["sim"]["domain"]
    assert mine["psf"]["family"] == ["kolmogorov"] and mine["noise"]["cosmic_rays"] == 0.05
    assert mine["noise"]["bad_columns"] == randomise.PRESET["noise"]["bad_columns"]
    # fields take the preset of the knobs they have
    assert run("fields", randomise=True)["sim"]["domain"]["subpixel_offset"] == 0.5


def test_randomise_on_the_command_line_and_the_randomised_configs():
    for overrides in (("data=sim_galaxy10", "data.sim.randomise=true"), ("data=sim_galaxy10_randomised",),
                      ("data=sim_desi_randomised",)):
        cfg = data_cfg(*overrides)
        assert resolve_config(cfg)["sim"]["domain"]["noise"]["poisson"] == randomise.GAIN, overrides


def test_preset_changes_the_images():
    a, b = g10(2, **BRIGHT), g10(2, **BRIGHT, randomise=True)
    assert not np.allclose(a[0], b[0])
    for column in ("psf_family", "n_bad_pixels", "sky_gradient", "colour_gradient", "n_background"):
        assert column in b[2] and column not in a[2]


@pytest.mark.parametrize(
    "sim, key",
    [
        ({"psf": {"family": "gauss"}}, "sim.psf.family"),
        ({"psf": {"family": ["moffat", "kolmogorv"]}}, "sim.psf.family"),
        ({"psf": {"beta": [5.0, 3.0]}}, "sim.psf.beta"),
        ({"psf": {"ellipticity": 0.9}}, "sim.psf.ellipticity"),
        ({"noise": {"poison": True}}, "sim.noise.poison"),
        ({"noise": {"cosmic_rays": 1.5}}, "sim.noise.cosmic_rays"),
        ({"noise": {"gradient": "big"}}, "sim.noise.gradient"),
        ({"morph": {"arms": ["spirals"]}}, "sim.morph.arms"),
        ({"morph": {"tidal": ["maybe"]}}, "sim.morph.tidal"),
        ({"morph": {"dust_lane": -1}}, "sim.morph.dust_lane"),
        ({"colour_gradient": [1.0, 0.0]}, "sim.colour_gradient"),
        ({"randomise": "yes"}, "sim.randomise"),
    ],
)
def test_a_bad_knob_is_one_clear_line_naming_it(sim, key):
    with pytest.raises(ConfigError) as err:
        run(**sim)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_unsupported_knob_names_the_generator():
    with pytest.raises(ConfigError, match="sim.subpixel_offset: the fields simulator"):
        run("fields", subpixel_offset=False)
    with pytest.raises(ConfigError, match="Did you mean 'moffat'"):
        run("desi", psf={"family": "mofat"})


# ---------------------------------------------------------------------------------------------
# the PSF
# ---------------------------------------------------------------------------------------------
def _psf_image(family: str, beta: float = 3.5, fwhm: float = 1.2) -> np.ndarray:
    gsp = desi._gsparams(galsim)
    return randomise.psf_profile(galsim, family, fwhm, beta, gsp).drawImage(nx=81, ny=81, scale=SCALE, method="no_pixel").array


def _wing_fraction(img: np.ndarray, fwhm_px: float, beyond: float = 2.5) -> float:
    """The fraction of the flux beyond ``beyond`` FWHM."""
    y, x = np.indices(img.shape, dtype=float) - (img.shape[0] - 1) / 2.0
    return float(img[np.hypot(x, y) > beyond * fwhm_px].sum() / img.sum())


def test_psf_families_share_the_fwhm_and_differ_in_the_wings():
    fwhm_px = 1.2 / SCALE
    imgs = {f: _psf_image(f) for f in randomise.FAMILIES}
    for f, img in imgs.items():
        measured = galsim.Image(img, scale=SCALE).calculateFWHM()
        assert measured == pytest.approx(1.2, rel=0.05), f
    wings = {f: _wing_fraction(img, fwhm_px) for f, img in imgs.items()}
    r2 = {f: moments(img)[2] for f, img in imgs.items()}
    # beyond 2.5 FWHM: Kolmogorov (r^-11/3 wings) > Moffat beta 3.5 > double Gaussian (a Gaussian wing);
    # the second moments in that order too; Kolmogorov also has the more concentrated core
    assert wings["kolmogorov"] > 2 * wings["moffat"] > 2 * wings["double_gaussian"]
    assert r2["kolmogorov"] > r2["moffat"] > r2["double_gaussian"]
    assert 1 - _wing_fraction(imgs["kolmogorov"], fwhm_px, 0.5) > 1 - _wing_fraction(imgs["moffat"], fwhm_px, 0.5)
    # a lower Moffat beta has heavier wings
    assert _wing_fraction(_psf_image("moffat", beta=2.5), fwhm_px) > wings["moffat"] > _wing_fraction(_psf_image("moffat", beta=5.0), fwhm_px)


def test_psf_family_and_beta_range_reach_the_images():
    moffat = star(0)
    kolmo = star(0, psf={"family": "kolmogorov"})
    assert kolmo[2]["psf_family"] == "kolmogorov" and "psf_family" not in moffat[2]
    # the same star and sky noise: the difference is the PSF's; Kolmogorov puts more light in the wings
    diff = kolmo[0][1] - moffat[0][1]
    fwhm_px = moffat[2]["psf_fwhm_r"] / SCALE
    y, x = np.indices(diff.shape, dtype=float) - (SIZE - 1) / 2.0
    r = np.hypot(x - moffat[2]["offset_x"], y - moffat[2]["offset_y"])
    assert diff[r > 2.5 * fwhm_px].sum() > 0 > diff[(r > 1.0 * fwhm_px) & (r < 2.0 * fwhm_px)].sum()
    betas = [star(i, psf={"beta": [2.5, 5.0]})[2]["psf_beta"] for i in range(4)]
    assert all(2.5 <= b <= 5.0 for b in betas) and len(set(betas)) == 4
    mixed = {star(i, psf={"family": list(randomise.FAMILIES)})[2]["psf_family"] for i in range(12)}
    assert mixed == set(randomise.FAMILIES)


def _hsm_shape(img: np.ndarray) -> tuple[float, float]:
    shape = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, dtype=np.float64))).observed_shape
    return shape.g1, shape.g2


def test_psf_ellipticity_shows_in_the_measured_shape():
    for i in range(4):
        round_, sheared = star(i), star(i, psf={"ellipticity": 0.15})
        g1, g2 = sheared[2]["psf_g1"], sheared[2]["psf_g2"]
        m1, m2 = _hsm_shape(sheared[0][1])
        assert math.hypot(*_hsm_shape(round_[0][1])) < 0.02
        g = math.hypot(g1, g2)
        assert math.hypot(m1 - g1, m2 - g2) < 0.02 + 0.2 * g  # the star's measured shape is the PSF's shear


# ---------------------------------------------------------------------------------------------
# noise extras and defects
# ---------------------------------------------------------------------------------------------
def test_poisson_variance_grows_with_flux():
    off, on = g10(1, **BRIGHT), g10(1, **BRIGHT, noise={"poisson": 50.0})
    diff, flux = (on[0] - off[0]).astype(float), off[0].astype(float)
    sigma = np.array([off[2][f"sky_sigma_{b}"] for b in "grz"])[:, None, None]
    bright, faint = flux > 100 * sigma, np.abs(flux) < 2 * sigma
    assert bright.sum() > 20 and faint.sum() > 20
    # variance = flux / gain: a fit of diff^2 against flux has slope 1/gain
    slope = float((diff[bright] ** 2).sum() / flux[bright].sum())
    assert slope == pytest.approx(1 / 50.0, rel=0.25)
    assert np.mean(diff[bright] ** 2) > 20 * np.mean(diff[faint] ** 2)
    assert run(noise={"poisson": True})["sim"]["domain"]["noise"]["poisson"] == randomise.GAIN == 1000.0


def test_sky_gradient_is_a_plane_of_the_given_amplitude():
    off, on = g10(3), g10(3, noise={"gradient": 4.0})
    diff = (on[0] - off[0]).astype(float)
    y, x = np.indices((SIZE, SIZE), dtype=float) - (SIZE - 1) / 2.0
    design = np.stack([np.ones(SIZE * SIZE), x.ravel(), y.ravel()], axis=1)
    for k, b in enumerate("grz"):
        (c0, cx, cy), *_ = np.linalg.lstsq(design, diff[k].ravel(), rcond=None)
        amp = math.hypot(cx, cy) * SIZE / 2.0 / on[2][f"sky_sigma_{b}"]
        assert amp == pytest.approx(4.0, rel=1e-3) and abs(c0) < 1e-3 * on[2][f"sky_sigma_{b}"]
        assert math.degrees(math.atan2(cy, cx)) % 360 == pytest.approx(on[2]["sky_gradient_angle"] % 360, abs=0.1)
    assert on[2]["sky_gradient"] == 4.0


def _defects(knob: str, n: int = 3, **sim):
    out = []
    for i in range(n):
        off, on = g10(i, **sim), g10(i, **sim, noise={knob: 1.0})
        mask = randomise.defect_mask(on[2], ["g", "r", "z"], SIZE)
        out.append((off, on, mask))
    return out


def test_cosmic_rays_appear_and_are_masked():
    for off, on, mask in _defects("cosmic_rays"):
        changed = on[0] != off[0]
        assert 1 <= on[2]["n_cosmic_rays"] <= 3 and on[2]["n_bad_pixels"] == mask.sum() > 0
        assert np.array_equal(changed, mask)  # every hit pixel masked, nothing else touched
        sigma = np.array([on[2][f"sky_sigma_{b}"] for b in "grz"])[:, None, None]
        assert ((on[0] - off[0]) / sigma)[mask].min() > 15  # sharp and bright


def test_bad_columns_appear_and_are_masked():
    for off, on, mask in _defects("bad_columns"):
        k, ys, xs = np.nonzero(mask)
        assert len(set(k)) == 1 and len(set(xs)) == on[2]["n_bad_columns"] in (1, 2)
        values = on[0][mask]
        assert np.all(values == values[0])  # dead (0) or hot: one constant, no noise
        assert np.array_equal(on[0][~mask], off[0][~mask])


def test_saturated_stars_are_clipped_bled_and_masked():
    for off, on, mask in _defects("saturated_stars"):
        assert np.isfinite(on[2]["saturated_star_mag_r"]) and mask[1].any()
        for k in range(3):
            if mask[k].any():
                level = on[0][k][mask[k]]
                assert np.allclose(level, level.max())  # a flat top at the saturation level
                assert on[0][k][~mask[k]].max() < level.max()
                ys, xs = np.nonzero(mask[k])
                assert np.ptp(ys) >= np.ptp(xs) - 1  # bleed trails run along the columns
        assert ((on[0] - off[0])[~mask]).sum() > 0  # the star's unsaturated wings


def test_defect_masks_survive_the_dataset(tmp_path):
    cfg = {"name": "defects", "n": 3, "seed": 1, "bands": ["g", "r", "z"], "image_size": 32,
           "sim": {"generator": "desi", "noise": {"cosmic_rays": 1.0, "bad_columns": 1.0}}}
    path = simulate(cfg, tmp_path / "ds", workers=1, progress=False)
    catalog = pd.read_parquet(path / "catalog.parquet")
    assert (catalog["n_bad_pixels"] > 0).all()
    for _, row in catalog.iterrows():
        assert randomise.defect_mask(row, ["g", "r", "z"], 32).sum() == row["n_bad_pixels"]


def test_fields_take_psf_and_noise_knobs():
    small = {"galaxies": 2.0, "stars": 1.0}
    plain = fields.simulate_field(run("fields", stamp=32, **small), 0)
    noisy = fields.simulate_field(run("fields", stamp=32, **small, psf={"family": "double_gaussian"},
                                      noise={"cosmic_rays": 1.0, "gradient": 2.0}), 0)
    assert noisy[1]["psf_family"] == "double_gaussian" and noisy[1]["n_cosmic_rays"] >= 1
    assert noisy[1]["n_objects"] == plain[1]["n_objects"] and not np.allclose(plain[0], noisy[0])


# ---------------------------------------------------------------------------------------------
# morphology, colour, centre, neighbours
# ---------------------------------------------------------------------------------------------
def _high_frequency(img: np.ndarray, row: dict) -> float:
    """Laplacian energy over image energy between 0.5 and 2 half-light radii (outside the bulge's cusp):
    high for knots, low for smooth light."""
    lap = img[1:-1, 1:-1] * 4 - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]
    c = (img.shape[0] - 1) / 2.0
    y, x = np.indices(lap.shape, dtype=float) + 1.0
    r = np.hypot(x - c - row["offset_x"], y - c - row["offset_y"]) * SCALE / row["half_light_radius"]
    ring = (r > 0.5) & (r < 2.0)
    return float((lap[ring] ** 2).sum() / (img[1:-1, 1:-1][ring] ** 2).sum())


def test_knotty_arms_have_more_small_scale_power_than_logspirals():
    sim = {**BRIGHT, "class_fractions": only(LOOSE), "features": {"arm_contrast": [0.4, 0.45]}}
    for i in range(2):
        smooth, knotty = g10(i, **sim), g10(i, **sim, morph={"arms": ["knots"]})
        assert knotty[2]["n_knotty_arms"] >= 1 and knotty[2]["n_arms"] == smooth[2]["n_arms"] > 0
        assert _high_frequency(knotty[1][1], knotty[2]) > 3 * _high_frequency(smooth[1][1], smooth[2])
    # desi: knots today, continuous log-spirals on request
    dsim = {"classes": ["featured_disk"], "class_fractions": [1.0], "mag_r": [16.0, 16.5]}
    for i in range(4):
        knots = desi.simulate_object(run("desi", **dsim), i)
        spiral = desi.simulate_object(run("desi", **dsim, morph={"arms": ["logspiral"]}), i)
        assert _high_frequency(spiral[1][1], spiral[2]) <= _high_frequency(knots[1][1], knots[2])


def _strips(clean: np.ndarray, row: dict, band: int = 1) -> tuple[float, float]:
    """Band ``band``'s flux within 1 px of the major axis and 1.5-3 px off it, inside one half-light radius
    along it."""
    img = clean[band]
    c = (img.shape[0] - 1) / 2.0
    y, x = np.indices(img.shape, dtype=float)
    x, y = x - c - row["offset_x"], y - c - row["offset_y"]
    pa = math.radians(row["position_angle"])
    major, minor = x * math.cos(pa) + y * math.sin(pa), -x * math.sin(pa) + y * math.cos(pa)
    inside = np.abs(major) < row["half_light_radius"] / SCALE
    return float(img[inside & (np.abs(minor) < 1.0)].sum()), float(img[inside & (np.abs(minor) > 1.5) & (np.abs(minor) < 3.0)].sum())


def _kept(plain: tuple, dusty: tuple, band: int = 1) -> tuple[float, float]:
    """(the fraction of the midplane strip's light the lane leaves, the same off the midplane)."""
    (m0, o0), (m1, o1) = _strips(plain[1], plain[2], band), _strips(dusty[1], plain[2], band)  # the same pixels
    return m1 / m0, o1 / o0


def test_dust_lanes_darken_the_midplane():
    sim = {**BRIGHT, "class_fractions": only(EDGE_NO_BULGE)}
    lanes = 0
    for i in range(5):
        plain, dusty = g10(i, **sim), g10(i, **sim, morph={"dust_lane": 1.0})
        if plain[2]["inclination"] < 77.0:  # below sim.truth.edge_on_inclination: not edge-on, no lane
            assert dusty[2]["dust_lane"] == 0.0 and np.array_equal(plain[1], dusty[1])
            continue
        lanes += 1
        assert 0.08 <= dusty[2]["dust_lane"] <= 0.2
        mid, off = _kept(plain, dusty)
        assert mid < off < 1.0  # the midplane loses more light than the strips beside it
        assert dusty[2]["mag_r"] > plain[2]["mag_r"]  # the lane takes light out
        assert dusty[1].min() > -1e-3 * dusty[1].max()  # but never below zero
        assert _kept(plain, dusty, band=0)[0] < mid < _kept(plain, dusty, band=2)[0]  # a redder midplane
    assert lanes >= 3
    edge = {"classes": ["edge_on"], "class_fractions": [1.0], "mag_r": [16.0, 16.5]}
    plain, dusty = desi.simulate_object(run("desi", **edge), 0), desi.simulate_object(run("desi", **edge, morph={"dust_lane": 1.0}), 0)
    mid, off = _kept(plain, dusty)
    assert mid < off < 1.0


def _colour_profile(clean: np.ndarray, row: dict) -> float:
    """(g - z) inside 0.5 hlr minus (g - z) between 1 and 2 hlr (PSF-free)."""
    c = (clean.shape[1] - 1) / 2.0
    y, x = np.indices(clean.shape[1:], dtype=float)
    r = np.hypot(x - c - row["offset_x"], y - c - row["offset_y"]) * SCALE / row["half_light_radius"]
    inner, outer = r < 0.5, (r > 1.0) & (r < 2.0)

    def gz(sel):
        return -2.5 * math.log10(clean[0][sel].sum() / clean[2][sel].sum())

    return gz(inner) - gz(outer)


def test_colour_gradient_makes_the_outskirts_bluer():
    sim = {**BRIGHT, "class_fractions": only(ROUND)}
    for i in range(3):
        plain, graded = g10(i, **sim), g10(i, **sim, colour_gradient=1.0)
        assert graded[2]["colour_gradient"] == 1.0
        assert _colour_profile(graded[1], graded[2]) > _colour_profile(plain[1], plain[2]) + 0.15
        assert graded[2]["mag_g"] == pytest.approx(plain[2]["mag_g"], abs=1e-9)  # colours per band kept
    dplain = desi.simulate_object(run("desi", classes=["smooth"], class_fractions=[1.0]), 0)
    dgraded = desi.simulate_object(run("desi", classes=["smooth"], class_fractions=[1.0], colour_gradient=1.0), 0)
    assert _colour_profile(dgraded[1], dgraded[2]) > _colour_profile(dplain[1], dplain[2]) + 0.15


def _centroid(img: np.ndarray) -> np.ndarray:
    y, x = np.indices(img.shape, dtype=float)
    return np.array([(img * x).sum(), (img * y).sum()]) / img.sum() - (img.shape[0] - 1) / 2.0


def test_subpixel_offset_moves_the_centre():
    sim = {"class_fractions": only(ROUND), "size": {"max": 1.0}, "contaminants": {"neighbour": 0.0, "star": 0.0}}
    for i in range(3):
        # a stamp wide enough that the shifts move no light out of it
        centred, default, wide = (g10(i, stamp=96, **sim, subpixel_offset=False), g10(i, stamp=96, **sim),
                                  g10(i, stamp=96, **sim, subpixel_offset=2.0))
        assert centred[2]["offset_x"] == centred[2]["offset_y"] == 0.0
        off = np.array([default[2]["offset_x"], default[2]["offset_y"]])
        assert np.allclose([wide[2]["offset_x"], wide[2]["offset_y"]], 4 * off)
        # the same galaxy, moved on the pixel grid by the offset
        base = _centroid(centred[1][1])
        assert np.allclose(_centroid(default[1][1]) - base, off, atol=0.05)
        assert np.allclose(_centroid(wide[1][1]) - base, 4 * off, atol=0.1)


def test_tidal_variants_of_mergers():
    sim = {**BRIGHT, "class_fractions": only(MERGING)}
    for i in range(3):
        today, without, with_ = g10(i, **sim), g10(i, **sim, morph={"tidal": ["without"]}), g10(i, **sim, morph={"tidal": ["with"]})
        assert today[2]["tidal_fraction"] > 0 and without[2]["tidal_fraction"] == 0 and with_[2]["tidal_fraction"] > 0
        assert without[2]["has_tails"] == without[2]["has_shells"] == 0 and without[2]["has_companion"] == 1
    merger = {"classes": ["merger"], "class_fractions": [1.0]}
    for i in range(4):  # today 60% have a tail: one of the two variants differs from today's image
        today = desi.simulate_object(run("desi", **merger), i)
        a = desi.simulate_object(run("desi", **merger, morph={"tidal": ["without"]}), i)
        b = desi.simulate_object(run("desi", **merger, morph={"tidal": ["with"]}), i)
        assert not np.array_equal(a[1], b[1])
        assert np.array_equal(today[1], a[1]) or np.array_equal(today[1], b[1])


def test_background_galaxies_add_light_away_from_the_centre():
    sim = {**BRIGHT, "class_fractions": only(ROUND)}
    sim["contaminants"] = {**sim["contaminants"], "background": 4.0}
    counts = []
    for i in range(4):
        plain, crowded = g10(i, **{**sim, "contaminants": BRIGHT["contaminants"]}), g10(i, **sim)
        counts.append(crowded[2]["n_background"])
        extra = (crowded[1] - plain[1]).astype(float)
        assert extra.min() > -1e-4 * plain[1].max()
        assert (extra.sum() > 0) == (crowded[2]["n_background"] > 0)
    assert sum(counts) > 0
    d = desi.simulate_object(run("desi", contaminants={"background": 4.0}), 0)[2]
    assert "n_background" in d
