"""The template-fit photo-z baseline and its metrics (galframe.photoz) on constructed and simulated photometry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim")
pd = pytest.importorskip("pandas")

from omegaconf import OmegaConf  # noqa: E402

from galframe import photoz  # noqa: E402
from galframe.errors import DataError  # noqa: E402
from galframe.sim import multimodal, seds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BANDS = ("g", "r", "z", "W1", "W2")


@pytest.fixture(scope="module")
def catalog():
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "sim_multimodal.yaml"))
    cfg.update(n=1000, seed=3)
    return multimodal.simulate_catalog(cfg)


def test_metrics_by_hand():
    z_true = np.array([0.0, 0.0, 1.0, 1.0, 0.5])
    dz = np.array([0.01, -0.02, 0.0, 0.03, 0.4])  # (z_phot - z_true) / (1 + z_true)
    m = photoz.photoz_metrics(z_true + dz * (1 + z_true), z_true)
    assert m["bias"] == pytest.approx(0.01)
    # |dz - 0.01| = 0, 0.03, 0.01, 0.02, 0.39 -> median 0.02
    assert m["nmad"] == pytest.approx(1.4826 * 0.02)
    assert m["outlier_fraction"] == pytest.approx(0.2) and m["n"] == 5
    assert photoz.photoz_metrics([np.nan, 0.1], [0.2, 0.1])["n"] == 1
    with pytest.raises(DataError, match="differ in shape"):
        photoz.photoz_metrics([0.1, 0.2], [0.1])


def test_noiseless_template_photometry_is_recovered_exactly():
    grid = photoz.model_grid(BANDS, z_grid=np.round(np.arange(0, 1.5001, 0.01), 6), interpolate=0)
    names = grid["templates"]
    truth = [("E", 0.35), ("Sbc", 0.7), ("Im", 1.2), ("Scd", 0.05)]
    rest = [seds.template(t).withFlux(1.0, seds.bandpass("r")) for t, _ in truth]
    flux = np.stack([seds.model_fluxes([z], [s], BANDS)[0, 0] * 7.0 for s, (_, z) in zip(rest, truth)])
    ivar = 1.0 / (0.01 * flux) ** 2
    ivar[1, 3:] = 0.0  # no W1, W2 for one object
    fit = photoz.template_fit(flux, ivar, grid)
    assert fit["z_map"].tolist() == pytest.approx([z for _, z in truth])
    assert [names[k] for k in fit["template_best"]] == [t for t, _ in truth]
    assert fit["chi2_best"] == pytest.approx(np.zeros(4), abs=1e-6)
    assert fit["n_bands"].tolist() == [5, 3, 5, 5]
    assert np.allclose(fit["pdf"].sum(axis=1), 1.0)
    assert (fit["z_lo"] <= fit["z_map"]).all() and (fit["z_map"] <= fit["z_hi"]).all()
    # NaN fluxes are missing bands; an object with none gets no redshift
    flux[2, 0], ivar[2, 0] = np.nan, 1.0
    flux[3], ivar[3] = np.nan, 0.0
    again = photoz.template_fit(flux, ivar, grid)
    assert again["z_map"][2] == pytest.approx(1.2) and again["n_bands"].tolist() == [5, 3, 4, 0]
    assert np.isnan(again["z_map"][3]) and again["template_best"][3] == -1 and np.isnan(again["pdf"][3]).all()
    assert again["z_map"][:2].tolist() == pytest.approx([0.35, 0.7])


def test_template_fit_recovers_the_simulated_redshifts(catalog):
    fit = photoz.fit_catalog(catalog)
    m = photoz.photoz_metrics(fit["photoz_z_map"], catalog["z"])
    assert m["n"] == 1000
    assert abs(m["bias"]) < 0.005
    assert m["nmad"] < 0.02
    assert m["outlier_fraction"] < 0.02
    # the 68% interval holds the true z about as often as it should
    covered = ((catalog["z"] >= fit["photoz_z_lo"]) & (catalog["z"] <= fit["photoz_z_hi"])).mean()
    assert 0.55 < covered < 0.85
    # the W1, W2-like bands carry information: without them the fit is worse
    grz = photoz.photoz_metrics(photoz.fit_catalog(catalog, bands=("g", "r", "z"))["photoz_z_map"], catalog["z"])
    assert grz["nmad"] > 1.2 * m["nmad"] and grz["outlier_fraction"] > m["outlier_fraction"]
    # missing W1/W2 (ivar 0 in the catalog) are fitted with the bands there are
    assert set(fit["photoz_n_bands"]) >= {3, 4, 5}


def test_a_catalog_without_photometry_is_named():
    with pytest.raises(DataError, match="phot_flux_ivar_W1"):
        photoz.catalog_photometry(pd.DataFrame({"phot_flux_g": [1.0], "phot_flux_ivar_g": [1.0], "phot_flux_W1": [1.0]}), ["g", "W1"])
    with pytest.raises(DataError, match=r"must be \(objects, 2\)"):
        photoz.template_fit(np.ones((3, 3)), np.ones((3, 3)), photoz.model_grid(["g", "r"], z_grid=[0.1, 0.2], interpolate=0))
