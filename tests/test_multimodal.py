"""The multimodal simulator (galframe.sim.multimodal, galframe.sim.seds): SEDs through bandpasses, the same galaxy
in images, photometry and spectra, and the dataset it writes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")
h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")

from omegaconf import OmegaConf  # noqa: E402

from galframe.errors import ConfigError  # noqa: E402
from galframe.sim import multimodal, resolve_config, seds, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shipped_cfg(n: int, **sim) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "sim_multimodal.yaml"))
    cfg.update(n=n, name="mmtest")
    cfg["sim"].update(sim)
    return cfg


@pytest.fixture(scope="module")
def mm_dataset(tmp_path_factory) -> Path:
    """160 objects of the shipped config, W1 missing half the time, every other object with a spectrum."""
    cfg = shipped_cfg(160, photometry={"bands": ["g", "r", "z", "W1", "W2"],
                                       "depth": {"g": 24.5, "r": 23.9, "z": 23.0, "W1": 21.0, "W2": 20.3},
                                       "missing": {"g": 0.0, "r": 0.0, "z": 0.0, "W1": 0.5, "W2": 0.15}})
    return simulate(cfg, tmp_path_factory.mktemp("mm") / "mm", workers=1, progress=False)


def _hand_ab_colour(name: str, blue: tuple, red: tuple) -> float:
    """AB colour of a CWW template file through two top-hats (nm), integrated here with numpy: a photon-counting
    band magnitude is -2.5 log10(int f_lambda lambda dlambda / int (c / lambda) 3631 Jy dlambda) + const."""
    wave_a, flam = np.loadtxt(Path(galsim.meta_data.share_dir) / "SEDs" / f"CWW_{name}_ext.sed", unpack=True)

    def band(lo_nm: float, hi_nm: float) -> float:
        w = np.linspace(lo_nm * 10, hi_nm * 10, 20001)
        f = np.interp(w, wave_a, flam)
        return np.trapezoid(f * w, w) / np.trapezoid(1.0 / w, w)  # f_nu = 3631 Jy gives f_lambda lambda ~ 1/lambda

    return -2.5 * math.log10(band(*blue) / band(*red))


@pytest.mark.parametrize("name", seds.TEMPLATES)
def test_template_colours_at_z0_match_galsim_and_a_hand_integration(name):
    ours = seds.magnitudes(seds.template(name), ["g", "r", "z"])
    ref = galsim.SED(f"CWW_{name}_ext.sed", wave_type="Ang", flux_type="flambda")
    top = {b: galsim.Bandpass("1", "nm", blue_limit=lo, red_limit=hi).withZeropoint("AB")
           for b, (lo, hi) in (("g", (400, 550)), ("r", (560, 710)), ("z", (840, 1000)))}
    theirs = {b: ref.calculateMagnitude(bp) for b, bp in top.items()}
    for a, b in (("g", "r"), ("r", "z")):
        assert ours[a] - ours[b] == pytest.approx(theirs[a] - theirs[b], abs=1e-6)
        hand = _hand_ab_colour(name, tuple(seds.FILTERS[a]), tuple(seds.FILTERS[b]))
        assert ours[a] - ours[b] == pytest.approx(hand, abs=1e-3)


def test_templates_order_from_red_to_blue_and_redshift_reddens():
    gr = {n: (lambda m: m["g"] - m["r"])(seds.magnitudes(seds.template(n), ["g", "r"])) for n in seds.TEMPLATES}
    assert gr["E"] > gr["Sbc"] > gr["Scd"] > gr["Im"]
    for name in ("E", "Sbc"):
        sed = seds.template(name)
        m0 = seds.magnitudes(sed, ["g", "r", "z"])
        m3 = seds.magnitudes(sed.atRedshift(0.3), ["g", "r", "z"])  # the 4000 A break moves from g into r
        m8 = seds.magnitudes(sed.atRedshift(0.8), ["g", "r", "z"])  # ... and on into z
        assert m3["g"] - m3["r"] > m0["g"] - m0["r"] + 0.3
        assert m8["r"] - m8["z"] > m0["r"] - m0["z"] + 0.3
    # K-correction of a flat f_nu source is -2.5 log10(1 + z) (Hogg 2002)
    flat = galsim.SED("1", wave_type="nm", flux_type="fnu")
    assert seds.k_correction(flat, 0.5) == pytest.approx(-2.5 * math.log10(1.5), abs=1e-6)


def test_chromatic_galaxy_conserves_flux_through_each_bandpass():
    spec = resolve_config(shipped_cfg(1))["sim"]
    bulge, disk, total, _ = multimodal.galaxy_seds(spec, "Sbc", 0.3, 0.4, 19.0)
    gal = galsim.DeVaucouleurs(half_light_radius=0.4) * bulge + galsim.Exponential(half_light_radius=0.6) * disk
    psf = galsim.Moffat(beta=3.5, fwhm=1.2)
    r = seds.bandpass("r")
    assert total.calculateMagnitude(r) == pytest.approx(19.0, abs=1e-6)
    for band in ("g", "r", "z"):
        bp = seds.bandpass(band)
        image = galsim.Convolve(gal, psf).drawImage(bp, nx=256, ny=256, scale=0.262)
        drawn = image.array.sum() * seds.to_nanomaggies(bp)
        expected = 10 ** (-0.4 * (total.calculateMagnitude(bp) - 22.5))
        assert drawn == pytest.approx(expected, rel=0.01)
        parts = (bulge.calculateFlux(bp) + disk.calculateFlux(bp)) / total.calculateFlux(bp)
        assert parts == pytest.approx(1.0, rel=1e-6)


def test_images_photometry_and_truth_come_from_one_galaxy(mm_dataset):
    cat = pd.read_parquet(mm_dataset / "catalog.parquet")
    assert set(cat["class_name"]) == set(seds.TEMPLATES)
    assert cat["z"].between(0.01, 1.5).all() and cat["log_mstar"].between(8.0, 13.0).all()
    with h5py.File(mm_dataset / "shard-00000.h5") as h5:
        clean = h5["clean"][:]
        images = h5["images"][:]
    assert images.shape == (160, 3, 64, 64)
    small = (cat["half_light_radius"] < 0.8).to_numpy()
    true = 10 ** (-0.4 * (cat[["mag_g", "mag_r", "mag_z"]].to_numpy() - 22.5))
    ratio = clean.sum(axis=(2, 3))[small] / true[small]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01) and ratio.min() > 0.9
    # photometry: the true flux plus noise of the stated inverse variance
    for band in ("g", "r", "z", "W1", "W2"):
        have = cat[f"phot_flux_ivar_{band}"] > 0
        pull = (cat[f"phot_flux_{band}"] - 10 ** (-0.4 * (cat[f"mag_{band}"] - 22.5))) * np.sqrt(cat[f"phot_flux_ivar_{band}"])
        assert abs(pull[have].mean()) < 0.35 and 0.75 < pull[have].std() < 1.3
        assert cat.loc[~have, f"phot_mag_{band}"].isna().all()
    assert 0.35 < (cat["phot_flux_ivar_W1"] == 0).mean() < 0.65
    assert (cat["phot_flux_ivar_g"] > 0).all()
    # at higher redshift the same type is redder in g - r
    e = cat[cat["class_name"] == "E"]
    assert np.corrcoef(e["z"], e["mag_g"] - e["mag_r"])[0, 1] > 0.5


def test_spectra_match_the_photometry_of_the_same_galaxy(mm_dataset):
    cat = pd.read_parquet(mm_dataset / "catalog.parquet")
    spectra = multimodal.read_spectra(mm_dataset)
    have = cat[cat["spectrum_row"] >= 0]
    assert 0.3 < len(have) / len(cat) < 0.7
    assert spectra["flux"].shape == (len(have), len(spectra["wavelength"]))
    assert np.array_equal(spectra["ids"][have["spectrum_row"].to_numpy()], have["id"].to_numpy())
    assert (spectra["ivar"][spectra["mask"] == 1] == 0).all() and (spectra["ivar"][spectra["mask"] == 0] > 0).all()
    wave = spectra["wavelength"]
    inband = (wave >= 560) & (wave <= 710)
    for row in have.itertuples():
        j = row.spectrum_row
        good = inband & (spectra["mask"][j] == 0)
        # photon-weighted mean f_lambda over the r top-hat -> AB magnitude (f_lambda in 1e-17 erg/s/cm^2/A)
        w_a = wave[good] * 10.0
        f = spectra["flux"][j][good] * 1e-17
        mean_photons = np.sum(f * w_a) / np.sum(3631e-23 * 2.99792458e18 / w_a)
        mag = -2.5 * math.log10(mean_photons) if mean_photons > 0 else math.inf
        # its error from the inverse variance: five sigma, plus 0.01 for the grid's edges at the band's
        sigma = 2.5 / math.log(10) * math.sqrt(np.sum(w_a**2 / spectra["ivar"][j][good])) / np.sum(w_a * spectra["flux"][j][good])
        assert mag == pytest.approx(row.mag_r, abs=0.01 + 5 * sigma)


def test_the_dataset_loads_for_image_tasks(mm_dataset):
    from galframe.data.datamodule import GalaxyDataModule

    dm = GalaxyDataModule({"path": str(mm_dataset), "batch_size": 16, "seed": 0}, requires=["label", "clean"], progress=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 64, 64)
    assert batch["clean"].shape == (16, 3, 64, 64)
    assert set(batch["label"].tolist()) <= {0, 1, 2, 3}
    info = dm.info()
    assert info.classes == seds.TEMPLATES and "z" in info.columns and "phot_mag_W1" in info.columns


def test_results_do_not_depend_on_workers_and_bad_settings_are_named(tmp_path):
    cfg = shipped_cfg(20, spectrum={"fraction": 1.0, "wave_min": 361.0, "wave_max": 979.0, "dwave": 2.0,
                                   "sigma": 0.3, "bad_pixel_rate": 0.002, "sky_mask": 0.5})
    one = simulate(cfg, tmp_path / "one", workers=1, progress=False)
    two = simulate(cfg, tmp_path / "two", workers=2, progress=False)
    a, b = multimodal.read_spectra(one), multimodal.read_spectra(two)
    assert np.array_equal(a["flux"], b["flux"]) and len(a["ids"]) == 20
    assert pd.read_parquet(one / "catalog.parquet").equals(pd.read_parquet(two / "catalog.parquet"))
    with pytest.raises(ConfigError, match="sim.photometry.missing.W1"):
        resolve_config(shipped_cfg(2, photometry={"bands": ["g", "W1"], "depth": {"g": 24, "W1": 21},
                                                  "missing": {"g": 0.0, "W1": 1.5}}))
    with pytest.raises(ConfigError, match="sim.filters.W3"):
        resolve_config(shipped_cfg(2, filters={**seds.FILTERS, "W3": [12000, 100]},
                                   photometry={"bands": ["W3"], "depth": {"W3": 18}, "missing": {"W3": 0.0}}))
    with pytest.raises(ConfigError, match=r"sim.sky.dec \(high\) must be between -90 and 90"):
        resolve_config(shipped_cfg(2, sky={"ra": [0, 10], "dec": [80, 95]}))
    with pytest.raises(ConfigError, match="Unknown key 'sim.spectrum.fractoin'"):
        resolve_config(shipped_cfg(2, spectrum={"fractoin": 0.2}))
    with pytest.raises(ConfigError, match="only in bands"):
        resolve_config({**shipped_cfg(2), "bands": ["g", "W1"]})


def test_the_catalog_alone_has_the_dataset_values(mm_dataset):
    cat = pd.read_parquet(mm_dataset / "catalog.parquet")
    alone = multimodal.simulate_catalog(shipped_cfg(160, photometry={
        "bands": ["g", "r", "z", "W1", "W2"], "depth": {"g": 24.5, "r": 23.9, "z": 23.0, "W1": 21.0, "W2": 20.3},
        "missing": {"g": 0.0, "r": 0.0, "z": 0.0, "W1": 0.5, "W2": 0.15}}), n=40)
    assert len(alone) == 40
    for col in alone.columns:
        numeric = alone[col].dtype.kind == "f"
        assert np.array_equal(alone[col].to_numpy(), cat[col].to_numpy()[:40], equal_nan=numeric), col
