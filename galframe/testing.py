"""Checks a plugin's own tests can call: does a backbone, a task or a reader keep galframe's contract?

>>> from galframe.testing import check_backbone, check_task, check_reader, check_encoder
>>> backbone = check_backbone(MyBackbone, width=16)                 # builds it and runs it on a tiny batch
>>> task = check_task(MyTask, batch={"label": torch.tensor([0, 1])})  # head, loss, metrics, columns
>>> encoder = check_encoder(MyEncoder, x, data=info)                 # a modality's batch value, some absent
>>> stamps = check_reader(MyReader, path="tests/data", bands=("g", "r", "z"), size=64)

Each builds the plugin the way galframe does, runs it on a small input and raises ``AssertionError``
with a message saying what is wrong (nothing is installed or registered: pass the class itself).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Encoder, Features, Reader, Reject, Shard, Stamp, StampError, Task

BATCH = 2


def _data(data: Optional[DataInfo], image_size: int = 64) -> DataInfo:
    if data is not None:
        return data
    return DataInfo(bands=("g", "r", "z"), image_size=image_size, classes=("a", "b", "c"), stats={"n_train": 10})


def _fail(who: str, problem: str) -> None:
    raise AssertionError(f"{who}: {problem}")


def _build(who: str, cls: Any, base: type, *args: Any, **options: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        _fail(who, f"{cls!r} is not a subclass of galframe.api.{base.__name__}")
    try:
        return cls(*args, **options)
    except Exception as exc:
        raise AssertionError(f"{who}: building it with {options} failed: {type(exc).__name__}: {exc}") from exc


# -- backbones -------------------------------------------------------------------------------------
def check_backbone(cls: type, data: Optional[DataInfo] = None, **options: Any) -> Backbone:
    """Build backbone ``cls(data, **options)``, run it on a (2, bands, H, W) batch, and check what galframe
    relies on: ``feature_channels`` / ``feature_strides`` / ``embed_dim`` match the outputs, ``blocks()``
    holds every parameter (others would never be trained) and each stage receives gradients.  Returns it."""
    data = _data(data)
    who = f"backbone {getattr(cls, '__name__', cls)}"
    backbone = _build(who, cls, Backbone, data, **options)
    channels, strides = list(backbone.feature_channels), list(backbone.feature_strides)
    if not channels or len(channels) != len(strides):
        _fail(who, f"feature_channels {channels} and feature_strides {strides} must be non-empty and of one length")
    if int(backbone.embed_dim) < 1:
        _fail(who, f"embed_dim is {backbone.embed_dim}; set it to the width of Features.embedding")
    blocks = backbone.blocks()
    if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
        _fail(who, "blocks() must return its stages, a non-empty list of nn.Module, input to output")
    left_out = backbone.unblocked_parameters()
    if left_out:
        _fail(who, f"{len(left_out)} parameter tensor(s) are in no stage of blocks() (e.g. {left_out[:3]}): they would never be trained")
    size = int(data.image_size)
    x = torch.randn(BATCH, data.n_bands, size, size, generator=torch.Generator().manual_seed(0))
    backbone.train()
    feats = backbone(x, decode=bool(backbone.has_decoder))
    if not isinstance(feats, Features):
        _fail(who, f"forward returned {type(feats).__name__}, not galframe.api.Features")
    if len(feats.maps) != len(channels):
        _fail(who, f"forward gave {len(feats.maps)} feature maps; feature_channels names {len(channels)}")
    for i, (m, c, s) in enumerate(zip(feats.maps, channels, strides)):
        if m.dim() != 4 or m.shape[0] != BATCH or m.shape[1] != c:
            _fail(who, f"feature map {i} has shape {tuple(m.shape)}; expected ({BATCH}, {c}, H, W) (feature_channels[{i}])")
        if abs(m.shape[-1] * s - size) > s:
            _fail(who, f"feature map {i} is {m.shape[-1]} px wide for a {size} px input; feature_strides[{i}]={s} says {size // s}")
    if tuple(feats.embedding.shape) != (BATCH, int(backbone.embed_dim)):
        _fail(who, f"embedding has shape {tuple(feats.embedding.shape)}; expected ({BATCH}, {backbone.embed_dim}) (embed_dim)")
    if backbone.has_decoder and feats.decoded is None:
        _fail(who, "has_decoder is True, but forward(x, decode=True) left Features.decoded empty")
    total = feats.embedding.sum() + sum(m.sum() for m in feats.maps)
    if feats.decoded is not None:
        total = total + feats.decoded.sum()
    total.backward()
    for i, block in enumerate(blocks):
        params = list(block.parameters())
        if params and not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params):
            _fail(who, f"stage {i} of blocks() ({type(block).__name__}) gets no gradient from forward's outputs")
    backbone.zero_grad(set_to_none=True)
    return backbone


class TinyBackbone(Backbone):
    """A two-stage convolutional backbone (strides 2 and 4, 16-d embedding; a decoder when asked) for task checks."""

    feature_strides = (2, 4)

    def __init__(self, data: DataInfo, decoder: bool = False) -> None:
        super().__init__(data)
        self.feature_channels, self.embed_dim = (8, 16), 16
        self.has_decoder = bool(decoder)
        self.s1 = nn.Sequential(nn.Conv2d(data.n_bands, 8, 3, stride=2, padding=1), nn.GELU())
        self.s2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU())
        self.dec = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(16, data.n_bands, 3, padding=1)) if decoder else None

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:
        a = self.s1(x)
        b = self.s2(a)
        decoded = self.dec(b) if decode and self.dec is not None else None
        return Features(maps=[a, b], embedding=b.mean(dim=(2, 3)), decoded=decoded)

    def blocks(self) -> list[nn.Module]:
        return [self.s1, self.s2] + ([self.dec] if self.dec is not None else [])

    def encoder_blocks(self) -> list[nn.Module]:
        return [self.s1, self.s2]


# -- tasks -----------------------------------------------------------------------------------------
def check_task(
    cls: type,
    batch: Optional[Mapping[str, Any]] = None,
    data: Optional[DataInfo] = None,
    backbone: Optional[Backbone] = None,
    name: str = "t",
    **options: Any,
) -> Task:
    """Build task ``cls(name, backbone, data, **options)`` as GalaxyModel does, and run a training and an
    evaluation step on a batch of 2: ``batch`` gives the values of the keys ``requires_for(options)`` names
    (catalog columns it does not give are drawn at random); ``image`` is added.  Checks the loss (a finite
    scalar whose gradient reaches the head), the metrics (scalars; ``monitor`` among them), the predicted
    columns ((2,) each) and sources.  Returns the task."""
    from galframe.data.fields import ColumnField, field_for
    from galframe.data.scaling import build_scaling

    data = _data(data, image_size=32)
    who = f"task {getattr(cls, '__name__', cls)}"
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        _fail(who, f"{cls!r} is not a subclass of galframe.api.Task")
    keys = cls.requires_for(dict(options))
    if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
        _fail(who, f"requires_for({options}) returned {keys!r}; it must be a tuple of batch key names")
    if backbone is None:
        backbone = TinyBackbone(data, decoder=bool(cls.needs_decoder))
    task = _build(who, cls, Task, name, backbone, data, **options)
    scaling = build_scaling({"name": "asinh"}, data.bands)
    task.bind_scaling(scaling)
    size = int(data.image_size)
    gen = torch.Generator().manual_seed(0)
    full: dict[str, Any] = {"image": torch.rand(BATCH, data.n_bands, size, size, generator=gen), "id": torch.arange(BATCH)}
    full["noise_sigma"] = torch.full((BATCH, data.n_bands), 0.01)
    given = dict(batch or {})
    for key in keys:
        if key in given:
            continue
        if not isinstance(field_for(key), ColumnField):
            _fail(who, f"it reads batch key '{key}' (a registered field): pass check_task(..., batch={{'{key}': ...}})")
        given[key] = torch.randn(BATCH, generator=gen)
    full.update(given)
    flux = task.transform_input(full["image"]) if task.changes_input else full["image"]
    decode = bool(task.needs_decoder)
    if decode and not backbone.has_decoder:
        _fail(who, "needs_decoder is True, but the backbone it was given has no decoder")
    task.train()
    out = task(backbone(scaling(flux), decode=decode))
    if not isinstance(out, dict) or not all(torch.is_tensor(v) or isinstance(v, (list, tuple)) for v in out.values()):
        _fail(who, f"forward must return a dict of tensors (got {type(out).__name__})")
    loss = task.loss(out, full)
    if not torch.is_tensor(loss) or loss.dim() != 0 or not bool(torch.isfinite(loss)):
        _fail(who, f"loss must be a finite 0-d tensor (got {loss!r})")
    own = [p for n, p in task.named_parameters() if p.requires_grad]
    if own:
        loss.backward()
        if not any(p.grad is not None for p in own):
            _fail(who, "the loss's gradient reaches none of the task's own parameters")
        task.zero_grad(set_to_none=True)
    task.eval()
    with torch.no_grad():
        out = task(backbone(scaling(flux), decode=decode))
        metrics = task.make_metrics()
        task.update_metrics(metrics, out, full)
        task.calibrate(metrics)
        values = task.compute_metrics(metrics)
    for key, value in values.items():
        if not (isinstance(value, (int, float)) or (torch.is_tensor(value) and value.dim() == 0)):
            _fail(who, f"compute_metrics gave '{key}' = {value!r}; metrics are scalars (split vectors into names)")
    if task.monitor is not None:
        metric, mode = task.monitor
        if mode not in ("min", "max") or metric not in values:
            _fail(who, f"monitor={task.monitor}: the metric must be one compute_metrics gives ({sorted(values)}) and the mode min or max")
    for key, value in task.predict_columns(out).items():
        if len(np.asarray(value)) != BATCH:
            _fail(who, f"predict_columns gave '{key}' with {len(np.asarray(value))} values for {BATCH} objects")
    sources = task.predict_sources(out)
    if task.finds_sources and (sources is None or len(sources) != BATCH):
        _fail(who, f"finds_sources is True but predict_sources gave {'None' if sources is None else len(sources)} "
                   f"lists for {BATCH} images")
    if not task.finds_sources and sources is not None:
        _fail(who, "predict_sources gives sources but finds_sources is False: set finds_sources = True, or the core never asks")
    return task


# -- readers ---------------------------------------------------------------------------------------
def check_encoder(cls: type, x: torch.Tensor, data: Optional[DataInfo] = None, name: str = "m", **options: Any) -> Encoder:
    """Build encoder ``cls(name, data, **options)`` as galframe does and run it on ``x``, the batch value of its
    modality for a few objects, at least one present and one absent.  Checks ``present`` ((B,) bool, both
    kinds), the embedding ((B, embed_dim), finite on every row, absent ones included), that an object's
    embedding does not depend on the other objects of the batch, and that a gradient reaches its parameters
    through the present objects.  Returns the encoder (in eval mode)."""
    data = _data(data)
    who = f"encoder {getattr(cls, '__name__', cls)}"
    encoder = _build(who, cls, Encoder, name, data, **options)
    if int(encoder.embed_dim) < 1:
        _fail(who, f"embed_dim is {encoder.embed_dim}; set it to the width of the embedding forward returns")
    encoder.eval()
    here = encoder.present(x)
    n = len(x)
    if not torch.is_tensor(here) or here.dtype != torch.bool or tuple(here.shape) != (n,):
        _fail(who, f"present must give a ({n},) bool tensor (got {here!r})")
    if not (here.any() and (~here).any()):
        _fail(who, f"check_encoder needs a batch with present and absent objects (present: {here.tolist()})")
    out = encoder(x)
    if tuple(out.shape) != (n, int(encoder.embed_dim)):
        _fail(who, f"forward gave shape {tuple(out.shape)}; expected ({n}, {encoder.embed_dim}) (embed_dim)")
    if not bool(torch.isfinite(out).all()):
        _fail(who, "forward gave non-finite values; every row must be finite, absent objects included (zero what is missing)")
    with torch.no_grad():
        for i in range(n):
            if not torch.allclose(encoder(x[i : i + 1])[0], out[i], atol=1e-5, rtol=1e-4):
                _fail(who, f"object {i}'s embedding changes with the other objects of the batch (no batch normalisation)")
    own = [p for p in encoder.parameters() if p.requires_grad]
    if own:
        out[here].sum().backward()
        grads = [p.grad for p in own if p.grad is not None]
        if not grads or not all(bool(torch.isfinite(g).all()) for g in grads):
            _fail(who, "the gradient through the present objects reaches none of its parameters, or is not finite")
        encoder.zero_grad(set_to_none=True)
    return encoder


def check_reader(
    reader: Union[type, Reader],
    bands: Optional[Sequence[str]] = None,
    size: Optional[int] = None,
    max_shards: int = 3,
    **options: Any,
) -> list[Stamp]:
    """Build reader ``reader(**options)`` (or take the instance), list its shards twice (same keys and
    fingerprints: a restart must see the same work), read up to ``max_shards`` of them and check every
    object: a :class:`Stamp` (id, (bands, H, W) float flux, matching ivar/mask) or a :class:`Reject` with a
    reason.  With ``bands`` and ``size`` each stamp is also put through the pipeline's conform step, as
    predict and ingest do.  Returns the stamps read."""
    from galframe.readers.base import conform

    if isinstance(reader, Reader):
        who = f"reader {type(reader).__name__}"
    else:
        who = f"reader {getattr(reader, '__name__', reader)}"
        reader = _build(who, reader, Reader, **options)
    if bands is not None:
        reader.bind(bands, int(size or 64))
    shards = reader.shards()
    if not isinstance(shards, list) or not all(isinstance(s, Shard) for s in shards):
        _fail(who, "shards() must return a list of galframe.api.Shard")
    keys = [s.key for s in shards]
    if len(set(keys)) != len(keys):
        _fail(who, f"shard keys repeat ({len(keys) - len(set(keys))} duplicates): each key names one unit of work")
    again = [(s.key, s.fingerprint) for s in reader.shards()]
    if again != [(s.key, s.fingerprint) for s in shards]:
        _fail(who, "shards() gave other keys or fingerprints when called again; it must be deterministic")
    stamps: list[Stamp] = []
    for shard in shards[: int(max_shards)]:
        items = list(reader.read(shard))
        if shard.n and len(items) != shard.n:
            _fail(who, f"shard {shard.key} says n={shard.n} but read() yielded {len(items)} objects and rejects")
        for item in items:
            if isinstance(item, Reject):
                if not item.reason:
                    _fail(who, f"a Reject from {item.source} has no reason")
                continue
            if not isinstance(item, Stamp):
                _fail(who, f"read() yielded {type(item).__name__}; it yields Stamp or Reject")
            _check_stamp(who, item)
            if bands is not None:
                try:
                    conform(item, bands, int(size or 64))
                except StampError as exc:
                    _fail(who, f"stamp {item.id}: the pipeline rejects it: {exc}")
            stamps.append(item)
    return stamps


def _check_stamp(who: str, stamp: Stamp) -> None:
    where = f"stamp {stamp.id!r}"
    if not isinstance(stamp.id, str):
        _fail(who, f"{where}: id must be a str (got {type(stamp.id).__name__})")
    flux = np.asarray(stamp.flux)
    if flux.ndim != 3 or flux.shape[0] != len(stamp.bands) or flux.dtype.kind != "f":
        _fail(who, f"{where}: flux {flux.dtype} {tuple(flux.shape)} must be float (bands, H, W) for bands {tuple(stamp.bands)}")
    for what, arr in (("ivar", stamp.ivar), ("mask", stamp.mask)):
        if arr is not None and tuple(np.shape(arr)) not in (tuple(flux.shape), tuple(flux.shape[1:])):
            _fail(who, f"{where}: {what} has shape {tuple(np.shape(arr))}; it must be {tuple(flux.shape)} or {tuple(flux.shape[1:])}")
    if not isinstance(stamp.meta, dict):
        _fail(who, f"{where}: meta must be a dict")
