"""The declared plugin contract: first-party plugins pass galframe.testing's checks, broken ones fail them
clearly, the core refuses untrainable backbones, the registry names clashing distributions, and batch
fields decide how keys load, collate and move."""
from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from galframe import registry
from galframe.api import DataInfo, Features, Geometry, Reject, RowReader, Stamp, Task
from galframe.errors import PluginError
from galframe.testing import TinyBackbone, check_backbone, check_reader, check_task

INFO = DataInfo(bands=("g", "r", "z"), image_size=32, classes=("a", "b", "c"),
                stats={"column_mean": {"sersic_n": 2.0}, "column_std": {"sersic_n": 1.0}})


# -- first-party plugins -----------------------------------------------------------------------------
def test_first_party_backbones_keep_the_contract():
    check_backbone(registry.load("backbone", "timm"), data=INFO, model_name="resnet18", pretrained=False)
    lvm = {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}
    backbone = check_backbone(registry.load("backbone", "lvm"), data=INFO, **lvm)
    assert backbone.has_decoder


def test_first_party_tasks_keep_the_contract():
    label = torch.tensor([0, 2])
    check_task(registry.load("task", "classify"), batch={"label": label}, data=INFO)
    check_task(registry.load("task", "regress"), data=INFO, params=["sersic_n"])  # a catalog column: drawn at random
    restore = registry.load("task", "restore")
    clean = torch.rand(2, 3, 32, 32)
    check_task(restore, batch={"clean": clean}, data=INFO, decoder="light")
    assert check_task(restore, batch={"clean": clean}, data=INFO, backbone=TinyBackbone(INFO, decoder=True)).needs_decoder
    schema = {"questions": [{"name": "q", "answers": ["yes", "no"], "asked_if": None}]}
    votes_info = DataInfo(bands=INFO.bands, image_size=32, stats={"vote_schema": schema})
    check_task(registry.load("task", "votes"), batch={"votes": torch.tensor([[3.0, 1.0], [0.0, 4.0]])}, data=votes_info)


def test_dataset_reader_gives_every_object_its_catalog_row_in_any_shard_order(tiny_dataset):
    import pandas as pd

    reader = registry.load("reader", "dataset")(path=str(tiny_dataset), shard_size=37)  # 300 = 8 x 37 + 4
    reader.bind(("g", "r", "z"), 64)
    catalog = pd.read_parquet(tiny_dataset / "catalog.parquet").set_index("id")
    seen = {}
    for shard in reversed(reader.shards()):  # the catalog is read once and sliced per shard
        for stamp in reader.read(shard):
            seen[stamp.id] = stamp.meta
    assert len(seen) == len(catalog) == 300
    for oid, meta in seen.items():
        row = catalog.loc[int(oid)]
        assert meta["row"] == row["index"] and meta["class"] == row["class"], oid
    clone = pickle.loads(pickle.dumps(reader))  # to a worker without the cached table, and it reads the same
    assert not {"_table", "_keys", "_chunk_offsets"} & set(vars(clone))
    first = reader.shards()[3]
    assert [s.meta["row"] for s in clone.read(first)] == [s.meta["row"] for s in reader.read(first)]


def test_dataset_rows_read_by_chunk_offsets_equal_the_h5py_slice(tmp_path):
    import h5py

    from galframe.data.format import DatasetWriter
    from galframe.readers.dataset import chunk_offsets, read_rows

    rng = np.random.default_rng(3)
    with DatasetWriter(tmp_path / "d", "d", ["g", "r", "z"], 16, 0.262, 22.5, None, {}, shard_size=50) as w:
        for n in (7, 13, 1, 29, 30):  # batches that resize the shards at uneven points: chunks not all adjacent
            w.add(rng.normal(size=(n, 3, 16, 16)).astype(np.float32))
        w.close()
    with h5py.File(tmp_path / "d" / "shard-00000.h5", "r") as h5:
        file = str(tmp_path / "d" / "shard-00000.h5")
        offsets = chunk_offsets(h5["images"], file)
        assert offsets is not None and len(offsets) == 50 and (np.diff(offsets) != 3 * 16 * 16 * 4).any()
        for start, stop in ((0, 50), (3, 41), (49, 50), (10, 10)):
            got = read_rows(h5["images"], file, start, stop, offsets)
            assert len(got) == stop - start and all(row.dtype == np.float32 and row.shape == (3, 16, 16) for row in got)
            assert np.array_equal(np.reshape(got, (-1, 3, 16, 16)), h5["images"][start:stop]), (start, stop)
    cube = rng.normal(size=(9, 3, 8, 8))
    with h5py.File(tmp_path / "other.h5", "w") as h5:  # compressed, float64, other chunks: the general path
        h5.create_dataset("images", data=cube, chunks=(3, 3, 8, 8), compression="gzip")
    with h5py.File(tmp_path / "other.h5", "r") as h5:
        assert chunk_offsets(h5["images"], str(tmp_path / "other.h5")) is None
        got = read_rows(h5["images"], str(tmp_path / "other.h5"), 2, 8, None)
    assert np.asarray(got).dtype == np.float32 and np.allclose(got, cube[2:8])


