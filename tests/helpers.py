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
    from galframe.build import build

    return build(compose_train(f"data.path={dataset}", *overrides), progress=False)


def compose_train(*overrides: str):
    """The composed train config (as galframe train would see it, with tasks= aliases)."""
    from galframe.build import compose

    return compose("train", overrides, fresh=True)
