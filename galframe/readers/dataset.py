"""A galframe dataset directory (``reader.dataset``): simulated or ingested data through the same
predict path as survey files (NaN pixels are masked and counted here, not an error as in training)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

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
        """The catalog rows of one shard's range, indexed by ``index``: the catalog is read once per process
        (columns only, sorted by shard and index) and each shard takes its slice by binary search, instead
        of reading the whole file again for every shard."""
        table, keys = self._sorted_catalog()
        lo, hi = np.searchsorted(keys, [_key(shard_index, start), _key(shard_index, stop)])
        return table.slice(int(lo), int(hi - lo)).to_pandas().set_index("index")

    def _sorted_catalog(self) -> tuple[Any, Any]:
        if getattr(self, "_table", None) is None:
            import pyarrow.parquet as pq

            cols = None if self.columns == "all" else ["id", "shard", "index", *[c for c in (self.columns or [])]]
            table = pq.read_table(self.catalog_file, columns=cols)
            keys = _key(table["shard"].to_numpy(), table["index"].to_numpy())
            order = np.argsort(keys, kind="stable")
            self._table, self._keys = table.take(order), keys[order]
        return self._table, self._keys

    def _offsets(self, images: Any, file: str) -> Optional[np.ndarray]:
        """:func:`chunk_offsets` of a shard file, found once per file and process (a file holds several shards)."""
        cache = self.__dict__.setdefault("_chunk_offsets", {})
        if file not in cache:
            cache[file] = chunk_offsets(images, file)
        return cache[file]

    def __getstate__(self) -> dict:  # to a DataLoader worker: without the caches, found again there
        state = dict(self.__dict__)
        for cached in ("_table", "_keys", "_chunk_offsets"):
            state.pop(cached, None)
        return state

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        import h5py

        s, file, start, stop = shard.items
        try:
            with h5py.File(file, "r") as h5:
                images = read_rows(h5["images"], file, start, stop, self._offsets(h5["images"], file))
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


def _key(shard: Any, index: Any) -> Any:
    """One sortable int64 per (shard, index)."""
    return (np.asarray(shard, dtype=np.int64) << 32) + np.asarray(index, dtype=np.int64)


def chunk_offsets(dataset: Any, file: str) -> Optional[np.ndarray]:
    """The file offset of every row of an HDF5 image dataset in the dataset writer's layout (one float32
    object per chunk, unfiltered, every chunk written), read at once; None for any other layout."""
    shape = tuple(dataset.shape[1:])
    if (dataset.chunks != (1, *shape) or dataset.dtype != np.dtype(np.float32)
            or dataset.id.get_create_plist().get_nfilters() != 0 or not hasattr(dataset.id, "chunk_iter")):
        return None
    offsets = np.full(dataset.shape[0], -1, dtype=np.int64)
    size = int(np.prod(shape)) * 4

    def note(chunk: Any) -> None:
        row = int(chunk.chunk_offset[0])
        if row < len(offsets) and chunk.size == size:
            offsets[row] = chunk.byte_offset

    dataset.id.chunk_iter(note)
    if len(offsets) and ((offsets < 0).any() or offsets.max() + size > os.path.getsize(file)):
        return None
    return offsets


def read_rows(dataset: Any, file: str, start: int, stop: int, offsets: Optional[np.ndarray]) -> Sequence[np.ndarray]:
    """Rows ``start:stop`` of an HDF5 image dataset, each a float32 (bands, H, W) array.  The dataset writer
    stores one object per chunk: h5py's slice then walks the chunks one by one and copies them (0.09 ms per
    64 x 64 x 3 object, as much as a tenth of the network's time).  With the chunks' ``offsets``
    (:func:`chunk_offsets`), each run of adjacent chunks is a view of one read-only memory map of the file: no
    copy until conforming stacks the batch.  ``offsets=None`` takes the h5py slice.  Dataset files are written
    once and renamed into place, never changed under a reader."""
    n = stop - start
    if offsets is None or n <= 0:
        return np.asarray(dataset[start:stop], dtype=np.float32)
    shape, mine = tuple(dataset.shape[1:]), offsets[start:stop]
    size = int(np.prod(shape)) * 4
    whole = np.memmap(file, dtype=np.uint8, mode="r")
    rows: list = []
    breaks = np.flatnonzero(np.diff(mine) != size) + 1
    for a, b in zip([0, *breaks.tolist()], [*breaks.tolist(), n]):
        first = int(mine[a])
        rows.extend(whole[first:first + (b - a) * size].view(np.float32).reshape(b - a, *shape))
    return rows
