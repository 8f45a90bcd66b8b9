"""``galframe ingest``: survey files -> a galframe dataset directory, so real data trains like simulations.

    galframe ingest data=galaxy10 data.path=Galaxy10_DECals.h5 out=data/galaxy10
    galframe train data=dir data.path=data/galaxy10

Objects go through the same checks as in ``galframe predict`` (bands by name, bad pixels masked and
counted, cut to ``image_size``); they are written with :class:`galframe.data.format.DatasetWriter`.
Catalog columns: the reader's metadata (the source id as ``source_id``), ``n_bad_pixels`` and
``sky_sigma_<band>`` (from the inverse variance, else the stamp's border: the noise augmentation
uses it).  Sources with labels give ``class``/``class_name`` (Galaxy10) or vote counts with the
vote schema in the manifest (Galaxy Zoo DECaLS).  Rejected inputs are listed in ``<out>/rejects.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from galframe.catalog import write_rejects
from galframe.errors import ConfigError, DataError
from galframe.stream import ShardSource, progress_bar

RESERVED = ("id", "shard", "index")


def ingest(
    reader: Any,
    core: dict,
    out: Any,
    bands: Optional[Sequence[str]] = None,
    image_size: int = 64,
    name: Optional[str] = None,
    strict: bool = False,
    shard_size: int = 2048,
    progress: bool = True,
    config: Optional[dict] = None,
    batch: int = 256,
    log: Callable[[str], None] = print,
) -> dict:
    from galframe.data.format import DatasetWriter
    from galframe.readers.base import scalar_meta

    bands = [str(b) for b in (bands or reader.bands or [])]
    if not bands:
        raise ConfigError(f"{reader.describe()}: its bands vary per file; set bands=[g,r,z] (the bands to keep).")
    size = int(image_size)
    reader.bind(bands, size)
    rebin = int(core.get("rebin", 1) or 1)
    classes = list(reader.classes or [])
    writer = DatasetWriter(
        Path(str(out)).expanduser().absolute(), name or type(reader).__name__, bands, size,
        (reader.pixel_scale or 0.262) * rebin, 22.5, classes, config or {}, shard_size=shard_size, votes=reader.votes,
    )
    def unlabelled(item: Any) -> Optional[str]:
        return "no class label" if classes and "class" not in scalar_meta(item.meta) else None

    source = ShardSource(reader, bands, size, core, batch, strict, "rejects.csv", check=unlabelled)
    rejects: list[dict] = []
    shards = reader.shards()
    try:
        with progress_bar(progress, sum(s.n for s in shards), 0, "ingest") as advance:
            for shard in shards:
                for kind, _, payload in source.events(shard):
                    if kind == "reject":
                        rejects.append(payload)
                        advance(1, 1)
                    elif kind == "batch":
                        writer.add(payload.flux, None, [_row(i, c, bands) for i, c in payload])
                        advance(len(payload), 0)
            if writer.n == 0:
                raise DataError(f"{reader.describe()}: no object could be ingested ({len(rejects)} rejected).")
            path = writer.close()
    except BaseException:
        writer.abort()
        raise
    write_rejects(rejects, path / "rejects.csv", ["source", "id", "reason"])
    log(f"Wrote {writer.n} objects to {path}; {len(rejects)} rejected, listed in {path / 'rejects.csv'}.")
    return {"out": str(path), "n": writer.n, "rejects": len(rejects)}


def _row(item: Any, conformed: Any, bands: Sequence[str]) -> dict:
    """The catalog row of an ingested object: its metadata (the source id as ``source_id``), ``n_bad_pixels``
    and ``sky_sigma_<band>``."""
    from galframe.readers.base import scalar_meta

    row = {("source_" + k if k in RESERVED else k): v for k, v in scalar_meta(item.meta).items()}
    row["source_id"] = str(item.id)
    row["n_bad_pixels"] = conformed.n_bad
    for k, b in enumerate(bands):
        row[f"sky_sigma_{b}"] = float(conformed.sky_sigma[k])
    return row


def run(cfg: Any, run_dir: Any = None) -> dict:
    from galframe.readers import build_reader
    from galframe.train import to_dict

    cfg = to_dict(cfg)
    if cfg.get("out") in (None, "", "???"):
        raise ConfigError("out is not set: give the dataset directory to write.")
    reader, core = build_reader(cfg["data"])
    return ingest(
        reader, core, cfg["out"],
        bands=cfg.get("bands"), image_size=int(cfg.get("image_size", 64)), name=cfg.get("name") or cfg["data"]["plugin"],
        strict=bool(cfg.get("strict", False)), shard_size=int(cfg.get("shard_size", 2048)),
        progress=bool(cfg.get("progress", True)), config={"data": cfg["data"], "image_size": cfg.get("image_size")},
    )
