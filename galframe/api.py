"""The plugin contract: what a backbone, a task, a batch field, a reader, a pretext objective, an
encoder of another modality, a fusion of modalities, an acquisition and an oracle provide.

A plugin is a class registered under the entry-point group ``galframe.plugins`` with a name of the
form ``<kind>.<name>`` (for example ``backbone.timm``, ``task.classify``, ``field.label`` or
``reader.fits``).  The core only talks to plugins through the base classes below, and calls every
hook they declare (each has a default), so a third-party package can add any of them without
touching galframe.  :mod:`galframe.testing` checks a plugin against this contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

# the reader contract lives beside the readers; it is part of this API
from galframe.readers.contract import (  # noqa: F401
    READER_CORE_KEYS,
    Reader,
    Reject,
    RowReader,
    Shard,
    Stamp,
    StampError,
    file_stat,
    fingerprint,
)


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
    #: self-supervised pretraining of this backbone (``galframe pretrain``): a static ``pretrain()`` returning
    #: the :class:`galframe.train.Recipe` that galframe train's loop runs (the LVM's); None, the default: none
    pretrain: ClassVar[Optional[Callable[[], Any]]] = None

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

    def unblocked_parameters(self) -> list[str]:
        """Names of the parameters no stage of ``blocks()`` holds (they would never be trained): the core
        refuses a backbone that has any."""
        held = {id(p) for block in self.blocks() for p in block.parameters()}
        return [name for name, p in self.named_parameters() if id(p) not in held]


class Task(nn.Module):
    """Base class of every task plugin.

    A task owns its head, its loss, its metrics and the catalog columns it writes at predict time.

    **What a task finds in the batch** (``loss``, ``update_metrics``): a dict of tensors, one row per object.

    ``image``        (B, bands, H, W) float32 observed flux in nanomaggies (zero point 22.5), in the
                     model's band order, *already augmented* in training (rotations, flips, shifts,
                     extra noise: ``data.augment``).  The network saw ``scaling(image)``; a task that
                     compares with flux uses the scaling it receives in :meth:`bind_scaling`.
    ``id``           (B,) int64 object ids; ``noise_sigma`` (B, bands) sky noise when the catalog has it.
    ``aug_rot90``    (B,) quarter turns and ``aug_flip`` (B,) left-right flips applied in training
                     (for targets that turn with the image, such as a position angle).
    every key of :meth:`requires_for`: a key registered as a batch field (entry point ``field.<name>``,
                     see :class:`Field`: ``label``, ``votes`` and ``clean`` from galframe_tasks,
                     ``instances`` from galframe_mmdet) arrives as that field loads, collates and
                     moves it; fields declared *geometric* (``clean``, ``instances``) were moved
                     with the image, so they stay aligned with it.  Any other key is a catalog
                     column, a (B,) float32 tensor that does not move.

    Statistics of the training split are in ``data.stats`` (``column_mean`` / ``column_std`` of every
    float column, ``class_counts``, and what a field's :meth:`Field.stats` adds).  A target derived
    from the images (a colour, a size) has its place as a catalog column written at ingest (or by a
    simulation): it then gets statistics, arrives in the batch, and appears as truth next to the
    task's columns in ``predictions_test.parquet`` and in ``pred`` of :meth:`write_report`.
    """

    kind: ClassVar[str] = "task"
    #: the batch keys the default :meth:`requires_for` returns (tasks whose keys depend on options override it)
    requires: ClassVar[tuple[str, ...]] = ()
    #: True when the task reads ``Features.decoded`` (the backbone must have a decoder); may be set per instance
    needs_decoder: ClassVar[bool] = False
    #: True when :meth:`transform_input` changes the network's input (at most one task per model); may be per instance
    changes_input: ClassVar[bool] = False
    #: True when the task finds several objects per image: :meth:`predict_sources` gives them to the source catalog
    finds_sources: ClassVar[bool] = False
    #: metric used to pick the best checkpoint, relative to the task prefix
    monitor: ClassVar[Optional[tuple[str, str]]] = None  # (metric name, "min"|"max")

    def __init__(self, name: str, backbone: Backbone, data: DataInfo, **cfg: Any) -> None:
        super().__init__()
        self.name = name
        self.data = data

    @classmethod
    def requires_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The batch keys a task built with ``options`` reads, known before the data is loaded: the one
        place the core learns a task's keys (the default returns the class's ``requires``)."""
        return tuple(cls.requires)

    def bind_scaling(self, scaling: nn.Module) -> None:
        """Called once after construction with the model's flux -> network-input scaling."""

    def transform_input(self, flux: torch.Tensor) -> torch.Tensor:
        """The network's input made from the observed flux, when ``changes_input`` (e.g. a coarser image)."""
        return flux

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

    def calibrate(self, metrics: nn.Module) -> None:
        """Called with the validation split's metric state before ``compute_metrics`` at each validation
        epoch, to set operating points (a detection score threshold, a temperature) from validation data;
        keep them in buffers so checkpoints carry them."""

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        """Scalar metrics (name -> 0-d tensor); vector metrics are split by the task."""
        return dict(metrics.compute())

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Catalog columns for a predicted batch: name -> (B,) array."""
        return {}

    def predict_sources(self, out: dict[str, Any]) -> Optional[list[list[dict[str, Any]]]]:
        """For tasks that find several objects per image (detection): one list of rows per image, which
        the core writes to a source catalog.  Called only when :attr:`finds_sources` is True; the default
        (None) is for tasks that find no sources."""
        return None

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


# -- modalities besides the image ------------------------------------------------------------------
class Encoder(nn.Module):
    """Base class of every encoder plugin (entry point ``encoder.<name>``): a modality besides the image (a
    catalog's columns, a spectrum) made into a (B, embed_dim) embedding.  ``modalities: [image, tabular]``
    builds ``encoders.<modality>`` as ``cls(name=<modality>, data=DataInfo, **options)``; it reads the batch
    key of that name, loaded by the field :meth:`field` returns (else by ``field.<modality>``).  An object may
    lack any modality: :meth:`present` says which carry it, and the fusion masks the others out (a modality
    missing from the inputs altogether, as images predicted alone, is absent).  ``forward`` must be finite on
    every row, absent ones included (zero what is missing): their output is discarded and no gradient reaches
    the encoder through them.  No layer may mix the objects of a batch (no batch normalisation)."""

    kind: ClassVar[str] = "encoder"
    embed_dim: int = 0  # width of the embedding forward returns; set in __init__

    def __init__(self, name: str, data: DataInfo, **cfg: Any) -> None:
        super().__init__()
        self.modality, self.data = name, data

    @classmethod
    def field(cls, name: str, options: Mapping[str, Any]) -> Optional["Field"]:
        """The batch field loading modality ``name`` for an encoder built with ``options``; None: ``field.<name>``."""
        return None

    def present(self, x: Any) -> torch.Tensor:
        """(B,) bool: which objects of the batch value ``x`` carry this modality (default: all)."""
        return torch.ones(len(x), dtype=torch.bool, device=x.device)

    def forward(self, x: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Fusion(nn.Module):
    """Base class of every fusion plugin (entry point ``fusion.<name>``): the modalities' embeddings made into
    the one (B, embed_dim) embedding tasks read, built as ``cls(dims={modality: width}, embed_dim=<the
    backbone's>, **options)``.  ``forward({modality: (B, D_m)}, {modality: (B,) bool})``: an absent
    modality's row (zeros) must not reach the output."""

    kind: ClassVar[str] = "fusion"

    def __init__(self, dims: Mapping[str, int], embed_dim: int, **cfg: Any) -> None:
        super().__init__()
        self.dims, self.embed_dim = dict(dims), int(embed_dim)

    def forward(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


# -- batch fields ----------------------------------------------------------------------------------
STACK, LIST = "stack", "list"


@dataclass
class StoredData:
    """A galframe dataset as a field sees it: its directory, manifest and catalog rows (the whole
    catalog in :meth:`Field.check`, one split's rows in :meth:`Field.open` and :meth:`Field.stats`)."""

    root: Path
    manifest: dict
    catalog: Any  # pandas.DataFrame

    @property
    def catalog_file(self) -> Path:
        return Path(self.root) / "catalog.parquet"

    @property
    def manifest_file(self) -> Path:
        return Path(self.root) / "manifest.json"


class StoredObject:
    """One object while it is loaded: ``i`` its row in the split's catalog, ``id`` its id, and
    :meth:`plane` the object's row of an image-shaped array stored beside ``images`` in its shard."""

    __slots__ = ("i", "id", "_h5", "_row", "source")

    def __init__(self, i: int, object_id: int, h5: Any, row: int, source: Any) -> None:
        self.i, self.id, self._h5, self._row, self.source = i, object_id, h5, row, source

    def plane(self, name: str) -> np.ndarray:
        return np.asarray(self._h5[name][self._row], dtype=np.float32)


class Geometry:
    """The geometric augmentation drawn for a batch: per object a left-right flip, then ``rot90``
    quarter turns, then a (dy, dx) roll by ``shifts``, applied to the last two axes."""

    def __init__(self, rot90: torch.Tensor, flip: torch.Tensor, shifts: torch.Tensor) -> None:
        self.rot90, self.flip, self.shifts = rot90, flip, shifts

    def item(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Object ``i``'s planes (..., H, W), moved as its image moves."""
        if self.flip[i]:
            x = x.flip(-1)
        if self.rot90[i]:
            x = torch.rot90(x, int(self.rot90[i]), dims=(-2, -1))
        if self.shifts[i].any():
            x = torch.roll(x, shifts=(int(self.shifts[i, 0]), int(self.shifts[i, 1])), dims=(-2, -1))
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A batch (B, ..., H, W), each object moved as its image moves."""
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = self.item(i, x[i])
        return out


class Field:
    """How one batch key a task reads is loaded, collated and moved under augmentation.

    Registered as entry point ``field.<name>`` (the key), built as ``cls(name)``.  A key with no
    registered field is a catalog column: one float32 value per object that does not move.
    ``collate``: ``"stack"`` (values stacked into one tensor) or ``"list"`` (the batch holds a list,
    one value per object, for values whose sizes differ).  ``geometric``: the value is an image plane
    (C, H, W) stacked into (B, C, H, W) that moves with the image; a list field that moves overrides
    :meth:`move`.
    """

    kind: ClassVar[str] = "field"
    collate: ClassVar[str] = STACK
    geometric: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, data: StoredData) -> None:
        """Raise :class:`~galframe.errors.DataError` when the dataset cannot deliver this field
        (called once, before the splits are cut)."""

    def open(self, data: StoredData) -> Any:
        """What :meth:`load` needs for one split (arrays cut from the catalog, a side table); it must
        pickle (DataLoader workers)."""
        return None

    def load(self, state: Any, obj: StoredObject) -> Any:  # pragma: no cover - abstract
        """The value of one object."""
        raise NotImplementedError

    def move(self, value: Any, geometry: Geometry) -> Any:
        """The collated value after the batch's geometric augmentation."""
        return geometry(value) if self.geometric else value

    def stats(self, data: StoredData) -> dict:
        """Statistics of the training split added to ``DataInfo.stats`` (a schema, target means)."""
        return {}


# -- human-in-the-loop -----------------------------------------------------------------------------
class Acquisition:
    """Base class of acquisition plugins (entry point ``acquisition.<name>``): which unlabelled objects
    to ask a person about next.  ``needs`` names the model outputs it reads (``probs``, ``mc_probs``,
    ``ensemble_probs``, ``embeddings``), so the loop computes only those; :meth:`select` returns indices
    into the pool, best first."""

    kind: ClassVar[str] = "acquisition"
    needs: ClassVar[tuple[str, ...]] = ("probs",)
    name: str = "acquisition"

    def __init__(self) -> None:  # no options (an explicit signature lets the registry name unknown ones)
        pass

    def requirements(self) -> set[str]:
        """Every model output this acquisition (and any it holds) reads."""
        return set(self.needs)

    def select(self, pool: Any, k: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        """Indices (into the pool) of up to ``k`` distinct objects, best first."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Oracle:
    """Base class of oracle plugins (entry point ``oracle.<name>``): who answers the loop's questions.
    :meth:`ask` returns once every item of the round has an answer in the label store."""

    kind: ClassVar[str] = "oracle"
    labeler: str = "oracle"

    def start(self, store: Any) -> None:
        """Called once before the first question (a web oracle starts its server here)."""

    def ask(self, store: Any, rnd: int, items: Sequence[dict]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Called once at the end, also after an error."""



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
