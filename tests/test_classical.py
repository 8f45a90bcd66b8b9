"""The classical baselines of ``galframe bench params`` / ``bench restore``: HSM, the PSF-convolved Sersic fit,
Richardson-Lucy and wavelets on GalSim images with known truth, the headline entries, and one tiny end-to-end run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

SCALE = 0.262
FWHM, BETA = 1.3, 3.5


def _galaxy(n: float, hlr: float, q: float, beta_deg: float, flux: float = 4000.0, sigma: float = 1.0, seed: int = 0):
    """A PSF-convolved GalSim Sersic stamp (64 x 64, pixel scale 0.262") with Gaussian sky noise."""
    import galsim

    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux).shear(q=q, beta=beta_deg * galsim.degrees)
    psf = galsim.Moffat(beta=BETA, fwhm=FWHM)
    img = galsim.Convolve(gal, psf).drawImage(nx=64, ny=64, scale=SCALE).array.astype(np.float64)
    rng = np.random.default_rng(seed)
    return img, img + rng.normal(0.0, sigma, img.shape)


def test_hsm_and_the_sersic_fit_recover_a_known_galsim_sersic() -> None:
    from galframe_bench.classical import hsm_shape, moffat, sersic_fit

    n_true, hlr_true, q_true = 1.5, 1.0, 0.6
    _, noisy = _galaxy(n_true, hlr_true, q_true, 30.0, flux=6000.0, sigma=1.0)
    h = hsm_shape(noisy, moffat(FWHM, BETA, SCALE, 32), 1.0, SCALE)
    assert abs(h["hsm_q"] - q_true) < 0.08, h
    assert abs(h["hsm_x"] - 31.5) < 0.5 and abs(h["hsm_y"] - 31.5) < 0.5  # array coordinates of the centre
    f = sersic_fit(noisy, 1.0, moffat(FWHM, BETA, SCALE / 2, 31, pixel=False), SCALE, h)
    assert abs(f["sersic_n"] - n_true) < 0.35, f
    assert abs(f["sersic_q"] - q_true) < 0.05, f
    assert abs(math.log10(f["sersic_hlr"] / hlr_true)) < 0.05, f
    assert 0.7 < f["sersic_chi2"] < 1.3  # a good fit leaves sky noise only


def test_the_sersic_fit_tells_a_disk_from_a_bulge() -> None:
    from galframe_bench.classical import hsm_shape, moffat, sersic_fit

    psf_fine = moffat(FWHM, BETA, SCALE / 2, 31, pixel=False)
    fits = {}
    for n in (1.0, 4.0):
        _, noisy = _galaxy(n, 1.2, 0.8, 0.0, flux=8000.0, seed=int(n))
        fits[n] = sersic_fit(noisy, 1.0, psf_fine, SCALE, hsm_shape(noisy, moffat(FWHM, BETA, SCALE, 32), 1.0, SCALE))
    assert fits[1.0]["sersic_n"] < 2.0 < fits[4.0]["sersic_n"], fits


def test_hsm_reports_nan_rather_than_failing_on_an_empty_stamp() -> None:
    from galframe_bench.classical import hsm_shape, moffat

    h = hsm_shape(np.zeros((64, 64)), moffat(FWHM, BETA, SCALE, 32), 1.0, SCALE)
    assert all(math.isnan(v) for v in h.values())


