"""`galframe train`: compose, build, fit, evaluate on the held-out split, report."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from galframe.build import model_config, to_dict
from galframe.build import task_requires as _task_requires
from galframe.checkpoints import checkpoint_file, find_resume_checkpoint, init_weights, resume_checkpoint
from galframe.errors import ConfigError

__all__ = ["Recipe", "run", "pretrain", "build_logger", "progress_callbacks", "to_dict", "model_config", "checkpoint_file",
           "find_resume_checkpoint", "init_weights", "_task_requires"]  # the last five: moved, importable here too

CORE_TRAINER_KEYS = ("progress_bar",)


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


class Recipe:
    """What one kind of run does around galframe train's loop (:func:`run`).  The base recipe is ``galframe
    train``: the tasks' losses, a checkpoint by the validation metric, the held-out test.  A backbone's
    self-supervised pretraining (``Backbone.pretrain``, ``galframe pretrain``) is another recipe of the same loop:
    its pretext objectives as the losses, its own checkpoints, monitors and exported weights.  Every hook has
    ``galframe train``'s behaviour as its default."""

    #: the command: ``resume=auto|last`` looks among this command's runs; the other local ranks re-run it
    job: str = "train"

    def configure(self, cfg: dict) -> Optional[dict]:
        """The composition to build from the composed config; None: nothing to do (e.g. the weights exist)."""
        return cfg

    def build(self, cfg: dict, resuming: bool, progress: bool) -> tuple[Any, Any]:
        """(model, datamodule): :func:`galframe.build.build`."""
        from galframe.build import build

        return build(cfg, resuming=resuming, progress=progress)

    def checkpoint(self, model: Any, dm: Any, cfg: dict, run_dir: Path) -> tuple[str, Any]:
        """(``best`` or ``last``: the checkpoint :meth:`finish` evaluates, the ModelCheckpoint callback)."""
        return checkpoint_callback(model, cfg, run_dir)

    def callbacks(self, model: Any, dm: Any, cfg: dict, run_dir: Path, logger: Any) -> list:
        """Callbacks of this kind of run, after the checkpoint and the caller's."""
        return []

    def finish(self, trainer: Any, model: Any, dm: Any, cfg: dict, run_dir: Path, checkpoint: Optional[str]) -> dict:
        """The run's metrics after fitting (every rank calls it): the held-out test of ``checkpoint`` (None: the
        final weights), written to ``metrics.json`` with the reports."""
        trainer_cfg = cfg["trainer"]
        if cfg.get("evaluate", True) and len(dm.splits.get("test", [])) > 0 and not trainer_cfg.get("fast_dev_run"):
            return evaluate(trainer, model, dm, checkpoint, run_dir)
        return {}


def run(cfg: Any, run_dir: Optional[Path] = None, callbacks: Sequence[Any] = (), recipe: Optional[Recipe] = None) -> dict:
    """Train one composition by ``recipe`` (default: ``galframe train``'s); returns its metrics (``metrics.json``)."""
    import warnings

    import pytorch_lightning as pl

    from galframe import distributed

    recipe = recipe or Recipe()
    quiet_known_warnings()
    # a resumed run writes its checkpoints into its own run directory, as intended
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    cfg = to_dict(cfg)
    run_dir = Path(distributed.rank_run_dir(run_dir) or cfg.get("run_dir") or Path.cwd()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    built = recipe.configure(cfg)
    if built is None:
        return {}
    cfg = built

    trainer_cfg = dict(cfg["trainer"])
    progress = trainer_cfg.pop("progress_bar", "rich")
    ckpt_path = resume_checkpoint(cfg, run_dir, job=recipe.job)
    if ckpt_path:
        print(f"Resuming from {ckpt_path}")
    model, dm = recipe.build(cfg, bool(ckpt_path), bool(progress))

    select, checkpoint = recipe.checkpoint(model, dm, cfg, run_dir)
    logger = build_logger(cfg, run_dir)
    cbs: list[Any] = [checkpoint, *callbacks, *recipe.callbacks(model, dm, cfg, run_dir, logger),
                      *progress_callbacks(progress)]
    # trainer.devices > 1: start the other local ranks (one run directory; rank 0 writes the outputs)
    distributed.launch(trainer_cfg, recipe.job, run_dir, [f"resume={distributed.quote(ckpt_path) if ckpt_path else 'null'}"])
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=cbs,
        enable_progress_bar=bool(progress),
        enable_model_summary=bool(progress),
        **distributed.trainer_kwargs(trainer_cfg),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    best = (checkpoint.best_model_path or None) if select == "best" else None  # None: the final weights
    metrics = recipe.finish(trainer, model, dm, cfg, run_dir, best)
    _finish_wandb(cfg, trainer, metrics)
    distributed.finish()  # wait for the ranks this process started
    return metrics


def checkpoint_callback(model: Any, cfg: dict, run_dir: Path) -> tuple[str, Any]:
    """(``select``, the ModelCheckpoint writing ``checkpoints/best.ckpt`` by the model's validation metric, or
    by none with select=last, and ``checkpoints/last.ckpt``)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    select = str(cfg.get("select", "best"))
    if select not in ("best", "last"):
        raise ConfigError(f"select={select}: the checkpoint to test is 'best' (by the validation metric) or 'last'.")
    monitor, mode = model.monitor() if select == "best" else (None, "min")
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor=monitor, mode=mode,
                                 save_last=True, save_top_k=1)
    return select, checkpoint


def evaluate(trainer: Any, model: Any, dm: Any, checkpoint: Optional[str], run_dir: Path) -> dict:
    """The held-out metrics of ``checkpoint`` (None: the model's final weights); rank 0 writes ``metrics.json``
    and the report."""
    from galframe import distributed
    from galframe.report import write_reports

    results = trainer.test(model, datamodule=dm, ckpt_path=checkpoint, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    metrics["n_train"] = float(len(dm.splits["train"]))
    if trainer.is_global_zero:  # metrics were reduced over the ranks; one copy of the outputs
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        write_reports(distributed.whole_model(model, trainer, checkpoint), dm, metrics, run_dir, trainer)
    return metrics


def _finish_wandb(cfg: dict, trainer: Any, metrics: dict) -> None:
    wandb_run = cfg.get("logger", {}).get("name") == "wandb" and trainer.is_global_zero
    if wandb_run and trainer.logger and hasattr(trainer.logger, "experiment"):
        import wandb

        if metrics:
            trainer.logger.experiment.summary.update(metrics)
        wandb.finish()


def pretrain(cfg: Any, run_dir: Any = None, callbacks: Sequence[Any] = ()) -> dict:
    """Self-supervised pretraining (``galframe pretrain``): :func:`run` by the backbone plugin's pretraining
    recipe (its ``Backbone.pretrain()``); ``cfg`` is a composed ``pretrain`` config.  Returns the run's metrics."""
    from galframe import registry

    plugin = str(cfg["backbone"]["plugin"])
    cls = registry.load("backbone", plugin)
    if cls.pretrain is None:
        able = [p.name for p in registry.plugins("backbone") if p.load().pretrain is not None]
        raise ConfigError(
            f"backbone plugin '{plugin}' has no self-supervised pretraining. Backbones that do: {', '.join(able) or '(none)'}."
        )
    return run(cfg, None if run_dir is None else Path(run_dir), callbacks, recipe=cls.pretrain())


def quiet_known_warnings() -> None:
    """Silence library warnings that say nothing actionable to a galframe user (every command that trains)."""
    import warnings

    for pattern in (
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*overridden `on_after_batch_transfer`.*",
        ".*does not have many workers.*",
        ".*The number of training batches .* is smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
