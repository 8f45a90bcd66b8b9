"""The zoo: named weights and trained models, one index format, one owner of the user's index.

An index is a JSON list of entries ``{name, kind, file, sha256, description, ...}``; ``kind`` is

* ``weights``: backbone weights (e.g. an LVM ``.safetensors`` file with its sidecar), selected with
  ``backbone.weights=<name>``; entries without a kind (or the older ``backbone``) are weights;
* ``model``: a whole trained model (a ``galframe train`` checkpoint), selected with ``ckpt=<name>``
  or ``galframe.load_model(<name>)``.

Entries come from two places, the user's winning on equal names:

* ``zoo.json`` shipped inside a plugin package (beside its ``__init__.py``; files in the package's
  ``zoo/`` folder), for every package that registers a plugin, found without importing it;
* ``<galframe cache>/zoo/index.json`` (files relative to that folder), written by :func:`add`.

Nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any, Optional, Union

from galframe.errors import DataError

KINDS = ("weights", "model")
PACKAGE_INDEX = "zoo.json"


def zoo_dir() -> Path:
    """The user's zoo folder, ``<galframe cache>/zoo``."""
    from galframe.paths import cache_dir

    return cache_dir() / "zoo"


def index_path() -> Path:
    """The user's zoo index, ``<galframe cache>/zoo/index.json``."""
    return zoo_dir() / "index.json"


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kind_of(entry: dict) -> str:
    kind = str(entry.get("kind") or "weights")
    return "weights" if kind == "backbone" else kind


def read_index(path: Path) -> list[dict]:
    """The entries of one index file (none when it does not exist)."""
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: unreadable zoo index ({exc}).") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise DataError(f"{path}: a zoo index must be a JSON list of entries with at least a 'name'.")
    return entries


def package_indexes() -> list[tuple[Path, Path]]:
    """(index, root) of every plugin package that ships a ``zoo.json`` (packages are located, not imported)."""
    from galframe import registry

    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for info in registry.plugins():
        top = info.value.split(":", 1)[0].split(".", 1)[0]
        if top in seen:
            continue
        seen.add(top)
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            index = Path(location) / PACKAGE_INDEX
            if index.is_file():
                found.append((index, index.with_name("zoo")))
    return found


def entries(kind: Optional[str] = None) -> dict[str, dict]:
    """Every zoo entry by name (of ``kind``, when given), each with ``kind``, ``_root`` and ``_index``."""
    found: dict[str, dict] = {}
    for index, root in [*package_indexes(), (index_path(), zoo_dir())]:
        for entry in read_index(index):
            if kind is not None and kind_of(entry) != kind:
                continue
            found[str(entry["name"])] = {**entry, "kind": kind_of(entry), "_root": str(root), "_index": str(index)}
    return found


def file_of(entry: dict) -> Path:
    """Where an entry's file is (it may be missing)."""
    return Path(entry["_root"]) / str(entry.get("file") or "")


def add(file: Union[str, Path], name: str, kind: str, description: str = "", suffix: Optional[str] = None,
        **fields: Any) -> dict:
    """Copy ``file`` into the user's zoo as ``<name><suffix>`` and list it in ``index.json`` (replacing an
    entry of the same name).  Returns the entry."""
    if kind not in KINDS:
        raise ValueError(f"zoo entry kind {kind!r} is not one of {KINDS}")
    file = Path(file)
    root = zoo_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}{suffix if suffix is not None else file.suffix}"
    if file.resolve() != target.resolve():
        shutil.copyfile(file, target)
    entry = {"name": name, "file": target.name, "kind": kind, "sha256": sha256_of(target), **fields,
             "description": description}
    index = index_path()
    kept = [e for e in read_index(index) if e.get("name") != name]
    index.write_text(json.dumps(kept + [entry], indent=2) + "\n")
    return entry
