"""Catalogs read row range by row range (CSV or Parquet), and the Galaxy Zoo DECaLS reader.

``reader.gz_decals``: a Galaxy Zoo DECaLS volunteer catalog (CSV or Parquet) with vote counts in
columns ``{question}_{answer}`` (e.g. ``smooth-or-featured_smooth``, ``bar_weak``) and a column of
image paths (FITS, PNG or JPEG; relative paths are relative to ``image_root`` or the catalog's
folder).  The decision tree is ``schema`` (conf/reader/gz_decals.yaml ships the DR5 one) or ``auto``
(inferred from the column names, without the ``asked_if`` dependencies).
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError
from galframe.data.format import vote_columns
from galframe.readers.base import Reject, Stamp, StampError, file_stat
from galframe.readers.contract import RowReader
from galframe.readers.fits import read_fits_stamp
from galframe.readers.image import RGBConversion, read_image_stamp

PATH_COLUMNS = ("file_loc", "local_png_loc", "png_loc", "jpeg_loc", "local_fits_loc", "fits_loc", "path", "file", "filename")
ID_COLUMNS = ("iauname", "id_str", "dr8_id", "objid", "id")
#: column suffixes of GZ catalogs that are not vote counts
NOT_ANSWERS = ("total-votes", "fraction", "debiased", "frac", "min", "max")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fits.fz", ".fts")


class CatalogTable:
    """A CSV or Parquet table read ``rows(start, stop)`` at a time (CSV: fields must not hold newlines)."""

    def __init__(self, path: Any, block: int) -> None:
        self.path = os.path.expanduser(str(path))
        self.block = int(block)
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: catalog not found (data.catalog).")
        self.parquet = self.path.endswith(".parquet")
        try:
            if self.parquet:
                import pyarrow.parquet as pq

                self._pf = pq.ParquetFile(self.path)
                self.columns = list(self._pf.schema_arrow.names)
                self.n = int(self._pf.metadata.num_rows)
                sizes = [self._pf.metadata.row_group(i).num_rows for i in range(self._pf.num_row_groups)]
                self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            else:
                import pandas as pd

                self.columns = list(pd.read_csv(self.path, nrows=0).columns)
                self._offsets = self._scan_csv()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.path}: cannot read the catalog ({type(exc).__name__}: {exc})") from exc

    def _scan_csv(self) -> list[int]:
        """Byte offsets of data rows 0, block, 2 block, ... (and the row count)."""
        offsets: list[int] = []
        n = 0
        with open(self.path, "rb") as fh:
            pos = len(fh.readline())  # header
            for line in fh:
                if not line.strip():
                    pos += len(line)
                    continue
                if n % self.block == 0:
                    offsets.append(pos)
                n += 1
                pos += len(line)
        self.n = n
        return offsets

    def rows(self, start: int, stop: int, columns: Sequence[str]) -> Any:
        import pandas as pd

        columns = [c for c in self.columns if c in set(columns)]
        if self.parquet:
            first = int(np.searchsorted(self._group_starts, start, side="right") - 1)
            last = int(np.searchsorted(self._group_starts, stop, side="left"))
            table = self._pf.read_row_groups(list(range(first, max(last, first + 1))), columns=columns)
            lo = start - int(self._group_starts[first])
            return table.slice(lo, stop - start).to_pandas()
        if start % self.block:
            raise DataError(f"{self.path}: internal error: CSV rows read from {start}, not a multiple of {self.block}.")
        with open(self.path, "rb") as fh:
            fh.seek(self._offsets[start // self.block])
            return pd.read_csv(fh, header=None, names=self.columns, usecols=columns, nrows=stop - start)


def infer_vote_schema(columns: Sequence[str]) -> dict:
    """``{questions: [{name, answers, asked_if: None}]}`` from ``{question}_{answer}`` column names."""
    pattern = re.compile(r"^([a-z0-9][a-z0-9-]*)_([a-z0-9][a-z0-9-]*)$")
    questions: dict[str, list[str]] = {}
    for col in columns:
        m = pattern.match(str(col))
        if not m or m.group(2) in NOT_ANSWERS:
            continue
        questions.setdefault(m.group(1), []).append(m.group(2))
    found = [{"name": q, "answers": a, "asked_if": None} for q, a in questions.items() if len(a) >= 2]
    return {"questions": found}


class GZDecalsReader(RowReader):
    def __init__(
        self,
        catalog: Any = None,
        path_column: Optional[str] = None,
        image_root: Optional[str] = None,
        id_column: Optional[str] = None,
        schema: Union[str, Mapping[str, Any], None] = "auto",
        columns: Union[str, Sequence[str], None] = "votes",
        bands: Optional[Sequence[str]] = None,
        units: Optional[str] = None,
        zeropoint: Optional[float] = None,
        rgb_bands: Sequence[str] = ("z", "r", "g"),
        stretch: str = "asinh",
        q: float = 10.0,
        white: Any = None,
        black: float = 0.0,
        pixel_scale: Optional[float] = 0.262,
        shard_size: int = 256,
    ) -> None:
        super().__init__(shard_size)
        if catalog in (None, "", "???"):
            raise ConfigError("data.catalog is not set: give the Galaxy Zoo DECaLS catalog (CSV or Parquet).")
        self.table = CatalogTable(catalog, self.shard_size)
        cols = self.table.columns
        self.path_column = path_column or next((c for c in PATH_COLUMNS if c in cols), None)
        if self.path_column is None or self.path_column not in cols:
            raise DataError(
                f"{self.table.path}: no image path column (looked for {path_column or ', '.join(PATH_COLUMNS)}); "
                "set data.path_column."
            )
        self.id_column = id_column or next((c for c in ID_COLUMNS if c in cols), None)
        if id_column and id_column not in cols:
            raise DataError(f"{self.table.path}: id column '{id_column}' not found (data.id_column).")
        if schema in (None, "auto"):
            schema = infer_vote_schema(cols)
        elif not isinstance(schema, Mapping) or "questions" not in schema:
            raise ConfigError("data.schema must be 'auto' or {questions: [{name, answers, asked_if}, ...]}.")
        self.votes = {"questions": [dict(q) for q in schema["questions"]]}
        self.vote_cols = vote_columns(self.votes)
        if not self.vote_cols:
            raise DataError(f"{self.table.path}: no vote-count columns ({{question}}_{{answer}}) found.")
        missing = [c for c in self.vote_cols if c not in cols]
        if missing:
            raise DataError(
                f"{self.table.path}: the catalog lacks {len(missing)} vote column(s) of the schema, e.g. {missing[:4]}; "
                "set data.schema=auto to infer the questions from the columns."
            )
        self.image_root = os.path.expanduser(str(image_root)) if image_root else os.path.dirname(os.path.abspath(self.table.path))
        self.columns = columns
        self.fits_options = {"bands": bands, "units": units, "zeropoint": zeropoint}
        self.conversion = RGBConversion(rgb_bands, stretch, q, white, black)
        self.pixel_scale = pixel_scale

    def describe(self) -> str:
        return f"Galaxy Zoo DECaLS catalog {self.table.path}"

    def _wanted(self) -> list[str]:
        base = [c for c in (self.id_column, self.path_column, "ra", "dec") if c]
        if self.columns == "all":
            return list(self.table.columns)
        if self.columns in (None, "none"):
            return base
        if self.columns == "votes":
            return base + self.vote_cols
        return base + self.vote_cols + [c for c in self.columns if c in self.table.columns]

    def n_rows(self) -> int:
        return self.table.n

    def fingerprint_parts(self) -> list:
        return [file_stat(self.table.path)]

    def _resolve(self, value: Any) -> Optional[str]:
        if value is None or (isinstance(value, float) and not np.isfinite(value)) or str(value).strip() == "":
            return None
        path = os.path.expanduser(str(value).strip())
        return path if os.path.isabs(path) else os.path.join(self.image_root, path)

    def read_rows(self, start: int, stop: int) -> Iterator[Union[Stamp, Reject]]:
        frame = self.table.rows(start, stop, self._wanted())
        for k, row in enumerate(frame.to_dict("records")):
            oid = str(row[self.id_column]) if self.id_column and row.get(self.id_column) is not None else str(start + k)
            path = self._resolve(row.get(self.path_column))
            if path is None:
                yield Reject(source=f"{self.table.path}[{start + k}]", reason=f"no image path ({self.path_column} is empty)", id=oid)
                continue
            try:
                if path.lower().endswith(FITS_SUFFIXES):
                    stamp = read_fits_stamp(path, object_id=oid, **self.fits_options)
                else:
                    stamp = read_image_stamp(path, self.conversion, object_id=oid)
            except StampError as exc:
                yield Reject(source=path, reason=str(exc), id=oid)
                continue
            meta = {c: v for c, v in row.items() if c not in (self.id_column, self.path_column)}
            for c in self.vote_cols:
                v = meta.get(c)
                meta[c] = int(v) if v is not None and np.isfinite(v) else 0  # not asked: no votes
            for c in ("ra", "dec"):
                if c in meta and meta[c] is not None and np.isfinite(meta[c]):
                    stamp.meta[c] = float(meta.pop(c))
                else:
                    meta.pop(c, None)
            stamp.meta.update(meta)
            yield stamp
