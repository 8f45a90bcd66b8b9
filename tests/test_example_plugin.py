"""The out-of-tree example plugin (examples/galframe-example-plugin) extends galframe without touching it.

The example is built and installed with pip into a scratch directory (never into
the environment), then used through ``PYTHONPATH`` by the ``galframe`` command,
as a user who ran ``pip install galframe-example-plugin`` would.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, galframe_cli

EXAMPLE = ROOT / "examples" / "galframe-example-plugin"
SHORT_RUN = (
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    # not keys of conf/trainer/cpu.yaml: '++' adds them (or overrides them, should the file ever set them)
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "logger=csv",
)


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example plugin, built from source by pip and installed into a scratch ``--target`` directory."""
    scratch = tmp_path_factory.mktemp("example-plugin")
    # build from a copy, so setuptools' build/ and *.egg-info never land in the source tree
    source = scratch / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    site = scratch / "site"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
            "--disable-pip-version-check", "--target", str(site), str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"pip could not install the example plugin:\n{proc.stdout}\n{proc.stderr}"
    return site


@pytest.fixture(scope="module")
def plugin_env(example_site) -> dict:
    path = os.pathsep.join(p for p in (str(example_site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def test_wheel_ships_configs_and_searchpath_plugin(example_site):
    conf = example_site / "galframe_example" / "conf"
    assert (conf / "__init__.py").is_file()
    assert (conf / "backbone" / "tiny_cnn.yaml").is_file()
    assert (conf / "task" / "color.yaml").is_file()
    assert (conf / "reader" / "npy.yaml").is_file()
    plugin_dir = example_site / "hydra_plugins" / "galframe_example_searchpath"
    assert (plugin_dir / "galframe_example_searchpath.py").is_file()
    # hydra_plugins is a namespace package: an __init__.py would hide every other Hydra plugin
    assert not (example_site / "hydra_plugins" / "__init__.py").exists()
    assert not (EXAMPLE / "build").exists(), "the install must not build inside the source tree"


def test_plugins_lists_the_example(plugin_env):
    proc = galframe_cli("plugins", env=plugin_env)
    _ok(proc)
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(cells) == 5:
            rows[(cells[0], cells[1])] = cells
    assert rows[("backbone", "tiny_cnn")][2:] == ["galframe_example.backbone:TinyCNN", "galframe-example-plugin", "0.1.0"]
    assert rows[("task", "color")][2:] == ["galframe_example.task:ColorTask", "galframe-example-plugin", "0.1.0"]
    assert rows[("reader", "npy")][2:] == ["galframe_example.reader:NpyReader", "galframe-example-plugin", "0.1.0"]
    assert ("backbone", "timm") in rows and ("task", "classify") in rows  # first-party plugins still there


def test_the_plugins_own_tests_pass_with_galframe_testing(plugin_env, tmp_path):
    """The example's tests (examples/galframe-example-plugin/tests) call galframe.testing on the installed plugin."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=600, env={**os.environ, **plugin_env},
    )
    _ok(proc)
    assert "4 passed" in proc.stdout


def test_ingest_with_the_example_reader(plugin_env, tmp_path):
    import numpy as np
    import pandas as pd

    cube = np.random.default_rng(1).normal(1.0, 0.1, size=(6, 3, 40, 40)).astype(np.float32)
    cube[4] = np.nan  # rejected, listed in rejects.csv
    np.save(tmp_path / "cube.npy", cube)
    out = tmp_path / "ingested"
    proc = galframe_cli("ingest", "data=npy", f"data.path={tmp_path / 'cube.npy'}", "data.shard_size=4", "image_size=32",
                        f"out={out}", "progress=false", env=plugin_env)
    _ok(proc)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 5 and manifest["bands"] == ["g", "r", "z"] and manifest["image_size"] == 32
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert catalog["source_id"].astype(str).tolist() == ["0", "1", "2", "3", "5"]
    rejects = pd.read_csv(out / "rejects.csv")
    assert rejects["id"].astype(str).tolist() == ["4"] and rejects["reason"].tolist() == ["no finite pixel"]


def test_unknown_backbone_without_the_plugin(runs_dir):
    proc = galframe_cli("train", "backbone=tiny_cnn", "trainer=fast", "logger=none")
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    assert "tiny_cnn" in message
    assert "Available backbone configs: " in message and "resnet18" in message


@pytest.mark.parametrize("tasks", ["task=color", "tasks=[classify,color]"], ids=["color", "classify+color"])
def test_fast_dev_run(plugin_env, tiny_dataset, runs_dir, tasks):
    proc = galframe_cli(
        "train", "backbone=tiny_cnn", tasks, f"data.path={tiny_dataset}", "trainer=fast", "logger=none", env=plugin_env
    )
    _ok(proc)


def test_short_run_writes_color_metrics(plugin_env, tiny_dataset, runs_dir):
    proc = galframe_cli(
        "train", "backbone=tiny_cnn", "task=color", f"data.path={tiny_dataset}", *SHORT_RUN, env=plugin_env
    )
    _ok(proc)
    found = sorted(runs_dir.rglob("metrics.json"))
    assert len(found) == 1, f"expected one run under {runs_dir}, found {found}"
    run_dir = found[0].parent
    metrics = json.loads(found[0].read_text())
    for key in ("test/color/mae", "test/color/rmse", "test/color/loss"):
        assert key in metrics and math.isfinite(metrics[key]), metrics
    assert 0.0 <= metrics["test/color/mae"] <= metrics["test/color/rmse"]
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert (run_dir / "color_color.png").is_file()  # the task's optional write_report hook

    import pandas as pd

    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    assert "color_g_r" in pred and pred["color_g_r"].notna().all()
