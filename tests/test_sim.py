"""The GalSim simulator (galframe.sim) and the dataset writer (galframe.data.format)."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")
pytest.importorskip("galsim")

from galframe.data.format import CATALOG, MANIFEST, DatasetExistsError, DatasetWriter  # noqa: E402
from galframe.errors import ConfigError, DataError  # noqa: E402
from galframe.sim import cache_key, cached_dataset, desi, resolve_config, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["smooth", "featured_disk", "edge_on", "irregular", "merger", "star"]


def make_cfg(n: int = 24, seed: int = 0, **sim) -> dict:
    cfg = {
        "name": "simtest",
        "path": None,
        "n": n,
        "seed": seed,
        "bands": ["g", "r", "z"],
        "image_size": 64,
        "sim": {
            "generator": "desi",
            "pixel_scale": 0.262,
            "zeropoint": 22.5,
            "classes": list(CLASSES),
            "class_fractions": [0.34, 0.30, 0.12, 0.12, 0.04, 0.08],
            "mag_r": [16.0, 19.5],
            "psf": {"beta": 3.5, "fwhm": {"g": 1.30, "r": 1.20, "z": 1.10}, "seeing_scatter": 0.15},
            "depth": {"g": 24.0, "r": 23.4, "z": 22.5},
            "depth_scatter": 0.25,
            "workers": None,
            "shard_size": 2048,
        },
        "batch_size": 64,
    }
    cfg["sim"].update(sim)
    return cfg


def read_all(root: Path) -> tuple[dict, "pd.DataFrame", np.ndarray, np.ndarray]:
    manifest = json.loads((root / MANIFEST).read_text())
    catalog = pd.read_parquet(root / CATALOG)
    images, clean = [], []
    for shard in manifest["shards"]:
        with h5py.File(root / shard["file"], "r") as h5:
            images.append(h5["images"][:])
            clean.append(h5["clean"][:])
    return manifest, catalog, np.concatenate(images), np.concatenate(clean)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """60 objects, shards of 25 (so three shards), 2 workers."""
    out = tmp_path_factory.mktemp("sim") / "ds60"
    return simulate(make_cfg(n=60, shard_size=25), out, workers=2, progress=False)


# ---------------------------------------------------------------------------------------------
# format, shapes, truth
# ---------------------------------------------------------------------------------------------
def test_manifest_shards_and_catalog(dataset):
    manifest, cat, images, clean = read_all(dataset)
    assert manifest["format"] == "galframe-dataset" and manifest["version"] == 1
    assert manifest["name"] == "simtest"
    assert manifest["bands"] == ["g", "r", "z"]
    assert manifest["image_size"] == 64 and manifest["pixel_scale"] == 0.262
    assert manifest["zeropoint"] == 22.5 and manifest["units"] == "nanomaggies"
    assert manifest["classes"] == CLASSES
    assert manifest["n"] == 60 and manifest["has_clean"] is True
    assert manifest["shards"] == [
        {"file": "shard-00000.h5", "n": 25},
        {"file": "shard-00001.h5", "n": 25},
        {"file": "shard-00002.h5", "n": 10},
    ]
    assert manifest["config"]["n"] == 60 and manifest["config"]["sim"]["classes"] == CLASSES
    assert "T" in manifest["created"]
    assert images.shape == clean.shape == (60, 3, 64, 64)
    assert images.dtype == clean.dtype == np.float32
    assert np.isfinite(images).all() and np.isfinite(clean).all()
    with h5py.File(dataset / "shard-00001.h5", "r") as h5:
        assert h5["images"].chunks == (1, 3, 64, 64) and h5["clean"].chunks == (1, 3, 64, 64)
        assert h5["ids"].dtype == np.int64 and list(h5["ids"][:]) == list(range(25, 50))
        assert [str(b) for b in h5.attrs["bands"]] == ["g", "r", "z"]
    assert list(cat.columns[:5]) == ["id", "shard", "index", "class", "class_name"]
    truth = ["sersic_n", "half_light_radius", "axis_ratio", "position_angle", "mag_g", "mag_r", "mag_z",
             "bulge_to_total", "psf_fwhm_g", "psf_fwhm_r", "psf_fwhm_z", "sky_sigma_g", "sky_sigma_r", "sky_sigma_z"]
    assert set(truth) <= set(cat.columns)
    assert cat["id"].dtype == np.int64 and cat["shard"].dtype == np.int32
    assert cat["index"].dtype == np.int32 and cat["class"].dtype == np.int16
    assert list(cat["id"]) == list(range(60))
    assert list(cat["shard"]) == [0] * 25 + [1] * 25 + [2] * 10
    assert list(cat["index"]) == list(range(25)) * 2 + list(range(10))
    assert (cat["class_name"] == [CLASSES[c] for c in cat["class"]]).all()
    # nothing but the dataset in its parent: the temporary directory was renamed away
    assert [p.name for p in dataset.parent.iterdir()] == [dataset.name]


def test_truth_values(dataset):
    _, cat, _, _ = read_all(dataset)
    stars, gals = cat[cat.class_name == "star"], cat[cat.class_name != "star"]
    assert len(stars) and len(gals)
    assert stars["sersic_n"].isna().all() and stars["bulge_to_total"].isna().all()
    assert (stars["half_light_radius"] == 0).all()
    assert gals["sersic_n"].between(0.3, 6.2).all()
    assert gals["half_light_radius"].between(0.2, 8.0).all()
    assert gals["bulge_to_total"].between(0, 1).all()
    assert (cat.loc[cat.class_name == "smooth", "bulge_to_total"] == 1).all()
    assert cat["axis_ratio"].between(0.01, 1.0).all()
    assert ((cat["position_angle"] >= 0) & (cat["position_angle"] < 180)).all()
    assert cat["mag_r"].between(16.0, 19.5).all()
    assert cat.loc[cat.class_name == "smooth", "mag_g"].sub(cat["mag_r"]).dropna().between(0.6, 1.3).all()
    for band, fwhm in (("g", 1.30), ("r", 1.20), ("z", 1.10)):
        assert cat[f"psf_fwhm_{band}"].between(0.5 * fwhm, 2.0 * fwhm).all()
    # one seeing factor per object: the FWHM ratios between bands are the base ratios
    assert np.allclose(cat["psf_fwhm_g"] / cat["psf_fwhm_r"], 1.30 / 1.20)
    # the 5-sigma depth formula at the nominal depth and seeing (r: 23.4 mag, 1.2")
    assert desi.sky_sigma(23.4, 1.2, 0.262) == pytest.approx(0.0112, rel=0.02)
    assert cat["sky_sigma_r"].between(0.004, 0.03).all()


def test_flux_and_noise(dataset):
    _, cat, images, clean = read_all(dataset)
    flux_r = 10 ** ((22.5 - cat["mag_r"].to_numpy()) / 2.5)
    ratio = clean[:, 1].sum(axis=(1, 2)) / flux_r
    stars = (cat.class_name == "star").to_numpy()
    assert np.allclose(ratio[stars], 1.0, atol=1e-5)  # bilinear split keeps all the flux
    compact = (cat["half_light_radius"] < 1.2).to_numpy() & ~stars
    assert compact.sum() >= 10
    assert np.median(ratio[compact]) == pytest.approx(1.0, abs=0.005)
    assert np.all(np.abs(ratio[compact] - 1) < 0.04)
    assert np.all(ratio < 1.0 + 1e-4)  # never more flux than the truth
    # observed minus noise-free is PSF-blurred noise-free plus noise: totals agree too
    obs_ratio = images[:, 1].sum(axis=(1, 2)) / flux_r
    assert np.median(obs_ratio[compact]) == pytest.approx(1.0, abs=0.02)
    # sky noise: an empty 10x10 corner has the catalogued std
    small = (cat["half_light_radius"] < 1.5).to_numpy()
    for k, band in enumerate("grz"):
        std = images[small, k, :10, :10].std(axis=(1, 2))
        rel = std / cat.loc[small, f"sky_sigma_{band}"].to_numpy()
        assert np.median(rel) == pytest.approx(1.0, abs=0.1)
    assert np.all(clean[:, :, :4, :4][stars] == 0)  # noise-free really is


def test_classes_look_like_themselves(dataset):
    """Cheap morphology checks on the clean r images."""
    _, cat, _, clean = read_all(dataset)
    for row, img in zip(cat.itertuples(), clean[:, 1]):
        if row.class_name == "star":
            assert (img > 0).sum() <= 4
            continue
        y, x = np.indices(img.shape)
        w = img.clip(min=0)
        f = w.sum()
        cx, cy = (w * x).sum() / f, (w * y).sum() / f
        qxx, qyy, qxy = (w * (x - cx) ** 2).sum() / f, (w * (y - cy) ** 2).sum() / f, (w * (x - cx) * (y - cy)).sum() / f
        root = math.sqrt(((qxx - qyy) / 2) ** 2 + qxy**2)
        q = math.sqrt(max((qxx + qyy) / 2 - root, 0) / ((qxx + qyy) / 2 + root))
        if row.class_name == "edge_on":
            assert q < 0.45, (row.id, q)
        if row.class_name in ("smooth", "edge_on"):
            # moments agree with the catalogued position angle (when elongated enough to tell)
            if q < 0.8:
                pa = math.degrees(0.5 * math.atan2(2 * qxy, qxx - qyy)) % 180
                diff = abs(pa - row.position_angle) % 180
                assert min(diff, 180 - diff) < 12, (row.id, pa, row.position_angle)


def test_object_class_fractions():
    run = resolve_config(make_cfg(n=5000))
    counts = np.bincount([desi.object_class(run, i) for i in range(5000)], minlength=6) / 5000
    assert np.allclose(counts, [0.34, 0.30, 0.12, 0.12, 0.04, 0.08], atol=0.02)
    assert counts.argmin() == CLASSES.index("merger")


def test_dataset_classes_match_the_class_draw(dataset):
    _, cat, _, _ = read_all(dataset)
    run = resolve_config(make_cfg(n=60))
    assert list(cat["class"]) == [desi.object_class(run, i) for i in range(60)]
    assert cat["class_name"].nunique() >= 5


def test_subset_of_classes_and_bands(tmp_path):
    cfg = make_cfg(n=12, classes=["star", "edge_on"], class_fractions=[0.5, 0.5])
    cfg["bands"] = ["r"]
    cfg["image_size"] = 32
    manifest, cat, images, clean = read_all(simulate(cfg, tmp_path / "sub", workers=1, progress=False))
    assert manifest["classes"] == ["star", "edge_on"] and manifest["bands"] == ["r"]
    assert images.shape == (12, 1, 32, 32)
    assert set(cat["class_name"]) <= {"star", "edge_on"}
    assert "psf_fwhm_g" not in cat and "psf_fwhm_r" in cat
    assert (cat["class"] == cat["class_name"].map({"star": 0, "edge_on": 1})).all()


# ---------------------------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------------------------
def test_same_seed_same_data_regardless_of_workers(tmp_path, dataset):
    cfg = make_cfg(n=60, shard_size=25)
    _, cat1, img1, cl1 = read_all(simulate(cfg, tmp_path / "w1", workers=1, progress=False))
    _, cat2, img2, cl2 = read_all(dataset)  # same config, 2 workers
    assert np.array_equal(img1, img2) and np.array_equal(cl1, cl2)
    pd.testing.assert_frame_equal(cat1, cat2)
    # object i does not depend on n either
    _, cat3, img3, _ = read_all(simulate(make_cfg(n=10), tmp_path / "n10", workers=2, progress=False))
    assert np.array_equal(img3, img1[:10])
    pd.testing.assert_frame_equal(cat3.drop(columns=["shard", "index"]), cat1.iloc[:10].drop(columns=["shard", "index"]))


def test_different_seed_different_data(tmp_path, dataset):
    _, cat_a, img_a, _ = read_all(dataset)
    _, cat_b, img_b, _ = read_all(simulate(make_cfg(n=10, seed=1), tmp_path / "s1", workers=2, progress=False))
    assert not np.array_equal(img_a[:10], img_b)
    assert not np.allclose(cat_a["mag_r"][:10], cat_b["mag_r"])


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def test_cached_dataset_reuses(tmp_path, monkeypatch):
    import galframe.sim as sim

    cfg = make_cfg(n=8)
    path = cached_dataset(cfg, workers=1, progress=False)
    assert path.parent == tmp_path / "cache" / "datasets"
    assert path.name == f"simtest-{cache_key(cfg)[:12]}"
    mtime = (path / MANIFEST).stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("simulated again")

    monkeypatch.setattr(sim, "simulate", boom)
    assert cached_dataset(copy.deepcopy(cfg), progress=False) == path
    assert (path / MANIFEST).stat().st_mtime_ns == mtime
    # the key ignores workers and defaults spelled out, but not the content
    same = make_cfg(n=8, workers=7, sersic_trunc=desi.DEFAULTS["sersic_trunc"])
    assert cache_key(same) == cache_key(cfg)
    assert cache_key(make_cfg(n=8, seed=1)) != cache_key(cfg)
    assert cache_key(make_cfg(n=8, mag_r=[16.0, 19.0])) != cache_key(cfg)


def test_cached_dataset_accepts_omegaconf(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = make_cfg(n=4)
    path = cached_dataset(omegaconf.OmegaConf.create(cfg), workers=1, progress=False)
    assert cache_key(cfg) == cache_key(omegaconf.OmegaConf.create(cfg))
    assert (path / MANIFEST).exists()


RACE = """
import json, sys
from galframe.sim import cached_dataset
print(cached_dataset(json.loads(sys.argv[1]), workers=1, progress=False))
"""


def test_cached_dataset_race(tmp_path):
    """Two processes simulating the same dataset at once: one wins, both get a good dataset."""
    cfg = make_cfg(n=6)
    env = dict(os.environ, GALFRAME_CACHE=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, json.dumps(cfg)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    paths = [out.strip().splitlines()[-1] for out, _ in outs]
    assert paths[0] == paths[1]
    manifest, cat, images, _ = read_all(Path(paths[0]))
    assert manifest["n"] == 6 and images.shape[0] == 6 and len(cat) == 6
    leftovers = [p.name for p in Path(paths[0]).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cached_dataset_losing_the_rename(tmp_path, monkeypatch):
    import galframe.sim as sim

    real = sim.simulate

    def late(cfg, out_dir, **kwargs):
        real(cfg, out_dir, **kwargs)  # "another process" finishes first ...
        raise DatasetExistsError(f"{out_dir}: exists")  # ... so our rename fails

    monkeypatch.setattr(sim, "simulate", late)
    path = cached_dataset(make_cfg(n=3), workers=1, progress=False)
    assert (path / MANIFEST).exists()


# ---------------------------------------------------------------------------------------------
# errors and interruptions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["sim"].update(classes=["smooth", "spirall"], class_fractions=[0.5, 0.5]), "Unknown class 'spirall'"),
        (lambda c: c["sim"].update(class_fractions=[0.5, 0.5]), "has 2 value(s) but sim.classes has 6"),
        (lambda c: c["sim"].update(class_fractions=[0.5, 0.3, 0.1, 0.1, 0.1, 0.1]), "must sum to 1"),
        (lambda c: c["sim"].update(class_fractions=[1.2, -0.2, 0, 0, 0, 0]), "non-negative"),
        (lambda c: c.update(n=0), "data.n must be at least 1"),
        (lambda c: c.update(n="many"), "data.n must be an integer"),
        (lambda c: c["sim"]["psf"]["fwhm"].pop("z"), "Band 'z' has no entry in sim.psf.fwhm"),
        (lambda c: c["sim"].update(depth={"g": 24.0, "r": 23.4}), "Band 'z' has no entry in sim.depth"),
        (lambda c: c.update(bands=["g", "i"]), "band 'i'"),
        (lambda c: c["sim"].update(generator="hsc"), "Unknown simulation generator 'hsc'"),
        (lambda c: c["sim"].update(class_fraction=[1]), "Did you mean 'class_fractions'"),
        (lambda c: c["sim"].update(mag_r=[20, 18]), "sim.mag_r"),
        (lambda c: c.update(image_size=63), "even number"),
        (lambda c: c.pop("sim"), "no 'sim' block"),
    ],
)
def test_config_errors(tmp_path, change, message):
    cfg = make_cfg(n=4)
    change(cfg)
    with pytest.raises(ConfigError) as err:
        simulate(cfg, tmp_path / "out", workers=1, progress=False)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_refuses_non_empty_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=re.escape(str(out))):
        simulate(make_cfg(n=2), out, workers=1, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (simulate(make_cfg(n=2), empty, workers=1, progress=False) / MANIFEST).exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_simulation_leaves_no_dataset(tmp_path, monkeypatch, error):
    real = desi.simulate_object

    def flaky(cfg, i):
        if i == 9:
            raise error("stop")
        return real(cfg, i)

    monkeypatch.setattr(desi, "simulate_object", flaky)
    out = tmp_path / "out"
    with pytest.raises(error):
        simulate(make_cfg(n=40), out, workers=1, progress=False)
    assert not (out / MANIFEST).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # neither the dataset nor its temporary


def test_import_is_light():
    code = (
        "import sys, galframe; assert 'galframe.sim' not in sys.modules, 'import galframe imports galframe.sim'; "
        "import galframe.sim; assert 'galsim' not in sys.modules, 'galframe.sim imports galsim'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------------------------
# the writer on its own
# ---------------------------------------------------------------------------------------------
def test_writer_without_clean_and_sharding(tmp_path):
    out = tmp_path / "w"
    with DatasetWriter(out, "real", ["r", "i"], 8, 0.2, 27.0, None, {"reader": "test"}, shard_size=5) as w:
        for start in (0, 3, 10):  # batches of 3, 7, 2 across shards of 5
            count = {0: 3, 3: 7, 10: 2}[start]
            imgs = np.arange(start, start + count, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 8, 8))
            w.add(imgs, None, [{"source_id": 100 + start + k, "ra": 1.5} for k in range(count)])
        path = w.close()
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["has_clean"] is False and manifest["classes"] == [] and manifest["n"] == 12
    assert [s["n"] for s in manifest["shards"]] == [5, 5, 2]
    assert manifest["config"] == {"reader": "test"}
    cat = pd.read_parquet(path / CATALOG)
    assert list(cat.columns) == ["id", "shard", "index", "source_id", "ra"]
    assert list(cat["source_id"]) == list(range(100, 112))
    for row in cat.itertuples():
        with h5py.File(path / manifest["shards"][row.shard]["file"], "r") as h5:
            assert "clean" not in h5
            assert h5["ids"][row.index] == row.id
            assert h5["images"][row.index][0, 0, 0] == row.id  # batch values follow their object


def test_writer_errors_and_abort(tmp_path):
    out = tmp_path / "w"
    with pytest.raises(DataError, match="shape"):
        with DatasetWriter(out, "x", ["g"], 4, 0.2, 22.5, [], {}) as w:
            w.add(np.zeros((2, 1, 4, 4)), None, [{}, {}])
            w.add(np.zeros((2, 1, 5, 5)), None, [{}, {}])
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="must not set"):
        with DatasetWriter(out, "x", ["g"], 4, 0.2, 22.5, [], {}) as w:
            w.add(np.zeros((1, 1, 4, 4)), None, [{"id": 5}])
    with pytest.raises(DataError, match="every batch"):
        with DatasetWriter(out, "x", ["g"], 4, 0.2, 22.5, [], {}) as w:
            w.add(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), [{}])
            w.add(np.zeros((1, 1, 4, 4)), None, [{}])
    assert list(tmp_path.iterdir()) == []


def test_writer_loses_a_race(tmp_path):
    out = tmp_path / "w"
    first = DatasetWriter(out, "a", ["g"], 4, 0.2, 22.5, [], {})
    second = DatasetWriter(out, "b", ["g"], 4, 0.2, 22.5, [], {})
    for w in (first, second):
        w.add(np.ones((1, 1, 4, 4)), None, [{}])
    first.close()
    with pytest.raises(DatasetExistsError):
        second.close()
    assert json.loads((out / MANIFEST).read_text())["name"] == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
def test_points_match_galsim_deltas():
    import galsim

    from galframe.sim._points import Points

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(0, 1.5, 30), rng.normal(0, 1.0, 30), rng.uniform(0.5, 1.5, 30)
    ref = galsim.Sum([galsim.DeltaFunction(flux=f).shift(a, b) for a, b, f in zip(x, y, w)])
    pts = Points(x, y, w)
    psf, blob = galsim.Moffat(beta=3.5, fwhm=1.2), galsim.Gaussian(sigma=0.15)
    for make in (
        lambda p: galsim.Convolve(p, blob, psf),
        lambda p: galsim.Convolve(p.shear(g1=0.2, g2=-0.3).rotate(0.7 * galsim.radians).shift(0.5, -0.3) * 2, blob),
    ):
        a = make(ref).drawImage(nx=48, ny=48, scale=0.262, offset=(0.3, -0.1)).array
        b = make(pts).drawImage(nx=48, ny=48, scale=0.262, offset=(0.3, -0.1)).array
        assert np.allclose(a, b, atol=1e-6 * np.abs(a).max())
    assert pts.flux == pytest.approx(w.sum())


def test_half_light_radius_helper():
    import galsim

    img = galsim.Exponential(half_light_radius=1.0).drawImage(nx=256, ny=256, scale=0.05).array
    assert desi._hlr(img, 0.05, 127.5, 127.5, 1.0) == pytest.approx(1.0, rel=0.02)
    assert math.isnan(desi._hlr(img * 0.3, 0.05, 127.5, 127.5, 1.0))  # half the light is not there


def test_a_generator_is_a_simulation_plugin(tmp_path, monkeypatch) -> None:
    """``sim.generator`` names a registry plugin of kind simulation: the built-in ones, or one a package adds."""
    import types

    import numpy as np
    import pandas as pd

    from galframe import registry
    from galframe.data.datamodule import read_manifest

    assert {"desi", "fields", "galaxy10"} <= set(registry.names("simulation"))
    assert registry.load("simulation", "desi") is desi

    def toy_range(cfg, start, stop):
        n, size = stop - start, cfg["image_size"]
        images = np.full((n, len(cfg["bands"]), size, size), float(cfg["sim"]["level"]), dtype=np.float32)
        return start, images, images.copy(), [{"class": 0, "class_name": "blob", "k": start + k} for k in range(n)]

    toy = types.SimpleNamespace(resolve=lambda sim, bands: {"generator": "toy", "level": float(sim.get("level", 1.0)),
                                                            "classes": ["blob"], "pixel_scale": 0.2, "zeropoint": 22.5},
                                simulate_range=toy_range)
    found = dict(registry._discover())
    found[("simulation", "toy")] = registry.PluginInfo("simulation", "toy", "toy_plugin", "toy-dist", "0.1",
                                                       types.SimpleNamespace(load=lambda: toy))
    monkeypatch.setattr(registry, "_discover", lambda: found)
    cfg = {"name": "toy", "n": 5, "seed": 0, "bands": ["r"], "image_size": 8, "sim": {"generator": "toy", "level": 2.5}}
    out = simulate(cfg, tmp_path / "toy", workers=1, progress=False)
    assert pd.read_parquet(out / CATALOG)["k"].tolist() == [0, 1, 2, 3, 4]
    assert read_manifest(out)["config"]["sim"]["level"] == 2.5
    with pytest.raises(ConfigError, match="Unknown simulation generator 'tyo'.*Did you mean 'toy'"):
        resolve_config({**cfg, "sim": {"generator": "tyo"}})
