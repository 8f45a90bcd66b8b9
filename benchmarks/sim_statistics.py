"""Statistics check of the galaxy10 simulator against DESI Legacy Surveys reference values.

Compares the simulated magnitude, size, colour, seeing, depth, per-band noise and signal-to-noise
distributions with the reference values stated in ``REFERENCE`` (each with its source and a
tolerance), draws each comparison as a PNG, and writes ``stats.json``:

    python benchmarks/sim_statistics.py                      # 3,000 objects of data=sim_galaxy10
    python benchmarks/sim_statistics.py --n 1000 --data <dataset dir>
    python benchmarks/sim_statistics.py --grid docs/img/sim_galaxy10_grid.png   # also the class grid

Output: benchmarks/results/sim_galaxy10_stats/{stats.json, *.png}.  Exit status 1 if a check fails.
``compare(catalog, images)`` is what tests/test_sim_galaxy10.py runs on a small simulated set.

The reference values are survey-level numbers, not a fit to this simulator:

* seeing: DECaLS delivered PSF FWHM, medians about 1.3" (g), 1.2" (r), 1.1" (z), with a log-normal
  spread of about 0.17 (16-84% range about 1.0"-1.45" in r);
* depth: DECaLS DR9 median 5-sigma point-source depths g = 24.7, r = 23.9, z = 23.0
  (legacysurvey.org/decamls), scatter about 0.3 mag between locations;
* per-band sky noise: what those depths and that seeing imply per 0.262" pixel
  (sigma = F_5 / (5 sqrt(NEA)), NEA of a beta = 3.5 Moffat PSF);
* magnitudes: Galaxy Zoo DECaLS main sample to r = 17.77 (NSA / SDSS main-sample limit) with
  near-Euclidean counts (d log N / dm about 0.6), plus a faint extension to r = 20;
* sizes: half-light radius about 2" at r = 17 for main-sample galaxies, d log10(hlr) / dm about
  -0.2 (roughly constant surface brightness), 0.2 dex scatter (GZ DECaLS / NSA-like; approximate);
* colours at low redshift in DECam bands: smooth (red-sequence) galaxies g - r about 0.77,
  r - z about 0.40; spirals g - r about 0.55, r - z about 0.31 (approximate);
* signal-to-noise: the background-limited S/N that the stated depth implies for each galaxy's
  magnitude and size (a point source of the depth magnitude has S/N 5; an extended galaxy loses
  sqrt(NEA_psf / (NEA_psf + NEA_galaxy))).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "sim_galaxy10_stats"
BANDS = ("g", "r", "z")
SMOOTH = ("round_smooth", "in_between_round_smooth", "cigar_shaped_smooth")
SPIRAL = ("barred_spiral", "unbarred_tight_spiral", "unbarred_loose_spiral")
PIXEL_SCALE = 0.262

#: stated reference values: (value, tolerance, source)
REFERENCE: dict[str, tuple[float, float, str]] = {
    "psf_fwhm_g_median": (1.30, 0.08, "DECaLS delivered seeing, g (arcsec)"),
    "psf_fwhm_r_median": (1.20, 0.08, "DECaLS delivered seeing, r (arcsec)"),
    "psf_fwhm_z_median": (1.10, 0.08, "DECaLS delivered seeing, z (arcsec)"),
    "psf_fwhm_log_spread": (0.17, 0.05, "DECaLS seeing: sigma of ln FWHM (16-84% half-width)"),
    "depth_g_median": (24.7, 0.1, "DECaLS DR9 median 5-sigma point-source depth, g (AB)"),
    "depth_r_median": (23.9, 0.1, "DECaLS DR9 median 5-sigma point-source depth, r (AB)"),
    "depth_z_median": (23.0, 0.1, "DECaLS DR9 median 5-sigma point-source depth, z (AB)"),
    "depth_spread": (0.3, 0.1, "DECaLS depth scatter between locations (mag, 16-84% half-width)"),
    "mag_r_main_max": (17.77, 0.05, "GZ DECaLS main sample limit (NSA r < 17.77): faintest main-sample object"),
    "mag_r_faint_max": (20.0, 0.05, "faint extension limit (r ~ 20)"),
    "mag_r_count_slope": (0.6, 0.12, "main-sample counts d log10 N / dm (near-Euclidean)"),
    "hlr_at_r17": (2.0, 0.45, "median half-light radius (arcsec) of 16.5 < r < 17.5 galaxies"),
    "hlr_mag_slope": (-0.2, 0.07, "d log10(hlr) / d r over 16 < r < 19.5 (size-magnitude relation)"),
    "hlr_scatter": (0.2, 0.07, "scatter of log10 hlr about the relation (dex)"),
    "gr_smooth": (0.77, 0.06, "g - r of smooth (red-sequence) galaxies, low z, DECam"),
    "gr_spiral": (0.55, 0.08, "g - r of spirals, low z, DECam"),
    "rz_smooth": (0.40, 0.05, "r - z of smooth galaxies, low z, DECam"),
    "rz_spiral": (0.31, 0.07, "r - z of spirals, low z, DECam"),
    "snr_ratio_g": (1.0, 0.3, "median S/N / S/N implied by depth, magnitude and size, g"),
    "snr_ratio_r": (1.0, 0.3, "median S/N / S/N implied by depth, magnitude and size, r"),
    "snr_ratio_z": (1.0, 0.3, "median S/N / S/N implied by depth, magnitude and size, z"),
    "noise_ratio_g": (1.0, 0.06, "empty-sky pixel std / catalogued sky sigma, g"),
    "noise_ratio_r": (1.0, 0.06, "empty-sky pixel std / catalogued sky sigma, r"),
    "noise_ratio_z": (1.0, 0.06, "empty-sky pixel std / catalogued sky sigma, z"),
}


def _moffat_nea(fwhm: float, beta: float = 3.5) -> float:
    """NEA (pixels) of a Moffat PSF on the 0.262" grid (via the simulator's own helper)."""
    import galsim

    from galframe.sim.galaxy10 import psf_nea

    return psf_nea(galsim.Moffat(beta=beta, fwhm=fwhm), PIXEL_SCALE)