def test_richardson_lucy_keeps_the_flux_of_a_point_source_and_sharpens_it() -> None:
    from galframe_bench.classical import moffat, richardson_lucy

    psf = moffat(FWHM, BETA, SCALE, 25)
    point = np.zeros((64, 64))
    point[32, 32] = 5000.0
    from scipy.signal import fftconvolve

    blurred = fftconvolve(point, psf, mode="same") + np.random.default_rng(1).normal(0, 1.0, point.shape)
    out = richardson_lucy(blurred, psf, 1.0, 20)
    yy, xx = np.mgrid[:64, :64]
    ap = (yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2
    assert out[ap].sum() == pytest.approx(blurred[ap].sum(), rel=0.03)
    assert out[32, 32] > 2.0 * blurred[32, 32]  # the peak rises: the PSF is partly undone


def test_wavelet_denoising_lowers_the_noise_and_keeps_the_galaxy() -> None:
    from galframe_bench.classical import restore_classical

    clean, noisy = _galaxy(1.0, 1.0, 0.7, 0.0, flux=3000.0, sigma=2.0, seed=3)
    out = restore_classical("wavelet", noisy[None], [np.ones((1, 1))], np.array([2.0]))[0]
    assert np.sqrt(((out - clean) ** 2).mean()) < 0.6 * np.sqrt(((noisy - clean) ** 2).mean())
    assert out.sum() == pytest.approx(clean.sum(), rel=0.05)


def _result(methods_reg: dict, methods_rest: dict) -> dict:
    return {"settings": {"data_name": "sim_desi", "bands": ["g", "r"], "n_eval": 7, "machine": "m"},
            "regress": {"n_common": 5, "methods": methods_reg}, "restore": {"methods": methods_rest}}


def test_headline_entries_follow_the_issue_schema_and_write_null_for_missing_figures() -> None:
    from galframe_bench.classical import REGRESS_PARAMS, headline_entries

    gf = {f"{p}_{k}": 0.1 for p in REGRESS_PARAMS for k in ("nmad", "coverage68", "coverage95")}
    reg = {"galframe regress": {"metrics": gf, "seconds_per_object": 0.001},
           "Sersic fit": {"metrics": {f"{p}_nmad": 0.05 for p in REGRESS_PARAMS}, "seconds_per_object": 1.5},
           "HSM, calibrated": {"metrics": {"axis_ratio_nmad": float("nan")}, "seconds_per_object": 0.01}}
    rest = {"galframe restore": {"metrics": {"psnr": 40.0, "ssim": 0.9, "flux_ratio_g": 0.995, "flux_ratio_r": 1.004,
                                             "flux_ratio_nmad": 0.02, "flux_nmad_g": 0.03, "flux_nmad_r": 0.01}},
            "Richardson-Lucy": {"metrics": {"psnr": 35.0, "ssim": 0.8, "flux_ratio_nmad": 0.05}},
            "wavelet denoising": {"metrics": {"psnr": 36.0, "ssim": 0.85}}}
    h = headline_entries(_result(reg, rest))
    p, r = h["params"], h["restore"]
    assert p["n"] == 5 and p["data"] == "sim_desi" and p["machine"] == "m"
    assert set(p["nmad"]) == {"log_hlr", "q", "sersic_n"}
    assert p["nmad"]["q"] == {"galframe": 0.1, "sersic_fit": 0.05, "hsm": None}  # NaN -> null
    assert p["coverage68"]["sersic_n"] == 0.1 and p["seconds_per_object"]["sersic_fit"] == 1.5
    assert r["psnr"] == {"galframe": 40.0, "richardson_lucy": 35.0, "wavelet": 36.0}
    assert r["flux_ratio_median"] == {"g": 0.995, "r": 1.004}
    assert r["flux_nmad"] == {"galframe": 0.02, "richardson_lucy": 0.05}
    assert r["flux_nmad_per_band"]["g"] == {"galframe": 0.03, "richardson_lucy": None}
    json.dumps(h, allow_nan=False)  # valid JSON: no NaN


def test_the_classical_bench_runs_end_to_end_on_a_tiny_dataset(tiny_dataset, runs_dir, tmp_path) -> None:
    from galframe_bench.classical import main

    out, headline = tmp_path / "out", tmp_path / "headline.json"
    headline.write_text(json.dumps({"fewshot": {"kept": True}}))
    rc = main(["--n-eval", "12", "--n-tune", "4", "--n-calib", "30", "--n-labeled", "120", "--regress-epochs", "1",
               "--restore-epochs", "1", "--val-batches", "1", "--out", str(out), "--headline", str(headline),
               "--regress-override", "tasks.regress.features=stages", "--restore-override", "tasks.restore.flux_calibrate=true",
               f"data.path={tiny_dataset}", "data.batch_size=16", "trainer.limit_train_batches=2"])
    assert rc == 0
    result = json.loads((out / "classical.json").read_text())
    from galframe.checkpoints import checkpoint_file, model_from_checkpoint

    # each run got its own override, and only its own
    reg = model_from_checkpoint(checkpoint_file(result["settings"]["regress_run"])).tasks["regress"]
    res = model_from_checkpoint(checkpoint_file(result["settings"]["restore_run"])).tasks["restore"]
    assert reg.features == "stages" and res.flux_calibrate
    assert "features=stages" in (out / "classical.md").read_text()
    methods = result["regress"]["methods"]
    assert {"galframe regress", "HSM", "HSM, calibrated", "Sersic fit"} <= set(methods)
    assert 0 < result["regress"]["n_common"] <= 12
    assert "log_half_light_radius_coverage68" in methods["galframe regress"]["metrics"]
    rest = result["restore"]["methods"]
    assert {"observed input", "Richardson-Lucy", "wavelet denoising", "galframe restore"} <= set(rest)
    for name in ("regress_scatter.png", "regress_coverage.png", "restore_examples.png", "classical.md"):
        assert (out / name).stat().st_size > 0, name
    written = json.loads(headline.read_text())
    assert written["fewshot"] == {"kept": True}  # the other suites' entries stay
    assert written["params"]["n"] == result["regress"]["n_common"]
    assert set(written["restore"]["flux_ratio_median"]) == set(result["settings"]["bands"])
