"""Training end to end: every composition, metrics, W&B files, resume, fine-tuning modes, multirun, errors."""
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
import torch

from galframe.errors import ConfigError, DataError
from tests.helpers import build_model, compose_train, config_files, galframe_cli

BACKBONES = [p.stem for p in config_files("backbone") if p.stem != "timm"]
TASK_FILES = {p.stem: p for p in config_files("task")}


def _runs_on_tiny_dataset(task: str) -> bool:
    """Whether the task's data is in tiny_dataset (sim_desi stamps): it has no vote counts and no object
    instances, so tasks that read ``votes`` or ``instances`` are trained on their own data in their own
    tests (tests/test_votes.py, tests/test_detect.py)."""
    import yaml

    from galframe import registry

    try:
        body = yaml.safe_load(TASK_FILES[task].read_text())
        key = next(k for k in body if k != "defaults")
        plugin = body[key]["plugin"] if "plugin" in body[key] else key
        requires = registry.load("task", plugin).requires
    except Exception:  # a plugin that does not load: keep it, so the composition test reports why
        return True
    return not {"votes", "instances"} & set(requires)


TASKS = sorted(t for t in TASK_FILES if _runs_on_tiny_dataset(t))
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.progress_bar=false"]


def _run(tmp_path: Path, *overrides: str, callbacks=()):
    from galframe.train import run

    cfg = compose_train(*overrides)
    return run(cfg, run_dir=tmp_path / "run", callbacks=callbacks)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("task", TASKS)
def test_fast_dev_run_every_composition(request, tmp_path, backbone, task) -> None:
    import pytorch_lightning as pl

    class Count(pl.Callback):
        def __init__(self):
            self.train, self.val, self.losses = 0, 0, []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.train += 1
            self.losses.append(float(outputs["loss"]))

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self.val += 1

    count = Count()
    size = compose_train(f"backbone={backbone}").backbone.get("img_size") or 64
    data = request.getfixturevalue("tiny_dataset" if size == 64 else f"tiny_dataset_{size}")
    metrics = _run(
        tmp_path, f"backbone={backbone}", f"tasks=[{task}]", f"data.path={data}", f"data.image_size={size}",
        "data.batch_size=8", "trainer=fast", "logger=none", callbacks=[count],
    )
    assert metrics == {}  # fast_dev_run: one batch each, no held-out evaluation
    assert (count.train, count.val) == (1, 1)
    assert all(np.isfinite(count.losses))