def sky_sigma_reference() -> dict[str, float]:
    """Per-band sky noise (nanomaggies / pixel) that the reference depths and seeing imply."""
    from galframe.sim.galaxy10 import sky_sigma_psf

    out = {}
    for b in BANDS:
        depth, fwhm = REFERENCE[f"depth_{b}_median"][0], REFERENCE[f"psf_fwhm_{b}_median"][0]
        out[b] = sky_sigma_psf(depth, _moffat_nea(fwhm))
    return out


def _spread(x: np.ndarray) -> float:
    lo, hi = np.nanpercentile(x, [16, 84])
    return float((hi - lo) / 2.0)


def expected_snr(cat: Any, band: str) -> np.ndarray:
    """The background-limited S/N each galaxy's magnitude, size and the reference depth imply."""
    depth = REFERENCE[f"depth_{band}_median"][0]
    fwhm = REFERENCE[f"psf_fwhm_{band}_median"][0]
    nea_psf = _moffat_nea(fwhm)
    hlr_px = np.asarray(cat["half_light_radius"], dtype=float) / PIXEL_SCALE
    # an exponential of scale length rs has NEA = 8 pi rs^2; light-weighted areas add under convolution
    nea_gal = 8.0 * math.pi * (hlr_px / 1.678) ** 2
    point = 5.0 * 10.0 ** (0.4 * (depth - np.asarray(cat[f"mag_{band}"], dtype=float)))
    return point * np.sqrt(nea_psf / (nea_psf + nea_gal))


