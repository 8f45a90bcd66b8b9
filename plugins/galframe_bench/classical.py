"""Classical baselines against galframe's ``regress`` and ``restore`` on the same held-out simulations.

Shapes and sizes (against ``regress``; r band, PSF per object from the catalog's seeing):

* GalSim HSM: ``galsim.hsm.EstimateShear`` (re-Gaussianization) with the object's Moffat PSF gives the
  PSF-corrected ellipticity (axis ratio) and the observed and PSF adaptive-moment sizes; the size of the
  galaxy is sqrt(sigma_obs^2 - sigma_psf^2), turned into a half-light radius as for a Gaussian
  (1.1774 sigma).  A second row calibrates that radius with a straight line in log10 fitted on
  training objects (HSM's size is a Gaussian-equivalent size, biased for other profiles).
* Sersic fit: astropy's ``Sersic2D`` (free r_eff, n, centre, ellipticity, angle; the amplitude solved
  linearly), sampled 2x finer than the pixels, convolved with the object's PSF, binned to pixels and
  fitted by weighted least squares (``scipy.optimize.least_squares``) to the central 48 x 48 px.
  The half-light radius is measured on the fitted PSF-free profile exactly as the simulator measures the
  truth (circle about the centroid holding half the flux, ``galframe.sim.desi._hlr``).

Restoration (against ``restore``; every band, its own PSF and sky noise):

* Richardson-Lucy (``skimage.restoration.richardson_lucy``) with the object's PSF; the image is put in
  units of its sky sigma, given a pedestal of 5 (RL needs positive data) and reflect-padded;
* wavelet denoising (``skimage.restoration.denoise_wavelet``, BayesShrink, sigma = the catalog's sky
  sigma; denoising only, no deconvolution);
* wavelet denoising followed by Richardson-Lucy.
  The number of RL iterations is chosen on validation objects (best PSNR).

galframe: small ``regress`` (sersic_n, log_half_light_radius, axis_ratio) and ``restore`` models are
trained here on sim_desi (or taken from earlier run directories, ``--regress-run`` / ``--restore-run``).
Every method is scored on the identical held-out objects (the first ``--n-eval`` of the test split),
with the metric code of the task plugins: ``RegressTask.compute_metrics`` (bias, NMAD, outlier fraction;
fixed outlier thresholds, the same for every method) and ``RestoreTask.update_metrics`` /
``compute_metrics`` (PSNR and SSIM in the model's scaled units, median aperture flux ratio), plus the
NMAD of the flux ratio (``regress.nmad``).

    galframe bench restore --profile small                           # both tables, small and quick
    python benchmarks/classical_baselines.py                         # trains both models (~15 min on a shared 2-core CPU)
    python benchmarks/classical_baselines.py --regress-run runs/train/<a> --restore-run runs/train/<b>
    python benchmarks/classical_baselines.py --regress-epochs 20 --n-labeled 4200 --n-eval 900 backbone.weights=lvm_tiny-demo

Writes classical.json, classical.md, per_object.csv, regress_scatter.png and restore_examples.png into --out.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

REGRESS_PARAMS = ("log_half_light_radius", "axis_ratio", "sersic_n")
#: fixed outlier thresholds, the same for every method: |estimate - truth| above these
OUTLIER = {"log_half_light_radius": 0.1, "axis_ratio": 0.1, "sersic_n": 1.0}
GAUSS_HLR = math.sqrt(2.0 * math.log(2.0))  # half-light radius / sigma of a round Gaussian
RL_ITERS = (2, 5, 10, 20, 40)


def compose(overrides: list[str]) -> dict:
    from galframe.build import compose_dict

    return compose_dict("train", overrides)


# -------------------------------------------------------------------------------------------------
# PSFs
# -------------------------------------------------------------------------------------------------
def moffat(fwhm: float, beta: float, scale: float, size: int, pixel: bool = True) -> np.ndarray:
    """A unit-sum Moffat PSF image (``size`` x ``size``, centred); ``pixel=False`` point-samples it."""
    import galsim

    psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    img = psf.drawImage(nx=size, ny=size, scale=scale, method="auto" if pixel else "no_pixel").array
    return (img / img.sum()).astype(np.float64)


# -------------------------------------------------------------------------------------------------
# shapes: HSM and a Sersic fit
# -------------------------------------------------------------------------------------------------
def hsm_shape(image: np.ndarray, psf: np.ndarray, sky_sigma: float, pixel_scale: float) -> dict:
    """PSF-corrected axis ratio and Gaussian-equivalent half-light radius (arcsec) from re-Gaussianization."""
    import galsim

    nan = {"hsm_q": math.nan, "hsm_hlr": math.nan, "hsm_sigma_obs": math.nan, "hsm_sigma_psf": math.nan,
           "hsm_e1": math.nan, "hsm_e2": math.nan, "hsm_x": math.nan, "hsm_y": math.nan}
    try:
        res = galsim.hsm.EstimateShear(
            galsim.Image(image.astype(np.float64), scale=pixel_scale), galsim.Image(psf, scale=pixel_scale),
            sky_var=float(sky_sigma) ** 2, shear_est="REGAUSS", strict=False,
        )
    except Exception:  # HSM raises for some pathological inputs even with strict=False
        return nan
    if res.error_message:
        return nan
    e = math.hypot(res.corrected_e1, res.corrected_e2)
    if res.meas_type == "e":  # distortion (1 - q^2) / (1 + q^2)
        q = math.sqrt(max(1.0 - e, 0.0) / (1.0 + e)) if e < 1 else math.nan
    else:  # shear (1 - q) / (1 + q)
        q = (1.0 - e) / (1.0 + e) if e < 1 else math.nan
    s2 = res.moments_sigma**2 - res.psf_sigma**2
    hlr = GAUSS_HLR * math.sqrt(s2) * pixel_scale if s2 > 0 else math.nan
    obs = res.observed_shape
    # EstimateShear leaves moments_centroid at (0, 0): the centroid comes from the adaptive moments
    mom = galsim.hsm.FindAdaptiveMom(galsim.Image(image.astype(np.float64), scale=pixel_scale), strict=False)
    x, y = ((mom.moments_centroid.x, mom.moments_centroid.y) if not mom.error_message else (math.nan, math.nan))
    return {"hsm_q": q, "hsm_hlr": hlr, "hsm_sigma_obs": float(res.moments_sigma), "hsm_sigma_psf": float(res.psf_sigma),
            "hsm_e1": float(obs.e1), "hsm_e2": float(obs.e2),
            # GalSim images are 1-based: array coordinates are one less
            "hsm_x": float(x) - 1.0, "hsm_y": float(y) - 1.0}


def _oversampled_grid(size: int, over: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions (array pixel units, pixel centres at integers) ``over`` times finer than the pixels."""
    c = (np.arange(size * over) + 0.5) / over - 0.5
    return np.meshgrid(c, c)


