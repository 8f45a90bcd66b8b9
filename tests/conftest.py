"""Shared fixtures: a small simulated dataset made once per test session, isolated caches and run dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = "offline"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A galframe cache for the whole session (GALFRAME_CACHE)."""
    path = tmp_path_factory.mktemp("galframe-cache")
    os.environ["GALFRAME_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset(cache_dir, tmp_path_factory) -> Path:
    """A 300-object simulated DESI-like dataset (every class present), written by the real simulator."""
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", ["data.n=300", "data.seed=1"])["data"]
    out = tmp_path_factory.mktemp("data") / "tiny"
    return simulate(data, out, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset_128(cache_dir, tmp_path_factory) -> Path:
    """24 simulated 128 x 128 stamps, for backbones built for the reference LVM input size."""
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", ["data.n=24", "data.seed=2", "data.image_size=128"])["data"]
    return simulate(data, tmp_path_factory.mktemp("data") / "tiny128", progress=False)


@pytest.fixture()
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("GALFRAME_RUNS", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_fields(cache_dir, tmp_path_factory):
    """24 simulated 128 x 128 fields with galaxies, stars and blends, written by the real simulator."""
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", ["data=sim_fields", "data.n=24", "data.seed=3"])["data"]
    return simulate(data, tmp_path_factory.mktemp("data") / "fields", progress=False, workers=1)