def measure(cat: Any, images: Optional[np.ndarray] = None) -> dict[str, float]:
    """The simulated values of every quantity in ``REFERENCE`` (noise ratios only with ``images``)."""
    out: dict[str, float] = {}
    for b in BANDS:
        out[f"psf_fwhm_{b}_median"] = float(np.median(cat[f"psf_fwhm_{b}"]))
        out[f"depth_{b}_median"] = float(np.median(cat[f"depth_{b}"]))
    out["psf_fwhm_log_spread"] = float(np.mean([_spread(np.log(cat[f"psf_fwhm_{b}"])) for b in BANDS]))
    out["depth_spread"] = float(np.mean([_spread(cat[f"depth_{b}"] - np.median(cat[f"depth_{b}"])) for b in BANDS]))
    mag = np.asarray(cat["mag_r"], dtype=float)
    main = mag <= 17.77 + 1e-6
    out["mag_r_main_max"] = float(mag[main].max()) if main.any() else math.nan
    out["mag_r_faint_max"] = float(mag.max())
    # maximum-likelihood slope of counts 10**(a m) on the main sample's range (bisection on the score)
    m = mag[main]
    lo, hi = float(m.min()), 17.77
    target = float(np.mean(m - lo))

    def mean_offset(a: float) -> float:
        k = a * math.log(10.0)
        span = hi - lo
        return span / (1.0 - math.exp(-k * span)) - 1.0 / k if abs(k) > 1e-9 else span / 2.0

    a_lo, a_hi = -3.0, 3.0
    for _ in range(80):
        mid = 0.5 * (a_lo + a_hi)
        if mean_offset(mid) < target:
            a_lo = mid
        else:
            a_hi = mid
    out["mag_r_count_slope"] = 0.5 * (a_lo + a_hi)
    gal = np.isfinite(cat["half_light_radius"]) & (cat["half_light_radius"] > 0) & (cat["class_name"] != "merging")
    gal = np.asarray(gal)
    logh = np.log10(np.asarray(cat["half_light_radius"], dtype=float)[gal])
    mg = mag[gal]
    band17 = (mg > 16.5) & (mg < 17.5)
    out["hlr_at_r17"] = float(10 ** np.median(logh[band17])) if band17.any() else math.nan
    # galaxies brighter than r ~ 16 are capped by the 16.8" stamp (sim.size.max): fit below that
    fit = (mg > 16.0) & (mg < 19.5)
    slope, intercept = np.polyfit(mg[fit], logh[fit], 1)
    out["hlr_mag_slope"] = float(slope)
    out["hlr_scatter"] = float(np.std(logh[fit] - (slope * mg[fit] + intercept)))
    truth = np.asarray(cat["true_class_name"]).astype(str)
    smooth, spiral = np.isin(truth, SMOOTH), np.isin(truth, SPIRAL)
    gr = np.asarray(cat["mag_g"] - cat["mag_r"], dtype=float)
    rz = np.asarray(cat["mag_r"] - cat["mag_z"], dtype=float)
    out["gr_smooth"], out["gr_spiral"] = float(np.median(gr[smooth])), float(np.median(gr[spiral]))
    out["rz_smooth"], out["rz_spiral"] = float(np.median(rz[smooth])), float(np.median(rz[spiral]))
    single = np.asarray(cat["has_companion"] == 0)
    for b in BANDS:
        if f"snr_{b}" in cat:
            ratio = np.asarray(cat[f"snr_{b}"], dtype=float)[single] / expected_snr(cat[single], b)
            out[f"snr_ratio_{b}"] = float(np.median(ratio))
    if images is not None:
        alone = single & np.asarray(cat.get("has_neighbour", 0) == 0) & np.asarray(cat.get("has_star", 0) == 0)
        small = np.asarray(cat["half_light_radius"] < 1.5) & alone
        for k, b in enumerate(BANDS):
            corners = np.concatenate([images[small, k, :8, :8].reshape(small.sum(), -1), images[small, k, -8:, -8:].reshape(small.sum(), -1)], 1)
            out[f"noise_ratio_{b}"] = float(np.median(corners.std(axis=1) / np.asarray(cat.loc[small, f"sky_sigma_{b}"])))
    return out


def compare(cat: Any, images: Optional[np.ndarray] = None, reference: Mapping[str, tuple] = REFERENCE) -> list[dict[str, Any]]:
    """One row per reference quantity: name, simulated value, reference, tolerance, ok, source."""
    sim = measure(cat, images)
    reference = dict(reference)
    for b, sigma in sky_sigma_reference().items():
        # the noise the reference depth and seeing imply (per 0.262" pixel), to 15%
        sim[f"sky_sigma_{b}_median"] = float(np.median(cat[f"sky_sigma_{b}"]))
        reference[f"sky_sigma_{b}_median"] = (sigma, 0.15 * sigma, f"sky noise implied by the reference depth and seeing, {b} (nanomaggies / pixel)")
    rows = []
    for name, (ref, tol, source) in reference.items():
        if name not in sim:
            continue
        value = sim[name]
        rows.append({"name": name, "value": value, "reference": ref, "tolerance": tol,
                     "ok": bool(math.isfinite(value) and abs(value - ref) <= tol), "source": source})
    return rows


