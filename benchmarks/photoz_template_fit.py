"""The classical photo-z baseline on data=sim_multimodal: the template fit (galframe.photoz) on the simulated
g, r, z, W1, W2 photometry, with bias, NMAD and outlier fraction (|dz| > 0.15), overall, per SED type and in
r-magnitude bins, for the band sets and template sets below.

    python benchmarks/photoz_template_fit.py                  # 6000 objects (data.n of the shipped config)
    python benchmarks/photoz_template_fit.py --n 20000 --seed 1

Writes ``benchmarks/results/photoz_template_fit.json``.  The simulation draws its galaxies from the same CWW
templates (and bulge + disk mixtures of them) the fit uses, with photometric noise only: this is the baseline's
best case; the learned photo-z (image only, catalog only, image + catalog, image + spectrum) is to be
compared with it on the same objects.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    ("grz+W1W2, interpolated templates", ("g", "r", "z", "W1", "W2"), 2),
    ("grz+W1W2, the 4 CWW templates", ("g", "r", "z", "W1", "W2"), 0),
    ("grz, interpolated templates", ("g", "r", "z"), 2),
]


def main() -> None:
    from omegaconf import OmegaConf

    from galframe import photoz
    from galframe.sim import multimodal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="objects (default: data.n of conf/data/sim_multimodal.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "photoz_template_fit.json"))
    args = parser.parse_args()
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "sim_multimodal.yaml"))
    cfg["seed"] = args.seed
    if args.n:
        cfg["n"] = args.n
    start = time.perf_counter()
    catalog = multimodal.simulate_catalog(cfg)
    sim_s = time.perf_counter() - start
    results = {"n": len(catalog), "seed": args.seed, "simulate_seconds": round(sim_s, 2), "outlier_threshold": photoz.OUTLIER,
               "error_floor": photoz.ERROR_FLOOR, "z_grid": list(photoz.Z_GRID), "machine": platform.processor() or platform.machine(),
               "runs": {}}
    for label, bands, interpolate in RUNS:
        start = time.perf_counter()
        fit = photoz.fit_catalog(catalog, bands=bands, interpolate=interpolate)
        seconds = time.perf_counter() - start
        z_true, z_phot = catalog["z"].to_numpy(), fit["photoz_z_map"].to_numpy()
        entry = {"fit_seconds": round(seconds, 2), "all": photoz.photoz_metrics(z_phot, z_true)}
        entry["coverage_68"] = float(np.mean((z_true >= fit["photoz_z_lo"]) & (z_true <= fit["photoz_z_hi"])))
        entry["by_type"] = {t: photoz.photoz_metrics(z_phot[catalog["class_name"] == t], z_true[catalog["class_name"] == t])
                            for t in multimodal.CLASSES}
        edges = [17.0, 19.0, 20.0, 21.0, 21.5]
        entry["by_mag_r"] = {f"{lo:g}-{hi:g}": photoz.photoz_metrics(z_phot[(catalog["mag_r"] >= lo) & (catalog["mag_r"] < hi)],
                                                                      z_true[(catalog["mag_r"] >= lo) & (catalog["mag_r"] < hi)])
                             for lo, hi in zip(edges[:-1], edges[1:])}
        results["runs"][label] = entry
        m = entry["all"]
        print(f"{label:36s} bias {m['bias']:+.4f}  NMAD {m['nmad']:.4f}  outliers {m['outlier_fraction']:.4f}  "
              f"68% coverage {entry['coverage_68']:.2f}  ({seconds:.1f} s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
