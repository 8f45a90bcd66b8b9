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

from galframe.errors import ConfigError, DataError

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
    import pandas as pd

    from galframe.data.format import DatasetWriter
    from galframe.readers.base import Reject, StampError, conform, scalar_meta
    from galframe.predict import _progress

    bands = [str(b) for b in (bands or reader.bands or [])]
    if not bands:
        raise ConfigError(f"{reader.describe()}: its bands vary per file; set bands=[g,r,z] (the bands to keep).")
    size = int(image_size)
    reader.bind(bands, size)
    rebin = int(core.get("rebin", 1) or 1)
    pixel_scale = (reader.pixel_scale or 0.262) * rebin
    out = Path(str(out)).expanduser().absolute()
    classes = list(reader.classes or [])
    writer = DatasetWriter(
        out, name or type(reader).__name__, bands, size, pixel_scale, 22.5, classes, config or {},
        shard_size=shard_size, votes=reader.votes,
    )
    rejects: list[dict] = []
    images: list[np.ndarray] = []
    rows: list[dict] = []

    def reject(source: str, reason: str, oid: Optional[str]) -> None:
        if strict:
            raise DataError(f"{source}: {reason}. (strict=true stops at the first bad input.)")
        rejects.append({"source": source, "id": oid, "reason": reason})

    def flush() -> None:
        if images:
            writer.add(np.stack(images), None, rows)
            images.clear()
            rows.clear()

    shards = reader.shards()
    try:
        with _progress(progress, sum(s.n for s in shards), 0) as advance:
            for shard in shards:
                for item in reader.read(shard):
                    if isinstance(item, Reject):
                        reject(item.source, item.reason, item.id)
                        advance(1, 1)
                        continue
                    try:
                        c = conform(item, bands, size, **core)
                    except StampError as exc:
                        reject(str(item.meta.get("source", "")), str(exc), str(item.id))
                        advance(1, 1)
                        continue
                    meta = scalar_meta(item.meta)
                    row = {("source_" + k if k in RESERVED else k): v for k, v in meta.items()}
                    row["source_id"] = str(item.id)
                    row["n_bad_pixels"] = c.n_bad
                    for k, b in enumerate(bands):
                        row[f"sky_sigma_{b}"] = float(c.sky_sigma[k])
                    if classes and "class" not in row:
                        reject(str(item.meta.get("source", "")), "no class label", str(item.id))
                        advance(1, 1)
                        continue
                    images.append(c.flux)
                    rows.append(row)
                    advance(1, 0)
                    if len(images) >= batch:
                        flush()
            flush()
            if writer.n == 0:
                raise DataError(f"{reader.describe()}: no object could be ingested ({len(rejects)} rejected).")
            path = writer.close()
    except BaseException:
        writer.abort()
        raise
    pd.DataFrame(rejects, columns=["source", "id", "reason"]).to_csv(path / "rejects.csv", index=False)
    log(f"Wrote {writer.n} objects to {path}; {len(rejects)} rejected, listed in {path / 'rejects.csv'}.")
    return {"out": str(path), "n": writer.n, "rejects": len(rejects)}


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
