"""Reading a galframe dataset directory (HDF5 shards + Parquet catalog) for training.

Splits are seeded permutations of the catalog; ``n_labeled`` draws a seeded
subset of the training split for few-shot studies.  Images are delivered in
calibrated flux; the model applies augmentation and scaling.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from galframe.api import LIST, DataInfo, StoredData, StoredObject
from galframe.data.fields import field_for, resolve
from galframe.data.labels import read_labels
from galframe.errors import ConfigError, DataError

MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"


def resolve_dataset(cfg: Mapping[str, Any], progress: bool = True) -> Path:
    """The dataset directory a data config points at, simulating it into the cache if needed."""
    path = cfg.get("path")
    if path:
        root = Path(str(path)).expanduser()
        if not root.exists():
            raise DataError(f"{root}: dataset directory not found (data.path).")
        return root
    if cfg.get("sim") is None:
        raise ConfigError("data.path is not set and this data config has no 'sim' block to simulate from.")
    from galframe.sim import cached_dataset

    return cached_dataset(cfg, progress=progress)


def read_manifest(root: Path) -> dict:
    file = Path(root) / MANIFEST
    if not file.is_file():
        raise DataError(
            f"{root}: not a galframe dataset (no {MANIFEST}). Survey files (FITS, HDF5, images, catalogs) are read "
            "by galframe predict directly; to train on them, convert them first: galframe ingest data=<reader> "
            f"data.path={root} out=<dir>. (Or was a simulation interrupted?)"
        )
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != "galframe-dataset":
        raise DataError(f"{file}: not a galframe dataset manifest (format={manifest.get('format')!r}).")
    return manifest


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack what has one size per batch; keep the values of list fields (declared by their plugin) as lists."""
    from torch.utils.data import default_collate

    lists = {k: [it.pop(k) for it in items] for k in list(items[0]) if field_for(k).collate == LIST}
    batch = default_collate(items)
    batch.update(lists)
    return batch


class GalaxyDataset(Dataset):
    """Objects of one split.  Each item: ``image`` (bands, H, W) flux, ``id``, ``noise_sigma`` when the
    catalog has the sky noise, and each required key as its field loads it."""

    def __init__(self, root: Path, manifest: dict, catalog: "Any", keys: Sequence[str], cache_mib: float = 0.0,
                 fields: Optional[Mapping[str, Any]] = None) -> None:
        self.root = Path(root)
        self.files = [self.root / s["file"] for s in manifest["shards"]]
        self.catalog = catalog.reset_index(drop=True)
        self.keys = list(keys)
        self.bands = list(manifest["bands"])
        self._shard = self.catalog["shard"].to_numpy()
        self._index = self.catalog["index"].to_numpy()
        self._ids = self.catalog["id"].to_numpy()
        sigma_cols = [f"sky_sigma_{b}" for b in self.bands]
        self._sigma = (
            self.catalog[sigma_cols].to_numpy(np.float32) if all(c in self.catalog for c in sigma_cols) else None
        )
        self._fields = resolve(self.keys, fields)
        data = StoredData(self.root, manifest, self.catalog)
        self._state = {k: f.open(data) for k, f in self._fields.items()}
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        # the split's images held in memory, shard by shard as they are first read, when they fit in cache_mib
        size = int(manifest.get("image_size") or 0)
        nbytes = len(self.catalog) * len(self.bands) * size * size * 4
        self.cached = bool(size) and nbytes <= float(cache_mib or 0.0) * 2**20
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.catalog)

    def _h5(self, shard: int) -> Any:
        import h5py

        if self._pid != os.getpid():  # a forked DataLoader worker opens its own handles
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            file = self.files[shard]
            try:
                handle = h5py.File(file, "r")
            except OSError as exc:
                raise DataError(f"{file}: cannot open HDF5 shard ({exc})") from exc
            self._handles[shard] = handle
        return handle

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard, row = int(self._shard[i]), int(self._index[i])
        h5 = self._h5(shard)
        image = self._cached(shard, row, h5) if self.cached else np.asarray(h5["images"][row], dtype=np.float32)
        bad = ~np.isfinite(image)
        if bad.any():
            raise DataError(
                f"{self.files[shard]}: object id {int(self._ids[i])} (row {row}) has {int(bad.sum())} NaN/inf pixels."
            )
        item: dict[str, Any] = {"image": torch.from_numpy(image), "id": int(self._ids[i])}
        if self._sigma is not None:
            item["noise_sigma"] = torch.from_numpy(self._sigma[i].copy())
        obj = StoredObject(i, int(self._ids[i]), h5, row, self.files[shard])
        for key, f in self._fields.items():
            item[key] = f.load(self._state[key], obj)
        return item

    def _cached(self, shard: int, row: int, h5: Any) -> np.ndarray:
        """Row ``row`` of shard ``shard`` from memory: the first access reads the shard once, in one sequential
        read, and keeps only this split's rows of it (sorted, so a row is found by bisection)."""
        entry = self._cache.get(shard)
        if entry is None:
            rows = np.unique(self._index[self._shard == shard])
            try:
                images = np.asarray(h5["images"][:], dtype=np.float32)[rows]
            except (OSError, KeyError) as exc:
                raise DataError(f"{self.files[shard]}: cannot read the images ({exc})") from exc
            entry = self._cache[shard] = (rows, images)
        rows, images = entry
        return images[int(np.searchsorted(rows, row))].copy()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_cache"] = {}  # a worker fills its own
        return state


class EpochSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch): resumable runs see the same batches."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """The epoch's order as an array (int32 below 2**31 objects: 4 bytes per object per rank)."""
        order = np.arange(self.n, dtype=np.int32 if self.n < 2**31 else np.int64)
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)  # = Generator.permutation(n)
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.n


def rank_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
    """One rank's batches of an epoch of ``n`` objects, as (start, stop) positions in the epoch's order
    (see :class:`EpochBatchSampler`)."""
    b, w = int(batch_size), int(world_size)
    g = b * w
    steps, rest = divmod(int(n), g)
    if 0 < rest < w and steps:  # fewer objects left than ranks: they join the previous step
        steps, rest = steps - 1, rest + g
    batches = [(t * g + rank * b, t * g + (rank + 1) * b) for t in range(steps)]
    if rest:
        base, extra = divmod(rest, w)  # shares differ by one object at most
        start = steps * g + rank * base + min(rank, extra)
        size = base + (rank < extra)
        if size:
            batches.append((start, start + size))
    return batches


class EpochBatchSampler(Sampler[list[int]]):
    """The batches one rank (of ``world_size``) trains on in an epoch; order depends only on (seed, epoch).

    The epoch's order is :class:`EpochSampler`'s (a permutation seeded by seed and epoch, or the identity),
    the same on every rank.  It is cut into steps of ``world_size * batch_size`` objects and rank ``r``
    takes the ``r``-th ``batch_size`` of each, so one step of all ranks is one step of a single process
    with ``world_size`` times the batch.  Nothing is padded or dropped: the ranks' batches are disjoint
    and cover the epoch exactly once.  A last, smaller step is shared as evenly as possible (shares
    differ by one object); if fewer objects than ranks remain, they join the step before (some ranks
    then take ``batch_size + 1``).  Every rank thus runs the same number of steps, as DDP needs
    (``even``; an epoch with fewer objects than ranks is then an error).  With one process the batches
    are those of ``DataLoader(batch_size, sampler=EpochSampler(...), drop_last=False)``.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
        even: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}.")
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size={batch_size}: it must be at least 1.")
        if even and 0 < n < world_size:
            raise DataError(f"{n} object(s) cannot be shared among {world_size} ranks: each rank needs at least one.")
        self.sampler = EpochSampler(n, seed, shuffle)  # Lightning calls batch_sampler.sampler.set_epoch
        self.n, self.batch_size, self.rank, self.world_size = int(n), int(batch_size), int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.indices()
        for start, stop in rank_batches(self.n, self.batch_size, self.rank, self.world_size):
            yield order[start:stop].tolist()

    def __len__(self) -> int:
        return len(rank_batches(self.n, self.batch_size, self.rank, self.world_size))


class GalaxyDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Mapping[str, Any], requires: Sequence[str] = (), progress: bool = True,
                 fields: Optional[Mapping[str, Any]] = None) -> None:
        """``requires``: the batch keys to load; ``fields``: batch key -> a configured :class:`~galframe.api.Field`
        for keys loaded otherwise than by their registered field (a modality's encoder gives its own)."""
        super().__init__()
        self.cfg = dict(cfg)
        self.fields = dict(fields or {})
        self.requires = sorted(set(requires) | set(self.fields))
        self.progress = progress
        self.root: Optional[Path] = None
        self.manifest: dict = {}
        self.splits: dict[str, Any] = {}
        self._prepared = False

    # -- set-up --------------------------------------------------------------
    def prepare(self) -> None:
        """Find (or simulate) the data, check it, and cut the splits.  Idempotent."""
        if self._prepared:
            return
        import pandas as pd

        self.root = resolve_dataset(self.cfg, progress=self.progress)
        self.manifest = read_manifest(self.root)
        want = [str(b) for b in self.cfg.get("bands") or self.manifest["bands"]]
        have = [str(b) for b in self.manifest["bands"]]
        if want != have:
            raise DataError(
                f"{self.root / MANIFEST}: the dataset has {len(have)} band(s) {have}, the config asks for "
                f"{len(want)} {want} (data.bands)."
            )
        size = self.cfg.get("image_size")
        if size and int(size) != int(self.manifest["image_size"]):
            raise DataError(
                f"{self.root / MANIFEST}: images are {self.manifest['image_size']} px, the config asks for {size} (data.image_size)."
            )
        cat_file = self.root / CATALOG
        try:
            catalog = pd.read_parquet(cat_file)
        except Exception as exc:
            raise DataError(f"{cat_file}: cannot read the catalog ({type(exc).__name__}: {exc})") from exc
        if len(catalog) == 0:
            raise DataError(f"{cat_file}: the dataset is empty (0 objects).")
        whole = StoredData(self.root, self.manifest, catalog)
        for f in resolve(self.requires, self.fields).values():
            f.check(whole)
        self.splits = self._split(catalog, cat_file)
        self._prepared = True

    def _split(self, catalog: Any, cat_file: Path) -> dict[str, Any]:
        fractions = dict(self.cfg.get("split") or {"train": 0.7, "val": 0.15, "test": 0.15})
        unknown = set(fractions) - {"train", "val", "test"}
        if unknown:
            raise ConfigError(f"data.split has unknown split(s) {sorted(unknown)}; use train, val, test.")
        total = sum(float(v) for v in fractions.values())
        if total <= 0 or total > 1.0 + 1e-6:
            raise ConfigError(f"data.split fractions sum to {total:g}; they must be in (0, 1].")
        n = len(catalog)
        order = np.random.default_rng(int(self.cfg.get("seed", 0))).permutation(n)
        cuts, start, splits = {}, 0, {}
        for name in ("train", "val", "test"):
            count = int(round(float(fractions.get(name, 0.0)) * n))
            cuts[name] = order[start : start + count]
            start += count
        for name, idx in cuts.items():
            splits[name] = catalog.iloc[np.sort(idx)]
        n_labeled = self.cfg.get("n_labeled")
        if n_labeled is not None:
            n_labeled = int(n_labeled)
            if n_labeled < 1:
                raise ConfigError(f"data.n_labeled must be at least 1 (got {n_labeled}).")
            train = splits["train"]
            if n_labeled > len(train):
                raise DataError(
                    f"{cat_file}: data.n_labeled={n_labeled} but the training split has only {len(train)} objects."
                )
            label_seed = self.cfg.get("label_seed")
            label_seed = int(self.cfg.get("seed", 0) if label_seed is None else label_seed)
            rng = np.random.default_rng([label_seed, 1, n_labeled])
            splits["train"] = train.iloc[np.sort(rng.choice(len(train), n_labeled, replace=False))]
        labels = self.cfg.get("labels")
        if labels is not None and (len(labels) > 0 if isinstance(labels, Mapping) else bool(labels)):
            if n_labeled is not None:
                raise ConfigError("data.labels and data.n_labeled both set: use one (labels picks the objects).")
            splits["train"] = self._with_labels(splits["train"], labels)
        if len(splits["train"]) == 0:
            raise DataError(f"{cat_file}: the training split is empty ({n} objects, data.split={fractions}).")
        return splits

    def _with_labels(self, train: Any, spec: Any) -> Any:
        """Train on the objects people labelled (``data.labels``), with their labels instead of the catalog's."""
        given = read_labels(spec, tuple(self.manifest.get("classes") or ()))
        known = set(train["id"].to_numpy().tolist())
        outside = [int(i) for i in given["id"] if int(i) not in known]
        if outside:
            raise DataError(
                f"data.labels: {len(outside)} labelled id(s) are not in the training split (e.g. {outside[:5]}); "
                "labels must come from the training pool."
            )
        rows = train.set_index("id").loc[given["id"].to_numpy()].reset_index()
        rows["class"] = given["class"].to_numpy()
        return rows.sort_values("id").reset_index(drop=True)

    def info(self) -> DataInfo:
        self.prepare()
        train = self.splits["train"]
        classes = tuple(self.manifest.get("classes") or ())
        stats: dict[str, Any] = {"n_train": len(train)}
        if classes and "class" in train:
            counts = np.bincount(train["class"].to_numpy(), minlength=len(classes))
            stats["class_counts"] = counts.tolist()
        numeric = [c for c in train.columns if c not in ("id", "shard", "index", "class") and train[c].dtype.kind == "f"]
        stats["column_mean"] = {c: float(np.nanmean(train[c])) if train[c].notna().any() else 0.0 for c in numeric}
        stats["column_std"] = {c: float(np.nanstd(train[c])) if train[c].notna().any() else 1.0 for c in numeric}
        for f in resolve(self.requires, self.fields).values():  # what a field knows about its targets (a schema, means)
            stats.update(f.stats(StoredData(self.root, self.manifest, train)))
        return DataInfo(
            bands=tuple(self.manifest["bands"]),
            image_size=int(self.manifest["image_size"]),
            classes=classes,
            pixel_scale=float(self.manifest.get("pixel_scale", 0.262)),
            columns=tuple(train.columns),
            stats=stats,
        )

    def dataset(self, split: str) -> GalaxyDataset:
        self.prepare()
        return GalaxyDataset(self.root, self.manifest, self.splits[split], self.requires,
                             cache_mib=float(self.cfg.get("cache_mib", 0) or 0), fields=self.fields)

    # -- Lightning hooks -----------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare()

    def _loader(self, split: str, train: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
        """One split's loader for rank ``rank`` of ``world_size`` (the whole split by default).

        Every split is shared among ranks by :class:`EpochBatchSampler` (each object once per epoch, the same
        number of batches on every rank, so no rank waits in a collective for another); only training is
        shuffled.  ``data.batch_size`` is per rank.  DataLoader workers each load whole batches, so they too
        see disjoint objects."""
        ds = self.dataset(split)
        workers = int(self.cfg.get("num_workers", 0) or 0)
        batches = EpochBatchSampler(
            len(ds), int(self.cfg.get("batch_size", 64)), int(self.cfg.get("seed", 0)), shuffle=train,
            rank=rank, world_size=world_size,
        )
        return DataLoader(
            ds,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) of the Trainer this module serves; (0, 1) outside one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, *self._rank())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, *self._rank())

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, *self._rank())

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False, *self._rank())
