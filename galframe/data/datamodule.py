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

from galframe.api import DataInfo
from galframe.errors import ConfigError, DataError

MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"
SPECIAL_KEYS = ("label", "clean", "votes", "instances")
#: batch keys whose per-item values differ in size: collated into lists, not stacked
LIST_KEYS = ("instances",)


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


def _load_instances(root: Path, ids: set) -> dict[int, dict[str, np.ndarray]]:
    """``instances.parquet`` (annotated rows only) grouped by image id."""
    import pandas as pd

    from galframe.data.format import INSTANCES

    file = Path(root) / INSTANCES
    if not file.is_file():
        raise DataError(f"{root}: a task needs object instances (boxes, masks) but the dataset has no {INSTANCES}.")
    try:
        frame = pd.read_parquet(file)
    except Exception as exc:
        raise DataError(f"{file}: cannot read the instances ({type(exc).__name__}: {exc})") from exc
    missing = {"image_id", "class", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "rle"} - set(frame.columns)
    if missing:
        raise DataError(f"{file}: instance table lacks column(s) {sorted(missing)}.")
    if "annotated" in frame:
        frame = frame[frame["annotated"].astype(bool)]
    frame = frame[frame["image_id"].isin(ids)]
    out: dict[int, dict[str, np.ndarray]] = {}
    cols = [c for c in ("class", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "rle", "mag_r") if c in frame]
    for image_id, group in frame.groupby("image_id", sort=False):
        out[int(image_id)] = {c: group[c].to_numpy() for c in cols}
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack what has one size per batch; keep variable-size values (instances) as lists."""
    from torch.utils.data import default_collate

    lists = {k: [it.pop(k) for it in items] for k in LIST_KEYS if k in items[0]}
    batch = default_collate(items)
    batch.update(lists)
    return batch


def vote_columns(schema: Optional[Mapping[str, Any]]) -> list[str]:
    """Catalog columns of a Galaxy Zoo style vote schema, in schema order: ``<question>_<answer>``.

    A schema is ``{"questions": [{"name": q, "answers": [a, ...], "asked_if": "<question>_<answer>" | null}, ...]}``
    (stored in the dataset manifest under ``votes``); the columns hold vote counts.
    """
    if not schema:
        return []
    return [f"{q['name']}_{a}" for q in schema["questions"] for a in q["answers"]]


def read_labels(spec: Any, classes: Sequence[str]) -> Any:
    """Labels people gave (``data.labels``): a CSV/Parquet file or a mapping, to a frame of ``id`` and class index."""
    import pandas as pd

    if isinstance(spec, Mapping):
        frame = pd.DataFrame({"id": list(spec.keys()), "label": list(spec.values())})
        where = "data.labels"
    else:
        file = Path(str(spec)).expanduser()
        where = str(file)
        if not file.is_file():
            raise DataError(f"{file}: labels file not found (data.labels).")
        try:
            frame = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
        except Exception as exc:
            raise DataError(f"{file}: cannot read the labels ({type(exc).__name__}: {exc})") from exc
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{where}: labels need columns 'id' and 'label'; missing {sorted(missing)}.")
    frame = frame.drop_duplicates("id", keep="last")
    names = {c: i for i, c in enumerate(classes)}
    index = []
    for value in frame["label"]:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in names:
                raise DataError(f"{where}: unknown class '{value}'; the dataset's classes are {list(classes)}.")
            index.append(names[value])
        else:
            k = int(value)
            if not 0 <= k < len(classes):
                raise DataError(f"{where}: class index {k} out of range 0..{len(classes) - 1}.")
            index.append(k)
    return pd.DataFrame({"id": frame["id"].astype(np.int64).to_numpy(), "class": np.asarray(index, dtype=np.int64)})


class GalaxyDataset(Dataset):
    """Objects of one split.  Each item: ``image`` (bands, H, W) flux, ``id``, and what tasks require."""

    def __init__(self, root: Path, manifest: dict, catalog: "Any", keys: Sequence[str]) -> None:
        self.root = Path(root)
        self.files = [self.root / s["file"] for s in manifest["shards"]]
        self.catalog = catalog.reset_index(drop=True)
        self.keys = list(keys)
        self.bands = list(manifest["bands"])
        self._shard = self.catalog["shard"].to_numpy()
        self._index = self.catalog["index"].to_numpy()
        self._ids = self.catalog["id"].to_numpy()
        self._label = self.catalog["class"].to_numpy().astype(np.int64) if "class" in self.catalog else None
        vote_cols = vote_columns(manifest.get("votes")) if "votes" in self.keys else []
        self._votes = self.catalog[vote_cols].to_numpy(np.float32) if vote_cols else None
        sigma_cols = [f"sky_sigma_{b}" for b in self.bands]
        self._sigma = (
            self.catalog[sigma_cols].to_numpy(np.float32) if all(c in self.catalog for c in sigma_cols) else None
        )
        self._columns = {
            k: self.catalog[k].to_numpy(np.float32) for k in self.keys if k not in SPECIAL_KEYS
        }
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        self._instances = _load_instances(self.root, set(self._ids.tolist())) if "instances" in self.keys else None

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
        image = np.asarray(h5["images"][row], dtype=np.float32)
        bad = ~np.isfinite(image)
        if bad.any():
            raise DataError(
                f"{self.files[shard]}: object id {int(self._ids[i])} (row {row}) has {int(bad.sum())} NaN/inf pixels."
            )
        item: dict[str, Any] = {"image": torch.from_numpy(image), "id": int(self._ids[i])}
        if self._sigma is not None:
            item["noise_sigma"] = torch.from_numpy(self._sigma[i].copy())
        for key in self.keys:
            if key == "label":
                item["label"] = int(self._label[i])
            elif key == "clean":
                item["clean"] = torch.from_numpy(np.asarray(h5["clean"][row], dtype=np.float32))
            elif key == "instances":
                item["instances"] = self._instances_of(int(self._ids[i]), image.shape[-2:])
            elif key == "votes":
                if self._votes is None:
                    raise DataError(f"{self.root}: this dataset has no vote counts (needed by a task).")
                item["votes"] = torch.from_numpy(self._votes[i].copy())
            else:
                item[key] = torch.tensor(self._columns[key][i])
        return item

    def _instances_of(self, image_id: int, shape: Any) -> dict[str, torch.Tensor]:
        """Annotated instances of one image: boxes (N, 4) x0 y0 x1 y1, labels (N,), masks (N, H, W) uint8, mag_r (N,)."""
        from galframe.data.masks import rle_to_mask

        h, w = int(shape[0]), int(shape[1])
        rows = self._instances.get(image_id)
        if rows is None or len(rows) == 0:
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                    "masks": torch.zeros(0, h, w, dtype=torch.uint8), "mag_r": torch.zeros(0)}
        boxes = np.stack([rows["bbox_x"], rows["bbox_y"], rows["bbox_x"] + rows["bbox_w"], rows["bbox_y"] + rows["bbox_h"]], 1)
        masks = np.stack([rle_to_mask(c, h, w) for c in rows["rle"]]).astype(np.uint8)
        mag = rows["mag_r"] if "mag_r" in rows else np.full(len(boxes), np.nan)
        return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(np.asarray(rows["class"], dtype=np.int64)),
                "masks": torch.from_numpy(masks), "mag_r": torch.tensor(np.asarray(mag, dtype=np.float32))}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
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
    def __init__(self, cfg: Mapping[str, Any], requires: Sequence[str] = ("label",), progress: bool = True) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.requires = sorted(set(requires))
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
        for key in self.requires:
            if key == "label" and "class" not in catalog:
                raise DataError(f"{cat_file}: a task needs class labels but the catalog has no 'class' column.")
            if key == "clean" and not self.manifest.get("has_clean", False):
                raise DataError(f"{self.root}: a task needs noise-free 'clean' images; this dataset has none.")
            if key not in SPECIAL_KEYS and key not in catalog:
                raise DataError(f"{cat_file}: a task needs column '{key}', which the catalog does not have.")
            if key == "votes":
                cols = vote_columns(self.manifest.get("votes"))
                if not cols:
                    raise DataError(f"{self.root / MANIFEST}: a task needs vote counts but the dataset has no vote schema.")
                absent = [c for c in cols if c not in catalog]
                if absent:
                    raise DataError(f"{cat_file}: vote columns missing from the catalog: {absent[:5]}.")
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
        return DataInfo(
            bands=tuple(self.manifest["bands"]),
            image_size=int(self.manifest["image_size"]),
            classes=classes,
            pixel_scale=float(self.manifest.get("pixel_scale", 0.262)),
            columns=tuple(train.columns),
            stats={**stats, **({"vote_schema": self.manifest["votes"]} if self.manifest.get("votes") else {})},
        )

    def dataset(self, split: str) -> GalaxyDataset:
        self.prepare()
        return GalaxyDataset(self.root, self.manifest, self.splits[split], self.requires)

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
