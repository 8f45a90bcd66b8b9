"""`galframe predict`: a trained model over survey files, rows and rejects for a mixed directory of good
and bad files, strict mode, resume after a kill, FITS tables, zoo names, the detection hook on a tiled
mosaic, and the Hubble Deep Field (a real image no one here made) through the JPEG path."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from galframe.errors import ConfigError, DataError
from galframe.checkpoints import load_model, register_model, resolve_checkpoint
from galframe.predict import Predictor
from galframe.readers import build_reader
from tests.helpers import ROOT, compose_train

BANDS = ["g", "r", "z"]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> Path:
    """A run directory of a tiny lvm_tiny model (classify + regress) trained for a few steps."""
    from galframe.train import run

    run_dir = tmp_path_factory.mktemp("predict-run")
    cfg = compose_train(
        f"data.path={tiny_dataset}", "tasks=[classify,regress]", "data.batch_size=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.progress_bar=false", "logger=none",
        "evaluate=false",
    )
    run(cfg, run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def model(trained):
    return load_model(trained)[0]


@pytest.fixture(scope="module")
def sims(tiny_dataset):
    with h5py.File(Path(tiny_dataset) / "shard-00000.h5", "r") as h5:
        return np.asarray(h5["images"][:64], dtype=np.float32)


def _wcs(ra: float, dec: float, n: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
    w.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    return w


def _cube(path: Path, image: np.ndarray, ra: float = 150.0, dec: float = 2.0, bands: str = "grz") -> None:
    header = _wcs(ra, dec, image.shape[-1]).to_header()
    header["BANDS"], header["BUNIT"] = bands, "nanomaggy"
    fits.PrimaryHDU(image, header).writeto(path)


def _mixed_directory(root: Path, sims: np.ndarray) -> dict:
    """Six good cutouts of three layouts and seven bad files; returns what a reader should make of them."""
    root.mkdir()
    for k in range(5):
        _cube(root / f"obj{k:02d}.fits", sims[k], ra=150.0 + k * 0.01)
    hdus = [fits.PrimaryHDU()]  # one HDU per band, counts of zero point 27.5
    for b, band in enumerate(BANDS):
        h = _wcs(151.0, 2.5, 64).to_header()
        h["BAND"], h["MAGZERO"] = band, 27.5
        hdus.append(fits.ImageHDU(sims[5][b] * 100.0, h, name=f"IMAGE_{band.upper()}"))
    fits.HDUList(hdus).writeto(root / "obj05.fits")
    big = np.zeros((3, 80, 80), np.float32)
    big[:, 8:72, 8:72] = sims[6]
    big[0, 30:33, 30] = np.nan  # three NaN pixels and an inf inside the crop
    big[2, 40, 41] = np.inf
    _cube(root / "obj06.fits", big, ra=152.0)

    data = (root / "obj00.fits").read_bytes()
    (root / "trunc.fits").write_bytes(data[: len(data) // 2])
    _cube(root / "wrongshape.fits", sims[7][:2], bands="grz")
    _cube(root / "allnan.fits", np.full((3, 64, 64), np.nan, np.float32))
    _cube(root / "gr_only.fits", sims[8][:2], bands="gr")
    os.symlink(root / "gone" / "nowhere.fits", root / "link.fits")
    _cube(root / "tiny.fits", sims[9][:, :32, :32])
    (root / "notes.fits").write_text("SIMPLE? no: this is a text file\n")
    return {
        "good": [f"obj{k:02d}" for k in range(7)],
        "rejects": {
            "trunc": "truncated or corrupt FITS",
            "wrongshape": "wrong shape",
            "allnan": "are NaN/inf",
            "gr_only": "missing band(s) ['z']",
            "link": "file not found",
            "tiny": "smaller than the model's 64x64",
            "notes": "unreadable FITS",
        },
    }


def _predict(model, data: dict, out: Path, **options) -> dict:
    reader, core = build_reader(data)
    return Predictor(model, reader, core, out, progress=False, log=lambda s: None, **options).run()


def test_mixed_directory_gives_the_right_rows_and_rejects(model, sims, tmp_path) -> None:
    expect = _mixed_directory(tmp_path / "cutouts", sims)
    summary = _predict(model, {"plugin": "fits", "path": str(tmp_path / "cutouts"), "shard_size": 4}, tmp_path / "cat.parquet",
                       batch_size=3)
    assert summary["rows"] == 7 and summary["rejects"] == 7 and summary["shards"] == 4
    cat = pd.read_parquet(tmp_path / "cat.parquet")
    assert cat["id"].tolist() == expect["good"]
    rejects = pd.read_csv(tmp_path / "cat.rejects.csv")
    assert dict(zip(rejects["id"], rejects["reason"])).keys() == expect["rejects"].keys()
    for oid, reason in zip(rejects["id"], rejects["reason"]):
        assert expect["rejects"][oid] in reason, (oid, reason)
    assert rejects["source"].str.endswith(".fits").all()

    classes = model.data_info.classes
    probs = cat[[f"classify_p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    for p in ("sersic_n", "mag_r", "axis_ratio"):  # every regression output comes with its uncertainty
        assert (cat[f"{p}_sigma"] > 0).all() and np.isfinite(cat[f"{p}_mean"]).all()
    assert cat["ra"].tolist()[:5] == pytest.approx([150.0 + k * 0.01 for k in range(5)], abs=1e-9)
    assert cat.set_index("id").loc["obj05", "ra"] == pytest.approx(151.0)
    assert cat["n_bad_pixels"].tolist() == [0, 0, 0, 0, 0, 0, 4]

    # the catalog is what the model gives for the same flux: one scaling path for simulations and files
    stamps = np.stack([sims[k] for k in range(6)] + [np.where(np.isfinite(_nan_stamp(sims[6])), _nan_stamp(sims[6]), 0.0)])
    with torch.no_grad():
        logits = model(torch.from_numpy(stamps.astype(np.float32)))["classify"]["logits"]
    np.testing.assert_allclose(probs, logits.softmax(-1).numpy(), atol=2e-5)

    fits_out = _predict(model, {"plugin": "fits", "path": str(tmp_path / "cutouts"), "shard_size": 4}, tmp_path / "cat.fits")
    assert fits_out["rows"] == 7
    from astropy.table import Table

    table = Table.read(tmp_path / "cat.fits")
    assert [str(v) for v in table["id"]] == expect["good"]
    np.testing.assert_allclose(np.asarray(table["mag_r_sigma"]), cat["mag_r_sigma"].to_numpy(), rtol=1e-6)
    assert [str(v) for v in table["classify_class"]] == cat["classify_class"].tolist()

    with pytest.raises(ConfigError, match="cat.parquet: exists"):
        _predict(model, {"plugin": "fits", "path": str(tmp_path / "cutouts")}, tmp_path / "cat.parquet")


def _one_by_one(stamps, bands, size, **core):
    """The reference path: every stamp through conform on its own, the kept fluxes stacked."""
    from galframe.readers.base import StampError, conform

    results = []
    for st in stamps:
        try:
            results.append(conform(st, bands, size, **core))
        except StampError as exc:
            results.append(exc)
    ok = [r.flux for r in results if not isinstance(r, Exception)]
    return results, (np.stack(ok) if ok else None)


@pytest.mark.parametrize("fill", ["zero", "median"])
def test_the_fast_path_writes_the_reference_catalog(model, sims, tmp_path, monkeypatch, fill) -> None:
    """Read ahead by a thread and conformed as whole arrays (the default) against read in turn and conformed
    one object at a time: the same rows (to 1e-5), the same n_bad_pixels, the same rejects in the same order."""
    import galframe.readers.base as base

    root = tmp_path / "cutouts"
    _mixed_directory(root, sims)
    for k in range(10, 16):  # a run of one layout, the vectorised path's case, with NaN/inf pixels in two of them
        _cube(root / f"obj{k:02d}.fits", _nan_stamp(sims[k]) if k % 3 == 0 else sims[k], ra=153.0 + k * 0.01)
    _cube(root / "obj16.fits", np.where(np.arange(64)[None, :, None] < 40, np.nan, sims[16]).astype(np.float32))
    data = {"plugin": "fits", "path": str(root), "shard_size": 8, "fill": fill}
    fast = _predict(model, data, tmp_path / "fast.parquet", batch_size=4, read_ahead=True)
    monkeypatch.setattr(base, "conform_many", _one_by_one)
    ref = _predict(model, data, tmp_path / "ref.parquet", batch_size=4, read_ahead=False)
    assert fast["rows"] == ref["rows"] == 13 and fast["rejects"] == ref["rejects"] == 8
    a, b = pd.read_parquet(tmp_path / "fast.parquet"), pd.read_parquet(tmp_path / "ref.parquet")
    assert a["id"].tolist() == b["id"].tolist() and a["n_bad_pixels"].tolist() == b["n_bad_pixels"].tolist()
    assert a.set_index("id").loc["obj12", "n_bad_pixels"] == 4
    numeric = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), rtol=1e-5, atol=1e-6)
    ra, rb = pd.read_csv(tmp_path / "fast.rejects.csv"), pd.read_csv(tmp_path / "ref.rejects.csv")
    pd.testing.assert_frame_equal(ra, rb)
    assert "obj16" in ra["id"].tolist()  # too many bad pixels: worded as conform words it
    assert "are NaN/inf" in ra.set_index("id").loc["obj16", "reason"]
    assert {"read", "conform"} <= set(fast["stage_seconds_read_ahead"]) and "network" in fast["stage_seconds"]


def test_conform_many_is_conform_for_every_layout() -> None:
    """Band order, crops, pads, NaN fills and too-bad stamps: the one-array path gives conform's answers."""
    from galframe.readers.base import Stamp, StampError, conform, conform_many

    rng = np.random.default_rng(0)
    cube = rng.normal(0, 1, (5, 3, 70, 70)).astype(np.float32)
    cube[1, 0, 10:12, 30] = np.nan
    cube[3, :, :60] = np.inf
    stamps = [Stamp(str(k), cube[k], ("z", "g", "r")) for k in range(5)]
    for core in ({"fit": "crop"}, {"fit": "pad", "fill": "median"}, {"fit": "exact"}):
        size = 64 if core["fit"] != "pad" else 72
        results, stack = conform_many(stamps, BANDS, size, **core)
        for st, got in zip(stamps, results):
            try:
                want = conform(st, BANDS, size, **core)
            except StampError as exc:
                assert isinstance(got, StampError) and str(got) == str(exc)
                continue
            np.testing.assert_array_equal(got.flux, want.flux)
            assert (got.n_bad, got.offset) == (want.n_bad, want.offset)
            np.testing.assert_allclose(got.sky_sigma, want.sky_sigma)
        kept = [r.flux for r in results if not isinstance(r, Exception)]
        if kept:
            np.testing.assert_array_equal(stack, np.stack(kept))
        else:
            assert stack is None


