"""Difficulty calibration of data=sim_galaxy10: ResNet18 from scratch, labels vs macro AUC.

For each label budget, trains ``backbone=resnet18`` (random initialisation) on that many
majority-vote labels of the training split (``data.n_labeled``) and measures the macro one-vs-rest
AUC on the held-out test split, against held-out majority-vote labels (``test/classify/auroc``),
with the same code path as ``galframe train``.  The default benchmark set is calibrated so that
macro AUC 0.9 needs at least 2,000 labels.

    python benchmarks/calibrate_galaxy10.py                          # budgets 100 300 1000 2000 4000 8000
    python benchmarks/calibrate_galaxy10.py --budgets 500 2000 --tag quick data.sim.contrast_floor=0.04
    python benchmarks/calibrate_galaxy10.py --trainer gpu --seed 1 --tag seed1 data.num_workers=4   # on a GPU
    python benchmarks/calibrate_galaxy10.py merge benchmarks/results/calibrate_galaxy10 R0.json R1.json  # one curve

Training length: ``max(--min-epochs, ceil(--min-steps / steps per epoch))`` epochs (validation about
eight times per run; the best validation checkpoint is tested), so small budgets still get a few
hundred optimiser steps.

Writes ``benchmarks/results/calibrate_galaxy10[_<tag>].json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

from galframe_bench.fewshot import crossing  # noqa: E402 - labels at which a curve reaches a level


def compose(overrides: Sequence[str]) -> dict:
    """The composed train config, plain containers (galframe.build.compose_dict)."""
    from galframe.build import compose_dict

    return compose_dict("train", overrides)


def epochs_for(budget: int, batch: int, min_steps: int, min_epochs: int) -> int:
    per_epoch = max(1, math.ceil(budget / batch))
    return max(min_epochs, math.ceil(min_steps / per_epoch))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    runs = sorted(runs, key=lambda r: r["budget"])
    ax.plot([r["budget"] for r in runs], [r["auroc"] for r in runs], "o-", label="ResNet18 from scratch")
    ax.axhline(0.9, color="gray", ls="--", lw=1)
    ax.axvline(2000, color="gray", ls=":", lw=1)
    ax.set(xscale="log", xlabel="majority-vote labels", ylabel="macro AUC (held-out majority-vote labels)",
           title=f"sim_galaxy10 ({result['data']['n']:,} objects)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merge(files: Sequence[Path], out: Path) -> dict:
    """One curve from several seeds' result files: mean and standard deviation per budget."""
    import numpy as np

    parts = [json.loads(Path(f).read_text()) for f in files]
    by_budget: dict[int, list[float]] = {}
    for part in parts:
        for r in part["runs"]:
            by_budget.setdefault(int(r["budget"]), []).append(float(r["auroc"]))
    curve = [{"budget": b, "auroc_mean": float(np.mean(v)), "auroc_std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
              "n_seeds": len(v), "auroc": v} for b, v in sorted(by_budget.items())]
    result = {
        "what": parts[0]["what"],
        "device": parts[0]["device"],
        "data": {k: v for k, v in parts[0]["data"].items() if k != "path"},
        "seeds": [p.get("seed") for p in parts],
        "curve": curve,
        "labels_for_auc_0.9": crossing([c["budget"] for c in curve], [c["auroc_mean"] for c in curve]),
        "sources": [Path(f).name for f in files],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    b = [c["budget"] for c in curve]
    ax.errorbar(b, [c["auroc_mean"] for c in curve], yerr=[c["auroc_std"] or 0.0 for c in curve], fmt="o-", capsize=3,
                label="ResNet18 from scratch (mean, std over seeds)")
    for c in curve:
        ax.plot([c["budget"]] * len(c["auroc"]), c["auroc"], ".", color="gray", ms=4)
    ax.axhline(0.9, color="gray", ls="--", lw=1)
    ax.axvline(2000, color="gray", ls=":", lw=1)
    if result["labels_for_auc_0.9"]:
        ax.annotate(f"AUC 0.9 at ~{result['labels_for_auc_0.9']:,.0f} labels", (result["labels_for_auc_0.9"], 0.9),
                    xytext=(0.05, 0.9), textcoords="axes fraction", fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.set(xscale="log", xlabel="majority-vote labels", ylabel="macro AUC (held-out majority-vote labels)",
           title=f"sim_galaxy10 ({result['data']['n']:,} objects)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "merge":
        # python benchmarks/calibrate_galaxy10.py merge OUT_STEM seed0.json seed1.json ...
        result = merge([Path(f) for f in argv[2:]], Path(argv[1]))
        for c in result["curve"]:
            std = f" +- {c['auroc_std']:.4f}" if c["auroc_std"] is not None else ""
            print(f"labels {c['budget']:>6}: macro AUC {c['auroc_mean']:.4f}{std} ({c['n_seeds']} seeds)")
        print(f"labels for macro AUC 0.9: {result['labels_for_auc_0.9']}")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000, 2000, 4000, 8000])
    parser.add_argument("--seed", type=int, default=0, help="training seed and label draw (data.label_seed)")
    parser.add_argument("--min-steps", type=int, default=400)
    parser.add_argument("--min-epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=None, help="simulation processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every this many epochs (default: about 8 times per run)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--runs", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "galframe-calibrate-galaxy10")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("--trainer", default="cpu", help="trainer preset (cpu, gpu, ...)")
    parser.add_argument("--simulate-only", action="store_true", help="make (or find) the dataset and stop")
    parser.add_argument("overrides", nargs="*", help="extra config overrides (data.*, optimizer.*, ...)")
    args = parser.parse_args(argv)

    import torch

    from galframe.sim import cached_dataset
    from galframe.train import run

    if args.threads:
        torch.set_num_threads(args.threads)

    base = ["backbone=resnet18", "data=sim_galaxy10", "logger=none", f"trainer={args.trainer}", "trainer.progress_bar=false", f"seed={args.seed}", f"data.label_seed={args.seed}"]
    cfg0 = compose([*base, *args.overrides])
    start = time.perf_counter()
    root = cached_dataset(cfg0["data"], workers=args.workers)
    sim_s = time.perf_counter() - start
    print(f"dataset {root} ({sim_s:.0f} s)", flush=True)
    if args.simulate_only:
        return 0
    import pandas as pd

    cat = pd.read_parquet(root / "catalog.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    try:
        import torch.cuda

        accel = torch.cuda.get_device_name(0) if args.trainer != "cpu" and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - the device name is a label only
        accel = None
    result = {
        "what": "ResNet18 from scratch: majority-vote labels vs macro one-vs-rest AUC on held-out majority-vote labels",
        "device": (f"GPU {accel}, " if accel else "CPU, ") + f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
                  f"{platform.processor() or platform.machine()}",
        "seed": args.seed,
        "data": {"path": str(root), "n": int(len(cat)), "config": manifest.get("config"),
                 "class_counts": {c: int((cat["class"] == k).sum()) for k, c in enumerate(manifest["classes"])},
                 "vote_class_equals_true_class": float((cat["class"] == cat["true_class"]).mean())},
        "overrides": list(args.overrides),
        "simulation_seconds": round(sim_s, 1),
        "runs": [],
        "labels_for_auc_0.9": None,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "calibrate_galaxy10" + (f"_{args.tag}" if args.tag else "")

    runs = result["runs"]
    for budget in args.budgets:
        epochs = epochs_for(budget, int(cfg0["data"]["batch_size"]), args.min_steps, args.min_epochs)
        overrides = [*base, f"data.path={root}", f"data.n_labeled={budget}", f"trainer.max_epochs={epochs}",
                     f"trainer.check_val_every_n_epoch={args.val_every or max(1, epochs // 8)}", *args.overrides]
        cfg = compose(overrides)
        run_dir = args.runs / f"{args.tag or 'default'}-n{budget}"
        t0 = time.perf_counter()
        metrics = run(cfg, run_dir=run_dir)
        seconds = time.perf_counter() - t0
        row = {
            "budget": budget,
            "epochs": epochs,
            "auroc": metrics.get("test/classify/auroc"),
            "accuracy": metrics.get("test/classify/accuracy"),
            "balanced_accuracy": metrics.get("test/classify/balanced_accuracy"),
            "seconds": round(seconds, 1),
            "metrics": metrics,
        }
        runs.append(row)
        print(f"labels {budget:>6}: macro AUC {row['auroc']:.4f}  accuracy {row['accuracy']:.3f}  "
              f"({epochs} epochs, {seconds:.0f} s)", flush=True)
        # written after every budget, so a run cut short keeps what it measured
        result["labels_for_auc_0.9"] = crossing([r["budget"] for r in runs], [r["auroc"] for r in runs])
        (args.results / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float))
        plot(result, args.results / f"{stem}.png")

    print(f"labels for macro AUC 0.9: {result['labels_for_auc_0.9']}; wrote {args.results / stem}.json/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
