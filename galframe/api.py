"""The plugin contract: what a backbone and a task provide.

A plugin is a class registered under the entry-point group ``galframe.plugins``
with a name of the form ``<kind>.<name>`` (for example ``backbone.timm`` or
``task.classify``).  The core only talks to plugins through the two base
classes below, so a third-party package can add a backbone or a task without
touching galframe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data it is built for."""

    bands: tuple[str, ...]
    image_size: int
    classes: tuple[str, ...] = ()
    pixel_scale: float = 0.262
    #: catalog columns available to tasks (name -> dtype string)
    columns: tuple[str, ...] = ()
    #: free-form statistics tasks may use (e.g. target means for normalisation)
    stats: dict = field(default_factory=dict)

    @property
    def n_bands(self) -> int:
        return len(self.bands)


@dataclass
class Features:
    """What a backbone returns for a batch.

    ``maps``: multi-scale feature maps, finest first, each (B, C_i, H_i, W_i).
    ``embedding``: a pooled (B, D) vector for classification and regression.
    ``decoded``: optional (B, C, H, W) decoder output (restoration).
    """

    maps: list[torch.Tensor]
    embedding: torch.Tensor
    decoded: Optional[torch.Tensor] = None


class Backbone(nn.Module):
    """Base class of every backbone plugin.

    Subclasses build their network in ``__init__(data: DataInfo, **cfg)`` and set
    ``feature_channels``, ``feature_strides`` and ``embed_dim``.  ``blocks()``
    returns the network's stages in input-to-output order; the core uses it to
    freeze all but the last n stages and for layer-wise learning-rate decay.
    """

    kind: ClassVar[str] = "backbone"
    feature_channels: Sequence[int] = ()
    feature_strides: Sequence[int] = ()
    embed_dim: int = 0
    #: True when ``forward(..., decode=True)`` fills ``Features.decoded``
    has_decoder: ClassVar[bool] = False

    def __init__(self, data: DataInfo, **cfg: Any) -> None:
        super().__init__()
        self.data = data

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """Stages from input to output; together they hold every parameter."""
        raise NotImplementedError

    def encoder_blocks(self) -> list[nn.Module]:
        """The stages a model uses when no task decodes (a decoder backbone leaves its decoder out)."""
        return self.blocks()


class Task(nn.Module):
    """Base class of every task plugin.

    A task owns its head, its loss, its metrics and the catalog columns it
    writes at predict time.  ``requires`` names the batch keys it reads: the
    special keys ``label`` (class index), ``clean`` (noise-free image) and
    ``votes``, or any catalog column (delivered as a float32 tensor).
    """

    kind: ClassVar[str] = "task"
    requires: ClassVar[tuple[str, ...]] = ()
    needs_decoder: ClassVar[bool] = False
    #: metric used to pick the best checkpoint, relative to the task prefix
    monitor: ClassVar[Optional[tuple[str, str]]] = None  # (metric name, "min"|"max")

    def __init__(self, name: str, backbone: Backbone, data: DataInfo, **cfg: Any) -> None:
        super().__init__()
        self.name = name
        self.data = data

    @classmethod
    def requires_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The batch keys a task built with ``options`` reads, known before the data is loaded."""
        return tuple(cls.requires)

    def forward(self, features: Features) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def make_metrics(self) -> nn.Module:
        """A fresh ``torchmetrics.MetricCollection`` (or any module with update/compute/reset)."""
        import torchmetrics

        return torchmetrics.MetricCollection({})

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        pass

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        """Scalar metrics (name -> 0-d tensor); vector metrics are split by the task."""
        return dict(metrics.compute())

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Catalog columns for a predicted batch: name -> (B,) array."""
        return {}

    # Optional: ``calibrate(metrics) -> None``, called with the validation split's metric state before
    # ``compute_metrics`` at each validation epoch, to set operating points (a detection score
    # threshold, a temperature) from validation data; keep them in buffers so checkpoints carry them.
    # Optional: ``predict_sources(out) -> list[list[dict]]`` for tasks that find several objects per
    # image (detection): one list of rows per image; the core writes them to a source catalog.

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        """Pictures for people after evaluation: ``pred`` is the held-out split's truth joined with every
        task's columns, ``dm`` the datamodule, ``model`` the trained GalaxyModel (in eval mode).
        Returns the paths written."""
        return []


class Pretext(nn.Module):
    """Base class of every pretext-objective plugin (entry point ``pretext.<name>``).

    A pretext objective teaches a backbone without labels: ``galframe pretrain`` builds the
    objectives ``pretrain.objectives`` names (each with a ``weight``; weight 0 leaves it out),
    sums their weighted losses and trains the backbone on the sum.  An objective may own modules
    of its own (projection heads, an EMA teacher); parameters that require gradients are trained
    with the backbone, the others (a teacher) are moved by :meth:`after_step`.

    ``batch["image"]`` is the observed flux (nanomaggies), already augmented with the data's
    geometric augmentation; ``scaling`` maps flux to network input.  An objective must not read
    labels or truth columns; ``requires_for`` names any other batch key it needs (``clean`` for
    restoration to noise-free simulations).
    """

    kind: ClassVar[str] = "pretext"

    def __init__(self, backbone: Backbone, data: DataInfo, scaling: Any, **cfg: Any) -> None:
        super().__init__()
        self.data = data
        # a plain attribute, not a submodule: the backbone belongs to the pretrainer
        object.__setattr__(self, "_backbone", backbone)
        object.__setattr__(self, "_scaling", scaling)

    @property
    def backbone(self) -> Backbone:
        return self._backbone

    @property
    def scaling(self) -> Any:
        return self._scaling

    @classmethod
    def requires_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """Batch keys besides ``image`` and ``noise_sigma`` an objective built with ``options`` reads."""
        return ()

    def loss(self, batch: dict[str, Any], generator: torch.Generator, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        """(loss, values to log) for a training batch; ``progress`` runs from 0 to 1 over the run."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after every optimiser step (EMA teachers move here)."""

    @torch.no_grad()
    def monitors(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Values logged on validation batches (collapse monitors, validation losses)."""
        return {}


@dataclass(frozen=True)
class Command:
    """A ``galframe <name>`` sub-command contributed by a plugin (entry point ``command.<name>``).

    ``config_name`` is the Hydra primary config it composes (from ``galframe.conf`` or a
    plugin's own search path); ``run(cfg, run_dir)`` does the work, so sweeps (-m),
    ``--cfg`` and output directories behave as for the built-in commands.
    """

    config_name: str
    run: Callable[..., Any]
    help: str = ""
    #: a config key that a leading bare word sets (``galframe bench fewshot`` -> ``suite=fewshot``)
    positional: Optional[str] = None
    #: config keys that may also be written as long options (``--profile small`` -> ``profile=small``)
    options: tuple = ()

    def translate(self, args: Sequence[str]) -> list[str]:
        """Turn the command's positional word and long options into Hydra overrides."""
        out: list[str] = []
        rest = list(args)
        if self.positional and rest and "=" not in rest[0] and not rest[0].startswith("-"):
            out.append(f"{self.positional}={rest.pop(0)}")
        i = 0
        while i < len(rest):
            arg = rest[i]
            name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
            if name is not None and name.replace("-", "_") in self.options:
                key = name.replace("-", "_")
                if "=" in arg:
                    out.append(f"{key}={arg.split('=', 1)[1]}")
                elif i + 1 < len(rest):
                    out.append(f"{key}={rest[i + 1]}")
                    i += 1
                else:
                    from galframe.errors import ConfigError

                    raise ConfigError(f"--{name} needs a value.")
            else:
                out.append(arg)
            i += 1
        return out