def _nan_stamp(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[0, 22:25, 22] = np.nan
    out[2, 32, 33] = np.inf
    return out


def test_strict_stops_at_the_first_bad_file(model, sims, tmp_path) -> None:
    _mixed_directory(tmp_path / "cutouts", sims)
    with pytest.raises(DataError, match=r"allnan.fits: .* are NaN/inf.*strict=true stops at the first bad input"):
        _predict(model, {"plugin": "fits", "path": str(tmp_path / "cutouts")}, tmp_path / "cat.parquet", strict=True)
    assert not (tmp_path / "cat.parquet").exists()


class _Crash(Exception):
    pass


def test_resume_skips_finished_shards_and_refuses_other_settings(model, sims, tmp_path) -> None:
    root = tmp_path / "cutouts"
    root.mkdir()
    for k in range(10):
        _cube(root / f"obj{k:02d}.fits", sims[k])
    data = {"plugin": "fits", "path": str(root), "shard_size": 2}
    reader, core = build_reader(data)
    real_read = reader.read
    calls = []

    def crashing(shard):
        calls.append(shard.key)
        if len(calls) == 3:
            raise _Crash()  # dies in the middle of the third shard
        yield from real_read(shard)

    reader.read = crashing
    out = tmp_path / "cat.parquet"
    with pytest.raises(_Crash):
        Predictor(model, reader, core, out, progress=False, log=lambda s: None).run()
    parts = tmp_path / ".cat.parquet.parts"
    assert len((parts / "done.jsonl").read_text().splitlines()) == 2 and not out.exists()

    with pytest.raises(ConfigError, match=r"an unfinished run with other settings \(core\)"):
        _predict(model, {**data, "fit": "pad"}, out)
    messages: list[str] = []
    reader, core = build_reader(data)
    seen = []
    real = reader.read

    def recording(shard):
        seen.append(shard.key)
        yield from real(shard)

    reader.read = recording
    summary = Predictor(model, reader, core, out, progress=False, log=messages.append).run()
    assert summary["skipped_shards"] == 2 and seen == ["000002", "000003", "000004"]
    assert any("skipping 2 finished shard(s)" in m for m in messages)
    assert pd.read_parquet(out)["id"].tolist() == [f"obj{k:02d}" for k in range(10)]
    assert not parts.exists()


def test_resume_after_kill_with_the_command(trained, sims, tmp_path) -> None:
    root = tmp_path / "cutouts"
    root.mkdir()
    for k in range(40):
        _cube(root / f"obj{k:02d}.fits", sims[k])
    out = tmp_path / "cat.parquet"
    args = [sys.executable, "-m", "galframe.cli", "predict", f"ckpt={trained}", "data=fits", f"data.path={root}",
            "data.shard_size=1", f"out={out}", "progress=false", "batch_size=1"]
    done = tmp_path / ".cat.parquet.parts" / "done.jsonl"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.is_file() and len(done.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [json.loads(line)["key"] for line in done.read_text().splitlines() if line.strip().endswith("}")]
    assert 3 <= len(finished) < 40 and not out.exists()
    before = {k: (tmp_path / ".cat.parquet.parts" / f"part-{k}.parquet").stat().st_mtime_ns for k in finished}

    again = subprocess.run([*args, "keep_parts=true"], capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipping {len(finished)} finished shard(s) of 40" in again.stdout
    assert "Wrote 40 rows" in again.stdout
    after = {k: (tmp_path / ".cat.parquet.parts" / f"part-{k}.parquet").stat().st_mtime_ns for k in finished}
    assert after == before  # finished shards were not predicted again
    cat = pd.read_parquet(out)
    assert sorted(cat["id"]) == [f"obj{k:02d}" for k in range(40)]


def test_checkpoints_by_run_dir_file_and_zoo_name(trained, tmp_path, cache_dir) -> None:
    ckpt = resolve_checkpoint(trained)
    assert ckpt.name in ("best.ckpt", "last.ckpt") and resolve_checkpoint(ckpt) == ckpt
    register_model(trained, "tiny-predict-test", "a test model")
    assert resolve_checkpoint("tiny-predict-test").read_bytes() == ckpt.read_bytes()
    model, _ = load_model("tiny-predict-test")
    assert model.bands == BANDS and "classify" in model.tasks
    with pytest.raises(ConfigError, match="Did you mean 'tiny-predict-test'"):
        resolve_checkpoint("tiny-predict-tset")
    index = cache_dir / "zoo" / "index.json"
    entries = json.loads(index.read_text()) + [{"name": "lvm-weights", "file": "lvm-weights.safetensors"}]
    index.write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match="holds backbone weights .* not a trained model"):
        resolve_checkpoint("lvm-weights")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.ckpt: cannot read the checkpoint"):
        load_model(tmp_path / "junk.ckpt")


def test_cli_reader_configs_and_errors(capsys) -> None:
    from galframe.build import compose
    from galframe.cli import main

    cfg = compose("predict", ["data=hdf5", "data.path=x.h5", "ckpt=run", "out=c.parquet"], fresh=True)
    assert cfg.data.plugin == "hdf5" and cfg.data.path == "x.h5" and cfg.data.fit == "crop"
    assert main(["predict", "data=fitz", "ckpt=run", "out=c.parquet"]) == 2
    err = capsys.readouterr().err
    assert "Unknown reader 'fitz'. Did you mean 'fits'?" in err and "Traceback" not in err


# -- the detection hook, on a tiled mosaic ------------------------------------------------------------------
class _BlobDetector:
    """A stand-in for a detection task: connected pixels above a threshold in the r band."""

    finds_sources = True

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict_columns(self, out):
        return {"detect_n": np.array([len(rows) for rows in self.predict_sources(out)])}

    def predict_sources(self, out):
        """As the detect task gives them: per image, one row per object, box x0 y0 x1 y1 (pixel edges)."""
        from scipy import ndimage

        found = []
        for image in out["image"][:, 1].numpy():
            labels, _ = ndimage.label(image > self.threshold)
            found.append([
                {"x0": float(b[1].start), "y0": float(b[0].start), "x1": float(b[1].stop), "y1": float(b[0].stop),
                 "score": float(image[b].max()), "class": "blob"}
                for b in ndimage.find_objects(labels)
            ])
        return found


class _StubModel(torch.nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.bands = BANDS
        self.data_info = SimpleNamespace(image_size=size)
        self.tasks = {"detect": _BlobDetector(0.5)}
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"detect": {"image": x}}


def test_detection_hook_merges_tiles_and_maps_to_the_sky(tmp_path) -> None:
    h, w = 200, 230
    yy, xx = np.mgrid[0:h, 0:w]
    sources = [(20.0, 30.0), (50.3, 60.7), (100.0, 100.0), (150.2, 45.0), (75.0, 190.0), (180.0, 210.0), (101.0, 170.0)]
    image = np.zeros((3, h, w), np.float32)
    for y, x in sources:  # several sit in the overlaps of neighbouring tiles
        image += 5.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))[None]
    wcs = _wcs(30.0, -10.0, w)
    wcs.wcs.crpix = [(w + 1) / 2.0, (h + 1) / 2.0]
    header = wcs.to_header()
    header["BANDS"] = "grz"
    fits.PrimaryHDU(image, header).writeto(tmp_path / "field.fits")
    summary = _predict(_StubModel(64), {"plugin": "mosaic", "path": str(tmp_path / "field.fits"), "overlap": 24}, tmp_path / "tiles.parquet")
    tiles = pd.read_parquet(tmp_path / "tiles.parquet")
    assert tiles["detect_n"].sum() > len(sources)  # the overlaps saw some sources twice or more
    det = pd.read_parquet(tmp_path / "tiles.detections.parquet")
    assert summary["detections"] == len(det) == len(sources)
    got = sorted(zip(det["y"], det["x"]))
    for (y, x), (gy, gx) in zip(sorted(sources), got):
        assert abs(gy - y) < 0.6 and abs(gx - x) < 0.6  # box centres in the image's 0-based pixels
    assert (det["class"] == "blob").all()
    ra, dec = wcs.all_pix2world(det["x"], det["y"], 0)
    np.testing.assert_allclose(det["ra"], ra, atol=1e-9)
    np.testing.assert_allclose(det["dec"], dec, atol=1e-9)


