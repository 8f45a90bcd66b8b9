"""Throughput: ``galframe predict`` and ``galframe train`` per backbone, each against a bare loop over the
same stamps and model; where predict's time goes; memory against N; the cost of a survey.

Protocol (fixed before the numbers):

* **predict**: a classify model per backbone (weights as initialised: speed does not depend on training)
  saved as a checkpoint and run through the real ``galframe predict`` path over a simulated dataset
  (reader ``dataset``: reading shards, conforming and masking, scaling, backbone, heads, catalog rows,
  Parquet parts, the merge).  Its rate is objects / the predictor's run time; the process's start-up
  (interpreter, imports, compose, model load, reader) is reported separately as ``startup_s``.
* **bare predict**: the same checkpoint loaded in another fresh process, the same stamps read into memory
  as batches beforehand (not timed), then ``backbone(scaling(x))`` under ``torch.inference_mode``, one
  untimed warm-up batch.  The figure is the ratio predict / bare.
* **train**: ``galframe train`` (classify, ``data.batch_size=batch``, no validation) timed by a callback from
  the end of step ``skip`` to the end of the last step; **bare train**: the model and data loader that
  galframe builds for the same config, in a plain PyTorch loop (the model's augmentation, forward with
  scaling, the task losses, backward, the config's gradient clipping and optimiser over the model's parameter
  groups), timed the same way.  Both run on the dataset of the largest N, so the timed steps lie inside the
  first epoch (an epoch's end, with its checkpoint, comes once per epoch and is not what steps/s measures);
  the data module holds the split's images in memory in both (``data.cache_mib``).  The figure is the ratio
  of steps/s.
* every measurement in its own process (peak RSS is that measurement's), best of ``repeats``; within every
  repeat predict and bare (train and bare train) of one backbone and N run one after the other, so a change in
  the machine's load falls on both sides of a ratio.
* memory: predict's peak RSS at ``memory_ns`` (2,000 and 20,000) objects.
* processes: the same predict with ``trainer=ddp trainer.devices=P`` (each rank 1/P of the cores) against
  one process, for the survey cost estimate (:func:`survey_cost`).

    python -m galframe_bench.throughput --backbones resnet18 lvm_tiny --ns 512 8192 --out /tmp/tp
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

SURVEY = 76_000_000  # stamps: the DESI Legacy Surveys DR10 galaxies the reference work's survey estimate uses


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


def _process_started_at() -> float:
    """Wall-clock time this process started (Linux: /proc; elsewhere the time of this call)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def _train_overrides(backbone: str, root: Path, batch: int) -> list[str]:
    return [f"data.path={root}", f"backbone={backbone}", "backbone.weights=null", "task=classify", "logger=none",
            f"data.batch_size={batch}"]


def _model_ckpt(backbone: str, root: Path, path: Path) -> None:
    import pytorch_lightning as pl
    import torch

    from galframe.build import build, compose

    torch.manual_seed(0)
    model, dm = build(compose("train", _train_overrides(backbone, root, 64)), progress=False)
    # a trained model carries its trust reference set (galframe/trust.py): fill it to its full capacity
    # from the stamps' embeddings, so predict pays the out-of-distribution columns' cost as it would
    dm.setup("fit")
    embeddings, model = [], model.eval()
    with torch.inference_mode():
        for batch in dm.train_dataloader():
            embeddings.append(model.forward_features(batch["image"])[1].embedding)
            if sum(len(e) for e in embeddings) >= model.trust.capacity:
                break
    model.trust.fit(torch.cat(embeddings))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": pl.__version__,
                "epoch": 0, "global_step": 0}, path)


def _predict_cfg(root: Path, ckpt: Path, out: Path, batch: int, device: str, extra: Sequence[str] = ()) -> dict:
    """The predict config ``galframe predict data=dataset data.path=<root> ckpt=<ckpt> out=<out>`` composes."""
    from galframe.build import compose_dict

    cfg = compose_dict("predict", ["data=dataset", f"data.path={root}", f"ckpt={ckpt}", f"out={out}", *extra])
    cfg.update({"batch_size": batch, "device": device, "strict": True, "overwrite": True, "progress": False, "columns": "none",
                "keep_parts": False})
    return cfg


