"""The catalog of ``galframe predict``: its rows, the resumable per-shard parts and the merged file.

:func:`catalog_rows` makes one row per object (``id, ra, dec``, every task's columns, ``n_bad_pixels``,
``source`` and the catalog metadata ``columns`` asks for); :class:`PartsDir` keeps each finished shard's
Parquet part and its log line, so a restart skips them; :func:`write_catalog` merges the parts, streaming,
into one Parquet file or FITS binary table, and :func:`write_rejects` lists the rejected inputs.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError

PARTS_VERSION = 1
REJECT_COLUMNS = ["shard", "source", "id", "reason"]


# -- bookkeeping of a (resumable) run -----------------------------------------------------------------------
class PartsDir:
    """``.<out name>.parts/``: ``run.json`` (what the run is), ``done.jsonl`` (one line per finished
    shard: key, fingerprint, rows, rejects, detections, rank, worker; ``done.rank<r>.jsonl`` for rank r of
    several processes, so no two processes append to one file) and the per-shard Parquet parts."""

    def __init__(self, out: Path, rank: Optional[int] = None) -> None:
        self.out = out
        self.root = out.parent / f".{out.name}.parts"
        self.done_file = self.root / ("done.jsonl" if rank is None else f"done.rank{int(rank):05d}.jsonl")

    def start(self, identity: Mapping[str, Any], overwrite: bool) -> dict[str, dict]:
        """Create or reopen the parts directory; returns the finished shards by key."""
        run_file = self.root / "run.json"
        identity = json.loads(json.dumps(identity, default=str))
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        if self.root.exists() and run_file.is_file():
            old = json.loads(run_file.read_text())
            if old.get("identity") != identity:
                differ = sorted(k for k in set(old.get("identity", {})) | set(identity)
                                if old.get("identity", {}).get(k) != identity.get(k))
                raise ConfigError(
                    f"{self.root}: an unfinished run with other settings ({', '.join(differ)}) writes to {self.out}; "
                    "pass overwrite=true to start again, or choose another out."
                )
            return self.finished()
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*"):
            stale.unlink() if stale.is_file() else shutil.rmtree(stale)
        _atomic_write(run_file, json.dumps({"version": PARTS_VERSION, "identity": identity}, indent=2))
        return {}

    def finished(self) -> dict[str, dict]:
        """The finished shards by key, from every process's log (one process or several, this run or an
        earlier one of the same identity)."""
        done: dict[str, dict] = {}
        for file in sorted(self.root.glob("done*.jsonl")):
            with open(file) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill
                    if isinstance(entry, dict) and "key" in entry:
                        done[entry["key"]] = entry
        return done

    def part(self, key: str, kind: str = "part") -> Path:
        return self.root / f"{kind}-{key}.parquet"

    def mark_done(self, entry: Mapping[str, Any]) -> None:
        with open(self.done_file, "a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_table(frame: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)



# -- the rows ------------------------------------------------------------------------------------------
def _meta_columns(meta: Mapping[str, Any], columns: Any, taken: set) -> dict[str, Any]:
    from galframe.readers.base import scalar_meta

    if columns in (None, "none"):
        return {}
    values = scalar_meta(meta)
    for key in ("ra", "dec", "source"):
        values.pop(key, None)
    if columns != "all":
        wanted = set(columns)
        values = {k: v for k, v in values.items() if k in wanted}
    return {(f"cat_{k}" if k in taken else k): v for k, v in values.items()}


def catalog_rows(batch: list, cols: Mapping[str, Any], columns: Any = "all") -> Any:
    """The catalog rows of a predicted batch of ``(stamp, conformed)`` with the tasks' columns ``cols``."""
    import pandas as pd

    n = len(batch)
    frame = {
        "id": [str(s.id) for s, _ in batch],
        "ra": [float(s.meta.get("ra", np.nan)) if s.meta.get("ra") is not None else np.nan for s, _ in batch],
        "dec": [float(s.meta.get("dec", np.nan)) if s.meta.get("dec") is not None else np.nan for s, _ in batch],
    }
    for key, value in cols.items():
        if len(value) != n:
            raise DataError(f"task column '{key}' has {len(value)} values for a batch of {n} objects.")
        frame[key] = value
    frame["n_bad_pixels"] = np.asarray([c.n_bad for _, c in batch], dtype=np.int64)
    frame["source"] = [str(s.meta.get("source", "")) for s, _ in batch]
    taken = set(frame)
    metas = [_meta_columns(s.meta, columns, taken) for s, _ in batch]
    keys = list(dict.fromkeys(k for m in metas for k in m))
    for key in keys:
        frame[key] = [m.get(key) for m in metas]
    return pd.DataFrame(frame)


