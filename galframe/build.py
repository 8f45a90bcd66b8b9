"""The construction layer: a config from galframe's Hydra tree, and the model and data a config describes.

* :func:`compose` is the one place that initialises Hydra on ``galframe.conf`` (plus the config groups
  plugins add) and normalises the overrides a user writes (``tasks=[a,b]``; ``data=<reader>`` for
  predict and ingest);
* :func:`build` turns a composed config into ``(GalaxyModel, GalaxyDataModule)``, as ``galframe train``
  trains them (``init=<run>`` warm-starts the model; pretrained ``backbone.weights`` are not looked
  for then, the checkpoint replaces them).
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Optional, Sequence

CONFIG_MODULE = "galframe.conf"
READER_COMMANDS = ("predict", "ingest")  # their data= names a reader config (conf/reader/)

_TASKS_OVERRIDE = re.compile(r"^(?P<prefix>[+~]{0,2})(?:tasks|task|task@tasks)(?P<rest>=.*|$)")


def normalise_overrides(args: Sequence[str], config_name: Optional[str] = None) -> list[str]:
    """Let users write ``tasks=[a,b]`` or ``task=a`` (the group ``task`` is placed at package ``tasks``);
    for predict and ingest, ``data=<name>`` selects a reader config."""
    out = []
    for arg in args:
        m = _TASKS_OVERRIDE.match(arg)
        if m:
            arg = f"{m.group('prefix')}task@tasks{m.group('rest')}"
        out.append(arg)
    if config_name in READER_COMMANDS:
        from galframe.readers import reader_overrides

        out = reader_overrides(out)
    return out


@contextlib.contextmanager
def hydra_session(fresh: bool = False) -> Iterator[Any]:
    """Hydra initialised on galframe's config module for the block (the one already initialised, e.g.
    inside a running command, unless ``fresh``); yields the GlobalHydra instance."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    instance = GlobalHydra.instance()
    if instance.is_initialized() and not fresh:
        yield instance
        return
    instance.clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            yield GlobalHydra.instance()
    finally:
        GlobalHydra.instance().clear()


def compose(config_name: str = "train", overrides: Sequence[str] = (), *, return_hydra_config: bool = False,
            fresh: bool = False) -> Any:
    """The composed config (an OmegaConf DictConfig) of ``config_name`` with the user's ``overrides``."""
    from hydra import compose as hydra_compose

    with hydra_session(fresh=fresh):
        return hydra_compose(config_name, overrides=normalise_overrides(list(overrides), config_name),
                             return_hydra_config=return_hydra_config)


def compose_dict(config_name: str = "train", overrides: Sequence[str] = ()) -> dict:
    """:func:`compose`, resolved to plain containers."""
    return to_dict(compose(config_name, overrides))


def to_dict(cfg: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


# -- model and data ---------------------------------------------------------------------------------------
def model_config(cfg: dict, info: Any) -> dict:
    """The GalaxyModel config of a composed config, for data described by ``info`` (a DataInfo)."""
    from galframe.modalities import model_entries
    from galframe.model import data_info_dict

    return {
        "data_info": data_info_dict(info),
        "backbone": cfg["backbone"],
        "tasks": cfg.get("tasks") or {},
        "optimizer": cfg["optimizer"],
        "scheduler": cfg.get("scheduler"),
        "finetune": cfg.get("finetune"),
        "augment": cfg["data"].get("augment") or {},
        "scaling": cfg["data"].get("scaling") or {"name": "asinh"},
        "seed": int(cfg.get("seed", 0)),
        # the out-of-distribution score's reference set (galframe/trust.py)
        **({"trust": dict(cfg["trust"])} if cfg.get("trust") is not None else {}),
        # label-free objectives (galframe pretrain: {name: {plugin, weight, options}}), trained beside any tasks
        **({"pretexts": cfg["pretexts"]} if cfg.get("pretexts") else {}),
        # modalities besides the image, their encoders and fusion (galframe/modalities.py); nothing for images alone
        **model_entries(cfg),
    }


def task_requires(cfg: dict) -> list[str]:
    """The batch keys the selected tasks read, known without building the model."""
    from galframe import registry
    from galframe.model import split_plugin_cfg

    keys: set[str] = set()
    for task_name, task_cfg in (cfg.get("tasks") or {}).items():
        plugin, _, options = split_plugin_cfg(task_cfg, f"task '{task_name}'", ("plugin", "weight"))
        cls = registry.load("task", plugin)
        keys.update(cls.requires_for(options))  # the one place a task's keys come from
    for pretext_name, pretext_cfg in (cfg.get("pretexts") or {}).items():
        plugin, _, options = split_plugin_cfg(pretext_cfg, f"pretext '{pretext_name}'", ("plugin", "weight"))
        keys.update(registry.load("pretext", plugin).requires_for(options))
    return sorted(keys)


def build_datamodule(cfg: Any, progress: Optional[bool] = None) -> Any:
    """The GalaxyDataModule of a composed config, loading what its tasks read and its modalities besides the image."""
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.modalities import fields

    cfg = to_dict(cfg)
    if progress is None:
        progress = bool((cfg.get("trainer") or {}).get("progress_bar", False))
    return GalaxyDataModule(cfg["data"], requires=task_requires(cfg), progress=progress, fields=fields(cfg))


def build(cfg: Any, *, datamodule: Any = None, resuming: bool = False, progress: Optional[bool] = None) -> tuple[Any, Any]:
    """(GalaxyModel, GalaxyDataModule) of a composed config, as ``galframe train`` trains them.

    ``init=<run dir | .ckpt>`` in the config copies that run's weights into the model (a warm start).
    A model warm-started, or ``resuming`` from a checkpoint (which then replaces every weight, and no warm
    start is made), does not look for its pretrained ``backbone.weights``; its stored config still names them.
    """
    from galframe.checkpoints import init_weights, without_pretrained_weights
    from galframe.model import GalaxyModel

    cfg = to_dict(cfg)
    dm = datamodule if datamodule is not None else build_datamodule(cfg, progress)
    config = model_config(cfg, dm.info())
    init = None if resuming else cfg.get("init")
    if not (init or resuming):
        return GalaxyModel(config), dm
    model = GalaxyModel(without_pretrained_weights(config))
    model.hparams["config"]["backbone"] = config["backbone"]  # the provenance, as a run without init records it
    if init:
        init_weights(model, str(init))
    return model, dm