def _bin(a: np.ndarray, over: int) -> np.ndarray:
    n = a.shape[0] // over
    return a.reshape(n, over, n, over).mean(axis=(1, 3))


def sersic_fit(image: np.ndarray, sky_sigma: float, psf_fine: np.ndarray, pixel_scale: float, start: dict,
               crop: int = 48, over: int = 2) -> dict:
    """Least-squares fit of a PSF-convolved Sersic2D to the central ``crop`` px; returns n, q, hlr (arcsec)."""
    from astropy.modeling.functional_models import Sersic2D
    from scipy.optimize import least_squares
    from scipy.signal import fftconvolve

    from galframe.sim.desi import _hlr

    nan = {"sersic_n": math.nan, "sersic_q": math.nan, "sersic_hlr": math.nan, "sersic_chi2": math.nan}
    size = image.shape[0]
    lo = (size - crop) // 2
    data = image[lo : lo + crop, lo : lo + crop].astype(np.float64)
    xx, yy = _oversampled_grid(crop, over)

    def model(p: np.ndarray) -> np.ndarray:
        log_r, n, x0, y0, ellip, theta = p
        fine = Sersic2D.evaluate(xx, yy, 1.0, math.exp(log_r), n, x0, y0, ellip, theta)
        return _bin(fftconvolve(fine, psf_fine, mode="same"), over)

    def residual(p: np.ndarray) -> np.ndarray:
        m = model(p)
        mm = float((m * m).sum())
        amp = max(float((m * data).sum()) / mm, 0.0) if mm > 0 else 0.0
        return ((data - amp * m) / sky_sigma).ravel()

    # start: HSM's centroid, size and observed ellipticity when it succeeded, else round and 4 px
    x0 = start.get("hsm_x", math.nan) - lo
    y0 = start.get("hsm_y", math.nan) - lo
    if not (np.isfinite(x0) and np.isfinite(y0)) or abs(x0 - crop / 2) > 8 or abs(y0 - crop / 2) > 8:
        x0 = y0 = (crop - 1) / 2.0
    s_obs, s_psf = start.get("hsm_sigma_obs", math.nan), start.get("hsm_sigma_psf", math.nan)
    r0 = 1.2 * math.sqrt(max(s_obs**2 - s_psf**2, 1.0)) if np.isfinite(s_obs) and np.isfinite(s_psf) else 4.0
    e1, e2 = start.get("hsm_e1", 0.0), start.get("hsm_e2", 0.0)
    e1, e2 = (e1, e2) if np.isfinite(e1) and np.isfinite(e2) else (0.0, 0.0)
    e = min(math.hypot(e1, e2), 0.8)
    q0 = math.sqrt((1 - e) / (1 + e))
    p0 = np.array([math.log(min(max(r0, 0.6), 30.0)), 2.0, x0, y0, min(1 - q0, 0.85), 0.5 * math.atan2(e2, e1)])
    lower = [math.log(0.3), 0.3, x0 - 6, y0 - 6, 0.0, -2 * math.pi]
    upper = [math.log(60.0), 8.0, x0 + 6, y0 + 6, 0.9, 2 * math.pi]
    try:
        fit = least_squares(residual, p0, bounds=(lower, upper), x_scale=[0.3, 1.0, 1.0, 1.0, 0.2, 0.5], max_nfev=150)
    except Exception:
        return nan
    log_r, n, xc, yc, ellip, theta = fit.x
    r_eff = math.exp(log_r)
    # half-light radius as the simulator defines it: on the PSF-free profile (truncated at 8 r_eff, as
    # the simulator truncates its Sersic profiles), circle about the centroid
    field = 4 * size
    fx, fy = _oversampled_grid(field, over)
    centre = field / 2.0
    fine = Sersic2D.evaluate(fx, fy, 1.0, r_eff, n, centre, centre, ellip, theta)
    dx, dy = fx - centre, fy - centre
    a = dx * math.cos(theta) + dy * math.sin(theta)
    b = (-dx * math.sin(theta) + dy * math.cos(theta)) / max(1.0 - ellip, 1e-3)
    fine = np.where(np.hypot(a, b) <= 8.0 * r_eff, fine, 0.0)
    c_fine = over * centre + (over - 1) / 2.0  # the centre in the fine grid's own pixel coordinates
    hlr = _hlr(fine, pixel_scale / over, c_fine, c_fine, float(fine.sum()))
    return {"sersic_n": float(n), "sersic_q": float(1.0 - ellip), "sersic_hlr": float(hlr),
            "sersic_chi2": float((fit.fun**2).mean())}


