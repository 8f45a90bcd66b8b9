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