def test_first_party_readers_keep_the_contract(tiny_dataset, tmp_path):
    import h5py
    from astropy.io import fits

    stamps = check_reader(registry.load("reader", "dataset"), bands=("g", "r", "z"), size=64, max_shards=1,
                          path=str(tiny_dataset), shard_size=8)
    assert len(stamps) == 8 and all(s.flux.shape == (3, 64, 64) for s in stamps)
    cube = np.random.default_rng(0).normal(1.0, 0.1, size=(5, 3, 40, 40)).astype(np.float32)
    for k in range(3):
        header = fits.Header({"BANDS": "g,r,z", "BUNIT": "nanomaggy"})
        fits.PrimaryHDU(cube[k], header).writeto(tmp_path / f"obj{k}.fits")
    fits_stamps = check_reader(registry.load("reader", "fits"), bands=("g", "r", "z"), size=32, path=str(tmp_path),
                               shard_size=2)
    assert sorted(s.id for s in fits_stamps) == ["obj0", "obj1", "obj2"]
    with h5py.File(tmp_path / "ssl.h5", "w") as h5:
        h5.create_dataset("images", data=cube).attrs["bands"] = "grz"
        h5["inds"] = np.arange(5)
    assert len(check_reader(registry.load("reader", "hdf5"), bands=("g", "r", "z"), size=32,
                            path=str(tmp_path / "ssl.h5"), shard_size=2)) == 5


# -- the checks fail clearly -------------------------------------------------------------------------
class _Forgetful(TinyBackbone):
    """A stage left out of blocks(): its parameters would never be trained."""

    def __init__(self, data: DataInfo) -> None:
        super().__init__(data)
        self.extra = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:
        f = super().forward(x, decode)
        return Features(maps=f.maps, embedding=self.extra(f.embedding))


class _WrongWidth(TinyBackbone):
    def __init__(self, data: DataInfo) -> None:
        super().__init__(data)
        self.feature_channels = (8, 32)


def test_check_backbone_names_the_broken_promise():
    with pytest.raises(AssertionError, match=r"backbone _Forgetful: 2 parameter tensor\(s\) are in no stage of blocks\(\)"):
        check_backbone(_Forgetful, data=INFO)
    with pytest.raises(AssertionError, match=r"feature map 1 has shape \(2, 16, 8, 8\); expected \(2, 32, H, W\)"):
        check_backbone(_WrongWidth, data=INFO)
    with pytest.raises(AssertionError, match="is not a subclass of galframe.api.Backbone"):
        check_backbone(nn.Linear)


class _NoisyTask(Task):
    requires = ("label",)

    def __init__(self, name, backbone, data) -> None:
        super().__init__(name, backbone, data)
        self.head = nn.Linear(backbone.embed_dim, 3)

    def forward(self, features):
        return {"logits": self.head(features.embedding)}

    def loss(self, out, batch):
        return out["logits"].sum(dim=1)  # one value per object, not a scalar


def test_check_task_names_the_broken_promise():
    with pytest.raises(AssertionError, match=r"batch key 'label' \(a registered field\): pass check_task\(\.\.\., batch="):
        check_task(_NoisyTask, data=INFO)
    with pytest.raises(AssertionError, match="task _NoisyTask: loss must be a finite 0-d tensor"):
        check_task(_NoisyTask, batch={"label": torch.tensor([0, 1])}, data=INFO)


