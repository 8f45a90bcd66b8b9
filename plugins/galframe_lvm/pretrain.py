"""`galframe pretrain`: teach the LVM without labels, by the pretext objectives ``pretrain.objectives``
selects (plugins of kind ``pretext``, see :mod:`galframe_lvm.pretext`): masked restoration
(``restore``, below) and DINO/iBOT self-distillation (``distill``), each with a weight.

The restoration objective:

Each training batch, in calibrated flux, is augmented (rotations, flips, shifts from
``data.augment``), degraded (extra sky noise and PSF blur, each on a random part of the batch),
scaled exactly as galframe scales network input (``data.scaling``), and masked SimMIM-style.
The network restores the noise-free ``clean`` image (``pretrain.target=clean``, for simulations)
or the original unmasked, undegraded input (``target=input``, for real data); the loss is the
L1 distance in scaled units, on every pixel or on the masked ones only (``pretrain.loss_on``).

Masking: masked patches are replaced by a learnable mask token right after the patch embedding
(as in SimMIM), not by zeros in pixel space.  A zeroed pixel patch is a plausible image (empty
sky): the network could not tell "hidden" from "nothing there", and its first layers would
learn statistics of images with holes that downstream data never have.  A token it never sees
at fine-tuning time says "hidden" unambiguously and leaves the patch embedding to real pixels.
The decoder's global residual (input + correction) uses the input with the masked pixels set to
zero, so no hidden pixel reaches the output.  A backbone without ``mask`` support (another
decoder plugin) gets the zeroed image instead.

Outputs in the run directory: ``checkpoints/{last,best}.ckpt`` (``resume=last|<dir>|<ckpt>``),
``samples/epoch_NNN.png`` every ``pretrain.sample_every_n_epochs`` epochs and ``samples.png``
at the end (also logged to W&B), ``weights/<name>.safetensors`` + ``.json`` (load them with
``backbone.weights=...``), and ``metrics.json``: the held-out L1 of the model and of two
baselines, identity (output = the masked, degraded input) and zero (output = 0): keys
``heldout/l1``, ``heldout/l1_identity``, ``heldout/l1_zero`` (every pixel), the same with
``_masked`` / ``_visible`` after ``l1`` for the masked / visible pixels only, ``n_heldout`` and
``global_step``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from galframe.errors import ConfigError, DataError, check_choice
from galframe.train import Recipe
from galframe_lvm.pretext import MaskedRestoration

DEFAULTS: dict[str, Any] = {
    # the restoration objective's settings (pretext.restore), kept at the top level of pretrain:
    **json.loads(json.dumps(MaskedRestoration.DEFAULTS)),
    # which pretext objectives train the backbone, each with a weight (0 = not built) and its options
    "objectives": {"restore": {"weight": 1.0}, "distill": {"weight": 0.0}},
    # label-free run, labelled monitor: kNN accuracy of the embedding on the validation split, when it has labels
    "knn": {"every_n_epochs": 1, "max_objects": 2000, "k": 20},
    "warmup_steps": 200,
    "min_lr_ratio": 0.01,
    "sample_every_n_epochs": 1,
    "n_samples": 8,
    "heldout_split": "test",
    "heldout_max": None,
    "checkpoint_every_n_steps": None,
    "weights_name": "lvm",
    "zoo_name": None,
    "reuse": False,
}
RESTORE_KEYS = ("target", "mask", "loss_on", "noise", "blur")


def pretrain_settings(cfg: Optional[Mapping[str, Any]]) -> dict:
    """``pretrain:`` merged over the defaults, checked."""
    out = json.loads(json.dumps(DEFAULTS))
    for key, value in dict(cfg or {}).items():
        if key not in DEFAULTS:
            from galframe.errors import closest

            best = closest(key, DEFAULTS)
            raise ConfigError(
                f"pretrain has no option '{key}'." + (f" Did you mean '{best}'?" if best else "")
                + f" Its options: {', '.join(sorted(DEFAULTS))}."
            )
        if key == "objectives" and isinstance(value, Mapping):
            for name, opts in dict(value).items():
                out["objectives"][str(name)] = {**out["objectives"].get(str(name), {}), **dict(opts or {})}
        elif isinstance(DEFAULTS[key], dict) and isinstance(value, Mapping):
            out[key].update(dict(value))
        else:
            out[key] = value
    check_choice("pretrain.heldout_split", str(out["heldout_split"]), ("test", "val"))
    if not objective_specs(out):
        raise ConfigError("pretrain.objectives gives every objective weight 0: nothing to train "
                          "(e.g. pretrain.objectives.restore.weight=1).")
    return out


def objective_specs(settings: Mapping[str, Any]) -> dict[str, tuple[float, dict]]:
    """name -> (weight, options) of every objective with a non-zero weight."""
    specs = {}
    for name, opts in dict(settings["objectives"]).items():
        opts = dict(opts or {})
        weight = float(opts.pop("weight", 1.0))
        if weight == 0:
            continue
        if name == "restore":
            opts = {**{k: settings[k] for k in RESTORE_KEYS}, **opts}
        specs[str(name)] = (weight, opts)
    return specs


def objective_requires(settings: Mapping[str, Any]) -> tuple[str, ...]:
    from galframe import registry

    keys: set[str] = set()
    for name, (_, opts) in objective_specs(settings).items():
        keys.update(registry.load("pretext", name).requires_for(opts))
    return tuple(sorted(keys))


NO_DECAY = ("mask_token", "relative_position_bias_table")  # with biases and norms: no weight decay


def training_config(cfg: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    """The composed pretrain config as galframe train's: the backbone trained by the pretext objectives and
    no task, under a step-counted warm-up and cosine decay (``pretrain.warmup_steps``, ``min_lr_ratio``)."""
    data = dict(cfg["data"])
    augment = dict(data.get("augment") or {})
    augment.pop("noise", None)  # pretraining draws its own degradations
    return {
        **dict(cfg),
        "data": {**data, "augment": augment},
        "tasks": {},
        "pretexts": {name: {"plugin": name, "weight": weight, **opts}
                     for name, (weight, opts) in objective_specs(settings).items()},
        "scheduler": {"name": "cosine", "warmup_steps": int(settings["warmup_steps"] or 0),
                      "min_lr_ratio": float(settings["min_lr_ratio"])},
        "finetune": {"mode": "full", "no_decay": list(NO_DECAY)},
        "init": None,
    }


def restoration(model: Any) -> Optional[Any]:
    """The restoration objective of a pretraining model, if it has one (held-out L1 and sample pictures need it)."""
    return model.pretexts["restore"] if "restore" in model.pretexts else None


def export_backbone(model: Any) -> Any:
    """The backbone whose weights are saved: a self-distillation teacher when there is one (the EMA
    weights are the better features), else the trained backbone."""
    if "distill" in model.pretexts:
        return model.pretexts["distill"].teacher["backbone"]
    return model.backbone


def _to_device(batch: Mapping[str, Any], device: Any) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def heldout_l1(model: Any, loader: Any, limit: Optional[int] = None) -> dict[str, float]:
    """L1 (scaled units) of the model and of the identity and zero baselines, on all / masked / visible pixels."""
    rest = restoration(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts = {"all": 0.0, "masked": 0.0, "visible": 0.0}
    seen = 0
    for i, batch in enumerate(loader):
        if limit is not None and seen >= limit:
            break
        c = rest.corrupt(_to_device(batch, model.device), model.generator(3, i))
        out = rest.restore(c["x"], c["mask"], c["pixmask"])
        m = c["pixmask"].expand_as(out)
        regions = {"all": torch.ones_like(m), "masked": m, "visible": 1 - m}
        for region, w in regions.items():
            counts[region] += float(w.sum())
        for name, pred in (("model", out), ("identity", c["masked_input"]), ("zero", torch.zeros_like(out))):
            err = (pred - c["target"]).abs()
            for region, w in regions.items():
                key = f"{region}/{name}"
                sums[key] = sums.get(key, 0.0) + float((err * w).sum())
        seen += out.shape[0]
    if was_training:
        model.train()
    result = {"n_heldout": float(seen)}
    for key, total in sums.items():
        region, name = key.split("/")
        suffix = "" if region == "all" else f"_{region}"
        result[f"heldout/l1{suffix}" + ("" if name == "model" else f"_{name}")] = total / max(counts[region], 1.0)
    return result


@torch.no_grad()
def sample_grid(model: Any, batch: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """PNG, one column per object; rows: input / masked + degraded input / output / truth (Lupton RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galframe.report import rgb

    was_training = model.training
    model.eval()
    batch = _to_device(batch, model.device)
    rest = restoration(model)
    c = rest.corrupt(batch, model.generator(4, 0))
    out = rest.restore(c["x"], c["mask"], c["pixmask"])
    if was_training:
        model.train()
    rows = {
        "input": batch["image"],
        "masked +\ndegraded": model.scaling.inverse(c["masked_input"]),
        "output": model.scaling.inverse(out),
        f"truth\n({rest.settings['target']})": model.scaling.inverse(c["target"]),
    }
    n = batch["image"].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n + 0.8, 1.5 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        cube = images.detach().float().cpu().numpy()
        for k in range(n):
            ax = axes[r, k]
            with np.errstate(invalid="ignore", divide="ignore"):  # all-black (masked) stamps
                ax.imshow(rgb(cube[k], model.bands), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class SampleGrid(pl.Callback):
    """Every ``every`` epochs: the sample PNG into ``<run_dir>/samples/``, logged to W&B when it is the logger."""

    def __init__(self, batch: Mapping[str, Any], run_dir: Path, every: int) -> None:
        self.batch, self.run_dir, self.every = batch, Path(run_dir), int(every)
        self.written: list[Path] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        if self.every <= 0 or (trainer.current_epoch + 1) % self.every or trainer.sanity_checking:
            return
        path = self.run_dir / "samples" / f"epoch_{trainer.current_epoch + 1:03d}.png"
        title = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
        self.written.append(sample_grid(pl_module, self.batch, path, title))
        log_image(trainer.logger, path, trainer.global_step)


class KnnMonitor(pl.Callback):
    """Each ``every_n_epochs``: leave-one-out kNN accuracy of the exported backbone's embedding on up to
    ``max_objects`` of the validation split, when its catalog has classes.  A monitor for people
    (is the embedding learning morphology?); it never selects a checkpoint or touches training."""

    def __init__(self, dataset: Any, labels: np.ndarray, every: int, k: int) -> None:
        self.dataset, self.labels, self.every, self.k = dataset, labels, int(every), int(k)
        self.history: list[dict] = []

    @classmethod
    def for_data(cls, dm: Any, cfg: Mapping[str, Any]) -> Optional["KnnMonitor"]:
        every = int(cfg.get("every_n_epochs") or 0)
        val = dm.splits.get("val")
        if every <= 0 or val is None or len(val) < 10 or "class" not in val.columns:
            return None
        n = min(int(cfg.get("max_objects") or len(val)), len(val))
        ds = dm.dataset("val")
        labels = np.array(val["class"].to_numpy()[:n])
        if (labels < 0).all():
            return None
        return cls(torch.utils.data.Subset(ds, range(n)), labels, every, int(cfg.get("k", 20)))

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or (trainer.current_epoch + 1) % self.every:
            return
        from torch.utils.data import DataLoader

        from galframe.data.datamodule import collate

        net = export_backbone(pl_module)
        was = net.training
        net.eval()
        feats = []
        for batch in DataLoader(self.dataset, batch_size=256, collate_fn=collate):
            feats.append(net(pl_module.scaling(batch["image"].to(pl_module.device))).embedding.float().cpu())
        net.train(was)
        z = torch.nn.functional.normalize(torch.cat(feats), dim=1)
        y = torch.as_tensor(self.labels).long()
        keep = y >= 0
        z, y = z[keep], y[keep]
        sim = z @ z.T
        sim.fill_diagonal_(-2.0)
        k = min(self.k, len(y) - 1)
        top = sim.topk(k, dim=1)
        votes = torch.zeros(len(y), int(y.max()) + 1)
        votes.scatter_add_(1, y[top.indices], torch.exp(top.values / 0.07))
        acc = float((votes.argmax(1) == y).float().mean())
        self.history.append({"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "accuracy": acc})
        pl_module.log("val/knn_accuracy", acc)


def log_image(logger: Any, path: Path, step: Optional[int] = None) -> None:
    if logger is not None and hasattr(logger, "log_image") and not isinstance(logger, bool):
        try:
            logger.log_image(key="pretrain/samples", images=[str(path)], step=step)
        except TypeError:
            logger.log_image(key="pretrain/samples", images=[str(path)])


def _collate_first(dataset: Any, n: int) -> dict[str, Any]:
    from torch.utils.data import default_collate

    return default_collate([dataset[i] for i in range(min(n, len(dataset)))])


def print_table(metrics: Mapping[str, float], target: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Held-out reconstruction L1 (scaled units, target={target}, {int(metrics.get('n_heldout', 0))} stamps)")
    table.add_column("output")
    for col in ("all pixels", "masked", "visible"):
        table.add_column(col, justify="right")
    for name, label in (("model", "model"), ("identity", "identity (masked degraded input)"), ("zero", "zero")):
        values = [metrics.get(f"heldout/l1{s}" + ("" if name == "model" else f"_{name}")) for s in ("", "_masked", "_visible")]
        table.add_row(label, *[f"{v:.4f}" if v is not None else "-" for v in values])
    Console().print(table)


def _command_line() -> Optional[str]:
    """``galframe pretrain <overrides>`` as the user typed it (under Hydra), for the weights' sidecar."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(["galframe pretrain", *HydraConfig.get().overrides.task])
    except Exception:  # called from Python, not from the command line
        return None


def _machine() -> str:
    import os
    import platform

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores ({platform.machine()})"


class PretrainRecipe(Recipe):
    """``galframe pretrain`` as a recipe of galframe train's loop (:func:`galframe.train.run`): the composed
    pretrain config becomes galframe train's (:func:`training_config`), a checkpoint every epoch or
    ``checkpoint_every_n_steps`` (best by the validation loss only for restoration alone), sample pictures and
    the kNN monitor as callbacks; at the end rank 0 measures the held-out metrics and exports the weights with
    their sidecar (and zoo entry)."""

    job = "pretrain"

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.command = _command_line()
        self.settings: dict = {}
        self.samples: dict = {}
        self.knn: Optional[KnnMonitor] = None
        self.heldout_split = "test"
        self.checkpoint_cb: Any = None

    def configure(self, cfg: dict) -> Optional[dict]:
        self.settings = pretrain_settings(cfg.get("pretrain"))
        return None if _reused(self.settings, cfg) else training_config(cfg, self.settings)

    def build(self, cfg: dict, resuming: bool, progress: bool) -> tuple[Any, Any]:
        try:
            model, dm = super().build(cfg, resuming, progress)
        except DataError as exc:
            if objective_requires(self.settings) and "clean" in str(exc):
                raise DataError(f"{exc} To pretrain on data without clean images (real data) set pretrain.target=input.") from None
            raise
        split = self.settings["heldout_split"]
        if len(dm.splits.get(split, [])) == 0:
            split = "val" if len(dm.splits.get("val", [])) else "train"
        self.heldout_split = split
        self.samples = _collate_first(dm.dataset(split), int(self.settings["n_samples"]))
        return model, dm

    def checkpoint(self, model: Any, dm: Any, cfg: dict, run_dir: Path) -> tuple[str, Any]:
        from pytorch_lightning.callbacks import ModelCheckpoint

        trainer_cfg = cfg["trainer"]
        has_val = len(dm.splits.get("val", [])) > 0 and trainer_cfg.get("limit_val_batches", 1) != 0
        every_steps = self.settings["checkpoint_every_n_steps"]
        self.checkpoint_cb = ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best",
            # a best checkpoint only where the validation loss is the whole objective (restoration alone)
            monitor="val/loss" if has_val and not every_steps and list(model.pretexts) == ["restore"] else None,
            mode="min",
            save_last=True,
            save_top_k=1,
            every_n_train_steps=int(every_steps) if every_steps else None,
        )
        return "last", self.checkpoint_cb

    def callbacks(self, model: Any, dm: Any, cfg: dict, run_dir: Path, logger: Any) -> list:
        from pytorch_lightning.callbacks import LearningRateMonitor

        cbs: list[Any] = []
        if restoration(model) is not None:
            cbs.append(SampleGrid(self.samples, run_dir, int(self.settings["sample_every_n_epochs"] or 0)))
        self.knn = KnnMonitor.for_data(dm, self.settings["knn"])
        if self.knn is not None:
            cbs.append(self.knn)
        if logger:
            cbs.append(LearningRateMonitor(logging_interval="step"))
        return cbs

    def finish(self, trainer: Any, model: Any, dm: Any, cfg: dict, run_dir: Path, checkpoint: Optional[str]) -> dict:
        from galframe import distributed

        if not trainer.is_global_zero:  # rank 0 alone evaluates and writes weights
            return {}
        model = distributed.whole_model(model, trainer, self.checkpoint_cb.last_model_path or None)
        limit = 1 if cfg["trainer"].get("fast_dev_run") else self.settings["heldout_max"]
        loader = dm._loader(self.heldout_split, train=False)
        metrics = _evaluate(model, trainer, loader, limit, self.samples, self.knn, run_dir)
        provenance = {"command": self.command, "wall_time_s": round(time.perf_counter() - self.started, 1),
                      "machine": _machine()}
        _export(model, cfg, self.settings, run_dir, metrics, trainer.global_step, provenance)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if restoration(model) is not None:
            print_table(metrics, self.settings["target"])
        return metrics


def _export(model: Any, cfg: dict, settings: Mapping[str, Any], run_dir: Path, metrics: Mapping[str, float],
            step: int, provenance: Mapping[str, Any]) -> Optional[Path]:
    """Write the exported backbone's weights and sidecar (and register them in the zoo with ``zoo_name``)."""
    export = export_backbone(model)
    if not hasattr(export, "save_weights"):
        return None
    weights = export.save_weights(
        run_dir / "weights" / str(settings["weights_name"]),
        scaling=cfg["data"].get("scaling"),
        extra={
            "pretrain": {
                "objectives": {n: {"weight": w, **o} for n, (w, o) in objective_specs(settings).items()},
                **({"target": settings["target"], "mask": settings["mask"]} if restoration(model) is not None else {}),
                "global_step": int(step),
                "data": cfg["data"].get("name"),
                **provenance,
                "heldout": {k: v for k, v in metrics.items() if k.startswith("heldout/")},
            }
        },
    )
    print(f"Weights: {weights} (use them with backbone.weights={weights})")
    if settings["zoo_name"]:
        from galframe_lvm.weights import add_to_zoo

        held = metrics.get("heldout/l1")
        add_to_zoo(weights, str(settings["zoo_name"]), f"galframe pretrain {cfg['backbone'].get('plugin')} "
                   f"({'+'.join(model.pretexts)}) on {cfg['data'].get('name')}, {step} steps"
                   + (f", held-out L1 {held}" if held is not None else ""))
        print(f"Registered in the local zoo as '{settings['zoo_name']}' (backbone.weights={settings['zoo_name']})")
    return weights


def _evaluate(model: Any, trainer: Any, loader: Any, limit: Optional[int], samples: Mapping[str, Any],
              knn: Optional[KnnMonitor], run_dir: Path) -> dict[str, float]:
    """The held-out metrics (restoration L1 against the baselines, the last kNN accuracy) and the final picture."""
    metrics: dict[str, float] = {}
    if restoration(model) is not None:
        metrics = heldout_l1(model, loader, None if limit is None else int(limit))
        final = sample_grid(model, samples, run_dir / "samples.png", f"final, step {trainer.global_step}")
        log_image(trainer.logger, final, trainer.global_step)
    if knn is not None and knn.history:
        metrics["knn/accuracy"] = knn.history[-1]["accuracy"]
        (run_dir / "knn.json").write_text(json.dumps(knn.history, indent=2))
    metrics["global_step"] = float(trainer.global_step)
    return metrics


def _reused(settings: Mapping[str, Any], cfg: Mapping[str, Any]) -> bool:
    """``zoo_name`` + ``reuse``: the zoo already has the weights, nothing to pretrain."""
    if not (settings["zoo_name"] and settings["reuse"] and not cfg.get("resume")):
        return False
    from galframe_lvm.weights import zoo_entries

    entry = zoo_entries().get(str(settings["zoo_name"]))
    if entry is not None:
        print(f"Reusing the zoo's weights '{entry['name']}' ({entry['_root']}/{entry['file']}); nothing to pretrain.")
    return entry is not None


def run_pretrain(cfg: Any, run_dir: Optional[Path] = None, callbacks: Sequence[Any] = ()) -> dict:
    """Pretrain one composition (``pretrain.yaml``): :func:`galframe.train.pretrain`, i.e. galframe train's
    loop by :class:`PretrainRecipe`.  Returns the held-out metrics (also in ``metrics.json``)."""
    from galframe.train import run

    return run(cfg, run_dir, callbacks, recipe=PretrainRecipe())
