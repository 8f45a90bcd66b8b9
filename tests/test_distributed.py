"""Distributed training: rank-aware batches, DDP on 2 CPU processes (gloo) against one process, one run
directory per run, metrics reduced over ranks, SLURM/submitit launcher configs and a submitit-local sweep;
distributed predict: 2 processes (and DataLoader workers) give the single-process catalog.

Run as a module (``python -m tests.test_distributed <out dir> <overrides>``) this file is also the training
script of the DDP test: galframe's launcher re-runs it for rank 1, so both ranks carry the recording callback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from galframe.data.datamodule import EpochBatchSampler, EpochSampler, rank_batches
from galframe.errors import ConfigError, DataError
from tests.helpers import ROOT, compose_train, galframe_cli

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.progress_bar=false"]
# no augmentation, unweighted cross-entropy: a step of 2 ranks x 16 is then a step of 1 process x 32
EXACT = [
    "backbone=lvm_tiny", "tasks=[classify,regress]", "tasks.classify.class_weights=none", "tasks.regress.weight=0.0",
    "data.augment.rot90=false", "data.augment.flip=false", "data.augment.shift=0", "data.augment.noise=0.0",
    "trainer.max_epochs=2", "trainer.progress_bar=false", "logger=csv",
]


# -- which objects each rank sees ---------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_batches_cover_the_epoch_once_with_the_same_step_count_on_every_rank(world) -> None:
    for n in range(world, 60):
        for b in (1, 2, 3, 5, 8):
            per_rank = [rank_batches(n, b, r, world) for r in range(world)]
            seen = [i for batches in per_rank for start, stop in batches for i in range(start, stop)]
            assert sorted(seen) == list(range(n)), (n, b, world)  # disjoint and complete: no padding, no drop
            assert len({len(batches) for batches in per_rank}) == 1, (n, b, world)  # DDP needs equal step counts
            assert all(0 < stop - start <= b + 1 for batches in per_rank for start, stop in batches)
            for t in range(len(per_rank[0]) - 1):  # step t of all ranks = step t of one process with world x b
                step = sorted(i for batches in per_rank for i in range(*batches[t]))
                assert step == list(range(t * b * world, (t + 1) * b * world)), (n, b, world, t)
    if world == 1:  # one process: the batches of DataLoader(batch_size=b, drop_last=False)
        assert rank_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_epoch_batch_sampler_order_depends_only_on_seed_and_epoch() -> None:
    def epoch(seed, e, rank):
        s = EpochBatchSampler(50, 8, seed=seed, rank=rank, world_size=2)
        s.set_epoch(e)
        return list(s)

    a0, a1 = epoch(3, 2, 0), epoch(3, 2, 1)
    assert a0 == epoch(3, 2, 0) and len(a0) == len(a1) == len(EpochBatchSampler(50, 8, rank=1, world_size=2))
    assert sorted(i for b in a0 + a1 for i in b) == list(range(50))
    assert not {i for b in a0 for i in b} & {i for b in a1 for i in b}
    assert epoch(3, 3, 0) != a0 and epoch(4, 2, 0) != a0
    # rank 0's first batch is the first 8 of the single-process order of that epoch
    order = EpochSampler(50, 3)
    order.set_epoch(2)
    assert a0[0] == list(order)[:8] and a1[0] == list(order)[8:16]
    with pytest.raises(DataError, match="cannot be shared among 4 ranks"):
        EpochBatchSampler(3, 8, rank=0, world_size=4)
    assert list(EpochBatchSampler(3, 8, shuffle=False, rank=3, world_size=4, even=False)) == []  # evaluation: allowed


def test_datamodule_loaders_give_each_rank_its_share(tiny_dataset) -> None:
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.train import to_dict

    cfg = to_dict(compose_train(f"data.path={tiny_dataset}", "data.batch_size=16"))
    dm = GalaxyDataModule(cfg["data"], progress=False)
    for split, train in (("train", True), ("test", False)):
        ids = [[int(i) for batch in dm._loader(split, train, rank, 2) for i in batch["id"]] for rank in (0, 1)]
        assert not set(ids[0]) & set(ids[1])
        assert sorted(ids[0] + ids[1]) == sorted(dm.splits[split]["id"].tolist())
    whole = [int(i) for batch in dm._loader("test", False) for i in batch["id"]]  # reports, held-out L1: everything
    assert whole == dm.splits["test"]["id"].tolist()


def test_launcher_counts_processes_and_defers_to_external_launchers(monkeypatch) -> None:
    from galframe import distributed

    assert distributed.local_process_count({"devices": 2}) == 2
    assert distributed.local_process_count({"devices": [0, 3, 5]}) == 3
    assert distributed.local_process_count({"devices": "0,1"}) == 2
    assert distributed.local_process_count({"devices": "auto", "accelerator": "cpu"}) == 1
    for key in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.needs_launch({"devices": 2, "accelerator": "cpu", "strategy": "ddp"})
    assert not distributed.needs_launch({"devices": 2, "accelerator": "cpu", "strategy": "ddp_spawn"})
    assert not distributed.needs_launch({"devices": 1, "accelerator": "cpu"})
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun / srun made this process: Lightning joins their ranks
    assert not distributed.needs_launch({"devices": 2, "accelerator": "cpu", "strategy": "ddp"})
    items = list(range(11))
    assert sorted(distributed.shard(items, 0, 3) + distributed.shard(items, 1, 3) + distributed.shard(items, 2, 3)) == items
    # inside pytest (or a notebook) there is no command to re-run for the other ranks: a clear error
    from hydra.core.hydra_config import HydraConfig

    from galframe.errors import ConfigError

    assert not HydraConfig.initialized()
    with pytest.raises(ConfigError, match="several processes need a command"):
        distributed.child_command("train", ROOT / "runs")


# -- DDP on two CPU processes -------------------------------------------------------------------------------------------
def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _test_single_process(ckpt: Path, data: Path) -> dict:
    """The held-out metrics of a checkpoint, evaluated by one process on the whole test split."""
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.model import GalaxyModel
    from galframe.train import _task_requires, to_dict

    model = GalaxyModel.load_from_checkpoint(ckpt, map_location="cpu")
    cfg = to_dict(compose_train(f"data.path={data}", *EXACT, "data.batch_size=32"))
    dm = GalaxyDataModule(cfg["data"], requires=_task_requires(cfg), progress=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return {k: float(v) for k, v in trainer.test(model, datamodule=dm, verbose=False)[0].items()}


def test_ddp_on_two_cpu_processes_matches_one_process(tiny_dataset, tmp_path) -> None:
    ddp_out = tmp_path / "ddp"
    args = [str(ddp_out), f"data.path={tiny_dataset}", *EXACT, "trainer=ddp", "data.batch_size=16"]
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_distributed", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = [json.loads((ddp_out / f"ids_rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world_size"] for s in seen] == [2, 2]
    train_ids = sorted(pd.read_csv(ddp_out / "train_ids.csv")["id"].tolist())
    for epoch in ("0", "1"):
        batches = [s["epochs"][epoch] for s in seen]
        assert len(batches[0]) == len(batches[1])  # the same number of steps
        ids = [[i for b in rank for i in b] for rank in batches]
        assert not set(ids[0]) & set(ids[1]), f"epoch {epoch}: the ranks shared objects"
        assert sorted(ids[0] + ids[1]) == train_ids, f"epoch {epoch}: the ranks did not cover the training split"
    assert seen[0]["epochs"]["0"] != seen[0]["epochs"]["1"]  # a new order each epoch

    # one process with the same global batch (2 x 16) sees the same objects per step and ends with the same weights
    from galframe.train import run

    one = tmp_path / "one"
    run(compose_train(f"data.path={tiny_dataset}", *EXACT, "trainer=cpu", "data.batch_size=32", "evaluate=false"),
        run_dir=one, callbacks=[RecordIds(one)])
    single = json.loads((one / "ids_rank0.json").read_text())["epochs"]
    for epoch in ("0", "1"):
        assert [sorted(a + b) for a, b in zip(*(s["epochs"][epoch] for s in seen))] == [sorted(b) for b in single[epoch]]
    ddp_state, one_state = _state(ddp_out / "run" / "checkpoints" / "last.ckpt"), _state(one / "checkpoints" / "last.ckpt")
    init = _state(ddp_out / "init.ckpt")
    weights = {k: v for k, v in one_state.items() if not k.startswith("trust.")}  # the trust set is data, below
    moved = max(float((weights[k] - init[k]).abs().max()) for k in weights if k in init)
    assert moved > 1e-3  # training changed the weights ...
    for key, value in weights.items():  # ... and both runs changed them alike
        assert torch.allclose(ddp_state[key], value, rtol=1e-4, atol=1e-5), key
    # the out-of-distribution reference set gathers every rank's validation embeddings: one process's set
    # (rows in rank order, so compared through the order-free leave-one-out scores)
    assert ddp_state["trust.bank"].shape == one_state["trust.bank"].shape and len(one_state["trust.bank"]) > 10
    assert torch.allclose(ddp_state["trust.reference"], one_state["trust.reference"], rtol=1e-3, atol=1e-4)

    # metrics reduced over ranks: DDP's held-out metrics (each rank half the test split) are one process's
    ddp_metrics = json.loads((ddp_out / "run" / "metrics.json").read_text())
    reference = _test_single_process(ddp_out / "run" / "checkpoints" / "best.ckpt", tiny_dataset)
    task_keys = [k for k in reference if k.startswith(("test/classify/", "test/regress/")) and not k.endswith("/loss")]
    assert any("regress/" in k and k.endswith("_nmad") for k in task_keys)
    for key in task_keys:
        a, b = ddp_metrics[key], reference[key]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-4, abs=1e-5), key
    # rank 0 alone wrote the outputs: one CSV log, one report
    assert len(list((ddp_out / "run").rglob("metrics.csv"))) == 1
    assert result.stdout.count("Held-out metrics") == 1


def test_ddp_from_the_command_line_writes_one_run_directory(tiny_dataset, runs_dir) -> None:
    from tests.test_train import read_wandb_history

    result = galframe_cli(
        "train", "trainer=ddp", f"data.path={tiny_dataset}", "data.batch_size=16", "trainer.max_epochs=1",
        "trainer.limit_val_batches=1", "trainer.progress_bar=false", "logger=wandb", "tasks=[regress]",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    assert sorted(p.name for p in runs_dir.iterdir()) == ["train"]  # no second run (or multirun) directory
    run_dirs = list((runs_dir / "train").iterdir())
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and not list(run_dir.glob("*/.hydra"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_train"] == 210 and np.isfinite(metrics["test/regress/nll"])
    assert len(pd.read_parquet(run_dir / "predictions_test.parquet")) == 45  # the whole test split, written once
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, wandb_runs  # rank 0's W&B run only
    summary = read_wandb_history(wandb_runs[0])["summary"]
    assert summary["test/regress/nll"] == pytest.approx(metrics["test/regress/nll"])
    assert result.stdout.count("Held-out metrics") == 1


# -- launchers -------------------------------------------------------------------------------------------------------------
def test_slurm_launcher_presets_compose_for_train_and_pretrain() -> None:
    from omegaconf import OmegaConf

    from galframe.build import compose

    for command, preset, overrides, expect in (
        ("pretrain", "slurm_pretrain", ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
         {"tasks_per_node": 4, "gpus_per_node": 4, "nodes": 2}),
        ("train", "slurm_sweep", [], {"tasks_per_node": 1, "gpus_per_node": 1, "nodes": 1}),
        ("train", "local", [], {"tasks_per_node": 1}),
    ):
        cfg = compose(command, [f"hydra/launcher={preset}", *overrides], return_hydra_config=True, fresh=True)
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        cls = "LocalLauncher" if preset == "local" else "SlurmLauncher"
        assert launcher["_target_"] == f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{cls}"
        assert {k: launcher[k] for k in expect} == expect


def test_submitit_local_launcher_runs_a_two_job_sweep(tiny_dataset, runs_dir) -> None:
    result = galframe_cli(
        "train", "-m", "hydra/launcher=local", "data.n_labeled=20,40", f"data.path={tiny_dataset}", "logger=none",
        "backbone=lvm_tiny", "data.batch_size=16", "evaluate=false", *SHORT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    sweeps = list((runs_dir / "train-multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, n in zip(jobs, (20, 40)):
        assert f"data.n_labeled={n}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (job / "checkpoints" / "last.ckpt").is_file()
    logs = list((sweeps[0] / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # two submitit jobs, each its own process


# -- distributed predict ---------------------------------------------------------------------------------------------------
N_CUTOUTS = 60


@pytest.fixture(scope="module")
def predict_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run directory of lvm_tiny (classify + regress) trained for two steps: a model to predict with."""
    from galframe.train import run

    run_dir = tmp_path_factory.mktemp("predict-run")
    run(compose_train(f"data.path={tiny_dataset}", "backbone=lvm_tiny", "tasks=[classify,regress]", "data.batch_size=16",
                      *SHORT, "evaluate=false", "logger=none"), run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def cutouts(tiny_dataset, tmp_path_factory) -> Path:
    """N_CUTOUTS FITS cutouts of the tiny dataset (obj00, obj01, ...) and three bad files among them (rejects)."""
    import h5py
    from astropy.io import fits
    from astropy.wcs import WCS

    root = tmp_path_factory.mktemp("cutouts")
    with h5py.File(Path(tiny_dataset) / "shard-00000.h5", "r") as h5:
        images = np.asarray(h5["images"][:N_CUTOUTS], dtype=np.float32)
    for k, image in enumerate(images):
        w = WCS(naxis=2)
        w.wcs.ctype, w.wcs.crval = ["RA---TAN", "DEC--TAN"], [150.0 + k * 0.01, 2.0]
        w.wcs.crpix, w.wcs.cdelt = [32.5, 32.5], [-0.262 / 3600, 0.262 / 3600]
        header = w.to_header()
        header["BANDS"], header["BUNIT"] = "grz", "nanomaggy"
        fits.PrimaryHDU(image, header).writeto(root / f"obj{k:02d}.fits")
    data = (root / "obj00.fits").read_bytes()
    (root / "obj04b.fits").write_bytes(data[: len(data) // 2])  # truncated
    fits.PrimaryHDU(np.full((3, 64, 64), np.nan, np.float32), fits.Header({"BANDS": "grz"})).writeto(root / "obj11b.fits")
    (root / "obj23b.fits").write_text("not a FITS file\n")
    return root


@pytest.fixture()
def one_thread():
    """torch on one thread in this process, like each of two ranks on two cores (launch() sets it for them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _compose_predict(*overrides: str):
    from galframe.build import compose

    return compose("predict", overrides, fresh=True)


def _done(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same_catalog(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got["id"].tolist() == want["id"].tolist()  # the same objects, in the single-process order
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=col)
        else:
            assert got[col].tolist() == want[col].tolist(), col


def test_distributed_predict_on_two_processes_gives_the_single_process_catalog(predict_run, cutouts, tmp_path, one_thread) -> None:
    from galframe.predict import run as predict

    common = [f"ckpt={predict_run}", "data=fits", f"data.path={cutouts}", "data.shard_size=1", "batch_size=1", "progress=false"]
    ref = predict(_compose_predict(*common, f"out={tmp_path / 'ref.parquet'}"))  # one process, no workers
    want, want_rejects = pd.read_parquet(tmp_path / "ref.parquet"), pd.read_csv(tmp_path / "ref.rejects.csv")
    n_shards = N_CUTOUTS + 3
    assert ref["shards"] == n_shards and ref["rows"] == N_CUTOUTS and ref["rejects"] == 3 and "world_size" not in ref
    assert sorted(want_rejects["id"]) == ["obj04b", "obj11b", "obj23b"]

    # two ranks (gloo on CPU), two DataLoader workers each, from the command line; rank 0 is killed (SIGKILL)
    out = tmp_path / "cat.parquet"
    parts = tmp_path / ".cat.parquet.parts"
    args = [sys.executable, "-m", "galframe.cli", "predict", *common, f"out={out}", "trainer=ddp", "num_workers=2",
            "keep_parts=true"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    deadline = time.time() + 300

    def n_done() -> int:
        return sum(len(f.read_text().splitlines()) for f in parts.glob("done.rank*.jsonl"))

    while time.time() < deadline and proc.poll() is None and n_done() < 6:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # returns once rank 1 (which holds the pipes too) has stopped as well
    killed = {e["key"] for f in parts.glob("done.rank*.jsonl") for e in _done(f)}
    assert 6 <= len(killed) < n_shards and not out.exists(), err[-3000:]

    result = galframe_cli(*args[3:])  # the same command resumes
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resuming: skipping {len(killed)} finished shard(s) of {n_shards}" in result.stdout
    assert f"2 processes share the {n_shards - len(killed)} shard(s) to do" in result.stdout
    assert result.stdout.count(f"Wrote {N_CUTOUTS} rows") == 1  # rank 0 alone reports

    # each rank predicted a disjoint share, every worker its own shards; no shard twice, over both runs
    per_rank = [_done(parts / f"done.rank{r:05d}.jsonl") for r in (0, 1)]
    keys = [[e["key"] for e in entries] for entries in per_rank]
    assert keys[0] and keys[1] and not set(keys[0]) & set(keys[1])
    assert len(keys[0]) + len(keys[1]) == len(set(keys[0]) | set(keys[1])) == n_shards  # each shard logged once
    for r, entries in enumerate(per_rank):
        assert {e["rank"] for e in entries} == {r} and {e["worker"] for e in entries} == {0, 1}
    ids = [{i for k in ks if (parts / f"part-{k}.parquet").exists() for i in pd.read_parquet(parts / f"part-{k}.parquet")["id"]}
           for ks in keys]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # disjoint objects

    # rank 0 merged everything: the single-process catalog and rejects, row for row
    _same_catalog(pd.read_parquet(out), want)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cat.rejects.csv"), want_rejects)


def test_predict_workers_share_a_process_shards_and_report_strict_errors(predict_run, cutouts, tmp_path, one_thread) -> None:
    from galframe.checkpoints import load_model
    from galframe.predict import Predictor
    from galframe.readers import build_reader

    model = load_model(predict_run)[0]
    data = {"plugin": "fits", "path": str(cutouts), "shard_size": 8}
    outs = {}
    for workers in (0, 2):
        reader, core = build_reader(data)
        out = tmp_path / f"w{workers}.parquet"
        Predictor(model, reader, core, out, batch_size=4, progress=False, keep_parts=True, num_workers=workers,
                  log=lambda s: None).run()
        outs[workers] = out
    entries = _done(tmp_path / ".w2.parquet.parts" / "done.jsonl")
    assert len({e["key"] for e in entries}) == len(entries) == (N_CUTOUTS + 3 + 7) // 8  # each shard once
    by_worker = {w: [e["key"] for e in entries if e["worker"] == w] for w in (0, 1)}
    keys = sorted(e["key"] for e in entries)
    assert by_worker == {w: keys[w::2] for w in (0, 1)}  # every 2nd shard to each worker
    _same_catalog(pd.read_parquet(outs[2]), pd.read_parquet(outs[0]))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "w2.rejects.csv"), pd.read_csv(tmp_path / "w0.rejects.csv"))

    reader, core = build_reader(data)
    with pytest.raises(DataError, match=r"obj04b.fits: .*strict=true stops at the first bad input"):
        Predictor(model, reader, core, tmp_path / "strict.parquet", progress=False, strict=True, num_workers=2,
                  log=lambda s: None).run()
    with pytest.raises(ConfigError, match="num_workers must be 0"):
        Predictor(model, reader, core, tmp_path / "x.parquet", num_workers=-1)


def test_predict_processes_must_match_the_launcher(monkeypatch, predict_run, cutouts, tmp_path) -> None:
    from galframe import distributed
    from galframe.predict import run as predict

    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.process_count({"devices": 2, "num_nodes": 3}) == 6
    single = distributed.join({"devices": 1}, "predict", tmp_path)
    assert single["world_size"] == 1 and not single["joined"]
    assert distributed.on_rank_zero(lambda: 42) == 42  # one process: the function itself
    # inside pytest there is no command to re-run for a second rank: the launcher says so
    common = [f"ckpt={predict_run}", "data=fits", f"data.path={cutouts}", f"out={tmp_path / 'c.parquet'}", "progress=false"]
    with pytest.raises(ConfigError, match="several processes need a command.*galframe predict trainer=ddp"):
        predict(_compose_predict(*common, "trainer=ddp"))
    with pytest.raises(ConfigError, match="num_workers must be a whole number"):
        predict(_compose_predict(*common, "num_workers=-2"))
    # a launcher (here torchrun-like variables) that started another number of processes than asked for
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"asks for 1 process\(es\), but environment started 2.*trainer=ddp"):
        predict(_compose_predict(*common))
    with pytest.raises(ConfigError, match=r"asks for 3 process\(es\), but environment started 2"):
        distributed.join({"devices": 3, "accelerator": "cpu"}, "predict", tmp_path)
    assert not (tmp_path / ".c.parquet.parts").exists() and not (tmp_path / "c.parquet").exists()


# -- the training script of the DDP test ----------------------------------------------------------------------------------
class RecordIds(pl.Callback):
    """Writes the ids of every training batch, per epoch, to ``<out>/ids_rank<r>.json`` (and the initial weights)."""

    def __init__(self, out: Path) -> None:
        self.out, self.epochs = Path(out), {}

    def on_fit_start(self, trainer, module) -> None:  # noqa: ANN001
        if trainer.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": module.state_dict()}, self.out / "init.ckpt")
            pd.DataFrame({"id": trainer.datamodule.splits["train"]["id"]}).to_csv(self.out / "train_ids.csv", index=False)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        self.epochs.setdefault(str(trainer.current_epoch), []).append([int(i) for i in batch["id"]])

    def on_train_end(self, trainer, module) -> None:  # noqa: ANN001
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, "epochs": self.epochs}
        (self.out / f"ids_rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _main(argv: list[str]) -> None:
    from galframe.train import run

    out = Path(argv[0])
    run(compose_train(*argv[1:]), run_dir=out / "run", callbacks=[RecordIds(out)])


if __name__ == "__main__":
    _main(sys.argv[1:])
