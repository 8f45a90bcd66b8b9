"""Memory of ``galframe predict`` against the number of objects: it should stay flat.

Writes tiny stamps (3 x 32 x 32, nanomaggies, a few NaN pixels) in the DESI SSL HDF5 layout, makes a
small model checkpoint (lvm_tiny at 32 px with classify + regress heads; its weights do not matter
for memory), then runs the real command once per size in a fresh process:

    galframe predict ckpt=<ckpt> data=hdf5 data.path=<stamps.h5> out=<catalog.parquet>

and reads the child's peak resident memory from ``wait4``.  Writes
``benchmarks/results/predict_memory.json`` (and prints a table).

    .venv/bin/python benchmarks/predict_memory.py                 # 2,000 and 20,000 stamps
    .venv/bin/python benchmarks/predict_memory.py --sizes 2000 20000 100000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["smooth", "featured_disk", "edge_on", "irregular", "merger", "star"]


def write_stamps(path: Path, n: int, size: int = 32, seed: int = 0, chunk: int = 2000) -> None:
    """n noisy stamps with a round galaxy each, written chunk by chunk (flat memory here too)."""
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    r2 = yy**2 + xx**2
    with h5py.File(path, "w") as h5:
        images = h5.create_dataset("images", shape=(n, 3, size, size), dtype="float32", chunks=(64, 3, size, size))
        images.attrs["bands"] = "grz"
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            radius = rng.uniform(1.0, 4.0, k)[:, None, None, None]
            amp = 10 ** rng.uniform(-1.5, 0.5, k)[:, None, None, None] * np.array([0.6, 1.0, 1.4])[None, :, None, None]
            stamps = amp * np.exp(-r2[None, None] / (2 * radius**2)) + rng.normal(0, [0.006, 0.011, 0.027], (k, size, size, 3)).transpose(0, 3, 1, 2)
            stamps[::97, 0, 3, 3] = np.nan  # some bad pixels, masked and counted
            images[start : start + k] = stamps.astype(np.float32)
        h5["ra"] = rng.uniform(0, 360, n)
        h5["dec"] = rng.uniform(-10, 30, n)
        h5["objid"] = np.arange(n, dtype=np.int64)


def make_checkpoint(path: Path, size: int = 32) -> None:
    import torch

    sys.path[:0] = [str(ROOT)]
    from galframe.model import GalaxyModel

    regress_params = ["sersic_n", "mag_r"]
    config = {
        "data_info": {"bands": ["g", "r", "z"], "image_size": size, "classes": CLASSES, "pixel_scale": 0.262,
                      "columns": [], "stats": {"column_mean": {"sersic_n": 2.0, "mag_r": 18.0}, "column_std": {"sersic_n": 1.0, "mag_r": 1.0}}},
        "backbone": {"plugin": "lvm", "img_size": size, "patch_size": 4, "embed_dim": 32, "depths": [2, 2, 2],
                     "num_heads": [2, 4, 8], "window_size": 8},
        "tasks": {"classify": {"plugin": "classify"}, "regress": {"plugin": "regress", "params": regress_params}},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3},
        "scheduler": {"name": "none"},
        "finetune": {"mode": "full"},
        "augment": {},
        "scaling": {"name": "asinh", "softening": {"g": 0.006, "r": 0.011, "z": 0.027}},
        "seed": 0,
    }
    model = GalaxyModel(config)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": config}}, path)


def run_predict(ckpt: Path, data: Path, out: Path, batch_size: int) -> dict:
    args = [sys.executable, "-m", "galframe.cli", "predict", f"ckpt={ckpt}", "data=hdf5", f"data.path={data}",
            "data.shard_size=1024", f"out={out}", f"batch_size={batch_size}", "progress=false", "device=cpu"]
    start = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed:\n{stderr[-3000:]}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024.0, "wall_s": round(wall, 1), "stdout": stdout.strip().splitlines()[-1]}


def baseline_rss() -> float:
    """Peak RSS (MiB) of a process that only imports what predict imports (torch, Lightning, galframe)."""
    code = "import galframe.predict, galframe.model, galframe.readers.hdf5, galframe_lvm, galframe_tasks.regress, pandas, pyarrow.parquet"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT))
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the import-only baseline failed")
    return usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict_memory.json"))
    args = parser.parse_args()
    import pandas as pd

    results = []
    imports = baseline_rss()
    print(f"imports only: peak RSS {imports:7.1f} MiB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "tiny32.ckpt"
        make_checkpoint(ckpt)
        for n in args.sizes:
            data = tmp / f"stamps_{n}.h5"
            write_stamps(data, n)
            out = tmp / f"catalog_{n}.parquet"
            r = run_predict(ckpt, data, out, args.batch)
            cat = pd.read_parquet(out)
            assert len(cat) == n, (len(cat), n)
            r.update(n=n, rows=len(cat), objects_per_s=round(n / r["wall_s"], 1), above_imports_mib=round(r["peak_rss_mib"] - imports, 1),
                     bad_pixel_objects=int((cat["n_bad_pixels"] > 0).sum()))
            results.append(r)
            print(f"n={n:>7}  peak RSS {r['peak_rss_mib']:7.1f} MiB  wall {r['wall_s']:6.1f} s  ({r['objects_per_s']} objects/s)", flush=True)
            data.unlink()
    report = {
        "benchmark": "galframe predict peak RSS vs number of objects (HDF5 reader, lvm_tiny 32 px, classify + regress)",
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "batch_size": args.batch,
        "imports_only_peak_rss_mib": round(imports, 1),
        "results": results,
        "rss_ratio_largest_to_smallest": round(results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"ratio of peak RSS, {results[-1]['n']} vs {results[0]['n']} objects: {report['rss_ratio_largest_to_smallest']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
