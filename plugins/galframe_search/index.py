"""The embedding index: a faiss index over a catalog's embedding columns, and searches of it.

An index directory (written by ``galframe embed``) holds

- ``catalog.parquet``: one row per object, as ``galframe predict`` writes it (id, ra, dec, the reader's
  metadata) with the embedding in columns ``embedding_000 ...``;
- ``index.faiss``: the faiss index of those vectors, row i of the index being row i of the catalog;
- ``index.json``: how it was made (model, reader config, metric, index kind, size, dimension).

The kind follows the size (``index=auto``): an exact ``IndexFlatIP`` (cosine: vectors L2-normalised) or
``IndexFlatL2`` up to ``exact_max`` objects, an inverted file (``IVF``) above that and IVF with product
quantisation (``IVFPQ``) above ``pq_min``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError, closest, did_you_mean

INDEX_FILE, META_FILE, CATALOG_FILE = "index.faiss", "index.json", "catalog.parquet"
METRICS = ("cosine", "l2")
KINDS = ("auto", "flat", "ivf", "ivfpq")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError("the embedding index needs faiss: pip install 'galframe[search]' (faiss-cpu).") from None
    return faiss


def embedding_columns(names: Iterable[str]) -> list[str]:
    return sorted(c for c in names if c.startswith("embedding_"))


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32, C-contiguous, L2-normalised for the cosine metric (what the index holds and is queried with)."""
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def choose_kind(n: int, kind: str = "auto", exact_max: int = 50_000, pq_min: int = 1_000_000) -> str:
    if kind not in KINDS:
        raise ConfigError(f"index={kind}: one of {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n <= int(exact_max) else ("ivf" if n < int(pq_min) else "ivfpq")


def build_index(vectors: np.ndarray, metric: str = "cosine", kind: str = "auto", exact_max: int = 50_000,
                pq_min: int = 1_000_000, seed: int = 0) -> tuple[Any, dict]:
    """A faiss index of ``vectors`` (N, D) and what it is (``kind``, ``nlist``, ``m``)."""
    faiss = _faiss()
    if metric not in METRICS:
        raise ConfigError(f"metric={metric}: one of {', '.join(METRICS)}.{did_you_mean(metric, METRICS)}")
    x = prepare(vectors, metric)
    n, dim = x.shape
    kind = choose_kind(n, kind, exact_max, pq_min)
    inner = metric == "cosine"
    flat = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    info: dict = {"kind": kind}
    if kind == "flat":
        index = flat
    else:
        nlist = int(max(1, min(n // 39, round(4 * np.sqrt(n)))))  # faiss wants ~39 training points per list
        measure = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
        if kind == "ivf":
            index = faiss.IndexIVFFlat(flat, dim, nlist, measure)
        else:
            m = next(d for d in (64, 48, 32, 16, 8, 4, 2, 1) if dim % d == 0 and d <= dim)
            index = faiss.IndexIVFPQ(flat, dim, nlist, m, 8, measure)
            info["m"] = m
        sample = x if n <= 256 * nlist else x[np.random.default_rng(seed).choice(n, 256 * nlist, replace=False)]
        index.train(sample)
        index.nprobe = min(nlist, 16)
        info.update(nlist=nlist, nprobe=int(index.nprobe))
    index.add(x)
    return index, info


def dihedral_views(images: Any) -> list:
    """The 8 rotations and flips of images (..., H, W): numpy arrays or torch tensors."""
    if isinstance(images, np.ndarray):
        rot, flip = (lambda a, k: np.rot90(a, k, axes=(-2, -1))), (lambda a: a[..., ::-1])
    else:
        import torch

        rot, flip = (lambda a, k: torch.rot90(a, k, dims=(-2, -1))), (lambda a: torch.flip(a, dims=(-1,)))
    views = []
    for k in range(4):
        r = rot(images, k)
        views += [r, flip(r)]
    return views


class Index:
    """An index directory opened for search (:meth:`open`)."""

    def __init__(self, root: Path, meta: dict, catalog: Any, vectors: np.ndarray, index: Any) -> None:
        self.root, self.meta, self.catalog, self.vectors, self.index = root, meta, catalog, vectors, index
        self.metric = str(meta.get("metric", "cosine"))
        self.ids = [str(i) for i in catalog["id"]]
        self._row = {oid: r for r, oid in enumerate(self.ids)}
        self._model = None

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Union[str, Path]) -> "Index":
        import pandas as pd

        root = Path(str(root)).expanduser()
        if not root.is_dir():
            raise DataError(f"index={root}: no such index directory (make one with galframe embed ... out={root}).")
        missing = [f for f in (META_FILE, INDEX_FILE, CATALOG_FILE) if not (root / f).is_file()]
        if missing:
            raise DataError(f"index={root}: not a finished embedding index (no {', '.join(missing)}); "
                            "galframe embed with the same out= finishes it.")
        meta = json.loads((root / META_FILE).read_text())
        catalog = pd.read_parquet(root / CATALOG_FILE)
        cols = embedding_columns(catalog.columns)
        vectors = np.ascontiguousarray(catalog[cols].to_numpy(dtype=np.float32))
        index = _faiss().read_index(str(root / INDEX_FILE))
        if index.ntotal != len(catalog):
            raise DataError(f"index={root}: {INDEX_FILE} holds {index.ntotal} vectors, {CATALOG_FILE} {len(catalog)} rows.")
        return cls(root, meta, catalog.drop(columns=cols), vectors, index)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, catalog: Any, metric: str = "cosine", root: Union[str, Path] = "memory",
                     **options: Any) -> "Index":
        """An index held in memory over ``vectors`` (N, D), row i being row i of ``catalog`` (a DataFrame with
        an ``id`` column); ``options``: :func:`build_index`'s ``kind``, ``exact_max``, ``pq_min``, ``seed``."""
        if "id" not in catalog.columns or len(catalog) != len(vectors):
            raise DataError(f"index {root}: the catalog needs an 'id' column and one row per vector "
                            f"({len(catalog)} rows, {len(vectors)} vectors).")
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        index, info = build_index(vectors, metric, **options)
        meta = {"metric": metric, "n": int(len(vectors)), "dim": int(vectors.shape[1]), **info}
        return cls(Path(str(root)), meta, catalog.reset_index(drop=True), vectors, index)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"galframe_search.Index({self.root}: {len(self)} objects, {self.vectors.shape[1]}-d, " \
               f"{self.meta.get('kind')}, {self.metric})"

    # -- rows and vectors --------------------------------------------------------------------------------------
    def rows(self, ids: Sequence[Any]) -> list[int]:
        """Catalog rows of ``ids`` (an unknown id: a one-line error naming the closest)."""
        out = []
        for oid in ids:
            row = self._row.get(str(oid))
            if row is None:
                best = closest(str(oid), self.ids) if len(self) <= 100_000 else None
                raise DataError(f"like={oid}: no object with that id in index {self.root} ({len(self)} objects)."
                                + (f" Did you mean '{best}'?" if best else ""))
            out.append(row)
        return out

    @property
    def model(self) -> Any:
        """The model the index was embedded with (galframe.load_model of index.json's ``model``)."""
        if self._model is None:
            import galframe

            self._model = galframe.load_model(self.meta["model"])
        return self._model

    def embed(self, images: np.ndarray, invariant: bool = True) -> np.ndarray:
        """Embeddings of images (N, bands, H, W) in nanomaggies, as the index's were made; ``invariant``: the
        mean over the 8 rotation/flip views (a rotated or mirrored image gives the same vector)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        views = dihedral_views(images) if invariant or self.meta.get("dihedral") else [images]
        return np.mean([self.model.embed(np.ascontiguousarray(v)) for v in views], axis=0).astype(np.float32)

    # -- search ----------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 50, exclude: Sequence[int] = ()) -> Any:
        """The ``k`` nearest objects to each query vector (one query: its table; rows in order of nearness),
        leaving out the catalog rows ``exclude``.  Columns: the catalog's, ``rank``, ``distance`` (L2; for the
        cosine metric 1 - cosine similarity) and ``similarity`` (cosine metric)."""
        if int(k) < 1:
            raise ConfigError(f"k={k}: at least 1.")
        q = prepare(queries, self.metric)
        if q.shape[1] != self.vectors.shape[1]:
            raise DataError(f"query vectors are {q.shape[1]}-d; index {self.root} holds {self.vectors.shape[1]}-d ones.")
        skip = set(int(r) for r in exclude)
        want = min(len(self), int(k) + len(skip))
        scores, rows = self.index.search(q, want)
        tables = []
        for s, r in zip(scores, rows):
            keep = [(a, b) for a, b in zip(s, r) if b >= 0 and b not in skip][: int(k)]
            tables.append(self._table([b for _, b in keep], np.asarray([a for a, _ in keep], dtype=np.float64)))
        return tables[0] if len(tables) == 1 else tables

    def _table(self, rows: list[int], scores: np.ndarray) -> Any:
        table = self.catalog.iloc[rows].reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(rows) + 1))
        if self.metric == "cosine":
            table.insert(2, "similarity", scores)
            table.insert(3, "distance", 1.0 - scores)
        else:
            table.insert(2, "distance", np.sqrt(np.maximum(scores, 0.0)))
        return table

    def query_vector(self, like: Any, invariant: bool = True) -> tuple[np.ndarray, list[int], Optional[np.ndarray]]:
        """(the query vector, the rows it came from, the query image or None) of ``like``: an id, several ids
        (their prototype: the mean of their normalised vectors), a FITS file, or images (bands, H, W) /
        (N, bands, H, W) (their mean embedding)."""
        if isinstance(like, np.ndarray):
            images = like[None] if like.ndim == 3 else like
            return self.embed(images, invariant).mean(axis=0), [], images[0]
        if isinstance(like, (str, Path)) and str(like).lower().endswith((".fits", ".fit", ".fits.gz", ".fz")):
            images = self.read_file(Path(str(like)))
            return self.embed(images, invariant).mean(axis=0), [], images[0]
        ids = [like] if isinstance(like, (str, int, np.integer)) else list(like)
        if not ids:
            raise ConfigError("like: give an id, several ids or a FITS file.")
        rows = self.rows(ids)
        return prepare(self.vectors[rows], self.metric).mean(axis=0), rows, None

    def similar(self, like: Any, k: int = 50, invariant: bool = True, include_query: bool = False) -> Any:
        """The ``k`` objects most like ``like`` (see :meth:`query_vector`), nearest first, as a DataFrame;
        the query objects themselves are left out unless ``include_query``."""
        vector, rows, _ = self.query_vector(like, invariant)
        return self.search(vector, k, exclude=() if include_query else rows)

    # -- images --------------------------------------------------------------------------------------------
    def read_file(self, path: Path) -> np.ndarray:
        """The cutouts of one FITS file, conformed to the model's bands and size: (N, bands, H, W)."""
        if not path.is_file():
            raise DataError(f"like={path}: no such file.")
        from galframe.readers import build_reader

        reader, core = build_reader({"plugin": "fits", "path": str(path)})
        images = [flux for _, flux in self._stamps(reader, core, None)]
        if not images:
            raise DataError(f"like={path}: no usable cutout in the file.")
        return np.stack(images)

    def images(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The conformed images of ``ids``, read again with the reader the index was made from ({} when
        that reader's files are no longer there)."""
        from galframe.readers import build_reader

        try:
            reader, core = build_reader(dict(self.meta["data"]))
            return {oid: flux for oid, flux in self._stamps(reader, core, set(map(str, ids)))}
        except (DataError, ConfigError, OSError, KeyError):
            return {}

    def _stamps(self, reader: Any, core: Mapping[str, Any], wanted: Optional[set]) -> Iterable[tuple[str, np.ndarray]]:
        """(id, conformed flux) of a reader's objects (those in ``wanted``), through predict's shard source."""
        from galframe.stream import ShardSource

        bands, size = list(self.meta["bands"]), int(self.meta["image_size"])
        reader.bind(bands, size)
        source = ShardSource(reader, bands, size, core, 64, False, "rejects")
        left = None if wanted is None else set(wanted)
        for shard in reader.shards():
            for kind, _, payload in source.events(shard):
                if kind != "batch":
                    continue
                for stamp, conformed in payload:
                    if left is None or str(stamp.id) in left:
                        yield str(stamp.id), conformed.flux
                        if left is not None:
                            left.discard(str(stamp.id))
            if left is not None and not left:
                return

