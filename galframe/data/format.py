"""The galframe dataset format, and the one writer every producer uses.

A dataset is a directory::

    manifest.json        what the dataset is; written last: its presence marks a complete dataset
    catalog.parquet      one row per object: id, shard, index, then free columns (class, truth, ...)
    shard-00000.h5       images float32 (n, bands, H, W), optional clean (same shape), ids int64 (n,)
    shard-00001.h5       ...

``DatasetWriter`` builds it in a hidden temporary sibling directory and renames that into place
at the end, so an interrupted run never leaves a directory that looks complete.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import DataError

FORMAT = "galframe-dataset"
VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"
#: per-object truth of multi-object images (detection fields): one row per instance, keyed by image_id
INSTANCES = "instances.parquet"
SHARD_PATTERN = "shard-{:05d}.h5"
#: catalog columns the writer owns; rows passed to ``add`` must not contain them
RESERVED_COLUMNS = ("id", "shard", "index")
#: integer dtypes of well-known catalog columns
COLUMN_DTYPES = {"id": "int64", "shard": "int32", "index": "int32", "class": "int16"}


def vote_columns(schema: Optional[Mapping[str, Any]]) -> list[str]:
    """Catalog columns of a Galaxy Zoo style vote schema, in schema order: ``<question>_<answer>``.

    A schema is ``{"questions": [{"name": q, "answers": [a, ...], "asked_if": "<question>_<answer>" | null}, ...]}``
    (stored in the dataset manifest under ``votes``); the columns hold vote counts.
    """
    if not schema:
        return []
    return [f"{q['name']}_{a}" for q in schema["questions"] for a in q["answers"]]


class DatasetExistsError(DataError):
    """The target directory already holds something (e.g. another process finished first)."""


def is_complete(path: "str | os.PathLike[str]") -> bool:
    """Whether ``path`` is a finished dataset directory (it has a manifest)."""
    return (Path(path) / MANIFEST).is_file()


def _temp_name(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_temps(out_dir: "str | os.PathLike[str]") -> list[Path]:
    """Remove temporary directories a killed writer left next to ``out_dir``; returns them.

    Only those whose writer process (the pid in the name) no longer runs on this machine.
    """
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*-*"):
        try:
            pid = int(tmp.name[len(f".{out_dir.name}.tmp-") :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        except (ValueError, PermissionError, OSError):
            continue
    return removed


def _jsonable(obj: Any) -> Any:
    """A JSON-serialisable copy of ``obj`` (numpy scalars and arrays, paths, tuples, mappings)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _check_target(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DatasetExistsError(f"{out_dir}: exists and is not a directory; choose another output path.")
        if any(out_dir.iterdir()):
            raise DatasetExistsError(
                f"{out_dir}: directory exists and is not empty; remove it or choose another output path."
            )


def _instance_row(image_id: int, j: int, inst: Mapping[str, Any]) -> dict[str, Any]:
    """One instance: ``class``, ``bbox`` [x, y, w, h] (pixels), ``rle`` (COCO counts, see galframe.data.masks), extras."""
    row = {"image_id": image_id, "instance": j}
    for key, value in inst.items():
        if key == "bbox":
            row.update(bbox_x=float(value[0]), bbox_y=float(value[1]), bbox_w=float(value[2]), bbox_h=float(value[3]))
        elif key == "rle":
            row["rle"] = np.asarray(value, dtype=np.int32)
        else:
            row[key] = value
    return row


class DatasetWriter:
    """Write a galframe dataset directory, batch by batch.

    >>> with DatasetWriter(out, "mydata", ["g", "r", "z"], 64, 0.262, 22.5, ["a", "b"], cfg) as w:
    ...     w.add(images, clean, rows)     # any number of batches
    ...     path = w.close()               # catalog + manifest, then the atomic rename

    ``images`` (and ``clean``, or None) are arrays (batch, bands, H, W); ``rows`` one dict per
    object with its catalog columns (e.g. ``class``, ``class_name``, truth values).  The writer
    assigns ``id`` (0..N-1 in order of addition), ``shard`` and ``index`` (row within the shard).
    Leaving the ``with`` block by an exception (or calling ``abort()``) removes the temporary
    directory and leaves ``out_dir`` untouched.
    """

    def __init__(
        self,
        out_dir: "str | os.PathLike[str]",
        name: str,
        bands: Sequence[str],
        image_size: int,
        pixel_scale: float,
        zeropoint: float,
        classes: Optional[Sequence[str]],
        config: Optional[Mapping[str, Any]],
        shard_size: int = 2048,
        units: str = "nanomaggies",
        votes: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.name = str(name)
        self.bands = [str(b) for b in bands]
        self.image_size = int(image_size)
        self.pixel_scale = float(pixel_scale)
        self.zeropoint = float(zeropoint)
        self.classes = [str(c) for c in classes] if classes else []
        self.config = _jsonable(dict(config)) if config is not None else {}
        self.units = str(units)
        #: Galaxy Zoo style vote schema (see vote_columns); counts go in the catalog
        self.votes = _jsonable(dict(votes)) if votes else None
        self.shard_size = int(shard_size)
        if self.shard_size < 1:
            raise DataError(f"shard_size must be at least 1 (got {shard_size}).")
        if not self.bands:
            raise DataError("a dataset needs at least one band.")
        if self.image_size < 1:
            raise DataError(f"image_size must be positive (got {image_size}).")
        _check_target(self.out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = _temp_name(self.out_dir)
        self.tmp_dir.mkdir()
        self.has_clean: Optional[bool] = None
        self.n = 0
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._instances: list[dict[str, Any]] = []
        self._h5: Any = None
        self._shard_n = 0
        self._done = False

    # -- writing -----------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int, int]:
        return (len(self.bands), self.image_size, self.image_size)

    def _check_array(self, what: str, arr: Any, count: int) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1:] != self._shape() or arr.shape[0] != count:
            raise DataError(
                f"{what} has shape {tuple(arr.shape)}; expected ({count}, {', '.join(map(str, self._shape()))}) "
                f"for {count} object(s), bands {self.bands}, {self.image_size}x{self.image_size} px."
            )
        return arr

    def _open_shard(self) -> None:
        import h5py

        number = len(self.shards)
        file = SHARD_PATTERN.format(number)
        h5 = h5py.File(self.tmp_dir / file, "w")
        shape = self._shape()
        kw = dict(dtype="float32", shape=(0, *shape), maxshape=(self.shard_size, *shape), chunks=(1, *shape))
        h5.create_dataset("images", **kw)
        if self.has_clean:
            h5.create_dataset("clean", **kw)
        h5.create_dataset("ids", dtype="int64", shape=(0,), maxshape=(self.shard_size,))
        h5.attrs["bands"] = self.bands
        h5.attrs["image_size"] = self.image_size
        h5.attrs["pixel_scale"] = self.pixel_scale
        h5.attrs["zeropoint"] = self.zeropoint
        h5.attrs["units"] = self.units
        self._h5 = h5
        self._shard_n = 0
        self.shards.append({"file": file, "n": 0})

    def _close_shard(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
            self.shards[-1]["n"] = self._shard_n

    def add(self, images: Any, clean: Any = None, rows: Optional[Iterable[Mapping[str, Any]]] = None) -> None:
        """Append a batch of objects (images and clean: (batch, bands, H, W); one row dict each)."""
        if self._done:
            raise DataError("DatasetWriter.add() after close() or abort().")
        rows = [dict(r) for r in rows] if rows is not None else None
        count = len(rows) if rows is not None else int(np.shape(images)[0])
        if rows is None:
            rows = [{} for _ in range(count)]
        images = self._check_array("images", images, count)
        if clean is not None:
            clean = self._check_array("clean", clean, count)
        if self.has_clean is None:
            self.has_clean = clean is not None
        elif self.has_clean != (clean is not None):
            raise DataError("either every batch passed to DatasetWriter.add() has clean images or none does.")
        for row in rows:
            bad = [k for k in RESERVED_COLUMNS if k in row]
            if bad:
                raise DataError(f"catalog rows must not set {bad}: the writer assigns id, shard and index.")
        start = 0
        while start < count:
            if self._h5 is None or self._shard_n >= self.shard_size:
                self._close_shard()
                self._open_shard()
            take = min(count - start, self.shard_size - self._shard_n)
            lo, hi = self._shard_n, self._shard_n + take
            h5 = self._h5
            for key in ("images", "clean", "ids"):
                if key in h5:
                    h5[key].resize(hi, axis=0)
            h5["images"][lo:hi] = images[start : start + take]
            if clean is not None:
                h5["clean"][lo:hi] = clean[start : start + take]
            ids = np.arange(self.n, self.n + take, dtype=np.int64)
            h5["ids"][lo:hi] = ids
            shard = len(self.shards) - 1
            for k in range(take):
                row = {"id": int(ids[k]), "shard": shard, "index": lo + k}
                row.update(rows[start + k])
                for j, inst in enumerate(row.pop("instances", None) or []):
                    self._instances.append(_instance_row(int(ids[k]), j, inst))
                self._rows.append(row)
            self._shard_n = hi
            self.n += take
            start += take

    # -- finishing ---------------------------------------------------------------------------
    def _catalog(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame(self._rows)
        for col, dtype in COLUMN_DTYPES.items():
            if col in frame:
                frame[col] = frame[col].astype(dtype)
        if "class_name" in frame:
            frame["class_name"] = frame["class_name"].astype(str)
        return frame

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "bands": list(self.bands),
            "image_size": self.image_size,
            "pixel_scale": self.pixel_scale,
            "zeropoint": self.zeropoint,
            "units": self.units,
            "classes": list(self.classes),
            "n": self.n,
            "shards": [dict(s) for s in self.shards],
            "has_clean": bool(self.has_clean),
            "has_instances": bool(self._instances),
            **({"votes": self.votes} if self.votes else {}),
            "config": self.config,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def close(self) -> Path:
        """Write the catalog and the manifest, then move the dataset into place; returns its path.

        Raises ``DatasetExistsError`` (and removes the temporary directory) if ``out_dir`` was
        filled meanwhile, e.g. by a concurrent writer that finished first.
        """
        if self._done:
            raise DataError("DatasetWriter.close() called twice (or after abort()).")
        try:
            self._close_shard()
            if self.n == 0:
                raise DataError(f"{self.out_dir}: no objects were written; refusing to create an empty dataset.")
            self._catalog().to_parquet(self.tmp_dir / CATALOG, index=False)
            if self._instances:
                import pandas as pd

                pd.DataFrame(self._instances).to_parquet(self.tmp_dir / INSTANCES, index=False)
            text = json.dumps(self.manifest(), indent=2, allow_nan=False)
            with open(self.tmp_dir / MANIFEST, "w") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.rename(self.tmp_dir, self.out_dir)  # atomic; replaces an empty directory
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise DatasetExistsError(
                        f"{self.out_dir}: was created by someone else while this dataset was being written."
                    ) from None
                raise
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.out_dir

    def abort(self) -> None:
        """Drop everything written so far (the target directory is left untouched)."""
        try:
            if self._h5 is not None:
                self._h5.close()
        except Exception:
            pass
        self._h5 = None
        self._done = True
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._done:
            return
        if exc_type is not None:
            self.abort()
        else:
            self.close()