class _Rows(RowReader):
    """Ten rows of 8x8 stamps from memory; row 3 is unreadable."""

    bands = ("g", "r")

    def __init__(self, shard_size: int = 4, n: int = 10, say: int = 0) -> None:
        super().__init__(shard_size)
        self.n, self.say = n, say

    def n_rows(self) -> int:
        return self.n

    def fingerprint_parts(self) -> list:
        return [("memory", self.n)]

    def read_rows(self, start, stop):
        for row in range(start, stop + self.say):
            if row == 3:
                yield Reject(source=f"memory[{row}]", reason="unreadable row", id=str(row))
            else:
                yield Stamp(id=str(row), flux=np.full((2, 8, 8), float(row), np.float32), bands=self.bands)


def test_row_reader_builds_shards_and_fingerprints_from_two_methods():
    reader = _Rows()
    shards = reader.shards()
    assert [(s.key, s.items, s.n) for s in shards] == [("000000", (0, 4), 4), ("000001", (4, 8), 4), ("000002", (8, 10), 2)]
    assert shards[0].fingerprint != _Rows(n=11).shards()[0].fingerprint  # a changed source is read again
    stamps = check_reader(reader, bands=("g", "r"), size=8)
    assert [s.id for s in stamps] == ["0", "1", "2", "4", "5", "6", "7", "8", "9"]
    with pytest.raises(AssertionError, match="shard 000000 says n=4 but read\\(\\) yielded 5 objects"):
        check_reader(_Rows, say=1)
    with pytest.raises(AssertionError, match=r"reader _Rows: stamp 0: the pipeline rejects it: stamp is 8x8 pixels, smaller"):
        check_reader(reader, bands=("g", "r"), size=16)


# -- the core refuses what would silently go wrong -----------------------------------------------------
def test_a_backbone_with_parameters_outside_blocks_is_refused(monkeypatch):
    from galframe.model import build_backbone

    monkeypatch.setattr(registry, "load", lambda kind, name: _Forgetful)
    with pytest.raises(PluginError) as err:
        build_backbone({"plugin": "forgetful"}, INFO)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("backbone 'forgetful': 2 parameter tensor(s) (272 values, e.g. 'extra.weight') are in no stage")


def _entry_point(name: str, value: str, dist: str) -> SimpleNamespace:
    meta = SimpleNamespace(metadata={"Name": dist}, version="1.0")
    return SimpleNamespace(name=name, value=value, dist=meta, load=lambda: None)


def test_two_distributions_registering_one_name_warn_with_both(monkeypatch):
    eps = [_entry_point("task.color", "first.task:Color", "first-plugin"),
           _entry_point("task.color", "second.task:Color", "second-plugin"),
           _entry_point("task.other", "first.task:Other", "first-plugin")]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: eps)
    registry._discover.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert registry.info("task", "color").distribution == "first-plugin"
        messages = [str(w.message) for w in caught if issubclass(w.category, registry.DuplicatePluginWarning)]
        assert len(messages) == 1 and "first-plugin" in messages[0] and "second-plugin" in messages[0]
        assert "task plugin 'color'" in messages[0]
    finally:
        registry._discover.cache_clear()


# -- batch fields ------------------------------------------------------------------------------------
def test_fields_decide_how_keys_collate_and_move():
    from galframe.data.augment import augment_batch
    from galframe.data.datamodule import collate
    from galframe.data.fields import ColumnField, field_for

    assert isinstance(field_for("sersic_n"), ColumnField) and not field_for("sersic_n").geometric
    assert field_for("clean").geometric and field_for("instances").collate == "list"
    items = [{"image": torch.rand(1, 4, 4), "id": i, "sersic_n": torch.tensor(float(i)),
              "instances": {"masks": torch.zeros(i, 4, 4, dtype=torch.uint8), "boxes": torch.zeros(i, 4)}} for i in range(3)]
    batch = collate(items)
    assert batch["sersic_n"].shape == (3,) and isinstance(batch["instances"], list) and len(batch["instances"]) == 3
    image = torch.arange(16.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    moved = augment_batch({"image": image.clone(), "clean": image.clone(), "sersic_n": torch.arange(3.0)},
                          {"rot90": True, "flip": True}, torch.Generator().manual_seed(0))
    assert torch.equal(moved["image"], moved["clean"]) and not torch.equal(moved["image"], image)
    assert torch.equal(moved["sersic_n"], torch.arange(3.0))  # a catalog column does not move
    geometry = Geometry(moved["aug_rot90"], moved["aug_flip"], torch.zeros(3, 2, dtype=torch.long))
    assert torch.equal(geometry(image), moved["image"])
