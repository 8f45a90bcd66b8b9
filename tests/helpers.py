"""Helpers for tests: run the CLI as a user would, compose configs as galframe does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the core config tree and the config trees the first-party plugins ship (plugins/<package>/conf/)
CONF_DIRS = (ROOT / "conf", *sorted((ROOT / "plugins").glob("*/conf")))


def config_files(group: str) -> list[Path]:
    """The YAML files of a config group, over the core tree and every first-party plugin's."""
    return sorted((p for conf in CONF_DIRS for p in (conf / group).glob("*.yaml")), key=lambda p: p.stem)


def galframe_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``galframe`` command in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "galframe.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(cwd or ROOT),
        timeout=timeout,
    )


def build_model(dataset, *overrides: str):
    """(GalaxyModel, datamodule) for a composition on ``dataset``, as ``galframe train`` builds them."""
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.model import GalaxyModel
    from galframe.train import _task_requires, model_config, to_dict

    cfg = to_dict(compose_train(f"data.path={dataset}", *overrides))
    dm = GalaxyDataModule(cfg["data"], requires=_task_requires(cfg), progress=False)
    return GalaxyModel(model_config(cfg, dm.info())), dm


def compose_train(*overrides: str):
    """The composed train config (as galframe train would see it, with tasks= aliases)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from galframe.cli import normalise_overrides

    GlobalHydra.instance().clear()
    with initialize_config_module("galframe.conf", version_base="1.3"):
        return compose("train", overrides=normalise_overrides(list(overrides)))
