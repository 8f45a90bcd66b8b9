"""Throughput: objects per second through ``galframe predict`` per backbone, against the bare backbone.

For each backbone a classify model (weights as initialised: speed does not depend on training) is saved
as a checkpoint and run through the real ``galframe predict`` path over a simulated dataset (reader
``dataset``: reading shards, scaling, backbone, task heads, catalog writing).  The same stamps, already
in memory as batches, then go through the bare backbone forward pass alone.  The ratio is the
framework's overhead.  Each measurement runs in its own process, so the peak memory (resident set;
and the GPU's peak allocation when there is one) belongs to that measurement alone.

    python -m galframe_bench.throughput --backbones resnet18 lvm_tiny --n 512 --out /tmp/tp
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


def _peak_rss_mib() -> float:
    """This process's peak resident set.  VmHWM belongs to the address space exec made, whereas
    ru_maxrss carries over the parent's peak from fork (a big parent would mask every measurement)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_ckpt(backbone: str, root: Path, path: Path) -> None:
    import pytorch_lightning as pl
    import torch

    from galframe.build import build, compose

    torch.manual_seed(0)
    model, _ = build(compose("train", [f"data.path={root}", f"backbone={backbone}", "backbone.weights=null", "task=classify",
                                       "logger=none"]), progress=False)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": pl.__version__,
                "epoch": 0, "global_step": 0}, path)


def _one(kind: str, backbone: str, root: Path, ckpt: Path, batch: int, device: str) -> dict:
    """One measurement in this process: kind 'predict' (the framework) or 'bare' (backbone forward only)."""
    import torch

    from galframe.predict import pick_device

    device = pick_device(device)
    if kind == "predict":
        from galframe.predict import run as predict_run

        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"ckpt": str(ckpt), "out": str(Path(tmp) / "catalog.parquet"), "batch_size": batch, "device": device,
                   "strict": True, "overwrite": True, "progress": False, "columns": "none", "rejects": None, "keep_parts": False,
                   "data": {"reader": "dataset", "path": str(root)}}
            start = time.perf_counter()
            summary = predict_run(_reader_cfg(cfg))
            seconds = time.perf_counter() - start
        n = int(summary["rows"])
    else:
        from torch.utils.data import DataLoader

        from galframe.data.datamodule import GalaxyDataModule, collate
        from galframe.checkpoints import load_model
        from galframe_bench.fewshot import compose

        model, _ = load_model(str(ckpt), device)
        # every object of the dataset, in one "split", as the dataset reader delivers them to predict
        dm = GalaxyDataModule(compose([f"data.path={root}", "logger=none", "data.split={train:1.0,val:0.0,test:0.0}"])["data"],
                              requires=["label"])
        ds = dm.dataset("train")
        batches = [b["image"] for b in DataLoader(ds, batch_size=batch, shuffle=False, collate_fn=collate)]
        n = sum(len(b) for b in batches)
        with torch.no_grad():
            model.backbone(model.scaling(batches[0].to(device)))  # warm-up (not timed)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for x in batches:
                model.backbone(model.scaling(x.to(device)))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    row = {"kind": kind, "backbone": backbone, "objects": n, "seconds": seconds, "objects_per_s": n / seconds,
           "peak_rss_mib": _peak_rss_mib(), "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu"] = torch.cuda.get_device_name(0)
    return row


def _reader_cfg(cfg: dict) -> dict:
    """The predict config for the dataset reader, composed as ``galframe predict data=dataset`` does."""
    from galframe.build import compose_dict

    result = compose_dict("predict", ["data=dataset", f"data.path={cfg['data']['path']}", f"ckpt={cfg['ckpt']}", f"out={cfg['out']}"])
    result.update({k: v for k, v in cfg.items() if k != "data"})
    return result


def run(p: Mapping[str, Any], out: Path, device: str = "auto") -> dict:
    """Every backbone's predict and bare rates (each measurement in a fresh process, best of ``repeats``)."""
    from galframe.sim import cached_dataset
    from galframe_bench.fewshot import compose

    out.mkdir(parents=True, exist_ok=True)
    root = cached_dataset(compose(["data=sim_desi", f"data.n={int(p['n'])}", "logger=none"])["data"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in p["backbones"]:
            ckpt = Path(tmp) / f"{backbone}.ckpt"
            _model_ckpt(backbone, root, ckpt)
            for kind in ("predict", "bare"):
                best = None
                for _ in range(int(p.get("repeats", 2))):
                    cmd = [sys.executable, "-m", "galframe_bench.throughput", "--one", kind, "--backbone", backbone, "--root", str(root),
                           "--ckpt", str(ckpt), "--batch", str(int(p["batch"])), "--device", device]
                    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                    if best is None or row["objects_per_s"] > best["objects_per_s"]:
                        best = row
                rows.append(best)
                print(f"  {backbone:<10} {kind:<8} {best['objects_per_s']:8.1f} objects/s  peak RSS {best['peak_rss_mib']:.0f} MiB", flush=True)
    table = {}
    for r in rows:
        table.setdefault(r["backbone"], {})[r["kind"]] = r
    result = {"n": int(p["n"]), "batch": int(p["batch"]), "dataset": str(root), "rows": rows,
              "overhead": {b: 1.0 - t["predict"]["objects_per_s"] / t["bare"]["objects_per_s"] for b, t in table.items()}}
    (out / "throughput.json").write_text(json.dumps(result, indent=2))
    dev = rows[0].get("gpu") or f"CPU ({os.cpu_count()} cores, {rows[0]['threads']} torch threads)"
    lines = [f"`galframe predict` over {result['n']} stamps (64 px, g r z; batch {result['batch']}) on {dev}; best of "
             f"{int(p.get('repeats', 2))} runs, each in a fresh process.", "",
             "| backbone | predict (objects/s) | bare backbone (objects/s) | framework share of the time | predict peak RSS (MiB) |"
             + (" predict peak GPU (MiB) |" if rows[0].get("gpu") else ""),
             "|---|---|---|---|---|" + ("---|" if rows[0].get("gpu") else "")]
    for b, t in table.items():
        line = (f"| {b} | {t['predict']['objects_per_s']:.0f} | {t['bare']['objects_per_s']:.0f} | {100 * result['overhead'][b]:.0f}% | "
                f"{t['predict']['peak_rss_mib']:.0f} |")
        if rows[0].get("gpu"):
            line += f" {t['predict'].get('peak_gpu_mib', 0):.0f} |"
        lines.append(line)
    (out / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.bar(x - 0.2, [table[b]["predict"]["objects_per_s"] for b in names], 0.4, label="galframe predict")
    ax.bar(x + 0.2, [table[b]["bare"]["objects_per_s"] for b in names], 0.4, label="bare backbone forward")
    ax.set(xticks=x, xticklabels=names, ylabel="objects / s", yscale="log", title=f"throughput on {dev}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "lvm_tiny"])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "throughput")
    # one measurement (used by run(): a fresh process per measurement)
    parser.add_argument("--one", choices=["predict", "bare"], default=None)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--ckpt", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, args.backbone, args.root, args.ckpt, args.batch, args.device)))
        return 0
    run({"backbones": args.backbones, "n": args.n, "batch": args.batch, "repeats": args.repeats}, args.out, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