# -- writing the catalog, streaming ------------------------------------------------------------------------
def _unified_schema(files: Sequence[Path]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"catalog parts disagree on column types ({exc}).") from exc
    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields)


def _conform_table(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    arrays = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            arrays.append(col if col.type == field.type else col.cast(field.type))
        else:
            arrays.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def merge_parquet(files: Sequence[Path], out: Path) -> None:
    """Concatenate Parquet parts into one file, one part in memory at a time."""
    import pyarrow.parquet as pq

    schema = _unified_schema(files)
    with pq.ParquetWriter(out, schema) as writer:
        for f in files:
            writer.write_table(_conform_table(pq.read_table(f), schema))


def _fits_format(field: Any, width: int) -> str:
    import pyarrow as pa

    t = field.type
    if pa.types.is_boolean(t):
        return ">i2"
    if pa.types.is_integer(t):
        return ">i8"
    if pa.types.is_float32(t):
        return ">f4"
    if pa.types.is_floating(t):
        return ">f8"
    return f"S{max(width, 1)}"


def merge_fits(files: Sequence[Path], out: Path, n_rows: int) -> None:
    """Write Parquet parts as one FITS binary table, streaming: the header (with the total row count and
    the widest string of each text column) first, then the rows part by part."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from astropy.io import fits

    schema = _unified_schema(files)
    text = [f.name for f in schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))]
    widths = {c: 1 for c in text}
    if text:
        for f in files:
            table = _conform_table(pq.read_table(f, columns=[c for c in text if c in pq.read_schema(f).names]), pa.schema([schema.field(c) for c in text]))
            for c in text:
                lengths = pc.utf8_length(table.column(c).cast(pa.string()))
                top = pc.max(lengths).as_py()
                widths[c] = max(widths[c], int(top or 0))
    dtype = np.dtype([(f.name, _fits_format(f, widths.get(f.name, 1))) for f in schema])
    hdu = fits.BinTableHDU(data=np.zeros(1, dtype=dtype), name="CATALOG")
    header = hdu.header
    header["NAXIS2"] = n_rows
    header["ORIGIN"] = "galframe predict"
    written = 0
    with open(out, "wb") as fh:
        fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        fh.write(header.tostring().encode("ascii"))
        for f in files:
            table = _conform_table(pq.read_table(f), schema)
            rec = np.zeros(len(table), dtype=dtype)
            for field in schema:
                col = table.column(field.name)
                if field.name in widths:
                    values = col.cast(pa.string()).fill_null("").to_pylist()
                    rec[field.name] = [v.encode("ascii", "replace") for v in values]
                elif pa.types.is_floating(field.type):
                    rec[field.name] = col.to_numpy(zero_copy_only=False).astype(float)  # nulls -> NaN
                else:
                    arr = col.fill_null(0) if col.null_count else col
                    rec[field.name] = np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64)
            fh.write(rec.tobytes())
            written += len(table)
        pad = (-(written * dtype.itemsize)) % 2880
        fh.write(b"\0" * pad)
    if written != n_rows:
        raise DataError(f"{out}: wrote {written} rows, expected {n_rows}.")


def write_catalog(files: Sequence[Path], out: Path, n_rows: int) -> None:
    """The parts ``files`` as one catalog ``out`` (Parquet, or FITS for ``.fits``/``.fit``), replaced whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if out.suffix.lower() == ".parquet":
            merge_parquet(files, tmp)
        else:
            merge_fits(files, tmp, n_rows)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_rejects(rejects: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] = REJECT_COLUMNS) -> None:
    """The rejected inputs as a CSV file, one row each with its reason."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(rejects), columns=list(columns)).to_csv(path, index=False)