# -------------------------------------------------------------------------------------------------
# restoration
# -------------------------------------------------------------------------------------------------
def richardson_lucy(band: np.ndarray, psf: np.ndarray, sigma: float, n_iter: int, pedestal: float = 5.0) -> np.ndarray:
    from skimage.restoration import richardson_lucy as rl

    pad = psf.shape[0] // 2
    x = np.pad(band.astype(np.float64) / sigma + pedestal, pad, mode="reflect")
    out = rl(np.clip(x, 1e-3, None), psf, num_iter=int(n_iter), clip=False)
    return (out[pad:-pad, pad:-pad] - pedestal) * sigma


def wavelet(band: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    # denoise_wavelet clips its output to [-1, 1]: work on the image divided by its largest |value|
    peak = float(np.abs(band).max()) or 1.0
    out = denoise_wavelet(band.astype(np.float64) / peak, sigma=sigma / peak, wavelet="sym4", mode="soft",
                          method="BayesShrink", rescale_sigma=True)
    return out * peak


def restore_classical(method: str, image: np.ndarray, psfs: list[np.ndarray], sigmas: np.ndarray, n_iter: int = 0) -> np.ndarray:
    out = np.empty(image.shape, dtype=np.float64)
    for b in range(image.shape[0]):
        band = image[b]
        if method in ("wavelet", "wavelet+rl"):
            band = wavelet(band, float(sigmas[b]))
        if method in ("rl", "wavelet+rl"):
            band = richardson_lucy(band, psfs[b], float(sigmas[b]), n_iter)
        out[b] = band
    return out


# -------------------------------------------------------------------------------------------------
# galframe models
# -------------------------------------------------------------------------------------------------
def galframe_model(task: str, run_dir: Optional[str], args: argparse.Namespace, runs_root: Path) -> tuple[Any, Path, float]:
    """(GalaxyModel, run dir, training seconds): trained here unless ``run_dir`` is given."""
    from galframe.checkpoints import checkpoint_file, model_from_checkpoint
    from galframe.train import run

    seconds = 0.0
    if run_dir is None:
        overrides = [
            f"backbone={args.backbone}", f"tasks=[{task}]", f"trainer.max_epochs={getattr(args, task + '_epochs')}",
            f"data.n_labeled={'null' if args.n_labeled is None else args.n_labeled}", f"trainer.limit_val_batches={args.val_batches}", f"seed={args.seed}",
            "trainer.progress_bar=false", "logger=none", "evaluate=false", *args.overrides,
            *(getattr(args, task + "_override") or []),
        ]
        if task == "regress":
            overrides.append(f"tasks.regress.params=[{','.join(REGRESS_PARAMS)}]")
        path = runs_root / task
        print(f"training galframe {task}: {' '.join(overrides)}", flush=True)
        start = time.time()
        run(compose(overrides), run_dir=path)
        seconds = time.time() - start
    else:
        path = Path(run_dir)
    return model_from_checkpoint(checkpoint_file(path)), path, seconds


def galframe_outputs(model: Any, images: torch.Tensor, batch: int = 64) -> dict[str, list]:
    """Every task's outputs, batch by batch, through the model pass galframe predict uses."""
    from galframe.inference import outputs

    outs: dict[str, list] = {}
    for i in range(0, len(images), batch):
        for name, out in outputs(model, images[i : i + batch]).items():
            outs.setdefault(name, []).append(out)
    return outs


# -------------------------------------------------------------------------------------------------
# metrics (the task plugins' code)
# -------------------------------------------------------------------------------------------------
def regress_scores(task: Any, truth: dict[str, np.ndarray], estimate: dict[str, np.ndarray], sigma: Optional[dict] = None) -> dict:
    """Bias, NMAD, outlier fraction per parameter through RegressTask's metric code (fixed thresholds)."""
    from galframe_tasks.regress import RegressMetrics

    metrics = RegressMetrics(list(REGRESS_PARAMS))
    for p in REGRESS_PARAMS:
        d = torch.as_tensor(estimate[p] - truth[p], dtype=torch.float32)
        s = torch.as_tensor(sigma[p], dtype=torch.float32) if sigma else torch.full_like(d, math.nan)
        metrics.update(p, d, s, 0.0, 0)
    task.outlier_thresholds = dict(OUTLIER)
    values = {k: float(v) for k, v in task.compute_metrics(metrics).items() if k != "nll"}
    if not sigma:
        values = {k: v for k, v in values.items() if not k.endswith("coverage68")}
    return values


def restore_scores(task: Any, restored_flux: torch.Tensor, clean: torch.Tensor, batch: int = 64) -> dict:
    """PSNR, SSIM, median flux ratios through RestoreTask's metric code, plus the NMAD of the flux ratio."""
    from galframe_tasks.regress import nmad

    metrics = task.make_metrics()
    ratios = []
    for i in range(0, len(clean), batch):
        pred, truth = restored_flux[i : i + batch].float(), clean[i : i + batch].float()
        task.update_metrics(metrics, {"restored": task.scaling(pred)}, {"clean": truth})
        ratios.append(task.flux_ratios(pred, truth)[0])
    values = {k: float(v) for k, v in task.compute_metrics(metrics).items()}
    r = torch.cat(ratios)
    values["flux_ratio_nmad"] = float(nmad(r[torch.isfinite(r)]))
    return values


# -------------------------------------------------------------------------------------------------
# pictures and tables
# -------------------------------------------------------------------------------------------------
def coverage_png(truth: dict, estimate: dict, sigma: dict, path: Path) -> Path:
    """Fraction of galframe's residuals within k predicted sigma against k, per parameter, with the
    Gaussian expectation 2 Phi(k) - 1: a calibrated uncertainty follows it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    k = np.linspace(0, 3, 61)
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.plot(k, 2 * norm.cdf(k) - 1, "k--", lw=1, label="Gaussian")
    for p in REGRESS_PARAMS:
        z = np.abs(estimate[p] - truth[p]) / sigma[p]
        z = z[np.isfinite(z)]
        if z.size:
            ax.plot(k, [(z < x).mean() for x in k], label=p)
    ax.axhline(0.683, color="grey", lw=0.5)
    ax.axhline(0.95, color="grey", lw=0.5)
    ax.set_xlabel("|residual| / predicted sigma")
    ax.set_ylabel("fraction of objects within")
    ax.set_title("galframe regress: coverage", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def headline_entries(result: Mapping[str, Any]) -> dict[str, dict]:
    """The ``params`` and ``restore`` entries of benchmarks/results/headline.json from a classical result."""
    reg = result["regress"]["methods"]
    short = {"log_half_light_radius": "log_hlr", "axis_ratio": "q", "sersic_n": "sersic_n"}

    def figure(methods: Mapping[str, Any], method: str, key: str) -> Optional[float]:
        """One method's metric, rounded; null where it is missing or not finite."""
        v = methods.get(method, {}).get("metrics", {}).get(key)
        return None if v is None or not np.isfinite(v) else round(float(v), 4)

    def metric(method: str, key: str) -> Optional[float]:
        return figure(reg, method, key)

    gf = "galframe regress"
    params = {
        "data": result["settings"].get("data_name", "sim_desi"),
        "n": int(result["regress"]["n_common"]),
        "nmad": {short[p]: {"galframe": metric(gf, f"{p}_nmad"), "sersic_fit": metric("Sersic fit", f"{p}_nmad"),
                            "hsm": metric("HSM, calibrated", f"{p}_nmad")} for p in REGRESS_PARAMS},
        "coverage68": {p: metric(gf, f"{p}_coverage68") for p in REGRESS_PARAMS},
        "coverage95": {p: metric(gf, f"{p}_coverage95") for p in REGRESS_PARAMS},
        "seconds_per_object": {"galframe": reg[gf]["seconds_per_object"], "sersic_fit": reg["Sersic fit"]["seconds_per_object"]},
        "machine": result["settings"].get("machine"),
    }
    rest = result["restore"]["methods"]
    names = {"galframe": "galframe restore", "richardson_lucy": "Richardson-Lucy", "wavelet": "wavelet denoising"}

    def r(method: str, key: str) -> Optional[float]:
        return figure(rest, names[method], key)

    bands = list(result["settings"].get("bands") or ["g", "r", "z"])
    restore = {
        "data": params["data"], "n": int(result["settings"]["n_eval"]),
        "psnr": {m: r(m, "psnr") for m in names}, "ssim": {m: r(m, "ssim") for m in names},
        "flux_ratio_median": {b: r("galframe", f"flux_ratio_{b}") for b in bands},
        "flux_nmad": {m: r(m, "flux_ratio_nmad") for m in ("galframe", "richardson_lucy")},
        "flux_nmad_per_band": {b: {m: r(m, f"flux_nmad_{b}") for m in ("galframe", "richardson_lucy")} for b in bands},
    }
    return {"params": params, "restore": restore}


def scatter_png(truth: dict, estimates: dict[str, dict], path: Path, sigmas: Optional[dict[str, dict]] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(estimates)
    labels = {"log_half_light_radius": "log10 hlr [arcsec]", "axis_ratio": "axis ratio", "sersic_n": "Sersic n"}
    fig, axes = plt.subplots(len(REGRESS_PARAMS), len(methods), figsize=(2.8 * len(methods), 2.8 * len(REGRESS_PARAMS)), squeeze=False)
    for r, p in enumerate(REGRESS_PARAMS):
        t = truth[p]
        lo, hi = np.nanpercentile(t, 0.5), np.nanpercentile(t, 99.5)
        pad = 0.15 * (hi - lo)
        for c, m in enumerate(methods):
            ax = axes[r, c]
            e = estimates[m][p]
            ok = np.isfinite(t) & np.isfinite(e)
            sig = (sigmas or {}).get(m, {}).get(p)
            if sig is not None:  # the method's own 1-sigma error bars
                ax.errorbar(t[ok], e[ok], yerr=sig[ok], fmt="none", ecolor="tab:orange", alpha=0.25, lw=0.5)
            ax.scatter(t[ok], e[ok], s=3, alpha=0.5)
            if not ok.any():
                ax.text(0.5, 0.5, "no estimate", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            if r == 0:
                ax.set_title(m, fontsize=9)
            ax.set_xlabel(f"true {labels[p]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"estimated {labels[p]}", fontsize=7)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def examples_png(rows: list[tuple[int, list[np.ndarray]]], names: list[str], bands: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galframe.report import rgb

    fig, axes = plt.subplots(len(rows), len(names), figsize=(1.9 * len(names), 1.9 * len(rows) + 0.3), squeeze=False)
    for r, (obj, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            axes[r, c].imshow(rgb(panel, bands), origin="lower")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(names[c], fontsize=8)
        axes[r, 0].set_ylabel(f"id {obj}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown(result: dict) -> str:
    s = result["settings"]
    bands = list(s.get("bands") or ["g", "r", "z"])
    lines = [
        f"# Classical baselines vs galframe (held-out {s.get('data_name', 'sim_desi')})",
        "",
        f"{s['n_eval']} held-out objects (the first of the test split of `data={s.get('data_name', 'sim_desi')}`, n={s['data_n']}, seed "
        f"{s['data_seed']}); galframe models: `{s['backbone']}` ({s['weights']}), {s['n_labeled'] or 'all the'} training stamps, "
        f"{s['regress_epochs']} epochs (regress) and {s['restore_epochs']} (restore)"
        + "".join(f", {k} `{' '.join(v)}`" for k, v in (("regress with", s.get("regress_overrides")),
                                                        ("restore with", s.get("restore_overrides"))) if v)
        + ", trained in "
        f"{result['timing']['train_regress_s']:.0f} s and {result['timing']['train_restore_s']:.0f} s; "
        f"the whole benchmark took {result['timing']['total_s'] / 60:.1f} min on {s['machine']}.",
        "",
        f"## Sizes and shapes ({result['regress']['n_common']} galaxies where every method gave a value; r band)",
        "",
        f"Residual = estimate - truth; NMAD = 1.4826 median |d - median d|; outliers: |d| > "
        f"{OUTLIER['log_half_light_radius']} dex (hlr), > {OUTLIER['axis_ratio']} (q), > {OUTLIER['sersic_n']} (n).",
        "",
        "| method | log10 hlr bias | NMAD | outliers | axis ratio bias | NMAD | outliers | Sersic n bias | NMAD | outliers | failed | s / object |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gf = result["regress"]["methods"].get("galframe regress", {}).get("metrics", {})
    for m, v in result["regress"]["methods"].items():
        cells = []
        for p in REGRESS_PARAMS:
            for k in ("bias", "nmad", "outlier_frac"):
                x = v["metrics"].get(f"{p}_{k}", math.nan)
                cells.append("-" if not np.isfinite(x) else f"{x:+.3f}" if k == "bias" else f"{x:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {v['failed']} | {v['seconds_per_object']:.4f} |")
    lines += [
        "",
        "galframe's uncertainties (fraction of residuals within 1 and 1.96 predicted sigma; 0.683 and 0.95 when "
        "calibrated): " + "; ".join(f"{p} {gf.get(p + '_coverage68', math.nan):.3f} / {gf.get(p + '_coverage95', math.nan):.3f}"
                                   for p in REGRESS_PARAMS) + ".",
        "",
        "HSM gives no Sersic index (-). Truth conventions (galframe/sim/desi.py): hlr is the circular half-light "
        "radius of the PSF-free r-band image; the axis ratio is the main component's (second-moment for disks); "
        "Sersic n is the bulge's (1 for pure disks): a single Sersic fit measures the whole galaxy, which "
        "is one reason for its n scatter on disks.",
        "",
        f"## Restoration (all {s['n_eval']} objects, PSNR and SSIM in the model's scaled units, flux in an "
        f"{result['restore']['aperture_radius']:.0f} px aperture)",
        "",
        "| method | PSNR | SSIM | flux ratio (median) | flux ratio NMAD | " + " | ".join(f"{b} ratio / NMAD" for b in bands)
        + " | s / object |",
        "|---|---|---|---|---|" + "---|" * len(bands) + "---|",
    ]
    for m, v in result["restore"]["methods"].items():
        x = v["metrics"]
        it = f" ({v['n_iter']} it.)" if v.get("n_iter") else ""
        per_band = " | ".join(f"{x.get('flux_ratio_' + b, math.nan):.3f} / {x.get('flux_nmad_' + b, math.nan):.3f}" for b in bands)
        lines.append(
            f"| {m}{it} | {x['psnr']:.2f} | {x['ssim']:.4f} | {x['flux_ratio']:.3f} | {x['flux_ratio_nmad']:.3f} | "
            f"{per_band} | {v['seconds_per_object']:.4f} |"
        )
    lines += ["", "![shapes](regress_scatter.png)", "", "![coverage](regress_coverage.png)", "",
              "![restorations](restore_examples.png)", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regress-run", default=None, help="a galframe train run directory with a regress task (else trained here)")
    parser.add_argument("--restore-run", default=None, help="a galframe train run directory with a restore task (else trained here)")
    parser.add_argument("--backbone", default="lvm_tiny")
    parser.add_argument("--regress-epochs", type=int, default=12)
    parser.add_argument("--restore-epochs", type=int, default=6)
    parser.add_argument("--n-labeled", type=lambda v: None if v in ("all", "null") else int(v), default=1500,
                        help="training stamps of the galframe models ('all': the whole training split)")
    parser.add_argument("--val-batches", type=int, default=4, help="validation batches per epoch")
    parser.add_argument("--n-eval", type=int, default=400, help="held-out objects every method is scored on")
    parser.add_argument("--n-tune", type=int, default=40, help="validation objects that pick the RL iterations")
    parser.add_argument("--n-calib", type=int, default=400, help="training objects that calibrate HSM's radius")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--out", default="benchmarks/results/classical")
    parser.add_argument("--machine", default="a shared 2-core CPU", help="what to call this machine in the table")
    parser.add_argument("--headline", default=None, help="write the params and restore entries of this headline.json")
    parser.add_argument("--regress-override", action="append", metavar="KEY=VALUE",
                        help="a Hydra override for the regress run only (repeatable), e.g. tasks.regress.features=stages")
    parser.add_argument("--restore-override", action="append", metavar="KEY=VALUE",
                        help="a Hydra override for the restore run only (repeatable), e.g. tasks.restore.flux_calibrate=true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the galframe runs and the data (e.g. data.n=6000)")
    return parser.parse_args(argv)


class _Data:
    """The benchmark's data: the datamodule, its bands and pixel scale, the PSF's beta, the held-out objects."""

    COLS = ["clean", "half_light_radius", "axis_ratio", "sersic_n"]

    def __init__(self, data_cfg: dict, n_eval: int) -> None:
        from galframe.data.datamodule import GalaxyDataModule

        self.dm = dm = GalaxyDataModule(data_cfg, requires=self.COLS, progress=True)
        info = dm.info()
        self.bands, self.scale = list(info.bands), float(info.pixel_scale)
        self.beta = float((((dm.manifest.get("config") or {}).get("sim") or {}).get("psf") or {}).get("beta", 3.5))
        self.rb = self.bands.index("r") if "r" in self.bands else 0
        self.test_cat, self.test = self.load("test", n_eval)
        self.n_eval = n_eval = len(self.test_cat)
        print(f"data: {dm.root} ({len(dm.splits['train'])} train / {len(dm.splits['test'])} test); scoring {n_eval} held-out objects", flush=True)
        self.images, self.clean = self.test["image"].numpy(), self.test["clean"].numpy()
        self.sigmas = self.test_cat[[f"sky_sigma_{b}" for b in self.bands]].to_numpy(float)
        self.fwhms = self.test_cat[[f"psf_fwhm_{b}" for b in self.bands]].to_numpy(float)
        self.is_galaxy = (self.test_cat["class_name"] != "star").to_numpy() if "class_name" in self.test_cat else np.ones(n_eval, bool)

    def load(self, split: str, n: int) -> tuple[Any, dict]:
        ds = self.dm.dataset(split)
        n = min(n, len(ds))
        items = [ds[i] for i in range(n)]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in ("image", "clean", *self.COLS[1:])}
        batch["id"] = torch.tensor([it["id"] for it in items])
        return self.dm.splits[split].iloc[:n].reset_index(drop=True), batch


def _log10(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def _classical_shapes(d: _Data) -> tuple[Any, float, float]:
    """HSM moments and Sersic fits of every held-out object: (per-object table, HSM seconds, fit seconds)."""
    import pandas as pd

    print("HSM and Sersic fits ...", flush=True)
    per_object: list[dict] = []
    t_hsm = t_fit = 0.0
    rb, scale, beta = d.rb, d.scale, d.beta
    for i in range(d.n_eval):
        psf = moffat(d.fwhms[i, rb], beta, scale, 32)
        t0 = time.time()
        h = hsm_shape(d.images[i, rb], psf, d.sigmas[i, rb], scale)
        t_hsm += time.time() - t0
        t0 = time.time()
        f = sersic_fit(d.images[i, rb], d.sigmas[i, rb], moffat(d.fwhms[i, rb], beta, scale / 2, 31, pixel=False), scale, h) if d.is_galaxy[i] else {}
        t_fit += time.time() - t0
        per_object.append({"id": int(d.test["id"][i]), **h, **f})
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{d.n_eval} ({t_hsm:.0f} s HSM, {t_fit:.0f} s Sersic)", flush=True)
    po = pd.DataFrame(per_object)
    for c in ("sersic_n", "sersic_q", "sersic_hlr"):
        if c not in po:
            po[c] = math.nan
    return po, t_hsm, t_fit


def _hsm_calibration(d: _Data, reg_task: Any, n_calib: int) -> tuple[float, float, int]:
    """HSM's Gaussian-equivalent radius calibrated on training objects: (slope, intercept, n) of
    log10 hlr = intercept + slope log10 hlr_HSM."""
    rb, bands = d.rb, d.bands
    train_cat, train = d.load("train", n_calib)
    x_cal, y_cal = [], []
    train_truth = reg_task.truth(train)["log_half_light_radius"].numpy()
    for i in range(len(train_cat)):
        if not np.isfinite(train_truth[i]):
            continue
        fw, sg = float(train_cat[f"psf_fwhm_{bands[rb]}"][i]), float(train_cat[f"sky_sigma_{bands[rb]}"][i])
        h = hsm_shape(train["image"][i, rb].numpy(), moffat(fw, d.beta, d.scale, 32), sg, d.scale)
        if np.isfinite(h["hsm_hlr"]) and h["hsm_hlr"] > 0:
            x_cal.append(math.log10(h["hsm_hlr"]))
            y_cal.append(float(train_truth[i]))
    slope, intercept = np.polyfit(np.array(x_cal), np.array(y_cal), 1)
    return slope, intercept, len(x_cal)


def _regress_bench(d: _Data, reg_task: Any, reg_model: Any, n_calib: int, out: Path) -> tuple[dict, Any, float, float]:
    """Shapes: galframe regress against HSM (raw and calibrated) and Sersic fits on the same galaxies:
    (the result, the per-object table, HSM seconds, fit seconds)."""
    n_eval, is_galaxy = d.n_eval, d.is_galaxy
    truth_t = reg_task.truth(d.test)
    truth = {p: truth_t[p].numpy().astype(float) for p in REGRESS_PARAMS}
    t0 = time.time()
    outs = galframe_outputs(reg_model, d.test["image"])
    reg_out = {k: torch.cat([o[k] for o in outs[reg_task.name]]) for k in ("mean", "log_sigma")}
    phys = reg_task.physical(reg_out)
    gf_s = (time.time() - t0) / n_eval
    est: dict[str, dict[str, np.ndarray]] = {"galframe regress": {p: phys[p][0].numpy().astype(float) for p in REGRESS_PARAMS}}
    gf_sigma = {p: phys[p][1].numpy().astype(float) for p in REGRESS_PARAMS}
    po, t_hsm, t_fit = _classical_shapes(d)
    est["HSM"] = {"log_half_light_radius": _log10(po["hsm_hlr"]), "axis_ratio": po["hsm_q"].to_numpy(float),
                  "sersic_n": np.full(n_eval, np.nan)}
    slope, intercept, n_cal = _hsm_calibration(d, reg_task, n_calib)
    est["HSM, calibrated"] = {**est["HSM"], "log_half_light_radius": intercept + slope * est["HSM"]["log_half_light_radius"]}
    est["Sersic fit"] = {"log_half_light_radius": _log10(po["sersic_hlr"]), "axis_ratio": po["sersic_q"].to_numpy(float),
                         "sersic_n": po["sersic_n"].to_numpy(float)}
    for p in REGRESS_PARAMS:
        po[f"true_{p}"] = truth[p]
        po[f"galframe_{p}"] = est["galframe regress"][p]

    # every method on the same galaxies: truth defined and every method's estimate finite
    common = is_galaxy.copy()
    for p in REGRESS_PARAMS:
        common &= np.isfinite(truth[p])
        for m, e in est.items():
            if not (m.startswith("HSM") and p == "sersic_n"):
                common &= np.isfinite(e[p])
    seconds = {"galframe regress": gf_s, "HSM": t_hsm / n_eval, "HSM, calibrated": t_hsm / n_eval,
               "Sersic fit": (t_hsm + t_fit) / max(int(is_galaxy.sum()), 1)}
    regress_result: dict[str, Any] = {"n_common": int(common.sum()), "outlier_thresholds": OUTLIER,
                                      "hsm_calibration": {"slope": float(slope), "intercept": float(intercept), "n": n_cal},
                                      "methods": {}}
    defined = is_galaxy & np.all([np.isfinite(truth[p]) for p in REGRESS_PARAMS], axis=0)
    for m, e in est.items():
        own = [p for p in REGRESS_PARAMS if not (m.startswith("HSM") and p == "sersic_n")]
        failed = int((defined & ~np.all([np.isfinite(e[p]) for p in own], axis=0)).sum())
        sig = {p: gf_sigma[p][common] for p in REGRESS_PARAMS} if m == "galframe regress" else None
        scores = regress_scores(reg_task, {p: truth[p][common] for p in REGRESS_PARAMS}, {p: e[p][common] for p in REGRESS_PARAMS}, sig)
        if m.startswith("HSM"):
            scores = {k: v for k, v in scores.items() if not k.startswith("sersic_n")}
        regress_result["methods"][m] = {"metrics": scores, "failed": failed, "seconds_per_object": seconds[m]}
    scatter_png({p: truth[p][common] for p in REGRESS_PARAMS},
                {m: {p: e[p][common] for p in REGRESS_PARAMS} for m, e in est.items() if m != "HSM"},
                out / "regress_scatter.png", {"galframe regress": {p: gf_sigma[p][common] for p in REGRESS_PARAMS}})
    coverage_png({p: truth[p][common] for p in REGRESS_PARAMS}, {p: est["galframe regress"][p][common] for p in REGRESS_PARAMS},
                 {p: gf_sigma[p][common] for p in REGRESS_PARAMS}, out / "regress_coverage.png")
    return regress_result, po, t_hsm, t_fit


def _rl_iterations(d: _Data, res_task: Any, n_tune: int) -> dict[str, int]:
    """Richardson-Lucy iterations of each RL method: the best PSNR on validation objects."""
    bands, beta, scale = d.bands, d.beta, d.scale
    iters: dict[str, int] = {}
    val_cat, val = d.load("val", n_tune)
    v_sig = val_cat[[f"sky_sigma_{b}" for b in bands]].to_numpy(float)
    v_psf = [[moffat(float(val_cat[f"psf_fwhm_{b}"][i]), beta, scale, 25) for b in bands] for i in range(len(val_cat))]
    for method in ("rl", "wavelet+rl"):
        best = None
        for n_iter in RL_ITERS:
            out_v = np.stack([restore_classical(method, val["image"][i].numpy(), v_psf[i], v_sig[i], n_iter) for i in range(len(val_cat))])
            psnr = restore_scores(res_task, torch.as_tensor(out_v), val["clean"].float())["psnr"]
            print(f"  {method} {n_iter} iterations: validation PSNR {psnr:.2f}", flush=True)
            if best is None or psnr > best[1]:
                best = (n_iter, psnr)
        iters[method] = best[0]
    return iters


def _restore_bench(d: _Data, res_model: Any, res_name: str, res_task: Any, n_tune: int, out: Path) -> dict:
    """Restoration: wavelet denoising, Richardson-Lucy (and both) against galframe restore."""
    print("restoration ...", flush=True)
    n_eval, images, test = d.n_eval, d.images, d.test
    psfs = [[moffat(d.fwhms[i, b], d.beta, d.scale, 25) for b in range(len(d.bands))] for i in range(n_eval)]
    clean_t = test["clean"].float()
    restored: dict[str, np.ndarray] = {}
    rest_s: dict[str, float] = {}
    iters = _rl_iterations(d, res_task, n_tune)
    for method in ("wavelet", "rl", "wavelet+rl"):
        t0 = time.time()
        restored[method] = np.stack([restore_classical(method, images[i], psfs[i], d.sigmas[i], iters.get(method, 0)) for i in range(n_eval)])
        rest_s[method] = (time.time() - t0) / n_eval
    t0 = time.time()
    outs = galframe_outputs(res_model, test["image"])
    gf_flux = res_task.scaling.inverse(torch.cat([o["restored"] for o in outs[res_name]]).float())
    rest_s["galframe restore"] = (time.time() - t0) / n_eval
    restored["galframe restore"] = gf_flux.numpy()
    names = {"input": "observed input", "wavelet": "wavelet denoising", "rl": "Richardson-Lucy",
             "wavelet+rl": "wavelet + Richardson-Lucy", "galframe restore": "galframe restore"}
    restore_result: dict[str, Any] = {"aperture_radius": res_task.aperture_radius, "methods": {}}
    for key in ("input", "wavelet", "rl", "wavelet+rl", "galframe restore"):
        flux = test["image"].float() if key == "input" else torch.as_tensor(restored[key]).float()
        restore_result["methods"][names[key]] = {
            "metrics": restore_scores(res_task, flux, clean_t), "seconds_per_object": rest_s.get(key, 0.0),
            **({"n_iter": iters[key]} if key in iters else {}),
        }
    picks = [int(i) for i in np.linspace(0, n_eval - 1, 5).astype(int)]
    rows = [(int(test["id"][i]), [images[i], restored["wavelet"][i], restored["rl"][i], restored["wavelet+rl"][i],
                                  restored["galframe restore"][i], d.clean[i]]) for i in picks]
    examples_png(rows, ["input", "wavelet", f"RL ({iters['rl']})", f"wavelet+RL ({iters['wavelet+rl']})", "galframe", "truth"],
                 d.bands, out / "restore_examples.png")
    return restore_result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_root = Path(os.environ.get("GALFRAME_RUNS", "runs")) / "bench-classical" / time.strftime("%Y-%m-%d_%H-%M-%S")
    data_cfg = compose(list(args.overrides))["data"]
    d = _Data(data_cfg, args.n_eval)

    reg_model, reg_dir, reg_train_s = galframe_model("regress", args.regress_run, args, runs_root)
    res_model, res_dir, res_train_s = galframe_model("restore", args.restore_run, args, runs_root)
    for m in (reg_model, res_model):
        m.check_bands(d.bands, "benchmark data")
    reg_task = next(t for t in reg_model.tasks.values() if type(t).__name__ == "RegressTask")
    res_name, res_task = next((n, t) for n, t in res_model.tasks.items() if type(t).__name__ == "RestoreTask")
    missing = [p for p in REGRESS_PARAMS if p not in reg_task.params]
    if missing:
        raise SystemExit(f"{reg_dir}: its regress task does not predict {missing}.")

    regress_result, po, t_hsm, t_fit = _regress_bench(d, reg_task, reg_model, args.n_calib, out)
    restore_result = _restore_bench(d, res_model, res_name, res_task, args.n_tune, out)
    result = {
        "settings": {"n_eval": d.n_eval, "data_name": str(data_cfg.get("name") or "sim_desi"), "bands": d.bands,
                     "data_n": data_cfg.get("n"), "data_seed": data_cfg.get("seed"), "backbone": args.backbone,
                     "n_labeled": args.n_labeled, "regress_overrides": args.regress_override or [],
                     "restore_overrides": args.restore_override or [], "regress_epochs": args.regress_epochs, "restore_epochs": args.restore_epochs, "seed": args.seed, "overrides": args.overrides,
                     "regress_run": str(reg_dir), "restore_run": str(res_dir), "psf_beta": d.beta, "threads": args.threads,
                     "weights": next((o.split("=", 1)[1] for o in args.overrides if o.startswith("backbone.weights=")), "random init"),
                     "machine": args.machine, "eval_ids": [int(i) for i in d.test["id"]]},
        "regress": regress_result,
        "restore": restore_result,
        "timing": {"train_regress_s": reg_train_s, "train_restore_s": res_train_s, "hsm_s": t_hsm, "sersic_s": t_fit,
                   "total_s": time.time() - t_start},
    }
    (out / "classical.json").write_text(json.dumps(result, indent=2))
    (out / "classical.md").write_text(markdown(result))
    po.to_csv(out / "per_object.csv", index=False, float_format="%.5g")
    if args.headline:
        from galframe_bench.fewshot import write_headline

        for key, entry in headline_entries(result).items():
            write_headline(Path(args.headline), key, entry)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