# -- a real image: the Hubble Deep Field, through the JPEG path ------------------------------------------------
def test_hubble_deep_field_through_the_jpeg_reader(model, tmp_path) -> None:
    from PIL import Image
    from skimage import data, filters
    from skimage.feature import peak_local_max

    field = data.hubble_deep_field()  # (872, 1000, 3) uint8, WFPC2 F814W / F606W / F450W as R, G, B
    Image.fromarray(field).save(tmp_path / "hdf.jpg", quality=95)
    base = {"plugin": "image", "path": str(tmp_path / "hdf.jpg"), "white": 0.2}
    summary = _predict(model, {**base, "tile_size": 64, "overlap": 16}, tmp_path / "hdf_tiles.parquet", batch_size=32)
    tiles = pd.read_parquet(tmp_path / "hdf_tiles.parquet")
    assert summary["rows"] == len(tiles) == 18 * 21 and summary["rejects"] == 0
    assert tiles["ra"].isna().all()  # a JPEG has no WCS
    assert set(tiles["classify_class"]) <= set(model.data_info.classes)

    grey = filters.gaussian(field.mean(axis=2), sigma=2)
    peaks = peak_local_max(grey, min_distance=25, threshold_rel=0.3, num_peaks=25)
    pd.DataFrame({"id": [f"hdf{k:02d}" for k in range(len(peaks))], "x": peaks[:, 1], "y": peaks[:, 0]}).to_csv(tmp_path / "peaks.csv", index=False)
    _predict(model, {**base, "centres": str(tmp_path / "peaks.csv")}, tmp_path / "hdf_objects.parquet")
    objects = pd.read_parquet(tmp_path / "hdf_objects.parquet")
    assert objects["id"].tolist() == [f"hdf{k:02d}" for k in range(len(peaks))] and len(peaks) >= 10
    assert objects["x"].tolist() == peaks[:, 1].tolist()
    probs = objects[[f"classify_p_{c}" for c in model.data_info.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_simulated_dataset_through_the_same_path_masks_nan_pixels(model, tiny_dataset, tmp_path) -> None:
    import shutil

    copy = tmp_path / "sims"
    shutil.copytree(tiny_dataset, copy)
    with h5py.File(copy / "shard-00000.h5", "r+") as h5:
        h5["images"][0, 1, 5:7, 5] = np.nan  # training would stop here; predict masks and counts
        first = int(h5["ids"][0])
    summary = _predict(model, {"plugin": "dataset", "path": str(copy), "shard_size": 128}, tmp_path / "sims.parquet",
                       columns=["class_name", "mag_r"], batch_size=100)
    cat = pd.read_parquet(tmp_path / "sims.parquet")
    truth = pd.read_parquet(copy / "catalog.parquet")
    assert summary["rows"] == len(truth) == 300 and summary["shards"] == 3
    assert cat["id"].tolist() == [str(i) for i in truth["id"]]
    assert cat["class_name"].tolist() == truth["class_name"].tolist()
    assert cat.set_index("id").loc[str(first), "n_bad_pixels"] == 2 and cat["n_bad_pixels"].sum() == 2
    assert {"mag_r", "mag_r_mean", "mag_r_sigma"} <= set(cat.columns) and "sersic_n" not in cat.columns


def test_read_ahead_auto_uses_a_thread_only_where_a_core_is_free(monkeypatch) -> None:
    import os

    import torch

    from galframe.errors import ConfigError
    from galframe.predict import resolve_read_ahead

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert resolve_read_ahead("auto") is False and resolve_read_ahead(True) is True and resolve_read_ahead("false") is False
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert resolve_read_ahead("auto") is True
    with pytest.raises(ConfigError, match="read_ahead='sometimes': true, false or auto"):
        resolve_read_ahead("sometimes")