def _predict(root: Path, ckpt: Path, batch: int, device: str) -> dict:
    from galframe.predict import run as predict_run

    with tempfile.TemporaryDirectory() as tmp:
        summary = predict_run(_predict_cfg(root, ckpt, Path(tmp) / "catalog.parquet", batch, device))
    n = int(summary["rows"])
    stages = dict(summary["stage_seconds"])
    startup = summary["started_at"] - _process_started_at()
    stages["start-up"] = max(startup - stages.get("load model", 0.0) - stages.get("reader", 0.0), 0.0)
    return {"objects": n, "seconds": float(summary["seconds"]), "startup_s": startup, "stages": stages,
            "stages_read_ahead": dict(summary.get("stage_seconds_read_ahead") or {})}


def _bare(root: Path, ckpt: Path, batch: int, device: str) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from galframe.build import compose_dict
    from galframe.checkpoints import load_model
    from galframe.data.datamodule import GalaxyDataModule, collate

    model, _ = load_model(str(ckpt), device)
    # every object of the dataset, in one "split", as the dataset reader delivers them to predict
    data = compose_dict("train", [f"data.path={root}", "logger=none", "data.split={train:1.0,val:0.0,test:0.0}"])["data"]
    ds = GalaxyDataModule(data, requires=["label"]).dataset("train")
    batches = [b["image"] for b in DataLoader(ds, batch_size=batch, shuffle=False, collate_fn=collate)]
    n = sum(len(b) for b in batches)
    split: dict[str, float] = {}
    with torch.inference_mode():
        model.backbone(model.scaling(batches[0].to(device)))  # warm-up (not timed)
        _sync(device)
        start = time.perf_counter()
        for x in batches:
            model.backbone(model.scaling(x.to(device)))
        _sync(device)
        seconds = time.perf_counter() - start
        # how a forward divides between scaling, backbone and heads (one batch, for the profile)
        x = batches[0].to(device)
        t0 = time.perf_counter()
        scaled = model.scaling(x)
        _sync(device)
        t1 = time.perf_counter()
        features = model.backbone(scaled)
        _sync(device)
        t2 = time.perf_counter()
        for task in model.tasks.values():
            task(features)
        _sync(device)
        t3 = time.perf_counter()
        total = max(t3 - t0, 1e-9)
        split = {"scaling": (t1 - t0) / total, "backbone": (t2 - t1) / total, "heads": (t3 - t2) / total}
    return {"objects": n, "seconds": seconds, "network_split": split}


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _step_clock() -> Any:
    import pytorch_lightning as pl

    class StepClock(pl.Callback):
        """The end time of every training step (:func:`_rate` skips the first ones, which warm up)."""

        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends.append(time.perf_counter())

    return StepClock()


def _rate(ends: Sequence[float], skip: int) -> float:
    if len(ends) <= skip + 1:
        raise RuntimeError(f"{len(ends)} steps timed: raise train_steps above skip + 1 = {skip + 1}.")
    return (len(ends) - 1 - skip) / (ends[-1] - ends[skip])


