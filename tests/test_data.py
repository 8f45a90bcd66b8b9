"""Splits, few-shot subsets, sampling order, augmentation and scaling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galframe.data.augment import augment_batch
from galframe.data.datamodule import EpochSampler, GalaxyDataModule
from galframe.data.scaling import build_scaling
from galframe.errors import ConfigError
from tests.helpers import compose_train
from galframe.train import to_dict


def _dm(path, *overrides):
    cfg = to_dict(compose_train(f"data.path={path}", *overrides))
    dm = GalaxyDataModule(cfg["data"], requires=["label", "clean"], progress=False)
    dm.prepare()
    return dm


def test_splits_are_disjoint_cover_and_reproducible(tiny_dataset) -> None:
    dm = _dm(tiny_dataset)
    ids = {k: set(v["id"]) for k, v in dm.splits.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(range(300))
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (210, 45, 45)
    again = _dm(tiny_dataset)
    assert {k: set(v["id"]) for k, v in again.splits.items()} == ids
    other = _dm(tiny_dataset, "data.seed=5")
    assert set(other.splits["test"]["id"]) != ids["test"]


def test_n_labeled_is_a_seeded_subset_of_the_training_split(tiny_dataset) -> None:
    full = set(_dm(tiny_dataset).splits["train"]["id"])
    few = _dm(tiny_dataset, "data.n_labeled=25")
    chosen = set(few.splits["train"]["id"])
    assert len(chosen) == 25 and chosen <= full
    assert set(_dm(tiny_dataset, "data.n_labeled=25").splits["train"]["id"]) == chosen
    info = few.info()
    assert sum(info.stats["class_counts"]) == 25
    # validation and test splits do not change with the label budget
    assert set(few.splits["test"]["id"]) == set(_dm(tiny_dataset).splits["test"]["id"])
    # another label draw: a different subset of the same training split, the same held-out splits
    other = _dm(tiny_dataset, "data.n_labeled=25", "data.label_seed=7")
    assert set(other.splits["train"]["id"]) != chosen and set(other.splits["train"]["id"]) <= full
    assert set(other.splits["test"]["id"]) == set(few.splits["test"]["id"])


def test_items_carry_flux_labels_clean_and_noise(tiny_dataset) -> None:
    dm = _dm(tiny_dataset)
    ds = dm.dataset("train")
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["clean"].shape == (3, 64, 64)
    assert 0 <= item["label"] < len(dm.manifest["classes"])
    assert item["noise_sigma"].shape == (3,) and (item["noise_sigma"] > 0).all()
    row = ds.catalog.iloc[0]
    assert item["id"] == row["id"] and item["label"] == row["class"]


def test_the_in_memory_cache_delivers_the_stored_images(tiny_dataset) -> None:
    """With ``cache_mib`` a split's images come from memory (each shard read once), equal to per-object reads;
    a split larger than the budget is read per object."""
    direct = _dm(tiny_dataset, "data.cache_mib=0").dataset("train")
    cached = _dm(tiny_dataset, "data.cache_mib=64").dataset("train")
    assert cached.cached and not direct.cached
    assert not _dm(tiny_dataset, "data.cache_mib=1").dataset("train").cached  # 210 x 3 x 64 x 64 x 4 B > 1 MiB
    for i in [0, 5, 117, len(direct) - 1, 5]:
        a, b = direct[i], cached[i]
        assert a["id"] == b["id"] and torch.equal(a["image"], b["image"]) and torch.equal(a["clean"], b["clean"])
    assert set(cached._cache) == set(int(s) for s in cached.catalog["shard"].iloc[[0, 5, 117, len(direct) - 1]])
    rows, images = next(iter(cached._cache.values()))
    assert len(rows) == len(images) and (np.diff(rows) > 0).all()  # only this split's rows of the shard
    b = cached[0]["image"]
    b += 1.0  # an item is a copy: changing it leaves the cache as it was
    assert torch.equal(cached[0]["image"], direct[0]["image"])


def test_epoch_sampler_order_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_augmentation_is_seeded_and_treats_image_and_clean_alike() -> None:
    torch.manual_seed(0)
    clean = torch.rand(8, 3, 16, 16)
    batch = {"image": clean.clone(), "clean": clean.clone(), "noise_sigma": torch.full((8, 3), 0.1)}
    cfg = {"rot90": True, "flip": True, "shift": 2, "noise": 0.0}
    out1 = augment_batch({k: v.clone() for k, v in batch.items()}, cfg, torch.Generator().manual_seed(1))
    out2 = augment_batch({k: v.clone() for k, v in batch.items()}, cfg, torch.Generator().manual_seed(1))
    out3 = augment_batch({k: v.clone() for k, v in batch.items()}, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(out1["image"], out2["image"]) and not torch.equal(out1["image"], out3["image"])
    assert torch.equal(out1["image"], out1["clean"])  # geometry applied identically to the target image
    assert torch.allclose(out1["image"].sum(dim=(1, 2, 3)), clean.sum(dim=(1, 2, 3)))  # flux is conserved
    noisy = augment_batch(
        {"image": torch.zeros(64, 3, 32, 32), "noise_sigma": torch.full((64, 3), 0.1)},
        {"noise": 1.0},
        torch.Generator().manual_seed(0),
    )
    std = noisy["image"].std().item()
    # extra noise: sigma * U(0, 1) per object -> overall std 0.1 * sqrt(1/3)
    assert std == pytest.approx(0.1 * np.sqrt(1 / 3), rel=0.15)


def test_scaling_round_trip_and_band_checks() -> None:
    scaling = build_scaling({"name": "asinh", "softening": {"g": 0.01, "r": 0.02, "z": 0.05}, "scale": 0.5}, ["g", "r", "z"])
    flux = torch.randn(2, 3, 8, 8) * 3
    assert torch.allclose(scaling.inverse(scaling(flux)), flux, atol=1e-4)
    assert torch.allclose(scaling(flux)[:, 1], 0.5 * torch.asinh(flux[:, 1] / 0.02))
    with pytest.raises(ConfigError, match="no value for band"):
        build_scaling({"name": "asinh", "softening": {"g": 0.01}}, ["g", "r"])
    with pytest.raises(ConfigError, match="Did you mean 'asinh'"):
        build_scaling({"name": "asin"}, ["g"])


def test_labels_file_picks_training_objects_and_overrides_their_class(tiny_dataset, tmp_path) -> None:
    import pandas as pd

    train = _dm(tiny_dataset).splits["train"]
    classes = _dm(tiny_dataset).manifest["classes"]
    ids = train["id"].to_numpy()[:6]
    # a person's answers: names or indices, a repeated id keeps the last answer
    file = tmp_path / "labels.csv"
    pd.DataFrame({"id": [*ids, ids[0]], "label": [classes[1], 2, 0, classes[3], 1, 1, classes[4]]}).to_csv(file, index=False)
    dm = _dm(tiny_dataset, f"+data.labels={file}")
    got = dm.splits["train"].set_index("id")["class"]
    assert sorted(got.index) == sorted(ids)
    assert got[ids[0]] == 4 and got[ids[1]] == 2 and got[ids[3]] == 3
    assert dm.info().stats["n_train"] == 6
    assert dm.dataset("train")[0]["label"] == got[dm.splits["train"]["id"].iloc[0]]
    # test split untouched
    assert set(dm.splits["test"]["id"]) == set(_dm(tiny_dataset).splits["test"]["id"])


def test_labels_file_errors_name_the_file_and_problem(tiny_dataset, tmp_path) -> None:
    import pandas as pd

    from galframe.errors import DataError

    test_id = int(_dm(tiny_dataset).splits["test"]["id"].iloc[0])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": [test_id], "label": [0]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="not in the training split"):
        _dm(tiny_dataset, f"+data.labels={bad}")
    train_id = int(_dm(tiny_dataset).splits["train"]["id"].iloc[0])
    pd.DataFrame({"id": [train_id], "label": ["spiral_galaxy_typo"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad.csv: unknown class 'spiral_galaxy_typo'"):
        _dm(tiny_dataset, f"+data.labels={bad}")
    with pytest.raises(DataError, match="labels file not found"):
        _dm(tiny_dataset, f"+data.labels={tmp_path / 'none.csv'}")


def test_vote_counts_are_delivered_in_schema_order(tmp_path) -> None:
    from galframe.data.format import vote_columns
    from galframe.data.format import DatasetWriter

    schema = {"questions": [
        {"name": "smooth-or-featured", "answers": ["smooth", "featured-or-disk"], "asked_if": None},
        {"name": "bar", "answers": ["yes", "no"], "asked_if": "smooth-or-featured_featured-or-disk"},
    ]}
    assert vote_columns(schema) == ["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk", "bar_yes", "bar_no"]
    rng = np.random.default_rng(0)
    out = tmp_path / "votes"
    with DatasetWriter(out, "votes", ["g", "r", "z"], 16, 0.262, 22.5, ["a", "b"], None, votes=schema) as w:
        rows = [{"class": i % 2, "smooth-or-featured_smooth": 30 - i, "smooth-or-featured_featured-or-disk": 10 + i,
                 "bar_yes": i, "bar_no": 10} for i in range(20)]
        w.add(rng.normal(size=(20, 3, 16, 16)).astype(np.float32), rows=rows)
    dm = GalaxyDataModule({"path": str(out), "split": {"train": 0.5, "val": 0.25, "test": 0.25}}, requires=["votes"], progress=False)
    item = dm.dataset("train")[0]
    i = item["id"]
    assert item["votes"].tolist() == [30 - i, 10 + i, i, 10]
    assert dm.info().stats["vote_schema"] == schema
