"""GalaxyModel: one backbone and a dict of task heads, trained together by Lightning."""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import numpy as np
import torch
from torch import nn

from galframe import registry
from galframe.api import DataInfo, Features
from galframe.data.augment import augment_batch
from galframe.data.scaling import build_scaling
from galframe.errors import ConfigError, DataError, PluginError, check_choice
from galframe.modalities import Modalities, is_multimodal

FINETUNE_MODES = ("full", "frozen", "last_n")
CORE_TASK_KEYS = ("plugin", "weight", "optimized_metric")  # read by galframe itself, not by the task plugin


def split_plugin_cfg(cfg: Mapping[str, Any], what: str, core_keys: tuple[str, ...] = ("plugin",)) -> tuple[str, dict, dict]:
    cfg = dict(cfg)
    if "plugin" not in cfg:
        raise ConfigError(f"{what} config has no 'plugin' key naming the plugin to build.")
    core = {k: cfg.pop(k) for k in core_keys if k in cfg}
    return str(core.pop("plugin")), core, cfg


def data_info_from(d: Mapping[str, Any]) -> DataInfo:
    """A DataInfo from its saved (JSON/YAML) form."""
    return DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def build_backbone(cfg: Mapping[str, Any], info: DataInfo) -> Any:
    """The backbone plugin a ``backbone:`` config names, built for ``info``'s data."""
    name, _, options = split_plugin_cfg(cfg, "backbone")
    backbone = registry.build("backbone", name, options, data=info)
    left_out = backbone.unblocked_parameters()
    if left_out:
        count = sum(p.numel() for n, p in backbone.named_parameters() if n in set(left_out))
        raise PluginError(
            f"backbone '{name}': {len(left_out)} parameter tensor(s) ({count} values, e.g. '{left_out[0]}') are in "
            "no stage of blocks(), so they would never be trained; blocks() must hold every parameter."
        )
    return backbone


