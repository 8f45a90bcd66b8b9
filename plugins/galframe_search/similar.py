"""``galframe similar``: the objects of an index most like one, several, or a FITS cutout.

    galframe similar index=runs/embed/south like=obj00042 k=50
    galframe similar index=runs/embed/south like=[obj00042,obj00117]      # more like these: their prototype
    galframe similar index=runs/embed/south like=cutout.fits               # the 8 rotation/flip views' mean

Writes the table of neighbours (``out``, default ``<index>/similar/<query>.parquet``) and, where the index's
images can still be read, a PNG grid of them (the query first) beside it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError


def image_grid(images: Sequence[tuple[str, np.ndarray]], bands: list[str], path: Path, columns: int = 8) -> Path:
    """A PNG of labelled colour pictures (galframe.report.rgb of the ``bands``), ``columns`` a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galframe.report import rgb

    n = len(images)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, flux) in zip(axes.flat, images):
        ax.imshow(rgb(flux, bands), origin="lower")
        ax.set_title(label, fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _likes(like: Any) -> Any:
    if isinstance(like, (list, tuple)):
        return [str(v) for v in like]
    return str(like)


def run(cfg: Any, run_dir: Any = None) -> Any:
    from galframe.train import to_dict
    from galframe_search.index import Index

    cfg = to_dict(cfg)
    for key in ("index", "like"):
        if cfg.get(key) in (None, "", "???", []):
            raise ConfigError(f"{key} is not set: galframe similar index=<dir> like=<id, [ids] or a FITS file> k=50.")
    index = Index.open(cfg["index"])
    like = _likes(cfg["like"])
    vector, rows, query_image = index.query_vector(like, bool(cfg.get("invariant", True)))
    table = index.search(vector, int(cfg.get("k", 50)), exclude=rows)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(like).stem if isinstance(like, str) else "+".join(like))[:80]
    out = Path(str(cfg.get("out") or index.root / "similar" / f"{name}.parquet"))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False) if out.suffix.lower() == ".csv" else table.to_parquet(out, index=False)
    grid = write_grid(index, table, out.with_suffix(".png"), like, rows, query_image) if cfg.get("grid", True) else None
    shown = [c for c in ("rank", "id", "similarity", "distance", "ra", "dec") if c in table.columns]
    print(table[shown].head(int(cfg.get("show", 10))).to_string(index=False))
    print(f"Wrote the {len(table)} nearest objects to {out}" + (f" and their images to {grid}" if grid else
          " (no images: the index's files cannot be read)") + ".")
    return table


def write_grid(index: Any, table: Any, path: Path, like: Any, rows: Sequence[int],
               query_image: Optional[np.ndarray]) -> Optional[Path]:
    """The query and its neighbours as a PNG grid (None when their images cannot be read)."""
    queries = [index.ids[r] for r in rows]
    found: Mapping[str, np.ndarray] = index.images([*queries, *map(str, table["id"])])
    if not found:
        return None
    tiles = [("query", query_image)] if query_image is not None else [(f"query {q}", found[q]) for q in queries if q in found]
    tiles += [(f"{r}: {i}", found[str(i)]) for r, i in zip(table["rank"], table["id"]) if str(i) in found]
    return image_grid(tiles, list(index.meta["bands"]), path)