# ---------------------------------------------------------------------------------------------
def plots(cat: Any, out: Path, images: Optional[np.ndarray] = None) -> list[Path]:
    """One PNG per compared quantity family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    colours = {"g": "tab:green", "r": "tab:red", "z": "tab:purple"}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for b in BANDS:
        axes[0].hist(cat[f"psf_fwhm_{b}"], bins=40, histtype="step", color=colours[b], label=f"{b} sim")
        axes[0].axvline(REFERENCE[f"psf_fwhm_{b}_median"][0], color=colours[b], ls="--")
        axes[1].hist(cat[f"depth_{b}"], bins=40, histtype="step", color=colours[b], label=f"{b} sim")
        axes[1].axvline(REFERENCE[f"depth_{b}_median"][0], color=colours[b], ls="--")
    axes[0].set(xlabel="PSF FWHM [arcsec]", ylabel="objects", title="seeing (dashed: DECaLS medians)")
    axes[1].set(xlabel="5-sigma point-source depth [AB]", title="depth (dashed: DECaLS DR9 medians)")
    axes[0].legend(fontsize=8)
    save(fig, "seeing_depth.png")

    ref_sigma = sky_sigma_reference()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for b in BANDS:
        ax.hist(np.log10(cat[f"sky_sigma_{b}"]), bins=40, histtype="step", color=colours[b], label=b)
        ax.axvline(math.log10(ref_sigma[b]), color=colours[b], ls="--")
    ax.set(xlabel="log10 sky sigma [nanomaggies / pixel]", ylabel="objects", title="per-band noise (dashed: implied by reference depth + seeing)")
    ax.legend(fontsize=8)
    save(fig, "noise.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    mag = np.asarray(cat["mag_r"], dtype=float)
    bins = np.arange(14.5, 20.01, 0.25)
    axes[0].hist(mag, bins=bins, histtype="step", color="k", label="sim")
    main = mag <= 17.77
    scale = main.sum() / np.sum(10 ** (0.6 * 0.5 * (bins[1:] + bins[:-1]))[(bins[1:] <= 17.8)])
    centres = 0.5 * (bins[1:] + bins[:-1])
    axes[0].plot(centres[centres < 17.77], scale * 10 ** (0.6 * centres[centres < 17.77]), "b--", label="slope 0.6 (reference)")
    axes[0].axvline(17.77, color="gray", ls=":")
    axes[0].set(xlabel="r [AB]", ylabel="objects / 0.25 mag", title="magnitudes: main sample + faint extension")
    axes[0].legend(fontsize=8)
    hlr = np.asarray(cat["half_light_radius"], dtype=float)
    axes[1].scatter(mag, hlr, s=3, alpha=0.4, c="k")
    xs = np.linspace(14.5, 20, 20)
    axes[1].plot(xs, REFERENCE["hlr_at_r17"][0] * 10 ** (REFERENCE["hlr_mag_slope"][0] * (xs - 17)), "b--", label="reference relation")
    axes[1].set(yscale="log", xlabel="r [AB]", ylabel="half-light radius [arcsec]", title="size-magnitude")
    axes[1].legend(fontsize=8)
    save(fig, "magnitude_size.png")

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    truth = np.asarray(cat["true_class_name"]).astype(str)
    for group, colour, label in ((SMOOTH, "tab:red", "smooth"), (SPIRAL, "tab:blue", "spiral"),
                                 (("edge_on_without_bulge", "edge_on_with_bulge"), "tab:orange", "edge-on"),
                                 (("disturbed", "merging"), "tab:green", "disturbed / merging")):
        sel = np.isin(truth, group)
        ax.scatter(cat["mag_g"][sel] - cat["mag_r"][sel], cat["mag_r"][sel] - cat["mag_z"][sel], s=4, alpha=0.5, c=colour, label=label)
    ax.plot([REFERENCE["gr_smooth"][0]], [REFERENCE["rz_smooth"][0]], "k*", ms=14, label="reference smooth")
    ax.plot([REFERENCE["gr_spiral"][0]], [REFERENCE["rz_spiral"][0]], "kP", ms=12, label="reference spiral")
    ax.set(xlabel="g - r", ylabel="r - z", title="colours by type")
    ax.legend(fontsize=7)
    save(fig, "colours.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    single = np.asarray(cat["has_companion"] == 0)
    for b in BANDS:
        if f"snr_{b}" not in cat:
            continue
        exp = expected_snr(cat[single], b)
        axes[0].scatter(exp, np.asarray(cat[f"snr_{b}"])[single], s=3, alpha=0.4, color=colours[b], label=b)
        axes[1].hist(np.log10(np.asarray(cat[f"snr_{b}"])[single]), bins=40, histtype="step", color=colours[b], label=f"{b} sim")
        axes[1].hist(np.log10(exp), bins=40, histtype="step", ls="--", color=colours[b], label=f"{b} reference")
    lim = [10, 1e5]
    axes[0].plot(lim, lim, "k:")
    axes[0].set(xscale="log", yscale="log", xlabel="S/N implied by depth, magnitude, size", ylabel="simulated S/N", title="signal-to-noise")
    axes[1].set(xlabel="log10 S/N", ylabel="objects", title="S/N distributions")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=6)
    save(fig, "snr.png")
    return files


SHORT = {"disturbed": "disturbed", "merging": "merging", "round_smooth": "round", "in_between_round_smooth": "in-between",
         "cigar_shaped_smooth": "cigar", "barred_spiral": "barred", "unbarred_tight_spiral": "tight spiral",
         "unbarred_loose_spiral": "loose spiral", "edge_on_without_bulge": "edge-on no bulge", "edge_on_with_bulge": "edge-on + bulge"}


def class_grid(path: Path, n_per_class: int = 5, seed: int = 7, bright: float = 17.0) -> Path:
    """A per-class image grid (Lupton RGB): one row per Galaxy10 class (majority vote), ``n_per_class``
    galaxies (about half with r < ``bright``, the rest from the whole sample), each as an observed /
    noise-free pair, titled with r, the vote agreement and the true class.  Objects are drawn with
    the default data=sim_galaxy10 settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galframe.report import rgb
    from galframe.sim import galaxy10, resolve_config

    cfg = resolve_config({**compose_data([])[0], "seed": seed})
    bands = cfg["bands"]
    want_bright = (n_per_class + 1) // 2
    picks: dict[int, list] = {k: [] for k in range(10)}
    i = 0
    while any(len(v) < n_per_class for v in picks.values()) and i < 20000:
        image, clean, row = galaxy10.simulate_object(cfg, i)
        i += 1
        have = picks[int(row["class"])]
        if len(have) >= n_per_class:
            continue
        n_bright = sum(1 for _, _, r in have if r["mag_r"] < bright)
        if row["mag_r"] >= bright and n_bright < want_bright and len(have) >= n_per_class - want_bright:
            continue
        have.append((image, clean, row))
    fig, axes = plt.subplots(10, 2 * n_per_class, figsize=(1.25 * 2 * n_per_class, 1.45 * 10))
    for k in range(10):
        for j in range(n_per_class):
            a_obs, a_clean = axes[k, 2 * j], axes[k, 2 * j + 1]
            for a in (a_obs, a_clean):
                a.set_xticks([])
                a.set_yticks([])
            if j >= len(picks[k]):
                continue
            image, clean, row = sorted(picks[k], key=lambda t: t[2]["mag_r"])[j]
            a_obs.imshow(rgb(image, bands), origin="lower")
            a_clean.imshow(rgb(clean, bands), origin="lower")
            a_obs.set_title(f"r {row['mag_r']:.1f}, votes {row['label_agreement']:.2f}", fontsize=6)
            a_clean.set_title(f"true: {SHORT[row['true_class_name']]}", fontsize=6)
        axes[k, 0].set_ylabel(f"{k} {SHORT[galaxy10.CLASSES[k]]}", fontsize=8)
    fig.suptitle("sim_galaxy10 by majority-vote class: observed | noise-free pairs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def compose_data(overrides: Sequence[str]) -> tuple[dict, Any]:
    from omegaconf import OmegaConf

    from galframe.build import compose

    cfg = compose("train", ["data=sim_galaxy10", *overrides], fresh=True)
    return OmegaConf.to_container(cfg.data, resolve=True), cfg  # type: ignore[return-value]


def load(root: Path, with_images: bool = True) -> tuple[Any, Optional[np.ndarray]]:
    import h5py
    import pandas as pd

    cat = pd.read_parquet(root / "catalog.parquet")
    if not with_images:
        return cat, None
    manifest = json.loads((root / "manifest.json").read_text())
    images = []
    for shard in manifest["shards"]:
        with h5py.File(root / shard["file"], "r") as h5:
            images.append(h5["images"][:])
    return cat, np.concatenate(images)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="objects to simulate (ignored with --data)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None, help="an existing galaxy10 dataset directory")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--grid", type=Path, default=None, help="also write the per-class image grid here")
    parser.add_argument("overrides", nargs="*", help="data config overrides, e.g. data.sim.depth_scatter=0.2")
    args = parser.parse_args(argv)

    if args.data is None:
        from galframe.sim import cached_dataset

        data, _ = compose_data([f"data.n={args.n}", f"data.seed={args.seed}", *args.overrides])
        root = cached_dataset(data, workers=args.workers)
    else:
        root = args.data
    cat, images = load(root)
    rows = compare(cat, images)
    files = plots(cat, args.out, images)
    if args.grid is not None:
        files.append(class_grid(args.grid))
    ok = all(r["ok"] for r in rows)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"dataset": str(root), "n": int(len(cat)), "ok": ok, "checks": rows,
              "sky_sigma_reference": sky_sigma_reference(), "plots": [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files]}
    (args.out / "stats.json").write_text(json.dumps(result, indent=2))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']:<{width}}  sim {r['value']:9.4g}  ref {r['reference']:9.4g} +- {r['tolerance']:<6g} {r['source']}")
    print(f"{'all checks pass' if ok else 'SOME CHECKS FAIL'}; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
