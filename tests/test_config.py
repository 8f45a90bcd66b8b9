"""Config composition and the errors a user sees for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from galframe import registry
from galframe.cli import normalise_overrides
from tests.helpers import ROOT, compose_train, config_files, galframe_cli

BACKBONES = [p.stem for p in config_files("backbone") if p.stem != "timm"]
TASK_FILES = {p.stem: p for p in config_files("task")}
TASKS = sorted(TASK_FILES)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_backbone_and_task_compose(backbone: str, task: str) -> None:
    import yaml

    cfg = compose_train(f"backbone={backbone}", f"tasks=[{task}]")
    assert cfg.backbone.plugin in registry.names("backbone")
    # a task file puts its task under its own name (a variant such as detect_vitdet under the task's)
    key = next(k for k in yaml.safe_load(TASK_FILES[task].read_text()) if k != "defaults")
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
    for exp in [p.stem for p in config_files("experiment")]:
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


# -- plugins own their configs; shared groups are composed, not copied ------------------------------
PLUGIN_GROUPS = {
    "galframe_timm": ["backbone/resnet18", "backbone/timm", "experiment/baseline_resnet18"],
    "galframe_tasks": ["task/classify", "task/regress", "task/restore", "task/votes"],
    "galframe_lvm": ["backbone/lvm_tiny", "backbone/lvm_base", "experiment/demo", "pretrain"],
    "galframe_hitl": ["acquisition/entropy", "oracle/web", "hitl"],
    "galframe_mmdet": ["task/detect", "task/detect_vitdet", "experiment/detect_1000"],
    "galframe_bench": ["bench"],
}


def test_core_conf_keeps_only_core_groups() -> None:
    core = ROOT / "conf"
    assert sorted(p.name for p in core.iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "data", "finetune", "hydra", "logger", "optimizer", "paths", "reader", "scheduler", "trainer",
    ]
    assert sorted(p.stem for p in core.glob("*.yaml")) == ["ingest", "predict", "simulate", "train"]


def test_each_plugin_config_comes_from_its_own_package() -> None:
    from galframe.build import hydra_session

    with hydra_session(fresh=True) as hydra:
        sources = hydra.config_loader().get_sources()
        for package, configs in PLUGIN_GROUPS.items():
            for config in configs:
                holders = [s.provider for s in sources if s.is_config(config)]
                assert holders == [package], (config, holders)


def test_hitl_and_pretrain_compose_the_training_blocks_of_train() -> None:
    from omegaconf import OmegaConf

    from galframe.build import compose

    train = compose("train", ["backbone=resnet18"], fresh=True, return_hydra_config=True)
    hitl = compose("hitl", ["backbone=resnet18"], fresh=True, return_hydra_config=True)
    pretrain = compose("pretrain", [], fresh=True, return_hydra_config=True)
    for key in ("optimizer", "scheduler", "finetune", "paths"):
        assert OmegaConf.to_container(hitl[key]) == OmegaConf.to_container(train[key]), key
    assert OmegaConf.to_container(pretrain.optimizer) == {**OmegaConf.to_container(train.optimizer), "betas": [0.9, 0.999]}
    assert pretrain.paths == train.paths
    for cfg, name in ((train, "train"), (hitl, "hitl"), (pretrain, "pretrain")):
        assert cfg.hydra.job.name == name and cfg.hydra.job.chdir is False
        for node in ("run", "sweep"):  # the same templates, unresolved (<runs>/<job name>/<time>)
            assert OmegaConf.to_container(cfg.hydra[node]) == OmegaConf.to_container(train.hydra[node])
        assert OmegaConf.to_container(cfg.hydra.run)["dir"] == "${paths.runs}/${hydra.job.name}/${now:%Y-%m-%d_%H-%M-%S}"
        assert cfg.hydra.job_logging.root.level == "WARNING"
    # a shared group chosen once changes every command
    assert compose("hitl", ["scheduler.name=none"], fresh=True).scheduler.name == "none"
    for name in ("hitl", "pretrain"):
        text = next(p for p in (ROOT / "plugins").glob(f"*/conf/{name}.yaml")).read_text()
        assert "torch.optim.AdamW" not in text and "${oc.env:GALFRAME_RUNS" not in text


def test_optimized_metric_is_declared_by_the_task_or_the_experiment() -> None:
    from omegaconf import OmegaConf

    from galframe.build import compose
    from galframe.cli import objective
    from galframe.errors import ConfigError

    metrics = {"test/loss": 0.7, "test/classify/auroc": 0.81, "test/regress/nll": -1.5, "heldout/l1": 0.02}
    assert objective(compose("train", ["tasks=[classify,regress]"], fresh=True), metrics) == 0.81
    assert objective(compose("train", ["tasks=[regress,classify]"], fresh=True), metrics) == -1.5
    assert objective(compose("train", ["tasks=[regress]", "tasks.regress.optimized_metric=null"], fresh=True), metrics) == 0.7
    assert objective(compose("train", ["tasks=[regress]", "optimized_metric=test/loss"], fresh=True), metrics) == 0.7
    assert objective(compose("pretrain", [], fresh=True), metrics) == 0.02
    assert objective(compose("train", [], fresh=True), {}) == 0.0  # nothing was tested (evaluate=false)
    cfg = compose("train", ["optimized_metric=test/clasify/auroc"], fresh=True)
    with pytest.raises(ConfigError, match="optimized_metric 'test/clasify/auroc' is not among the run's metrics"):
        objective(cfg, metrics)
    # declared in the task's own YAML, which the task plugin never sees as an option
    assert OmegaConf.select(compose("train", [], fresh=True), "tasks.classify.optimized_metric") == "test/classify/auroc"
