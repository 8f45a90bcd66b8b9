"""The built wheel carries the config tree and the first-party plugins' entry points."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT


def test_wheel_carries_conf_and_composes_from_the_installed_copy(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("galframe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (CONF_FILE for CONF_FILE in (ROOT / "conf").rglob("*.yaml")):
        assert f"galframe/conf/{shipped.relative_to(ROOT / 'conf').as_posix()}" in names
    # every plugin's own config groups, and the search-path plugin that puts them on Hydra's path
    plugin_yaml = sorted((ROOT / "plugins").glob("*/conf/**/*.yaml"))
    assert len(plugin_yaml) >= 30
    for shipped in plugin_yaml:
        assert shipped.relative_to(ROOT / "plugins").as_posix() in names
    assert "hydra_plugins/galframe_searchpath/__init__.py" in names
    # hydra_plugins is a namespace package shared with other Hydra plugins: no __init__.py of ours
    assert "hydra_plugins/__init__.py" not in names
    assert "galframe_timm/__init__.py" in names and "galframe_tasks/classify.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "backbone.timm = galframe_timm:TimmBackbone" in text and "galframe = galframe.cli:main" in text

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    code = (
        "import galframe, galframe.conf\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('galframe.conf', version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['backbone=resnet50'])\n"
        "    hitl = compose('hitl', overrides=['acquisition=mix', 'oracle=web'])\n"
        "    pre = compose('pretrain', overrides=['backbone=lvm_small'])\n"
        "    det = compose('train', overrides=['experiment=detect_1000'])\n"
        "    bench = compose('bench')\n"
        "print(galframe.__file__)\n"
        "print(galframe.conf.__file__)\n"
        "print(cfg.backbone.model_name, list(cfg.tasks))\n"
        "print(hitl.acquisition.plugin, hitl.oracle.plugin, hitl.optimizer.lr, pre.backbone.embed_dim, pre.optimizer.betas,"
        " list(det.tasks), bench.suite)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    galframe_file, conf_file, composed, plugin_groups = result.stdout.strip().splitlines()
    assert Path(galframe_file).is_relative_to(target) and Path(conf_file).is_relative_to(target)
    assert composed == "resnet50 ['classify']"
    assert plugin_groups == "mix web 0.001 64 [0.9, 0.999] ['detect'] all"
