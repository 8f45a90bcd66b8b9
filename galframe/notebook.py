"""The Python API for notebooks: load a model, embed images, fine-tune on a few labels, predict a catalog.

    import galframe

    model = galframe.load_model("lvm_tiny-g10")          # zoo weights, a zoo model, a run directory or a .ckpt
    vectors = model.embed(images)                        # (N, 3, H, W) nanomaggies -> (N, D) numpy array
    tuned = galframe.finetune(model, "data/tiny", label_col="class", n_labeled=40)
    table = tuned.predict("data/tiny")                   # astropy Table, one row per object; .to_pandas()

Everything goes through the machinery of the commands: :func:`galframe.build.build` and ``galframe.train.run``
train, :mod:`galframe.checkpoints` loads, and ``galframe.predict``'s Predictor reads survey files (any reader:
``reader="fits"``, ``"hdf5"``, ... with the reader's options as keywords; default a galframe dataset directory).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError, did_you_mean

Source = Union[str, Path, np.ndarray, Any]


def _torch_nn() -> Any:
    from torch import nn

    return nn


class _Embedding:
    """The pooled embedding as catalog columns ``embedding_000 ...`` (how the Predictor writes a task's output)."""

    finds_sources = False  # one row per object, no source catalog

    @staticmethod
    def predict_columns(out: Any) -> dict[str, np.ndarray]:
        values = out.float().cpu().numpy()
        return {f"embedding_{i:03d}": values[:, i] for i in range(values.shape[1])}


def _encoder(backbone: Any, scaling: Any, info: Any) -> Any:
    """A module that maps flux (B, bands, H, W) to the backbone's pooled embedding, shaped like a model with
    one task (``embedding``) so the Predictor can run it over any reader."""
    nn = _torch_nn()

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.scaling, self.data_info = backbone, scaling, info
            self.bands = list(info.bands)
            self.tasks = {"embedding": _Embedding()}

        def forward(self, flux: Any) -> dict:
            return {"embedding": self.backbone(self.scaling(flux), decode=False).embedding}

    return Encoder().eval()


class Model:
    """A trained galframe model (``network``: its GalaxyModel) or a pretrained backbone alone (``network`` None)."""

    def __init__(self, encoder: Any, network: Any = None, checkpoint: Optional[Path] = None,
                 backbone: Optional[dict] = None, name: str = "", metrics: Optional[dict] = None) -> None:
        self.encoder, self.network, self.checkpoint = encoder, network, checkpoint
        self.backbone_config = dict(backbone or {})
        self.name = name
        self.metrics = dict(metrics or {})

    @property
    def bands(self) -> list[str]:
        return list(self.encoder.bands)

    @property
    def image_size(self) -> int:
        return int(self.encoder.data_info.image_size)

    @property
    def tasks(self) -> list[str]:
        return list(self.network.tasks) if self.network is not None else []

    @property
    def device(self) -> Any:
        return next(self.encoder.parameters()).device

    def __repr__(self) -> str:
        what = f"tasks {self.tasks}" if self.network is not None else "backbone only"
        return f"galframe.Model({self.name or '?'}: {self.backbone_config.get('plugin', '?')}, bands {self.bands}, {what})"

    # -- embeddings ---------------------------------------------------------------------------------------
    def embed(self, source: Source, batch_size: int = 64, reader: str = "dataset", **reader_options: Any) -> np.ndarray:
        """The backbone's pooled embedding, (N, D) float32: of an array of images (N, bands, H, W) in
        nanomaggies, or of every object a reader yields (``source`` its path: a galframe dataset directory
        by default; rows in the reader's order, as ``predict`` writes them)."""
        import torch

        if isinstance(source, (np.ndarray, torch.Tensor)):
            images = torch.as_tensor(np.asarray(source, dtype=np.float32) if isinstance(source, np.ndarray) else source)
            if images.dim() != 4 or images.shape[1] != len(self.bands):
                raise DataError(f"embed: images have shape {tuple(images.shape)}; this model expects "
                                f"(N, {len(self.bands)} bands {self.bands}, H, W) in nanomaggies.")
            parts = []
            with torch.inference_mode():
                for start in range(0, len(images), int(batch_size)):
                    x = images[start : start + int(batch_size)].float().to(self.device)
                    parts.append(self.encoder(x)["embedding"].float().cpu().numpy())
            return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        table = _run_predictor(self.encoder, source, reader, batch_size, reader_options, columns="none")
        names = sorted(c for c in table.colnames if c.startswith("embedding_"))
        return np.stack([np.asarray(table[c], dtype=np.float32) for c in names], axis=1) if len(table) else \
            np.zeros((0, len(names)), np.float32)

    # -- a catalog ------------------------------------------------------------------------------------------
    def predict(self, source: Source, batch_size: int = 64, reader: str = "dataset", strict: bool = False,
                columns: Any = "all", **reader_options: Any) -> Any:
        """Every task's catalog columns for every object ``reader`` yields from ``source`` (default: a galframe
        dataset directory), as ``galframe predict`` writes them: an astropy Table (``.to_pandas()``).
        Rejected objects are counted in ``table.meta["rejects"]``."""
        if self.network is None:
            raise ConfigError(f"{self.name or 'this model'} is a pretrained backbone with no task to predict: "
                              "fine-tune it first (galframe.finetune), or use model.embed.")
        return _run_predictor(self.network, source, reader, batch_size, reader_options, strict=strict, columns=columns)

    def finetune(self, catalog: Union[str, Path], **options: Any) -> "Model":
        """:func:`finetune` this model."""
        return finetune(self, catalog, **options)


# -- loading ------------------------------------------------------------------------------------------------
def load_model(spec: Union[str, Path], device: str = "cpu", backbone: Optional[str] = None) -> Model:
    """A model from a run directory, a ``.ckpt`` file, a zoo model, or weights (zoo weights or a ``.safetensors``
    file: a backbone alone, built with the backbone config ``backbone``, else the zoo entry's ``backbone`` field
    or its name's prefix before '-')."""
    from galframe import zoo

    path = Path(str(spec)).expanduser()
    entry = None if path.exists() else zoo.entries().get(str(spec))
    if entry is not None and entry["kind"] == "weights":
        return _weights_model(entry, str(spec), device, backbone)
    if path.is_file() and path.suffix == ".safetensors":  # a weights file outside the zoo
        if not backbone:
            raise ConfigError(f"{path}: a weights file: name the backbone config it is for, "
                              "e.g. galframe.load_model(path, backbone='lvm_tiny').")
        entry = {"name": path.stem, "file": path.name, "_root": str(path.parent), "_index": str(path)}
        return _weights_model(entry, str(path), device, backbone)
    if entry is None and not path.exists():
        raise ConfigError(f"'{spec}' is neither a run directory, a checkpoint file nor a zoo entry "
                          f"({zoo.index_path()} and the plugins' zoo.json).{did_you_mean(str(spec), zoo.entries())}")
    from galframe.checkpoints import load_model as load_checkpoint

    network, file = load_checkpoint(spec, device)
    encoder = _encoder(network.backbone, network.scaling, network.data_info)
    return Model(encoder, network, file, network.config["backbone"], name=str(spec))


def _weights_model(entry: dict, weights: str, device: str, backbone: Optional[str]) -> Model:
    from galframe import zoo
    from galframe.build import compose_dict
    from galframe.data.scaling import build_scaling
    from galframe.model import build_backbone, data_info_from

    name = str(entry["name"])
    group = backbone or entry.get("backbone") or name.split("-", 1)[0]
    try:
        cfg = compose_dict("train", [f"backbone={group}", f"backbone.weights={weights}"])
    except Exception as exc:
        raise ConfigError(f"zoo weights '{name}': no backbone config '{group}' to build them with "
                          f"({type(exc).__name__}); pass backbone=<config name>.") from None
    file = zoo.file_of(entry)
    sidecar = file.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    bands = meta.get("bands") or entry.get("bands")
    if not bands:
        raise DataError(f"zoo weights '{name}' ({entry['_index']}): neither the entry nor a sidecar names their bands.")
    info = data_info_from({"bands": list(bands), "image_size": int(meta.get("image_size") or cfg["data"]["image_size"]),
                           "pixel_scale": float(meta.get("pixel_scale") or 0.262)})
    network = build_backbone(cfg["backbone"], info)
    scaling = build_scaling(meta.get("scaling") or cfg["data"].get("scaling") or {"name": "asinh"}, list(bands))
    encoder = _encoder(network, scaling, info).to(device)
    return Model(encoder, None, None, cfg["backbone"], name=name)  # cfg["backbone"]: what finetune starts from


# -- fine-tuning --------------------------------------------------------------------------------------------
def finetune(model: Model, catalog: Union[str, Path], label_col: str = "class", n_labeled: Optional[int] = None, *,
             task: str = "classify", epochs: int = 5, mode: str = "full", batch_size: int = 32, seed: int = 0,
             overrides: Sequence[str] = (), run_dir: Optional[Union[str, Path]] = None) -> Model:
    """Train ``model``'s backbone with a new ``task`` head on the galframe dataset ``catalog`` (a directory
    written by ``galframe simulate`` or ``galframe ingest``), as ``galframe train`` does: the labels are
    the catalog's ``label_col`` (class names or indices), ``n_labeled`` of the training split drawn at
    random (all when None); ``mode`` full | frozen (a linear probe) | last_n.  Returns the trained model,
    its held-out metrics in ``.metrics`` and its run directory (``<paths.runs>/finetune/<time>``) in
    ``.checkpoint``'s parents."""
    import torch

    from galframe.build import build_datamodule, compose_dict
    from galframe.train import run

    cfg = compose_dict("train", ["data=dir", f"data.path={catalog}", f"task={task}", "logger=none",
                                 f"trainer.max_epochs={int(epochs)}", "trainer.progress_bar=false",
                                 f"finetune.mode={mode}", f"data.batch_size={int(batch_size)}", f"seed={int(seed)}",
                                 *overrides])
    cfg["backbone"] = dict(model.backbone_config)
    if label_col != "class":
        cfg["data"]["labels"] = _labels_from(build_datamodule(cfg), label_col, n_labeled, seed)
    elif n_labeled is not None:
        cfg["data"]["n_labeled"] = int(n_labeled)
    out = Path(run_dir) if run_dir else Path(cfg["paths"]["runs"]) / "finetune" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    start = out / "start_backbone.ckpt"  # this model's backbone, as it is in memory: the warm start
    torch.save({"state_dict": {f"backbone.{k}": v.detach().cpu() for k, v in model.encoder.backbone.state_dict().items()}},
               start)
    cfg["init"] = str(start)
    try:
        metrics = run(cfg, run_dir=out)
    finally:
        start.unlink(missing_ok=True)
    tuned = load_model(out, device=str(model.device))
    tuned.metrics = metrics
    return tuned


def _labels_from(dm: Any, label_col: str, n_labeled: Optional[int], seed: int) -> dict:
    """``data.labels`` (id -> label) from the training split's ``label_col`` (``n_labeled`` of them at random)."""
    dm.prepare()
    train = dm.splits["train"]
    if label_col not in train.columns:
        raise DataError(f"{dm.root}: the catalog has no column '{label_col}'.{did_you_mean(label_col, train.columns)}")
    train = train[train[label_col].notna()]
    if n_labeled is not None:
        if not 0 < int(n_labeled) <= len(train):
            raise ConfigError(f"n_labeled={n_labeled}: the training split has {len(train)} objects with a '{label_col}'.")
        train = train.sample(int(n_labeled), random_state=int(seed))
    return {int(i): v.item() if hasattr(v, "item") else v for i, v in zip(train["id"], train[label_col])}


# -- the predictor ------------------------------------------------------------------------------------------
def _run_predictor(net: Any, source: Source, reader: str, batch_size: int, options: dict, strict: bool = False,
                   columns: Any = "all") -> Any:
    """``net`` over every object the reader yields from ``source``, through galframe predict's Predictor."""
    from astropy.table import Table

    from galframe.build import compose_dict
    from galframe.predict import Predictor
    from galframe.readers import build_reader

    if not isinstance(source, (str, Path)):
        raise DataError(f"expected images (N, bands, H, W) or the path of files for reader '{reader}', got {type(source).__name__}.")
    with tempfile.TemporaryDirectory(prefix="galframe-") as tmp:
        out = Path(tmp) / "catalog.parquet"
        cfg = compose_dict("predict", [f"data={reader}", f"data.path={source}", "ckpt=in-memory", f"out={out}"])
        cfg["data"].update(options)
        reader_obj, core = build_reader(cfg["data"])
        summary = Predictor(net, reader_obj, core, out, batch_size=batch_size, strict=strict, overwrite=True,
                            progress=False, columns=columns, rejects=Path(tmp) / "rejects.csv",
                            log=lambda line: None).run()
        table = Table.read(out) if Path(summary.get("out", out)).is_file() else Table()
    table.meta["rejects"] = int(summary.get("rejects", 0))
    return table
