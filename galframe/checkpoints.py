"""Checkpoints: finding them (run directory, ``.ckpt`` file, zoo model), loading them, resuming, warm starts.

A checkpoint holds the trained weights of every part of the model, so loading one never looks for the
pretrained ``backbone.weights`` the run was initialised from: the model is rebuilt with
``backbone.weights`` unset and the checkpoint's state dict is loaded into it.  A checkpoint stays
loadable after the zoo file it started from is gone.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from galframe.errors import ConfigError, DataError, did_you_mean

PathLike = Union[str, Path]


def checkpoint_file(spec: PathLike) -> Path:
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


def resume_checkpoint(cfg: Mapping[str, Any], run_dir: Path, job: str = "train") -> Optional[str]:
    """The checkpoint a run continues from (its ``resume`` key, under ``paths.runs``), or None."""
    if not cfg.get("resume"):
        return None
    runs = Path(cfg["paths"]["runs"]).resolve()
    found = find_resume_checkpoint(str(cfg["resume"]), runs, run_dir, job=job)
    return str(found) if found else None  # resume=auto in a new run directory: nothing to resume


# -- the zoo's trained models -----------------------------------------------------------------------------
def register_model(ckpt: Any, name: str, description: str = "") -> dict:
    """Copy a trained model's checkpoint into the local zoo as ``name`` (``ckpt=<name>`` finds it)."""
    from galframe import zoo

    return zoo.add(checkpoint_file(str(ckpt)), name, "model", description, suffix=".ckpt")


def resolve_checkpoint(spec: Any) -> Path:
    """A trained model's checkpoint from a run directory, a ``.ckpt`` file or the name of a zoo model."""
    from galframe import zoo

    if spec in (None, "", "???"):
        raise ConfigError("ckpt is not set: give a training run directory, a .ckpt file or a model name from the zoo.")
    path = Path(str(spec)).expanduser()
    if path.exists():
        return checkpoint_file(str(path))
    entries = zoo.entries()
    entry = entries.get(str(spec))
    if entry is None:
        models = [n for n, e in entries.items() if e["kind"] == "model"]
        raise ConfigError(
            f"ckpt='{spec}' is neither a run directory, a checkpoint file nor a model in the zoo ({zoo.index_path()})."
            f"{did_you_mean(str(spec), models)}"
        )
    file = zoo.file_of(entry)
    if entry["kind"] != "model" or not str(file).endswith(".ckpt"):
        raise ConfigError(
            f"zoo entry '{spec}' holds backbone weights ({file.name}), not a trained model: predict needs a checkpoint "
            "of galframe train (a run directory or .ckpt), e.g. registered with galframe.checkpoints.register_model."
        )
    if not file.is_file():
        raise ConfigError(f"zoo model '{spec}' (index {entry['_index']}): file {file} not found.")
    if entry.get("sha256") and zoo.sha256_of(file) != entry["sha256"]:
        raise ConfigError(f"zoo model '{spec}': {file} does not match the sha256 in {entry['_index']}.")
    return file


# -- loading ----------------------------------------------------------------------------------------------
def read_checkpoint(file: PathLike) -> dict:
    """The checkpoint's dictionary; one clear error when the file is not a galframe checkpoint."""
    import torch

    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(f"{file}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{file}: not a checkpoint of a galframe model (no state_dict).")
    return ckpt


def stored_config(ckpt: dict, file: PathLike = "checkpoint") -> dict:
    """The model config a checkpoint was made with, ``backbone.weights`` unset (its state dict holds them)."""
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"{file}: not a checkpoint of a galframe model (no state_dict and model config).")
    return without_pretrained_weights(config)


def without_pretrained_weights(config: dict) -> dict:
    """A copy of a model config whose backbone does not load pretrained weights."""
    config = copy.deepcopy(dict(config))
    backbone = dict(config.get("backbone") or {})
    if backbone.get("weights"):
        backbone["weights"] = None
    if backbone.get("pretrained"):  # e.g. timm's: pretrained weights are read from backbone.weights only
        backbone["pretrained"] = False
    config["backbone"] = backbone
    return config


def model_from_checkpoint(file: PathLike, cls: Any = None) -> Any:
    """The model a checkpoint holds (``cls``, default GalaxyModel), in eval mode on the CPU."""
    if cls is None:
        from galframe.model import GalaxyModel as cls  # noqa: N813

    ckpt = read_checkpoint(file)
    model = cls(stored_config(ckpt, file))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model


def load_model(spec: Any, device: str = "cpu") -> tuple[Any, Path]:
    """(the GalaxyModel of a run directory, ``.ckpt`` file or zoo model, in eval mode on ``device``, its file)."""
    file = resolve_checkpoint(spec)
    return model_from_checkpoint(file).to(device), file


# -- warm start -------------------------------------------------------------------------------------------
def init_weights(model: Any, spec: str) -> None:
    """Warm start: copy the weights of an earlier run into ``model`` (same backbone; tasks matched by name)."""
    file = checkpoint_file(spec)
    state = read_checkpoint(file)["state_dict"]
    own = model.state_dict()
    # task buffers hold what the new data decides (class weights, target normalisation): keep the new run's
    task_buffers = {f"tasks.{n}" for n, _ in model.tasks.named_buffers()} if hasattr(model, "tasks") else set()
    # ...and the out-of-distribution reference set is the new run's validation images'
    state = {k: v for k, v in state.items() if k not in task_buffers and not k.startswith("trust.")}
    clash = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if clash:
        raise ConfigError(
            f"{file}: {len(clash)} tensor(s) differ in shape from this model (e.g. {clash[0]}): "
            "init needs the same backbone and task heads."
        )
    missing, _ = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if len(missing) == len(own):
        raise ConfigError(f"{file}: no tensor of the checkpoint matches this model (different backbone?).")
