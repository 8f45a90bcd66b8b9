"""LVM weights on disk: ``<name>.safetensors`` plus a JSON sidecar ``<name>.json``, and the weights zoo.

The sidecar records what the weights are for: bands, image size, the scaling from flux to
network input, the architecture, the galframe version and the sha256 of the safetensors file.

``backbone.weights`` is either a path (a ``.safetensors`` file, its ``.json`` sidecar, a folder
holding one weights file, or a ``galframe pretrain`` run directory) or the name of a zoo entry.
The zoo is the union of two JSON indexes, lists of entries ``{name, file, sha256, bands,
description, url?}``:

* ``zoo.json`` shipped in this package (files in the package's ``zoo/`` folder, each with its sidecar
  naming the command that made it, its wall time and its sha256), and
* ``<galframe cache>/zoo/index.json`` (files relative to that folder), which wins on equal names.

Nothing is ever downloaded: an entry whose file is not there says where to download it and where
to put it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch

from galframe.errors import DataError
from galframe.zoo import read_index, sha256_of, zoo_dir  # noqa: F401  (the zoo's index belongs to galframe.zoo)

FORMAT = "galframe-lvm-weights"
PACKAGE_ZOO = Path(__file__).with_name("zoo.json")


def sidecar_of(file: Path) -> Path:
    return file.with_suffix(".json")


# -- saving ---------------------------------------------------------------------
def save_weights(backbone: Any, path: Union[str, Path], scaling: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write the backbone's encoder + decoder as ``<path>.safetensors`` and the sidecar ``<path>.json``."""
    from safetensors.torch import save_file

    import galframe

    file = Path(path)
    if file.suffix != ".safetensors":
        file = file.with_name(file.name + ".safetensors") if file.suffix != ".json" else file.with_suffix(".safetensors")
    file.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.net.state_dict().items()}
    save_file(state, str(file), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": 1,
        "file": file.name,
        "sha256": sha256_of(file),
        "bands": list(backbone.data.bands),
        "image_size": int(backbone.img_size),
        "pixel_scale": float(backbone.data.pixel_scale),
        "scaling": dict(scaling) if scaling is not None else None,
        "architecture": dict(backbone.arch),
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "galframe_version": galframe.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta.update(extra or {})
    sidecar_of(file).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return file


# -- the zoo --------------------------------------------------------------------
def zoo_entries() -> dict[str, dict]:
    """Every zoo entry of backbone weights by name (the user's index wins over the packages'), with ``_root`` and ``_index``."""
    from galframe import zoo

    return zoo.entries("weights")


def add_to_zoo(weights: Union[str, Path], name: str, description: str = "") -> dict:
    """Copy a weights file (and its sidecar) into the user's zoo folder and list it in ``index.json``."""
    from galframe import zoo

    file, meta = _read_local(Path(weights))
    entry = zoo.add(file, name, "weights", description, suffix=".safetensors", bands=meta["bands"])
    target = zoo.zoo_dir() / entry["file"]
    if file.resolve() != target.resolve():
        sidecar_of(target).write_text(json.dumps({**meta, "file": target.name}, indent=2, sort_keys=True) + "\n")
    return entry


# -- resolving and loading -----------------------------------------------------
def _read_local(path: Path) -> tuple[Path, dict]:
    """The safetensors file and its sidecar for a path given by the user."""
    path = path.expanduser()
    if path.is_dir():
        for candidate in (path, path / "weights"):
            files = sorted(candidate.glob("*.safetensors")) if candidate.is_dir() else []
            if len(files) == 1:
                path = files[0]
                break
            if len(files) > 1:
                raise DataError(
                    f"{candidate}: holds {len(files)} weights files ({', '.join(f.name for f in files)}); name one."
                )
        else:
            raise DataError(f"{path}: no .safetensors weights file in this folder (or its weights/ folder).")
    if path.suffix == ".json":
        meta = _load_sidecar(path)
        return path.with_name(str(meta.get("file") or path.with_suffix(".safetensors").name)), meta
    if not path.is_file():
        raise DataError(f"{path}: LVM weights file not found (galframe never downloads weights).")
    sidecar = sidecar_of(path)
    if not sidecar.is_file():
        raise DataError(
            f"{path}: no sidecar {sidecar.name} next to it; galframe needs it to know the bands, image size and "
            f"architecture these weights were made for (galframe pretrain writes both)."
        )
    return path, _load_sidecar(sidecar)


def _load_sidecar(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: weights sidecar not found.")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: unreadable weights sidecar ({exc}).") from exc
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a galframe LVM weights sidecar (format={meta.get('format')!r}).")
    return meta


def resolve(spec: str) -> tuple[Path, dict, Optional[dict]]:
    """(safetensors file, sidecar or {}, zoo entry or None) for ``backbone.weights``; checks the sha256."""
    path = Path(str(spec)).expanduser()
    looks_like_path = path.exists() or "/" in str(spec) or path.suffix in (".safetensors", ".json")
    entry = None
    if looks_like_path:
        file, meta = _read_local(path)
    else:
        entries = zoo_entries()
        if str(spec) not in entries:
            from galframe.errors import did_you_mean

            raise DataError(
                f"backbone.weights='{spec}' is neither a file nor a zoo entry.{did_you_mean(str(spec), entries)} "
                f"(zoo indexes: {PACKAGE_ZOO} and {zoo_dir() / 'index.json'})"
            )
        entry = entries[str(spec)]
        file, meta = _zoo_file(entry)
    if not file.is_file():
        raise DataError(f"{file}: LVM weights file not found (galframe never downloads weights).")
    actual = sha256_of(file)
    for what, expected in (("the zoo entry", (entry or {}).get("sha256")), ("its sidecar", meta.get("sha256"))):
        if expected and str(expected).lower() != actual:
            raise DataError(
                f"{file}: sha256 is {actual}, but {what} says {expected}: the file is corrupt, truncated or not the "
                f"weights it claims to be."
            )
    return file, meta, entry


def _zoo_file(entry: dict) -> tuple[Path, dict]:
    name, root = entry["name"], Path(entry["_root"])
    rel = entry.get("file") or (Path(str(entry.get("url", ""))).name if entry.get("url") else None)
    file = root / rel if rel else None
    if file is None or not file.is_file():
        where = file or root / f"{name}.safetensors"
        if entry.get("url"):
            raise DataError(
                f"zoo weights '{name}' are not on this machine, and galframe never downloads: download {entry['url']} "
                f"yourself and save it as {where} (its sha256 must be {entry.get('sha256', '?')})."
            )
        raise DataError(f"zoo weights '{name}' (index {entry['_index']}): file {where} not found.")
    meta = _load_sidecar(sidecar_of(file)) if sidecar_of(file).is_file() else {}
    return file, meta


def load_into(backbone: Any, spec: str) -> dict:
    """Load ``spec`` into an ``LVMBackbone``; refuses other bands, other architectures and bad checksums."""
    from safetensors.torch import load_file

    file, meta, entry = resolve(spec)
    want = [str(b) for b in backbone.data.bands]
    bands = meta.get("bands") or (entry or {}).get("bands")
    if bands is None:
        raise DataError(f"{file}: neither a sidecar nor a zoo entry says which bands these weights were made for.")
    if [str(b) for b in bands] != want:
        raise DataError(
            f"{file}: these weights were made for bands {list(bands)}, but the model's data has bands {want}; "
            f"use weights pretrained on {want} (or data with bands {list(bands)})."
        )
    arch = meta.get("architecture")
    if arch:
        # the stamp size may differ: windowed attention and convolutions carry over to other sizes
        diff = {
            k: (arch.get(k), v)
            for k, v in backbone.arch.items()
            if k in arch and k != "img_size" and _norm(arch.get(k)) != _norm(v)
        }
        if diff:
            said = ", ".join(f"{k}={theirs} (model: {ours})" for k, (theirs, ours) in diff.items())
            raise DataError(
                f"{file}: made for another architecture: {said}. Set those backbone options (e.g. "
                f"backbone.{next(iter(diff))}={diff[next(iter(diff))][0]}) or choose the backbone config they were made with."
            )
    try:
        state = load_file(str(file))
    except Exception as exc:
        raise DataError(f"{file}: cannot read LVM weights ({type(exc).__name__}: {exc})") from exc
    own = backbone.net.state_dict()
    state = _fit_position_bias(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            details.append(f"{len(bad)} of another shape (e.g. {bad[0]}: {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})")
        raise DataError(f"{file}: does not fit this LVM backbone: {'; '.join(details)} weights.")
    with torch.no_grad():
        backbone.net.load_state_dict(state, strict=True)
    return {**meta, "file": str(file), "zoo_entry": (entry or {}).get("name")}


def _fit_position_bias(state: dict, own: dict) -> dict:
    """Relative position bias tables of another window size (a stage whose window was clamped to a
    smaller stamp) resized by bicubic interpolation, as when Swin is fine-tuned at a new resolution."""
    out = dict(state)
    for key, value in state.items():
        if not key.endswith("relative_position_bias_table") or key not in own or own[key].shape == value.shape:
            continue
        n_old, heads = value.shape
        n_new = own[key].shape[0]
        s_old, s_new = int(round(n_old**0.5)), int(round(n_new**0.5))
        if s_old * s_old != n_old or s_new * s_new != n_new or own[key].shape[1] != heads:
            continue
        grid = value.T.reshape(1, heads, s_old, s_old).float()
        resized = torch.nn.functional.interpolate(grid, size=(s_new, s_new), mode="bicubic", align_corners=False)
        out[key] = resized.reshape(heads, n_new).T.contiguous().to(value.dtype)
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
