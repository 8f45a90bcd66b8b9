"""`galframe train`: compose, build, fit, evaluate on the held-out split, report."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from galframe.errors import ConfigError, DataError

CORE_TRAINER_KEYS = ("progress_bar",)


def to_dict(cfg: Any) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def model_config(cfg: dict, info: Any) -> dict:
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
    }


def find_resume_checkpoint(spec: str, runs_root: Path, current: Optional[Path] = None, job: str = "") -> Optional[Path]:
    """``last``: the newest ``checkpoints/last.ckpt`` of an earlier ``job`` run (``<runs>/<job>*/...``);
    ``auto``: the ``current`` run directory's own ``checkpoints/last.ckpt`` if it has one, else None (a job
    requeued by SLURM continues where it stopped; a new one starts); else a run directory or a checkpoint file."""
    if spec == "auto":
        own = Path(current) / "checkpoints" / "last.ckpt" if current is not None else None
        return own if own is not None and own.is_file() else None
    if spec == "last":
        candidates = [
            p
            for p in runs_root.glob(f"{job}*/**/checkpoints/last.ckpt")
            if current is None or current not in p.parents
        ]
        if not candidates:
            raise DataError(f"{runs_root}: resume=last found no checkpoints/last.ckpt in any earlier {job or ''} run.")
        return max(candidates, key=lambda p: p.stat().st_mtime)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint to resume from (resume={spec}).")
    return path


def build_logger(cfg: dict, run_dir: Path) -> Any:
    logger_cfg = dict(cfg.get("logger") or {"name": "none"})
    name = logger_cfg.pop("name", "none")
    if name == "none":
        return False
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    if name == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        mode = logger_cfg.pop("mode", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        return WandbLogger(
            project=logger_cfg.pop("project", "galframe"),
            name=logger_cfg.pop("run_name", None) or run_dir.name,
            save_dir=str(run_dir),
            offline=(mode == "offline"),
            tags=list(logger_cfg.pop("tags", []) or []),
            config=cfg,
            **logger_cfg,
        )
    raise ConfigError(f"Unknown logger '{name}'. Available: wandb, csv, tensorboard, none.")


def progress_callbacks(progress: Any) -> list:
    """The progress-bar callback for ``trainer.progress_bar``: rich (default), tqdm, or none (false)."""
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

    if progress == "rich":
        return [RichProgressBar(leave=True)]
    if progress == "tqdm":
        return [TQDMProgressBar()]
    return []


def run(cfg: Any, run_dir: Optional[Path] = None, callbacks: Sequence[Any] = ()) -> dict:
    """Train one composition; returns the held-out metrics (and writes them to ``metrics.json``)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from galframe import distributed
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.model import GalaxyModel
    from galframe.report import write_reports

    _quiet_known_warnings()
    cfg = to_dict(cfg)
    run_dir = Path(distributed.rank_run_dir(run_dir) or cfg.get("run_dir") or Path.cwd()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)

    trainer_cfg = dict(cfg["trainer"])
    progress = trainer_cfg.pop("progress_bar", "rich")
    dm = GalaxyDataModule(cfg["data"], requires=_task_requires(cfg), progress=bool(progress))
    info = dm.info()
    model = GalaxyModel(model_config(cfg, info))
    ckpt_path = None
    if cfg.get("resume"):
        runs = Path(cfg["paths"]["runs"]).resolve()
        found = find_resume_checkpoint(str(cfg["resume"]), runs, run_dir, job="train")
        ckpt_path = str(found) if found else None  # resume=auto in a new run directory: nothing to resume
    if ckpt_path:
        print(f"Resuming from {ckpt_path}")

    if cfg.get("init") and not ckpt_path:
        init_weights(model, str(cfg["init"]))

    select = str(cfg.get("select", "best"))
    if select not in ("best", "last"):
        from galframe.errors import ConfigError

        raise ConfigError(f"select={select}: the checkpoint to test is 'best' (by the validation metric) or 'last'.")
    monitor, mode = model.monitor() if select == "best" else (None, "min")
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=monitor,
        mode=mode,
        save_last=True,
        save_top_k=1,
    )
    cbs: list[Any] = [checkpoint, *callbacks, *progress_callbacks(progress)]
    # trainer.devices > 1: start the other local ranks (one run directory; rank 0 writes the outputs)
    distributed.launch(trainer_cfg, "train", run_dir, [f"resume={distributed.quote(ckpt_path) if ckpt_path else 'null'}"])
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=build_logger(cfg, run_dir),
        callbacks=cbs,
        enable_progress_bar=bool(progress),
        enable_model_summary=bool(progress),
        **distributed.trainer_kwargs(trainer_cfg),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    metrics: dict[str, float] = {}
    if cfg.get("evaluate", True) and len(dm.splits.get("test", [])) > 0 and not trainer_cfg.get("fast_dev_run"):
        best = (checkpoint.best_model_path or None) if select == "best" else None  # None: the final weights
        results = trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
        metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        metrics["n_train"] = float(len(dm.splits["train"]))
        if trainer.is_global_zero:  # metrics were reduced over the ranks; one copy of the outputs
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            write_reports(distributed.whole_model(model, trainer, best), dm, metrics, run_dir, trainer)
    wandb_run = cfg.get("logger", {}).get("name") == "wandb" and trainer.is_global_zero
    if wandb_run and trainer.logger and hasattr(trainer.logger, "experiment"):
        import wandb

        if metrics:
            trainer.logger.experiment.summary.update(metrics)
        wandb.finish()
    distributed.finish()  # wait for the ranks this process started
    return metrics


def checkpoint_file(spec: str) -> Path:
    """A checkpoint from a run directory (its best, else its last checkpoint) or a ``.ckpt`` path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise ConfigError(f"{path}: run directory has no checkpoints/best.ckpt or checkpoints/last.ckpt.")
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found.")
    return path


def init_weights(model: Any, spec: str) -> None:
    """Warm start: copy the weights of an earlier run into ``model`` (same backbone; tasks matched by name)."""
    import torch

    file = checkpoint_file(spec)
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as exc:
        raise ConfigError(f"{file}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    own = model.state_dict()
    # task buffers hold what the new data decides (class weights, target normalisation): keep the new run's
    task_buffers = {f"tasks.{n}" for n, _ in model.tasks.named_buffers()} if hasattr(model, "tasks") else set()
    state = {k: v for k, v in state.items() if k not in task_buffers}
    clash = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if clash:
        raise ConfigError(
            f"{file}: {len(clash)} tensor(s) differ in shape from this model (e.g. {clash[0]}): "
            "init needs the same backbone and task heads."
        )
    missing, _ = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if len(missing) == len(own):
        raise ConfigError(f"{file}: no tensor of the checkpoint matches this model (different backbone?).")


def _quiet_known_warnings() -> None:
    """Silence library warnings that say nothing actionable to a galframe user."""
    import warnings

    for pattern in (
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*overridden `on_after_batch_transfer`.*",
        ".*does not have many workers.*",
        ".*The number of training batches .* is smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _task_requires(cfg: dict) -> list[str]:
    """The batch keys the selected tasks read, known without building the model."""
    from galframe import registry
    from galframe.model import split_plugin_cfg

    keys: set[str] = set()
    for task_name, task_cfg in (cfg.get("tasks") or {}).items():
        plugin, _, options = split_plugin_cfg(task_cfg, f"task '{task_name}'", ("plugin", "weight"))
        cls = registry.load("task", plugin)
        keys.update(cls.requires_for(options) if hasattr(cls, "requires_for") else getattr(cls, "requires", ()))
    return sorted(keys)