def test_train_reports_metrics_pictures_and_offline_wandb_run(tiny_dataset, runs_dir) -> None:
    result = galframe_cli(
        "train",
        f"data.path={tiny_dataset}",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        "logger=wandb",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list((runs_dir / "train").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    classes = json.loads((Path(tiny_dataset) / "manifest.json").read_text())["classes"]
    for key in ["test/classify/accuracy", "test/classify/auroc", "test/classify/ece", "test/classify/balanced_accuracy"]:
        assert 0.0 <= metrics[key] <= 1.0, key
    for cls in classes:
        assert 0.0 <= metrics[f"test/classify/recall_{cls}"] <= 1.0
    # the table is printed
    assert "Held-out metrics" in result.stdout and "auroc" in result.stdout
    # pictures and the predictions catalog
    assert (run_dir / "confusion_classify.png").stat().st_size > 5000
    assert (run_dir / "samples.png").stat().st_size > 5000
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    assert {"id", "classify_class", "classify_entropy", *[f"classify_p_{c}" for c in classes]} <= set(pred.columns)
    assert abs(pred[[f"classify_p_{c}" for c in classes]].sum(axis=1) - 1).max() < 1e-4
    # trust flags: calibrated probabilities, an energy score and the out-of-distribution columns
    assert abs(pred[[f"classify_pcal_{c}" for c in classes]].sum(axis=1) - 1).max() < 1e-4
    assert {"classify_energy", "ood_score", "ood_pvalue", "ood_flag"} <= set(pred.columns)
    assert pred["ood_pvalue"].between(0, 1).all() and pred["ood_flag"].dtype == bool
    assert metrics["test/classify/temperature"] > 0 and 0.0 <= metrics["test/classify/ece_calibrated"] <= 1.0
    # checkpoints
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    # W&B offline run files hold the logged metrics
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, list((run_dir / "wandb").iterdir())
    logged = read_wandb_history(wandb_runs[0])
    assert any("train/loss" in row for row in logged["history"])
    assert any("val/classify/auroc" in row for row in logged["history"])
    assert abs(logged["summary"]["test/classify/auroc"] - metrics["test/classify/auroc"]) < 1e-6


def wandb_records(file: Path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log: 32 KiB blocks, chunked records)."""
    import struct

    data = file.read_bytes()
    assert data[:4] == b":W&B", f"{file} is not a W&B run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def read_wandb_history(run_path: Path) -> dict:
    """History rows and summary of an offline W&B run, read from the run's .wandb file."""
    from wandb.proto import wandb_internal_pb2

    files = list(run_path.glob("*.wandb"))
    assert len(files) == 1, files
    history, summary = [], {}
    for data in wandb_records(files[0]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history": history, "summary": summary}


def _losses(csv_root: Path) -> dict[int, float]:
    frame = pd.read_csv(next(csv_root.rglob("metrics.csv")))
    frame = frame.dropna(subset=["train/loss"])
    return dict(zip(frame["step"].astype(int), frame["train/loss"].astype(float)))


def test_resume_after_kill_gives_the_same_next_step_loss(tiny_dataset, tmp_path) -> None:
    args = [
        "train",
        f"data.path={tiny_dataset}",
        "data.batch_size=16",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "logger=csv",
        "evaluate=false",
    ]
    full_env = {**os.environ, "GALFRAME_RUNS": str(tmp_path / "full")}
    full = subprocess.run([sys.executable, "-m", "galframe.cli", *args], env=full_env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    reference = _losses(tmp_path / "full")

    kill_env = {**os.environ, "GALFRAME_RUNS": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, "-m", "galframe.cli", *args], env=kill_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and ckpt is None:
        found = list((tmp_path / "killed").rglob("checkpoints/last.ckpt"))
        ckpt = found[0] if found else None
        time.sleep(0.2)
    assert ckpt is not None, "the run never wrote a checkpoint"
    time.sleep(1.0)  # let the checkpoint finish writing, then kill -9 mid-training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < saved_step < max(reference)

    resumed = subprocess.run(
        [sys.executable, "-m", "galframe.cli", *args, "resume=last"], env=kill_env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    resumed_dir = max((p for p in (tmp_path / "killed" / "train").iterdir()), key=lambda p: p.name)
    after = _losses(resumed_dir)
    first = min(after)
    assert first == saved_step  # continues at the next step, not from scratch
    assert after[first] == pytest.approx(reference[first], rel=1e-5, abs=1e-6)
    assert max(after) == max(reference)


def test_finetune_modes_and_layerwise_lr_decay(tiny_dataset) -> None:
    def build(*overrides):
        return build_model(tiny_dataset, "backbone=resnet18", *overrides)

    model, dm = build("finetune.mode=frozen")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["heads"]
    # a frozen backbone does not move, even its batch-norm statistics, while the head learns
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.tasks["classify"].head[-1].weight.clone()
    opt = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.1)
    model.train()
    batch = next(iter(dm.train_dataloader()))
    loss, _ = model._losses(model(batch["image"]), batch)
    loss.backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, model.tasks["classify"].head[-1].weight)

    model, _ = build("finetune.mode=last_n", "finetune.n_blocks=2")
    blocks = model.backbone.blocks()
    assert all(not p.requires_grad for b in blocks[:-2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[-2:] for p in b.parameters())

    model, _ = build("finetune.mode=full", "finetune.lr_decay=0.5", "optimizer.lr=0.01")
    groups = model.param_groups()
    lrs = [g["lr"] for g in groups if g["name"].startswith("backbone")]
    assert lrs == pytest.approx([0.01 * 0.5 ** (len(lrs) - 1 - i) for i in range(len(lrs))])
    assert groups[-1]["name"] == "heads" and groups[-1]["lr"] == 0.01
    n_params = sum(p.numel() for g in groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters())

    with pytest.raises(ConfigError, match="n_blocks=99"):
        build("finetune.mode=last_n", "finetune.n_blocks=99")


def test_multirun_sweep_over_label_budgets(tiny_dataset, runs_dir) -> None:
    result = galframe_cli("train", "-m", "data.n_labeled=20,40", f"data.path={tiny_dataset}", "logger=none", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((runs_dir / "train-multirun").glob("*/*/metrics.json"))
    assert len(jobs) == 2
    n_train = sorted(json.loads(p.read_text())["n_train"] for p in jobs)
    assert n_train == [20, 40]


def test_wrong_band_count_and_empty_data_are_clear_errors(tiny_dataset, tmp_path) -> None:
    with pytest.raises(DataError, match=r"manifest.json: the dataset has 3 band\(s\) \['g', 'r', 'z'\], the config asks for 2"):
        _run(tmp_path, f"data.path={tiny_dataset}", "data.bands=[g,r]", "trainer=fast", "logger=none")
    with pytest.raises(DataError, match="the training split is empty"):
        _run(tmp_path, f"data.path={tiny_dataset}", "data.split={train:0.0,val:0.5,test:0.5}", "trainer=fast", "logger=none")
    with pytest.raises(DataError, match="n_labeled=100000 but the training split has only"):
        _run(tmp_path, f"data.path={tiny_dataset}", "data.n_labeled=100000", "trainer=fast", "logger=none")
    with pytest.raises(DataError, match="dataset directory not found"):
        _run(tmp_path, f"data.path={tmp_path / 'nowhere'}", "trainer=fast", "logger=none")

    result = galframe_cli("train", f"data.path={tiny_dataset}", "data.bands=[g,r]", "trainer=fast", "logger=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "band(s)" in result.stderr


def test_empty_dataset_is_a_clear_error(tiny_dataset, tmp_path) -> None:
    # a dataset directory whose catalog has no rows (e.g. a reader that matched nothing)
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((Path(tiny_dataset) / "manifest.json").read_text())
    manifest.update(n=0, shards=[])
    (empty / "manifest.json").write_text(json.dumps(manifest))
    pd.read_parquet(Path(tiny_dataset) / "catalog.parquet").head(0).to_parquet(empty / "catalog.parquet")
    with pytest.raises(DataError, match=r"catalog.parquet: the dataset is empty \(0 objects\)"):
        _run(tmp_path, f"data.path={empty}", "trainer=fast", "logger=none")


def test_nan_pixels_name_the_file_and_object(tiny_dataset, tmp_path) -> None:
    import shutil

    import h5py

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    shard = sorted(broken.glob("shard-*.h5"))[0]
    with h5py.File(shard, "r+") as h5:
        h5["images"][:, 0, 10, 10] = float("nan")
    with pytest.raises(DataError, match=r"shard-00000.h5: object id \d+ .* NaN/inf pixels"):
        _run(tmp_path, f"data.path={broken}", "trainer=fast", "logger=none")


@pytest.mark.parametrize("logger,pattern", [("csv", "csv/metrics.csv"), ("tensorboard", "tensorboard/events.out.tfevents.*")])
def test_csv_and_tensorboard_loggers_write_their_files(tiny_dataset, tmp_path, logger, pattern) -> None:
    _run(tmp_path, f"data.path={tiny_dataset}", f"logger={logger}", "evaluate=false", "trainer.log_every_n_steps=1", *SHORT)
    files = list((tmp_path / "run").glob(pattern))
    assert files and files[0].stat().st_size > 0
    if logger == "csv":
        frame = pd.read_csv(files[0])
        assert {"train/loss", "val/classify/auroc"} <= set(frame.columns)


def test_any_timm_model_is_a_backbone(tiny_dataset, tmp_path) -> None:
    metrics = _run(
        tmp_path, "backbone=timm", "backbone.model_name=convnext_atto", f"data.path={tiny_dataset}", "logger=none",
        "data.batch_size=16", *SHORT,
    )
    assert 0.0 <= metrics["test/classify/auroc"] <= 1.0
    with pytest.raises(ConfigError, match="Unknown timm model 'resnet_18'. Did you mean"):
        _run(tmp_path, "backbone=timm", "backbone.model_name=resnet_18", f"data.path={tiny_dataset}", "trainer=fast", "logger=none")


def test_simulate_command_writes_a_dataset_that_data_configs_read_back(tmp_path, runs_dir) -> None:
    out = tmp_path / "sim"
    result = galframe_cli("simulate", "data=sim_desi", "data.n=40", "data.seed=9", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 40 and manifest["bands"] == ["g", "r", "z"]
    assert len(pd.read_parquet(out / "catalog.parquet")) == 40
    trained = galframe_cli("train", "data=dir", f"data.path={out}", "trainer=fast", "logger=none")
    assert trained.returncode == 0, trained.stderr[-3000:]
    again = galframe_cli("simulate", "data.n=40", f"out={out}")
    assert again.returncode == 2 and str(out) in again.stderr and "Traceback" not in again.stderr


def test_init_warm_starts_from_an_earlier_run(tiny_dataset, tmp_path) -> None:
    from galframe.train import checkpoint_file

    first = tmp_path / "first"
    from galframe.train import run

    run(compose_train("backbone=resnet18", f"data.path={tiny_dataset}", "logger=none", "evaluate=false", *SHORT), run_dir=first)
    state = torch.load(checkpoint_file(str(first)), map_location="cpu", weights_only=False)["state_dict"]
    seen = {}

    class Grab:  # record the weights the second run starts from
        def on_fit_start(self, trainer, model):  # noqa: ANN001
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    from pytorch_lightning import Callback

    grab = type("GrabCallback", (Callback,), {"on_fit_start": Grab.on_fit_start})()
    _run(tmp_path, "backbone=resnet18", f"data.path={tiny_dataset}", "logger=none", "evaluate=false", f"init={first}",
         *SHORT, callbacks=[grab])
    key = next(k for k in state if k.endswith("weight") and "backbone" in k)
    assert torch.equal(seen[key], state[key])
    with pytest.raises(ConfigError, match="differ in shape"):
        _run(tmp_path, "backbone=resnet50", f"data.path={tiny_dataset}", "logger=none", "evaluate=false", f"init={first}", *SHORT)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        _run(tmp_path, f"data.path={tiny_dataset}", "logger=none", f"init={tmp_path / 'nope.ckpt'}", *SHORT)
