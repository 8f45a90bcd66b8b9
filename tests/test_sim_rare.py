"""Rare objects injected into the galaxy10 simulator (sim.rare): rates, truth flags, the physics of the
added light (a lens's arcs sit on its Einstein radius, a ring is detached from its core), and nothing
changes when it is off."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("galsim")

from galframe.errors import ConfigError  # noqa: E402
from galframe.sim import cache_key, galaxy10, rare, resolve_config, simulate  # noqa: E402

from .helpers import compose_train  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))


def data_cfg(n: int = 12, seed: int = 3, **rates: object) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_train("data=sim_galaxy10", f"data.n={n}", f"data.seed={seed}").data, resolve=True)
    cfg["sim"]["rare"] = dict(rates)
    return cfg


def test_off_by_default_and_the_cache_key_is_unchanged() -> None:
    plain = data_cfg()
    plain["sim"].pop("rare")
    assert "rare" not in resolve_config(plain)["sim"]
    assert cache_key(data_cfg(lens=0.0, ring=0.0)) == cache_key(plain)
    assert cache_key(data_cfg(lens=0.001)) != cache_key(plain)
    assert resolve_config(data_cfg(lens=0.001))["sim"]["rare"]["lens"] == 0.001


@pytest.mark.parametrize("rates, message", [({"lens": 2}, "sim.rare.lens"), ({"lenz": 0.1}, "sim.rare.lenz"),
                                            ({"lens": 0.6, "ring": 0.6}, "add up to more than 1"),
                                            ({"lens": 0.1, "einstein_radius": [3, 1]}, "sim.rare.einstein_radius")])
def test_bad_settings_name_the_key(rates, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(data_cfg(**rates))


def test_injected_rates_follow_the_config() -> None:
    spec = resolve_config(data_cfg(lens=0.001, ring=0.004, polar=0.002))["sim"]["rare"]
    n = 200_000
    kinds = pd.Series([rare.pick(3, i, spec)[0] for i in range(n)]).value_counts()
    for kind, rate in (("lens", 0.001), ("ring", 0.004), ("polar", 0.002)):
        sd = math.sqrt(n * rate * (1 - rate))
        assert abs(kinds.get(kind, 0) - n * rate) < 4 * sd, (kind, kinds.get(kind, 0))
    assert kinds[""] == n - kinds.get("lens", 0) - kinds.get("ring", 0) - kinds.get("polar", 0)


def test_truth_flags_in_the_catalog_and_the_other_objects_unchanged(tmp_path) -> None:
    cfg = data_cfg(n=16, lens=0.25, ring=0.2, polar=0.2)
    with_rare = simulate(cfg, tmp_path / "rare", workers=1, progress=False)
    plain_cfg = data_cfg(n=16)
    without = simulate(plain_cfg, tmp_path / "plain", workers=1, progress=False)
    cat = pd.read_parquet(with_rare / "catalog.parquet")
    plain = pd.read_parquet(without / "catalog.parquet")
    assert "rare" not in plain.columns
    spec = resolve_config(cfg)["sim"]["rare"]
    expected = [rare.pick(cfg["seed"], i, spec)[0] for i in range(16)]
    assert list(cat["rare"].fillna("")) == expected and {"lens", "ring", "polar", ""} <= set(expected)
    flagged = cat["rare"] != ""
    assert (cat.loc[flagged, "rare_flux_fraction"] > 0).all() and (cat.loc[~flagged, "rare_flux_fraction"] == 0).all()
    assert cat.loc[cat["rare"] == "lens", "rare_radius"].between(1.2, 2.8).all()
    # lenses and rings are hosted by smooth galaxies, polar rings by edge-on ones
    assert cat.loc[cat["rare"].isin(["lens", "ring"]), "population"].isin([2, 3]).all()
    assert (cat.loc[cat["rare"] == "polar", "population"] == 9).all()
    # the others are the very same objects as without sim.rare
    import h5py

    with h5py.File(with_rare / "shard-00000.h5", "r") as a, h5py.File(without / "shard-00000.h5", "r") as b:
        images_a, images_b = a["images"][:], b["images"][:]
    mask = flagged.to_numpy()
    np.testing.assert_array_equal(images_a[~mask], images_b[~mask])
    assert all(not np.array_equal(x, y) for x, y in zip(images_a[mask], images_b[mask]))
    pd.testing.assert_series_equal(cat.loc[~flagged, "mag_r"], plain.loc[~flagged, "mag_r"])


def _difference(kind: str, flux_key: str, fraction: float, i: int = 5) -> tuple[np.ndarray, dict]:
    """(r image with the rare light - the same object without it, its catalog row)."""
    on = resolve_config(data_cfg(**{kind: 1.0, flux_key: [fraction, fraction]}))
    off = resolve_config(data_cfg(**{kind: 1.0, flux_key: [0.0, 0.0]}))
    image_on, _, row = galaxy10.simulate_object(on, i)
    image_off, _, row_off = galaxy10.simulate_object(off, i)
    assert row["rare"] == row_off["rare"] == kind and row["mag_r"] == row_off["mag_r"]
    r = on["bands"].index("r")
    return (image_on[r] - image_off[r]).astype(np.float64), row


def _radii(row: dict, size: int = 64) -> np.ndarray:
    """Distance (arcsec) of every pixel from the object's centre."""
    c = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size]
    return np.hypot(x - c - row["offset_x"], y - c - row["offset_y"]) * 0.262


@pytest.mark.parametrize("i", [5, 6, 7])
def test_a_lens_adds_its_arc_flux_in_an_annulus_at_the_einstein_radius(i) -> None:
    diff, row = _difference("lens", "lens_flux", 0.3, i)
    host = 10.0 ** ((22.5 - row["mag_r"]) / 2.5)
    assert diff.sum() == pytest.approx(0.3 * host, rel=0.08)  # the arcs' flux, nothing else changed
    radius = _radii(row)
    theta_e = row["rare_radius"]
    # an SIS images a source at beta from the axis at theta_E +- beta: the annulus that wide, plus the seeing
    annulus = np.abs(radius - theta_e) < row["lens_source_offset"] + 1.0
    assert diff[annulus].sum() > 0.8 * diff.sum()
    assert diff[radius < 0.35 * theta_e].sum() < 0.1 * diff.sum()  # an SIS leaves no light at the centre


def test_a_ring_is_detached_from_its_core() -> None:
    diff, row = _difference("ring", "ring_flux", 0.4)
    host = 10.0 ** ((22.5 - row["mag_r"]) / 2.5)
    assert diff.sum() == pytest.approx(0.4 * host, rel=0.08)
    radius = _radii(row)
    ring = row["rare_radius"]
    # inclined at most 60 deg: every point of the ring lies between R/2 and R from the centre
    assert diff[(radius > 0.5 * ring - 0.8) & (radius < ring + 0.8)].sum() > 0.85 * diff.sum()
    assert diff[radius < 0.3 * ring].sum() < 0.05 * diff.sum()
