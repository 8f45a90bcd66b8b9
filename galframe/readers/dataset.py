"""A galframe dataset directory (``reader.dataset``): simulated or ingested data through the same
predict path as survey files (NaN pixels are masked and counted here, not an error as in training)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

from galframe.errors import DataError
from galframe.readers.base import Reader, Reject, Shard, Stamp, fingerprint, file_stat


class DatasetReader(Reader):
    def __init__(self, path: Any = None, columns: Any = "all", shard_size: int = 1024) -> None:
        super().__init__(shard_size)
        from galframe.data.datamodule import CATALOG, read_manifest

        if path in (None, "", "???"):
            raise DataError("data.path is not set: give a galframe dataset directory.")
        self.root = Path(str(path)).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset directory not found (data.path).")
        self.manifest = read_manifest(self.root)
        self.bands = tuple(str(b) for b in self.manifest["bands"])
        self.classes = tuple(self.manifest.get("classes") or ())
        self.votes = self.manifest.get("votes")
        self.pixel_scale = self.manifest.get("pixel_scale")
        self.catalog_file = self.root / CATALOG
        self.columns = columns

    def describe(self) -> str:
        return f"galframe dataset {self.root}"

    def shards(self) -> list[Shard]:
        out = []
        for s, shard in enumerate(self.manifest["shards"]):
            file = self.root / shard["file"]
            stat = file_stat(str(file))
            for k, start in enumerate(range(0, int(shard["n"]), self.shard_size)):
                stop = min(start + self.shard_size, int(shard["n"]))
                out.append(Shard(key=f"{s:05d}-{k:05d}", items=(s, str(file), start, stop), n=stop - start,
                                 fingerprint=fingerprint([stat, start, stop])))
        return out

    def _catalog(self, shard_index: int, start: int, stop: int) -> Any:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        cols = None if self.columns == "all" else ["id", "shard", "index", *[c for c in (self.columns or [])]]
        table = pq.read_table(self.catalog_file, columns=cols, filters=[("shard", "=", shard_index)])
        table = table.filter(pc.and_(pc.greater_equal(table["index"], start), pc.less(table["index"], stop)))
        return table.to_pandas().set_index("index")

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        import h5py

        s, file, start, stop = shard.items
        try:
            with h5py.File(file, "r") as h5:
                images = np.asarray(h5["images"][start:stop], dtype=np.float32)
                ids = np.asarray(h5["ids"][start:stop])
        except (OSError, KeyError) as exc:
            yield Reject(source=file, reason=f"cannot read rows {start}..{stop} ({exc})")
            return
        catalog = self._catalog(s, start, stop).drop(columns=["shard", "id"], errors="ignore")
        rows = dict(zip(catalog.index.tolist(), catalog.to_dict("records")))  # one conversion per shard
        for k in range(stop - start):
            row = rows.get(start + k, {})
            meta = {"ra": float("nan"), "dec": float("nan"), **row, "source": file, "row": start + k}
            yield Stamp(id=str(int(ids[k])), flux=images[k], bands=self.bands, meta=meta)