def _train(backbone: str, root: Path, batch: int, steps: int, skip: int, bare: bool, device: str) -> dict:
    """Steps/s of ``galframe train`` (``bare=False``) or of a plain loop over galframe's model and loader."""
    import torch

    from galframe.build import build, compose

    accel = "gpu" if str(device).startswith("cuda") else "cpu"
    cfg = compose("train", [*_train_overrides(backbone, root, batch), f"trainer.max_steps={steps}", "trainer.max_epochs=1000",
                            "trainer.limit_val_batches=0", "trainer.progress_bar=false", "evaluate=false",
                            f"trainer.accelerator={accel}"])
    if not bare:
        from galframe.train import run

        clock = _step_clock()
        with tempfile.TemporaryDirectory() as tmp:
            run(cfg, Path(tmp), callbacks=[clock])
        return {"steps": len(clock.ends), "steps_per_s": _rate(clock.ends, skip)}
    from galframe.data.augment import augment_batch

    torch.manual_seed(int(cfg.get("seed", 0)))
    model, dm = build(cfg, progress=False)
    dm.setup("fit")
    model.to(device).train()
    # the optimiser galframe train builds (the config's class and settings over the model's parameter groups) and its
    # gradient clipping: the two loops differ in the framework, not in the update
    from hydra.utils import instantiate

    optimizer = instantiate({**dict(cfg["optimizer"]), "_partial_": True})(params=model.param_groups())
    clip = float(cfg["trainer"].get("gradient_clip_val") or 0.0)
    augment = dict(model.config.get("augment") or {})
    ends: list[float] = []
    while len(ends) < steps:
        for batch in dm.train_dataloader():
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if any(augment.values()):
                batch = augment_batch(batch, augment, torch.Generator().manual_seed(len(ends)))
            outputs = model(batch["image"])
            loss = sum(model.task_weights[n] * t.loss(outputs[n], batch) for n, t in model.tasks.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            _sync(device)
            ends.append(time.perf_counter())
            if len(ends) >= steps:
                break
    return {"steps": len(ends), "steps_per_s": _rate(ends, skip)}


def _one(kind: str, backbone: str, root: Path, ckpt: Path, batch: int, device: str, steps: int = 0, skip: int = 3) -> dict:
    """One measurement in this process: predict, bare, train or bare_train."""
    import torch

    from galframe.predict import pick_device

    device = pick_device(device)
    if kind == "predict":
        row = _predict(root, ckpt, batch, device)
    elif kind == "bare":
        row = _bare(root, ckpt, batch, device)
    else:
        row = _train(backbone, root, batch, steps, skip, kind == "bare_train", device)
    if "objects" in row:
        row["objects_per_s"] = row["objects"] / row["seconds"]
    row.update(kind=kind, backbone=backbone, batch=batch, peak_rss_mib=_peak_rss_mib(), device=device,
               threads=torch.get_num_threads())
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu"] = torch.cuda.get_device_name(0)
    return row


def _measure(kinds: Sequence[str], backbone: str, root: Path, ckpt: Path, batch: int, device: str, repeats: int,
             steps: int = 0, env: Optional[Mapping[str, str]] = None) -> dict[str, dict]:
    """kind -> the best of ``repeats`` fresh-process measurements; the kinds alternate within every repeat
    (predict, bare, predict, bare, ...), so a change in the machine's load falls on both sides of a ratio."""
    best: dict[str, dict] = {}
    for _ in range(max(int(repeats), 1)):
        for kind in kinds:
            key = "steps_per_s" if kind in ("train", "bare_train") else "objects_per_s"
            cmd = [sys.executable, "-m", "galframe_bench.throughput", "--one", kind, "--backbone", backbone, "--root", str(root),
                   "--ckpt", str(ckpt), "--batch", str(int(batch)), "--device", device, "--steps", str(int(steps))]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **dict(env or {})})
            if res.returncode != 0:
                raise RuntimeError(f"throughput measurement {kind} {backbone} failed:\n{res.stderr[-3000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            if kind not in best or row[key] > best[kind][key]:
                best[kind] = row
    return best


def _processes(root: Path, ckpt: Path, batch: int, processes: int) -> dict:
    """``galframe predict`` with ``trainer=ddp trainer.devices=P`` on this machine, as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "galframe.cli", "predict", "data=dataset", f"data.path={root}", f"ckpt={ckpt}",
                f"out={Path(tmp) / 'catalog.parquet'}", f"batch_size={batch}", "device=cpu", "progress=false", "columns=none",
                *(["trainer=ddp", f"trainer.devices={processes}", "trainer.accelerator=cpu"] if processes > 1 else []),
                f"hydra.run.dir={tmp}/run"]
        start = time.perf_counter()
        res = subprocess.run(args, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"galframe predict with {processes} process(es) failed:\n{res.stderr[-3000:]}")
    return {"processes": processes, "wall_s": wall}


def survey_cost(rates: Mapping[str, float], n: int = SURVEY, efficiency: float = 1.0) -> list[dict]:
    """Wall time to predict ``n`` stamps from per-process rates (objects/s of one process on its unit:
    a 2-core CPU process, a GPU), for 1 to 1,024 units at the measured multi-process ``efficiency``."""
    rows = []
    for unit, rate in rates.items():
        for units in (1, 16, 64, 256, 1024):
            hours = n / (rate * units * (efficiency if units > 1 else 1.0)) / 3600.0
            rows.append({"unit": unit, "units": units, "hours": hours, "unit_hours": hours * units})
    return rows


def dataset(n: int) -> Path:
    from galframe.build import compose_dict
    from galframe.sim import cached_dataset

    return cached_dataset(compose_dict("train", ["data=sim_desi", f"data.n={int(n)}", "logger=none"])["data"])


def run(p: Mapping[str, Any], out: Path, device: str = "auto", headline: Optional[Path] = None) -> dict:
    """Every measurement of the protocol above; writes throughput.{json,md,png}, the profile table and plot,
    and the suite's entry in ``headline`` (``benchmarks/results/headline.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    ns = [int(n) for n in (p.get("ns") or [p["n"]])]
    batch, repeats = int(p["batch"]), int(p.get("repeats", 1))
    steps = int(p.get("train_steps", 0) or 0)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in p["backbones"]:
            ckpt = Path(tmp) / f"{backbone}.ckpt"
            _model_ckpt(backbone, dataset(ns[0]), ckpt)
            for n in ns:
                root = dataset(n)
                for kind, best in _measure(("predict", "bare"), backbone, root, ckpt, batch, device, repeats).items():
                    row = {**best, "n": n}
                    rows.append(row)
                    print(f"  {backbone:<10} N={n:<6} {kind:<8} {row['objects_per_s']:8.1f} objects/s  "
                          f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
            if steps:
                for kind, best in _measure(("train", "bare_train"), backbone, dataset(ns[-1]), ckpt, int(p.get("train_batch", 32)),
                                           device, repeats, steps).items():
                    row = {**best, "n": ns[-1]}
                    rows.append(row)
                    print(f"  {backbone:<10} {kind:<10} {row['steps_per_s']:8.3f} steps/s", flush=True)
        first = p["backbones"][0]
        ckpt = Path(tmp) / f"{first}.ckpt"
        memory = {}
        for n in p.get("memory_ns") or []:
            row = _measure(("predict",), first, dataset(int(n)), ckpt, batch, device, 1)["predict"]
            memory[str(int(n))] = row["peak_rss_mib"]
            print(f"  memory     N={int(n):<6} predict peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
        procs = []
        if int(p.get("processes", 1) or 1) > 1 and not str(device).startswith("cuda"):
            root = dataset(ns[-1])
            procs = [_processes(root, ckpt, batch, k) for k in (1, int(p["processes"]))]
            print(f"  processes  {procs}", flush=True)
    result = summarise(rows, memory, procs, ns, batch, repeats)
    (out / "throughput.json").write_text(json.dumps(result, indent=2))
    from galframe_bench.throughput_report import write_report

    write_report(result, out)
    if headline is not None:
        from galframe_bench.fewshot import write_headline

        write_headline(headline, "throughput", result["headline"])
    return result


def summarise(rows: Sequence[dict], memory: Mapping[str, float], procs: Sequence[dict], ns: Sequence[int], batch: int,
              repeats: int) -> dict:
    """The ratios, the headline entry and the survey estimate from the measured rows."""
    table: dict[str, dict] = {}
    for r in rows:
        table.setdefault(r["backbone"], {}).setdefault(int(r["n"]), {})[r["kind"]] = r
    n_head = max(ns)
    predict_over_bare = {b: t[n_head]["predict"]["objects_per_s"] / t[n_head]["bare"]["objects_per_s"]
                         for b, t in table.items() if "predict" in t.get(n_head, {})}
    train_over_bare = {b: t[n_head]["train"]["steps_per_s"] / t[n_head]["bare_train"]["steps_per_s"]
                       for b, t in table.items() if "train" in t.get(n_head, {})}
    startups = [r["startup_s"] for r in rows if r["kind"] == "predict"]
    efficiency = None
    if len(procs) == 2:
        efficiency = procs[0]["wall_s"] / procs[1]["wall_s"]  # P processes sharing the same cores: 1.0 = no loss
    unit = rows[0].get("gpu") or f"CPU process ({os.cpu_count()} cores)"
    rates = {f"{b} on one {unit}": table[b][n_head]["predict"]["objects_per_s"] for b in table if n_head in table[b]}
    return {
        "ns": list(ns), "batch": batch, "repeats": repeats, "rows": list(rows), "memory": dict(memory), "processes": list(procs),
        "predict_over_bare": {f"{b}@{n}": t[n]["predict"]["objects_per_s"] / t[n]["bare"]["objects_per_s"]
                              for b, t in table.items() for n in t if "predict" in t[n] and "bare" in t[n]},
        "multi_process_efficiency": efficiency,
        "survey": survey_cost(rates, efficiency=efficiency or 1.0),
        "headline": {"n": n_head, "predict_over_bare": predict_over_bare, "train_over_bare": train_over_bare,
                     "startup_s": max(startups) if startups else None,
                     "peak_rss_mib": {k: round(v, 1) for k, v in memory.items()}},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "lvm_tiny"])
    parser.add_argument("--ns", type=int, nargs="+", default=[512, 8192])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "throughput")
    # one measurement (used by run(): a fresh process per measurement)
    parser.add_argument("--one", choices=["predict", "bare", "train", "bare_train"], default=None)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=0)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, args.backbone, args.root, args.ckpt, args.batch, args.device, args.steps)))
        return 0
    run({"backbones": args.backbones, "ns": args.ns, "batch": args.batch, "repeats": args.repeats,
         "train_steps": args.train_steps}, args.out, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
