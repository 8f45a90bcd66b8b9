"""``galframe embed``: a model's embeddings of every object a reader yields, as a searchable index.

    galframe embed ckpt=lvm_tiny-g10 data=fits data.path=cutouts/ out=runs/embed/south

The objects stream through ``galframe predict``'s Predictor (the same shards, rejects and resumable parts:
a killed run started again with the same command skips the shards it finished) with the model's pooled
embedding as the one "task"; its catalog, ``<out>/catalog.parquet``, holds the embedding columns beside
the reader's catalog columns.  Then the faiss index of those vectors is written (``index.faiss``, its kind
chosen by size, see :mod:`galframe_search.index`) with ``index.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from galframe.errors import ConfigError
from galframe_search.index import CATALOG_FILE, INDEX_FILE, META_FILE, build_index, dihedral_views, embedding_columns


def embedding_encoder(encoder: Any, dihedral: bool = False) -> Any:
    """The notebook model's ``encoder`` as the Predictor's model with one task, ``embedding`` (its columns
    ``embedding_000 ...``); ``dihedral``: the mean over the 8 rotation/flip views of each input."""
    from torch import nn

    from galframe.notebook import _Embedding

    class Embedder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = encoder
            self.bands, self.data_info, self.tasks = encoder.bands, encoder.data_info, {"embedding": _Embedding()}

        def forward(self, flux: Any) -> dict:
            views = dihedral_views(flux) if dihedral else [flux]
            vectors = [self.inner(v.contiguous())["embedding"] for v in views]
            return {"embedding": sum(vectors) / len(vectors)}

    return Embedder().eval()


def run(cfg: Any, run_dir: Any = None) -> dict:
    import galframe
    from galframe.predict import pick_device
    from galframe.readers import build_reader
    from galframe.train import quiet_known_warnings, to_dict

    quiet_known_warnings()
    cfg = to_dict(cfg)
    for key in ("ckpt", "out"):
        if cfg.get(key) in (None, "", "???"):
            raise ConfigError(f"{key} is not set: galframe embed ckpt=<model> data=<reader> data.path=<files> out=<index dir>.")
    out = Path(str(cfg["out"])).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out}: exists and is not a directory (the index is a directory).")
    if (out / META_FILE).is_file() and not cfg.get("overwrite"):
        raise ConfigError(f"out={out}: holds a finished index; pass overwrite=true to embed again.")
    out.mkdir(parents=True, exist_ok=True)
    metric, dihedral = str(cfg.get("metric", "cosine")), bool(cfg.get("dihedral", False))
    model = galframe.load_model(cfg["ckpt"], device=pick_device(cfg.get("device", "auto")))
    encoder = embedding_encoder(model.encoder, dihedral)
    path = cfg["data"].get("path")
    if isinstance(path, str) and Path(path).expanduser().exists():  # similar re-reads the images from anywhere
        cfg["data"]["path"] = str(Path(path).expanduser().absolute())
    reader, core = build_reader(cfg["data"])
    identity = {"model": str(cfg["ckpt"]), "data": cfg["data"], "dihedral": dihedral}
    if (out / CATALOG_FILE).is_file() and not cfg.get("overwrite"):  # killed after the catalog, before the index
        summary = {"rejects": _count_rows(out / "rejects.csv"), "rejects_file": str(out / "rejects.csv")}
    else:
        summary = _predictor(encoder, reader, core, out, identity, cfg).run()
    meta = write_index(out, {"model": str(cfg["ckpt"]), "data": cfg["data"], "bands": model.bands,
                             "image_size": model.image_size, "dihedral": dihedral}, metric, cfg)
    line = f"Indexed {meta['n']} objects ({meta['dim']}-d, {meta['kind']}, {metric}) in {out}; " \
           f"{summary['rejects']} rejected, listed in {summary['rejects_file']}"
    if summary.get("skipped_shards"):
        line += f"; {summary['skipped_shards']} shard(s) were already done"
    print(line + ".")
    return {**summary, **meta}


def _predictor(encoder: Any, reader: Any, core: Mapping[str, Any], out: Path, identity: dict, cfg: Mapping[str, Any]) -> Any:
    from galframe.predict import Predictor

    return Predictor(
        encoder, reader, core, out / CATALOG_FILE, batch_size=int(cfg.get("batch_size", 64)),
        strict=bool(cfg.get("strict", False)), overwrite=bool(cfg.get("overwrite", False)),
        progress=bool(cfg.get("progress", True)), columns=cfg.get("columns", "all"),
        rejects=out / "rejects.csv", identity=identity, keep_parts=bool(cfg.get("keep_parts", False)),
        num_workers=int(cfg.get("num_workers", 0)), log=print,
    )


def _count_rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def write_index(out: Path, meta: Mapping[str, Any], metric: str, options: Mapping[str, Any]) -> dict:
    """``index.faiss`` and ``index.json`` of the embedding columns of ``out/catalog.parquet``."""
    import faiss
    import pyarrow.parquet as pq

    names = embedding_columns(pq.read_schema(out / CATALOG_FILE).names)
    table = pq.read_table(out / CATALOG_FILE, columns=names)
    vectors = np.stack([table.column(c).to_numpy().astype(np.float32) for c in names], axis=1)
    index, info = build_index(vectors, metric, str(options.get("index", "auto")), int(options.get("exact_max", 50_000)),
                              int(options.get("pq_min", 1_000_000)))
    faiss.write_index(index, str(out / INDEX_FILE))
    full = {**meta, "metric": metric, "n": int(len(vectors)), "dim": int(vectors.shape[1]), **info}
    (out / META_FILE).write_text(json.dumps(full, indent=2, default=str))
    return full