class GalaxyModel(pl.LightningModule):
    """``config`` is a plain dict: data_info, backbone, tasks, optimizer, scheduler, finetune, augment, scaling, seed,
    and optionally pretexts: label-free objectives (plugins of kind ``pretext``, ``{name: {plugin, weight, ...}}``)
    whose weighted losses add to the tasks' (``galframe pretrain`` trains a model of pretexts and no task)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config)})
        cfg = self.hparams["config"]
        self.data_info = data_info_from(cfg["data_info"])
        self.bands = list(self.data_info.bands)
        self.scaling = build_scaling(cfg.get("scaling") or {"name": "asinh"}, self.bands)
        self.backbone = build_backbone(cfg["backbone"], self.data_info)
        name = cfg["backbone"]["plugin"]
        tasks_cfg = cfg.get("tasks") or {}
        if not tasks_cfg and not cfg.get("pretexts"):
            raise ConfigError("No task selected: choose at least one, e.g. 'tasks=[classify]'.")
        self.tasks = nn.ModuleDict()
        self.task_weights: dict[str, float] = {}
        for task_name, task_cfg in tasks_cfg.items():
            plugin, core, options = split_plugin_cfg(task_cfg, f"task '{task_name}'", CORE_TASK_KEYS)
            self.tasks[task_name] = registry.build(
                "task", plugin, options, name=task_name, backbone=self.backbone, data=self.data_info
            )
            self.task_weights[task_name] = float(core.get("weight", 1.0))
            self.tasks[task_name].bind_scaling(self.scaling)  # tasks comparing with flux targets use the model's scaling
        changers = [n for n, t in self.tasks.items() if t.changes_input]
        if len(changers) > 1:
            raise ConfigError(f"tasks {changers} each change the network's input; only one task may (e.g. one upscale).")
        self._input_changers = [self.tasks[n] for n in changers]
        self.decode = any(t.needs_decoder for t in self.tasks.values())
        if self.decode and not self.backbone.has_decoder:
            raise ConfigError(f"A selected task needs a decoder, which backbone '{name}' does not have.")
        self.pretexts = nn.ModuleDict()
        self.pretext_weights: dict[str, float] = {}
        for pretext_name, pretext_cfg in (cfg.get("pretexts") or {}).items():
            plugin, core, options = split_plugin_cfg(pretext_cfg, f"pretext '{pretext_name}'", CORE_TASK_KEYS)
            self.pretexts[pretext_name] = registry.build(
                "pretext", plugin, options, backbone=self.backbone, data=self.data_info, scaling=self.scaling
            )
            self.pretext_weights[pretext_name] = float(core.get("weight", 1.0))
        # modalities besides the image (galframe/modalities.py): their encoders and fusion; None for images alone
        self.modal = Modalities(cfg, self.data_info, self.backbone.embed_dim) if is_multimodal(cfg) else None
        self._modal_inputs: Optional[Mapping[str, Any]] = None
        from galframe.trust import Trust

        trust_cfg = {"capacity": 2000, "k": 10, "quantile": 0.95, **dict(cfg.get("trust") or {})}
        self.trust = Trust(self.backbone.embed_dim, **trust_cfg)
        self._reference: list[torch.Tensor] = []  # validation embeddings of this epoch, for the trust reference
        self.val_metrics = nn.ModuleDict({n: t.make_metrics() for n, t in self.tasks.items()})
        self.test_metrics = nn.ModuleDict({n: t.make_metrics() for n, t in self.tasks.items()})
        self.finetune = dict(cfg.get("finetune") or {"mode": "full"})
        check_choice("finetune.mode", str(self.finetune.get("mode", "full")), FINETUNE_MODES)
        self._frozen = self._apply_finetune()

    # -- construction helpers -----------------------------------------------
    @property
    def config(self) -> dict:
        return self.hparams["config"]

    def _used_blocks(self) -> list[nn.Module]:
        """The backbone stages this model runs: all of them when a task decodes or a pretext trains, else the encoder's
        (none when the model reads no image)."""
        if self.modal is not None and not self.modal.uses_image:
            return []
        return self.backbone.blocks() if self.decode or len(self.pretexts) else self.backbone.encoder_blocks()

    def _apply_finetune(self) -> list[nn.Module]:
        mode = self.finetune.get("mode", "full")
        blocks = self._used_blocks()
        used = {id(p) for b in blocks for p in b.parameters()}
        unused = [b for b in self.backbone.blocks() if not any(id(p) in used for p in b.parameters())]
        for block in unused:  # e.g. a decoder no task reads: no gradients, no optimizer state
            for p in block.parameters():
                p.requires_grad_(False)
        if mode == "frozen":
            frozen = blocks
        elif mode == "last_n":
            n = int(self.finetune.get("n_blocks", 1))
            if not 0 < n <= len(blocks):
                raise ConfigError(f"finetune.n_blocks={n}, but this backbone has {len(blocks)} blocks.")
            frozen = blocks[: len(blocks) - n]
        else:
            frozen = []
        for block in frozen:
            for p in block.parameters():
                p.requires_grad_(False)
        return list(frozen) + unused

    def train(self, mode: bool = True) -> "GalaxyModel":
        super().train(mode)
        for block in self._frozen:  # frozen stages keep their normalisation statistics
            block.eval()
        return self

    def param_groups(self) -> list[dict]:
        lr = float(self.config["optimizer"].get("lr", 1e-3))
        decay = float(self.finetune.get("lr_decay", 1.0) or 1.0)
        blocks = self._used_blocks()
        seen: set[int] = {id(p) for p in self.backbone.parameters()}
        groups = []
        grouped: set[int] = set()
        for depth, block in enumerate(blocks):
            params = [p for p in block.parameters() if p.requires_grad and id(p) not in grouped]
            grouped.update(id(p) for p in block.parameters())
            if params:
                groups.append({"params": params, "lr": lr * decay ** (len(blocks) - 1 - depth), "name": f"backbone.{depth}"})
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        if rest:
            groups.append({"params": rest, "lr": lr, "name": "heads"})
        return self._without_decay(groups)

    def _without_decay(self, groups: list[dict]) -> list[dict]:
        """``finetune.no_decay`` (parameter-name suffixes): those, and every bias and norm (ndim <= 1), get no
        weight decay, each group split in two."""
        suffixes = tuple(self.finetune.get("no_decay") or ())
        if not suffixes:
            return groups
        exempt = {id(p) for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(suffixes)}
        out = []
        for group in groups:
            for part, params in (("", [p for p in group["params"] if id(p) not in exempt]),
                                 (".no_decay", [p for p in group["params"] if id(p) in exempt])):
                if params:
                    out.append({**group, "params": params, "name": group["name"] + part,
                                **({"weight_decay": 0.0} if part else {})})
        return out

    # -- forward ------------------------------------------------------------
    def check_bands(self, bands: list[str], source: str = "input") -> None:
        if list(bands) != self.bands:
            raise DataError(
                f"{source}: has bands {list(bands)}, but this model was trained on {self.bands}."
            )

    def forward(self, flux: torch.Tensor, inputs: Optional[Mapping[str, Any]] = None) -> dict[str, dict[str, torch.Tensor]]:
        return self.forward_features(flux, inputs)[0]

    @contextlib.contextmanager
    def inputs_from(self, batch: Mapping[str, Any]) -> Any:
        """Within the block, ``forward_features(flux)`` of a model of several modalities reads the others from
        ``batch`` (for callers that pass only the image, as galframe.inference does)."""
        self._modal_inputs = batch
        try:
            yield self
        finally:
            self._modal_inputs = None

    def forward_features(self, flux: torch.Tensor, inputs: Optional[Mapping[str, Any]] = None
                         ) -> tuple[dict[str, dict[str, torch.Tensor]], Features]:
        """(every task's outputs, the backbone's features) for a batch of flux.  A model of several modalities
        reads the others from ``inputs`` (a batch dict; default: the one :meth:`inputs_from` set); a modality
        missing there is absent for every object, and ``Features.embedding`` is the fused embedding."""
        if flux.dim() != 4 or flux.shape[1] != len(self.bands):
            raise DataError(
                f"input has shape {tuple(flux.shape)}; this model expects (batch, {len(self.bands)} bands {self.bands}, H, W)."
            )
        for task in self._input_changers:  # e.g. restore with upscale: the network sees a coarser image
            flux = task.transform_input(flux)
        if self.modal is None:
            features: Features = self.backbone(self.scaling(flux), decode=self.decode)
        else:
            features = self._fused_features(flux, self._modal_inputs if inputs is None else inputs)
        return {name: task(features) for name, task in self.tasks.items()}, features

    def _fused_features(self, flux: torch.Tensor, inputs: Optional[Mapping[str, Any]]) -> Features:
        """The image's features (none when the model reads no image) with the fused embedding of every modality."""
        n = flux.shape[0]
        if self.modal.uses_image:
            image = self.backbone(self.scaling(flux), decode=self.decode)
            return Features(image.maps, self.modal(image.embedding, inputs, n, flux.device), image.decoded)
        return Features([], self.modal(None, inputs, n, flux.device))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        trainer = self._trainer
        augment = self.config.get("augment") or {}
        if trainer is not None and trainer.training and any(augment.values()):
            seed = int(self.config.get("seed", 0))
            gen = torch.Generator().manual_seed(seed * 1_000_003 + int(trainer.global_step))
            batch = augment_batch(batch, augment, gen)
        return batch

    # -- steps ----------------------------------------------------------------
    def _losses(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = {name: task.loss(outputs[name], batch) for name, task in self.tasks.items()}
        total = sum(self.task_weights[n] * l for n, l in losses.items())
        return total, losses

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # dropout and other stochastic layers draw from a stream fixed by (seed, step): exact resume
        torch.manual_seed(int(self.config.get("seed", 0)) * 7919 + int(self.global_step))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        bs = batch["image"].shape[0]
        total: Any = 0.0
        if len(self.tasks):
            outputs = self(batch["image"], batch)
            total, losses = self._losses(outputs, batch)
            for name, value in losses.items():
                self.log(f"train/{name}/loss", value, batch_size=bs)
        if len(self.pretexts):
            progress = self.progress()
            for k, (name, pretext) in enumerate(self.pretexts.items()):
                loss, logs = pretext.loss(batch, self.generator(1, int(self.global_step), k), progress)
                total = total + self.pretext_weights[name] * loss
                for key, value in logs.items():
                    self.log(f"train/{key}", value, batch_size=bs)
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        return total

    # -- pretext objectives -----------------------------------------------------
    def generator(self, *key: int) -> torch.Generator:
        """A CPU generator fixed by (seed, key): the pretexts' random draws, reproducible and resumable."""
        seed = int(self.config.get("seed", 0))
        return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *key]).generate_state(1)[0]))

    def progress(self) -> float:
        """The fraction of the run's optimiser steps done (0 to 1)."""
        trainer = self._trainer
        total = max(int(trainer.estimated_stepping_batches), 1) if trainer is not None else 1
        return min(float(self.global_step) / total, 1.0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if len(self.pretexts):
            progress = self.progress()
            for pretext in self.pretexts.values():
                pretext.after_step(progress)  # e.g. an EMA teacher follows the student

    def _pretext_monitors(self, batch: dict, batch_idx: int) -> Optional[torch.Tensor]:
        """Log every pretext's validation values; returns the weighted sum of their ``<name>/loss`` values."""
        bs = batch["image"].shape[0]
        total = None
        for k, (name, pretext) in enumerate(self.pretexts.items()):
            for key, value in pretext.monitors(batch, self.generator(2, batch_idx, k)).items():
                if "/" in key:  # an objective's own loss, e.g. restore/loss
                    self.log(f"val/{key}", value, batch_size=bs)
                    if key.endswith("/loss"):
                        total = self.pretext_weights[name] * value + (0.0 if total is None else total)
                else:
                    self.log(f"val/{key}", value, batch_size=bs, prog_bar=key in ("l1", "effective_rank"))
        return total

    def _eval_step(self, batch: dict, stage: str, batch_idx: int = 0) -> None:
        bs = batch["image"].shape[0]
        total = None
        if len(self.tasks):
            outputs, features = self.forward_features(batch["image"], batch)
            if stage == "val" and sum(len(e) for e in self._reference) < self.trust.capacity:
                self._reference.append(features.embedding.detach().float())
            total, losses = self._losses(outputs, batch)
            for name, value in losses.items():
                self.log(f"{stage}/{name}/loss", value, batch_size=bs, sync_dist=True)
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            for name, task in self.tasks.items():
                task.update_metrics(metrics[name], outputs[name], batch)
        if len(self.pretexts) and stage == "val":
            extra = self._pretext_monitors(batch, batch_idx)
            if extra is not None:
                total = extra if total is None else total + extra
        if total is not None:
            self.log(f"{stage}/loss", total, prog_bar=stage == "val", batch_size=bs, sync_dist=True)

    def _fit_trust(self) -> None:
        """The out-of-distribution reference set from this validation epoch's embeddings (every rank's)."""
        if not self._reference:
            return
        local = torch.cat(self._reference)
        self._reference = []
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            n = torch.tensor([len(local)], device=local.device)
            counts = self.all_gather(n).reshape(-1)
            padded = torch.zeros(int(counts.max()), local.shape[1], device=local.device)
            padded[: len(local)] = local
            gathered = self.all_gather(padded)
            local = torch.cat([gathered[r, : int(c)] for r, c in enumerate(counts)])
        self.trust.fit(local, seed=int(self.config.get("seed", 0)))

    def _eval_epoch_end(self, stage: str) -> None:
        if stage == "val":
            self._fit_trust()
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for name, task in self.tasks.items():
            if stage == "val":
                task.calibrate(metrics[name])  # operating points are set on validation data only
            for key, value in task.compute_metrics(metrics[name]).items():
                self.log(f"{stage}/{name}/{key}", value, prog_bar=(stage == "val" and key == (task.monitor or ("",))[0]))
            metrics[name].reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """The batch's ``id`` and every task's catalog columns (and ``sources``): see :func:`galframe.inference.batch_columns`."""
        from galframe.inference import batch_columns

        with self.inputs_from(batch):
            return batch_columns(self, batch)

    # -- optimisation ---------------------------------------------------------
    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        opt_cfg = dict(self.config["optimizer"])
        opt_cfg["_partial_"] = True
        optimizer = instantiate(opt_cfg)(params=self.param_groups())
        sched = dict(self.config.get("scheduler") or {"name": "none"})
        name = check_choice("scheduler.name", str(sched.get("name", "none")), ("none", "cosine"))
        if name == "none":
            return optimizer
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = max(total // max(int(self.trainer.max_epochs or 1), 1), 1)
        if sched.get("warmup_steps") is not None:  # a warm-up counted in optimiser steps (pretraining)
            warmup = min(int(sched["warmup_steps"]), max(total - 1, 0))
        else:
            warmup = int(float(sched.get("warmup_epochs", 0.0)) * steps_per_epoch)
        floor = float(sched.get("min_lr_ratio", 0.01))

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def monitor(self) -> tuple[str, str]:
        """The validation metric that picks the best checkpoint: the first task's, else val/loss."""
        for name, task in self.tasks.items():
            if task.monitor:
                return f"val/{name}/{task.monitor[0]}", task.monitor[1]
        return "val/loss", "min"


def data_info_dict(info: DataInfo) -> dict:
    d = asdict(info)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
