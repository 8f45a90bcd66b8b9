"""Config composition and the errors a user sees for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from galframe import registry
from galframe.cli import normalise_overrides
from tests.helpers import ROOT, compose_train, galframe_cli

CONF = ROOT / "conf"
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml") if p.stem != "timm")
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_backbone_and_task_compose(backbone: str, task: str) -> None:
    import yaml

    cfg = compose_train(f"backbone={backbone}", f"tasks=[{task}]")
    assert cfg.backbone.plugin in registry.names("backbone")
    # a task file puts its task under its own name (a variant such as detect_vitdet under the task's)
    key = next(k for k in yaml.safe_load((CONF / "task" / f"{task}.yaml").read_text()) if k != "defaults")
    assert list(cfg.tasks) == [key]
    assert cfg.tasks[key].plugin in registry.names("task")


def test_tasks_alias_and_multi_task_list() -> None:
    assert normalise_overrides(["tasks=[a,b]", "task=c", "+tasks=[d]", "trainer.max_epochs=2"]) == [
        "task@tasks=[a,b]",
        "task@tasks=c",
        "+task@tasks=[d]",
        "trainer.max_epochs=2",
    ]
    cfg = compose_train("task=classify")
    assert list(cfg.tasks) == ["classify"]


def test_experiment_files_compose() -> None:
    for exp in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = compose_train(f"experiment={exp}")
        assert cfg.trainer.max_epochs >= 1


def test_importing_galframe_pulls_in_no_plugin_dependencies() -> None:
    code = (
        "import sys, galframe, galframe.registry, galframe.cli, galframe.api, galframe.errors\n"
        "from galframe import registry\n"
        "registry.plugins()\n"
        "heavy = [m for m in ('timm', 'galsim', 'wandb', 'mmdet', 'mmcv', 'galframe_timm', 'galframe_tasks',"
        " 'pytorch_lightning', 'fastapi', 'h5py') if m in sys.modules]\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_plugin_name_lists_available_and_closest() -> None:
    with pytest.raises(registry.PluginError) as err:
        registry.load("backbone", "timmm")
    msg = str(err.value)
    assert "Unknown backbone plugin 'timmm'" in msg and "Did you mean 'timm'" in msg and "timm" in msg.split("Available:")[1]


def test_unknown_plugin_option_names_closest() -> None:
    from galframe.api import DataInfo
    from galframe.errors import ConfigError

    with pytest.raises(ConfigError, match="has no option 'modle_name'. Did you mean 'model_name'"):
        registry.build("backbone", "timm", {"modle_name": "resnet18"}, data=DataInfo(bands=("g", "r", "z"), image_size=64))


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_misspelled_key_gives_one_clear_message() -> None:
    err = _one_line_error(galframe_cli("train", "trainer.max_epoch=3"))
    assert "Unknown config key 'trainer.max_epoch'" in err
    assert "Did you mean 'trainer.max_epochs'" in err


def test_unknown_group_option_gives_closest_match() -> None:
    err = _one_line_error(galframe_cli("train", "backbone=resnet181"))
    assert "Unknown backbone 'resnet181'" in err and "resnet18" in err and "resnet50" in err


def test_unknown_option_value_is_reported(tiny_dataset) -> None:
    err = _one_line_error(galframe_cli("train", "finetune.mode=frozn", "trainer=fast", "logger=none", f"data.path={tiny_dataset}"))
    assert "Unknown finetune.mode 'frozn'. Did you mean 'frozen'?" in err


def test_unknown_command() -> None:
    result = galframe_cli("trian")
    assert result.returncode == 2 and "Did you mean 'train'" in result.stderr
