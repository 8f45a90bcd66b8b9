"""Readers of real survey files (FITS cutouts and mosaics, DESI SSL HDF5, Galaxy10, Galaxy Zoo DECaLS
catalogs, PNG/JPEG), units and scalings, tiling and de-duplication, and ingest into the dataset format.

Every fixture file is written here, with realistic headers, from simulated stamps in nanomaggies."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from galframe.errors import ConfigError, DataError
from galframe.readers import Reject, Stamp, StampError, conform
from galframe.readers.catalog import GZDecalsReader, infer_vote_schema
from galframe.readers.fits import FitsReader, read_fits_stamp
from galframe.readers.hdf5 import GALAXY10_CLASSES, Galaxy10Reader, Hdf5Reader
from galframe.readers.image import ImageReader
from galframe.readers.mosaic import MosaicReader
from galframe.readers.tiles import TileGrid, merge_tile_detections, tile_starts
from galframe.readers.units import rgb_to_flux
from tests.helpers import ROOT

BANDS = ["g", "r", "z"]
PIXEL_DEG = 0.262 / 3600


# -- fixture files ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sims(tiny_dataset):
    """16 simulated stamps (3, 64, 64) in nanomaggies and their catalog rows."""
    with h5py.File(Path(tiny_dataset) / "shard-00000.h5", "r") as h5:
        images = np.asarray(h5["images"][:16], dtype=np.float32)
        ids = np.asarray(h5["ids"][:16])
    catalog = pd.read_parquet(Path(tiny_dataset) / "catalog.parquet").set_index("id").loc[ids].reset_index()
    return images, catalog


def tan_wcs(ra: float, dec: float, nx: int, ny: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [-PIXEL_DEG, PIXEL_DEG]
    return w


def items(reader):
    return [x for shard in reader.shards() for x in reader.read(shard)]


def rgb8(image: np.ndarray) -> np.ndarray:
    """An 8-bit colour rendering (H, W, 3) of a g, r, z flux stamp, as survey viewers make."""
    from galframe.report import rgb

    return rgb(image, BANDS)


# -- FITS cutouts ----------------------------------------------------------------------------------------
def test_fits_cube_with_wcs_ivar_and_mask(sims, tmp_path) -> None:
    images, _ = sims
    frame = np.zeros((3, 72, 72), dtype=np.float32)
    frame[:, 4:68, 4:68] = images[0]
    header = tan_wcs(150.25, 2.5, 72, 72).to_header()
    header["BANDS"] = "g,r,z"
    header["BUNIT"] = "nanomaggy"
    ivar = np.full((3, 72, 72), 2500.0, dtype=np.float32)
    ivar[1, 30, 30] = 0.0  # no data in r at one pixel
    maskbits = np.zeros((72, 72), dtype=np.int16)
    maskbits[20, 21] = 4  # bit 2 (e.g. a bright star)
    maskbits[40, 41] = 1  # bit 0
    path = tmp_path / "cutout.fits"
    fits.HDUList([
        fits.PrimaryHDU(frame, header), fits.ImageHDU(ivar, name="IVAR"), fits.ImageHDU(maskbits, name="MASKBITS"),
    ]).writeto(path)

    stamp = read_fits_stamp(str(path))
    assert stamp.id == "cutout" and stamp.bands == ("g", "r", "z")
    assert stamp.meta["ra"] == pytest.approx(150.25, abs=1e-9) and stamp.meta["dec"] == pytest.approx(2.5, abs=1e-9)
    c = conform(stamp, BANDS, 64)
    expected = images[0].copy()  # the centre crop of the 72 px frame, bad pixels set to zero
    expected[1, 26, 26] = 0.0
    expected[:, 16, 17] = expected[:, 36, 37] = 0.0
    np.testing.assert_array_equal(c.flux, expected)
    assert c.offset == (4, 4)
    assert c.n_bad == 1 + 3 + 3  # the ivar-0 pixel in r, both masked pixels in all bands
    np.testing.assert_allclose(c.sky_sigma, 1 / np.sqrt(2500.0), rtol=1e-6)
    only_bit2 = read_fits_stamp(str(path), mask_bits=4)
    assert conform(only_bit2, BANDS, 64).n_bad == 1 + 3
    assert conform(read_fits_stamp(str(path), use_ivar=False, use_mask=False), BANDS, 64).n_bad == 0


def test_fits_one_hdu_per_band_zero_points_units_and_band_order(sims, tmp_path) -> None:
    images, _ = sims
    zp = 25.0  # counts of zero point 25: counts = flux * 10**(0.4 * (25 - 22.5))
    primary = fits.Header()
    primary["RA"], primary["DEC"] = "10:00:00", "-05:30:00"
    hdus = [fits.PrimaryHDU(header=primary)]
    for band in ("z", "g", "r"):  # another order than the model's
        h = fits.Header()
        h["BAND"], h["MAGZERO"] = band, zp
        hdus.append(fits.ImageHDU(images[1][BANDS.index(band)] * 10 ** (0.4 * (zp - 22.5)), h, name=f"IMAGE_{band.upper()}"))
        hdus.append(fits.ImageHDU(np.ones((64, 64), np.float32), name=f"IVAR_{band.upper()}"))
    path = tmp_path / "bands.fits"
    fits.HDUList(hdus).writeto(path)
    stamp = read_fits_stamp(str(path))
    assert stamp.bands == ("z", "g", "r")
    assert stamp.meta["ra"] == pytest.approx(150.0) and stamp.meta["dec"] == pytest.approx(-5.5)
    c = conform(stamp, BANDS, 64)
    np.testing.assert_allclose(c.flux, images[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.sky_sigma, 0.1, rtol=1e-5)  # ivar 1 per count^2 -> sigma 0.1 nanomaggies

    mjy = tmp_path / "mjy.fits"
    h = fits.Header()
    h["BANDS"], h["BUNIT"] = "grz", "mJy"
    fits.PrimaryHDU(images[1] * 3.631e-3, h).writeto(mjy)  # 1 nanomaggy = 3.631e-3 mJy
    np.testing.assert_allclose(conform(read_fits_stamp(str(mjy)), BANDS, 64).flux, images[1], rtol=1e-5, atol=1e-8)
    assert read_fits_stamp(str(mjy), units="nanomaggies").flux.max() == pytest.approx(images[1].max() * 3.631e-3, rel=1e-5)

    odd = tmp_path / "electrons.fits"
    h["BUNIT"] = "electrons/s"
    fits.PrimaryHDU(images[1], h).writeto(odd)
    with pytest.raises(StampError, match="unknown flux unit BUNIT='electrons/s'"):
        read_fits_stamp(str(odd))
    np.testing.assert_allclose(read_fits_stamp(str(odd), zeropoint=22.5).flux, images[1])


def test_fits_reader_lists_directories_globs_and_shards(sims, tmp_path) -> None:
    images, _ = sims
    for k in range(5):
        h = fits.Header()
        h["BANDS"] = "grz"
        sub = tmp_path / ("a" if k < 3 else "b")
        sub.mkdir(exist_ok=True)
        fits.PrimaryHDU(images[k], h).writeto(sub / f"obj{k}.fits")
    (tmp_path / "notes.txt").write_text("not a cutout")
    reader = FitsReader(path=str(tmp_path), shard_size=2)
    shards = reader.shards()
    assert [s.n for s in shards] == [2, 2, 1]
    assert [x.id for x in items(reader)] == [f"obj{k}" for k in range(5)]
    assert [s.fingerprint for s in FitsReader(path=str(tmp_path), shard_size=2).shards()] == [s.fingerprint for s in shards]
    os.utime(tmp_path / "a" / "obj0.fits", ns=(1, 1))  # a changed file changes its shard's fingerprint only
    again = FitsReader(path=str(tmp_path), shard_size=2).shards()
    assert again[0].fingerprint != shards[0].fingerprint and again[1].fingerprint == shards[1].fingerprint
    assert len(items(FitsReader(path=str(tmp_path / "a" / "*.fits")))) == 3
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        FitsReader(path=str(tmp_path / "nowhere")).shards()


# -- HDF5: DESI SSL layout and Galaxy10 -----------------------------------------------------------------------
def _ssl_file(path: Path, images: np.ndarray, catalog: pd.DataFrame, bands: str = "grz", channels_last: bool = False) -> None:
    with h5py.File(path, "w") as h5:
        data = np.moveaxis(images, 1, -1) if channels_last else images
        ds = h5.create_dataset("images", data=data, chunks=(1, *data.shape[1:]))
        ds.attrs["bands"] = bands
        h5["ra"] = 150.0 + np.arange(len(images)) * 0.01
        h5["dec"] = 2.0 + np.arange(len(images)) * 0.01
        h5["inds"] = 1000 + np.arange(len(images))
        h5["z_phot_median"] = np.linspace(0.05, 0.4, len(images))
        h5["flux_r"] = 10 ** (-0.4 * (catalog["mag_r"].to_numpy() - 22.5))


def test_hdf5_ssl_layout_rows_columns_and_shards(sims, tmp_path) -> None:
    images, catalog = sims
    path = tmp_path / "south.h5"
    _ssl_file(path, images[:10], catalog.iloc[:10])
    reader = Hdf5Reader(path=str(path), shard_size=4)
    assert reader.bands == ("g", "r", "z")
    assert [s.n for s in reader.shards()] == [4, 4, 2]
    got = items(reader)
    assert [x.id for x in got] == [str(1000 + k) for k in range(10)]
    np.testing.assert_array_equal(np.stack([x.flux for x in got]), images[:10])
    assert got[3].meta["ra"] == pytest.approx(150.03) and got[3].meta["z_phot_median"] == pytest.approx(np.linspace(0.05, 0.4, 10)[3])
    assert "flux_r" in got[0].meta and "inds" in got[0].meta

    nan_images = images[:4].copy()
    nan_images[2, 1, 10:13, 20] = np.nan
    nan_images[2, 0, 5, 5] = np.inf
    last = tmp_path / "channels_last.h5"
    _ssl_file(last, nan_images, catalog.iloc[:4], channels_last=True)
    got = items(Hdf5Reader(path=str(last)))
    np.testing.assert_array_equal(got[1].flux, images[1])  # (N, H, W, bands) read back as (bands, H, W)
    c = conform(got[2], BANDS, 64)
    assert c.n_bad == 4 and np.isfinite(c.flux).all() and c.flux[1, 10, 20] == 0.0

    two = tmp_path / "gr.h5"
    _ssl_file(two, images[:2, :2], catalog.iloc[:2], bands="gr")
    with pytest.raises(DataError, match=r"gr.h5: has bands \['g', 'r'\], which lack \['z'\] needed by the model"):
        Hdf5Reader(path=str(two)).bind(BANDS, 64)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as h5:
        h5["ra"] = np.zeros(3)
    with pytest.raises(DataError, match=r"empty.h5: no 'images' dataset"):
        Hdf5Reader(path=str(empty))


def _galaxy10_file(path: Path, images: np.ndarray, ans: list[int]) -> np.ndarray:
    rgb = np.stack([np.kron(rgb8(im), np.ones((4, 4, 1), dtype=np.uint8)) for im in images])  # 256 x 256 x 3
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=rgb, chunks=(1, 256, 256, 3))
        h5["ans"] = np.asarray(ans, dtype=np.uint8)
        h5["ra"] = np.linspace(10, 11, len(images))
        h5["dec"] = np.linspace(-1, 1, len(images))
        h5["redshift"] = np.linspace(0.02, 0.2, len(images))
        h5["pxscale"] = np.full(len(images), 0.262)
    return rgb


def test_galaxy10_rgb_to_pseudo_flux_classes_and_rebinning(sims, tmp_path) -> None:
    images, _ = sims
    path = tmp_path / "Galaxy10_DECals.h5"
    rgb = _galaxy10_file(path, images[:5], [0, 3, 9, 12, 5])
    reader = Galaxy10Reader(path=str(path), white={"g": 0.5, "r": 1.0, "z": 2.0})
    assert reader.bands == ("z", "r", "g") and len(reader.classes) == 10
    got = items(reader)
    assert isinstance(got[3], Reject) and "ans=12" in got[3].reason
    good = [x for x in got if isinstance(x, Stamp)]
    assert [x.meta["class_name"] for x in good] == [GALAXY10_CLASSES[k] for k in (0, 3, 9, 5)]
    assert good[1].meta["redshift"] == pytest.approx(np.linspace(0.02, 0.2, 5)[1])
    # R -> z, G -> r, B -> g; 255 is the band's white level, 0 is zero flux, and brighter pixels more flux
    flux = good[0].flux
    np.testing.assert_allclose(flux, rgb_to_flux(rgb[0], ("z", "r", "g"), white={"g": 0.5, "r": 1.0, "z": 2.0}), rtol=1e-6)
    assert rgb_to_flux(np.array([[[255, 255, 255]]], np.uint8), ("z", "r", "g"), white={"g": 0.5, "r": 1.0, "z": 2.0})[:, 0, 0] == pytest.approx([2.0, 1.0, 0.5], rel=1e-5)
    order = np.argsort(rgb[0][:, :, 0].ravel())
    assert np.all(np.diff(flux[0].ravel()[order]) >= 0)
    c = conform(good[0], BANDS, 64, rebin=4)
    assert c.flux.shape == (3, 64, 64)
    assert c.flux[0].sum() == pytest.approx(flux[2].sum(), rel=1e-5)  # flux conserved; g is the third RGB band
    with pytest.raises(DataError, match="not a Galaxy10 DECaLS file"):
        empty = tmp_path / "ssl.h5"
        _ssl_file(empty, images[:2], sims[1].iloc[:2])
        Galaxy10Reader(path=str(empty))


# -- Galaxy Zoo DECaLS catalogs ------------------------------------------------------------------------------
def _gz_schema() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "conf" / "reader" / "gz_decals.yaml").read_text())["schema"]


def _gz_catalog(tmp_path: Path, images: np.ndarray) -> tuple[pd.DataFrame, dict]:
    from PIL import Image

    schema = _gz_schema()
    img_dir = tmp_path / "images" / "J100"
    img_dir.mkdir(parents=True)
    paths = []
    for k in range(6):
        if k in (0, 1):
            name = f"J100/gal{k}.png"
            Image.fromarray(rgb8(images[k])).save(tmp_path / "images" / name)
        elif k == 2:
            name = f"J100/gal{k}.jpg"
            Image.fromarray(rgb8(images[k])).save(tmp_path / "images" / name, quality=92)
        elif k == 3:
            name = f"J100/gal{k}.fits"
            h = fits.Header()
            h["BANDS"] = "grz"
            fits.PrimaryHDU(images[k], h).writeto(tmp_path / "images" / name)
        elif k == 4:
            name = "J100/missing.png"
        else:
            name = ""
        paths.append(name)
    rng = np.random.default_rng(3)
    rows = {"iauname": [f"J1000{k:02d}.00+020000.0" for k in range(6)], "ra": 150.0 + np.arange(6) * 0.1,
            "dec": np.full(6, 2.0), "file_loc": paths}
    for q in schema["questions"]:
        total = np.zeros(6)
        for a in q["answers"]:
            counts = rng.integers(0, 20, 6).astype(float)
            rows[f"{q['name']}_{a}"] = counts
            total += counts
        rows[f"{q['name']}_total-votes"] = total
        rows[f"{q['name']}_{q['answers'][0]}_fraction"] = rows[f"{q['name']}_{q['answers'][0]}"] / np.maximum(total, 1)
    rows["bar_strong"][2] = np.nan  # not asked: no votes
    frame = pd.DataFrame(rows)
    return frame, schema


def test_gz_decals_catalog_votes_mixed_image_types_and_rejects(sims, tmp_path) -> None:
    images, _ = sims
    frame, schema = _gz_catalog(tmp_path, images)
    csv = tmp_path / "gz_decals_volunteers.csv"
    frame.to_csv(csv, index=False)
    reader = GZDecalsReader(catalog=str(csv), image_root=str(tmp_path / "images"), schema=schema, shard_size=4)
    assert reader.votes["questions"][1]["asked_if"] == "smooth-or-featured_featured-or-disk"
    assert [s.n for s in reader.shards()] == [4, 2]
    got = items(reader)
    rejects = {x.id: x.reason for x in got if isinstance(x, Reject)}
    assert rejects == {"J100004.00+020000.0": "file not found", "J100005.00+020000.0": "no image path (file_loc is empty)"}
    good = [x for x in got if isinstance(x, Stamp)]
    assert [x.id for x in good] == frame["iauname"][:4].tolist()
    assert good[0].meta["smooth-or-featured_smooth"] == int(frame["smooth-or-featured_smooth"][0])
    assert good[2].meta["bar_strong"] == 0 and good[1].meta["ra"] == pytest.approx(150.1)
    assert good[0].bands == ("z", "r", "g") and good[3].bands == ("g", "r", "z")
    np.testing.assert_array_equal(good[3].flux, images[3])  # the FITS one is real flux
    # the PNG and the JPEG of the same kind of rendering agree to JPEG precision
    png = conform(good[0], BANDS, 64).flux
    assert png.max() > 0 and np.isfinite(png).all()

    auto = infer_vote_schema(frame.columns)
    assert [q["name"] for q in auto["questions"]] == [q["name"] for q in schema["questions"]]
    assert auto["questions"][3]["answers"] == ["strong", "weak", "no"]  # total-votes / fraction columns are not answers

    parquet = tmp_path / "gz.parquet"
    frame.to_parquet(parquet, row_group_size=2)
    again = items(GZDecalsReader(catalog=str(parquet), image_root=str(tmp_path / "images"), schema="auto", shard_size=3))
    assert [x.id for x in again] == [x.id for x in got]

    with pytest.raises(DataError, match=r"lacks 3 vote column\(s\) of the schema.*schema=auto"):
        frame.drop(columns=["bar_strong", "bar_weak", "bar_no"]).to_csv(tmp_path / "partial.csv", index=False)
        GZDecalsReader(catalog=str(tmp_path / "partial.csv"), schema=schema)


# -- PNG / JPEG ----------------------------------------------------------------------------------------------
def test_image_reader_rgb_grey_16bit_and_tiles(sims, tmp_path) -> None:
    from PIL import Image

    images, _ = sims
    Image.fromarray(rgb8(images[0])).save(tmp_path / "a.png")
    grey = (np.clip(images[1][1] / images[1][1].max(), 0, 1) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    got = items(ImageReader(path=str(tmp_path / "*.png")))
    assert [x.id for x in got] == ["a", "grey16"]
    assert isinstance(got[1], Reject) and "grey image" in got[1].reason
    one = items(ImageReader(path=str(tmp_path / "grey16.png"), rgb_bands=["r"], stretch="linear", white=2.0))
    assert one[0].bands == ("r",)
    np.testing.assert_allclose(one[0].flux[0], grey / 65535.0 * 2.0, rtol=1e-6)
    bad = items(ImageReader(path=str(tmp_path / "broken.jpg")))
    assert isinstance(bad[0], Reject) and "unreadable image" in bad[0].reason

    field = np.zeros((150, 200, 3), dtype=np.uint8)
    field[70:80, 95:105] = 200
    Image.fromarray(field).save(tmp_path / "field.png")
    reader = ImageReader(path=str(tmp_path / "field.png"), tile_size=64, overlap=16, shard_size=5)
    tiles = items(reader)
    grid = reader.tile_grid(str(tmp_path / "field.png"))
    assert grid.ys == (0, 48, 86) and grid.xs == (0, 48, 96, 136) and len(tiles) == 12
    assert tiles[5].id == "field:48:48" and tiles[5].flux.shape == (3, 64, 64)
    np.testing.assert_allclose(tiles[5].flux, rgb_to_flux(field[48:112, 48:112], ("z", "r", "g")), rtol=1e-6)


# -- mosaics ----------------------------------------------------------------------------------------------
def _mosaic(tmp_path: Path, images: np.ndarray, per_band: bool = False) -> tuple[Path, WCS, list]:
    rng = np.random.default_rng(7)
    h, w = 300, 260
    flux = rng.normal(0.0, 0.005, (3, h, w)).astype(np.float32)
    places = [(10, 20), (118, 40), (200, 150), (60, 190), (230, 10)]  # (y0, x0) of pasted stamps
    for k, (y0, x0) in enumerate(places):
        flux[:, y0 : y0 + 64, x0 : x0 + 64] += images[k]
    wcs = tan_wcs(210.5, 54.3, w, h)
    header = wcs.to_header()
    if per_band:
        paths = []
        for b, band in enumerate(BANDS):
            p = tmp_path / f"coadd-{band}.fits"
            hb = header.copy()
            hb["BAND"] = band
            fits.PrimaryHDU(flux[b], hb).writeto(p)
            paths.append(p)
        return paths, wcs, places, flux
    header["BANDS"] = "grz"
    path = tmp_path / "coadd.fits"
    ivar = np.full((3, h, w), 4e4, dtype=np.float32)
    ivar[:, 250:, 200:] = 0.0  # a corner without data
    fits.HDUList([fits.PrimaryHDU(flux, header), fits.ImageHDU(ivar, name="IVAR")]).writeto(path)
    return path, wcs, places, flux


def test_mosaic_tiles_keep_their_wcs_and_cover_the_image(sims, tmp_path) -> None:
    images, _ = sims
    path, wcs, _, flux = _mosaic(tmp_path, images)
    reader = MosaicReader(path=str(path), tile_size=64, overlap=16, shard_size=7)
    reader.bind(BANDS, 64)
    tiles = items(reader)
    grid = reader.tile_grid(str(path))
    assert len(tiles) == len(grid) == len(tile_starts(300, 64, 16)) * len(tile_starts(260, 64, 16))
    covered = np.zeros((300, 260), dtype=int)
    for t in tiles:
        y0, x0 = t.meta["tile_y0"], t.meta["tile_x0"]
        covered[y0 : y0 + 64, x0 : x0 + 64] += 1
        np.testing.assert_array_equal(t.flux, flux[:, y0 : y0 + 64, x0 : x0 + 64])
        ra, dec = t.meta["wcs"].all_pix2world([[5.0, 7.0]], 0)[0]
        ra2, dec2 = wcs.all_pix2world([[x0 + 5.0, y0 + 7.0]], 0)[0]
        assert (ra, dec) == pytest.approx((ra2, dec2), abs=1e-10)
    assert covered.min() >= 1
    owned = np.zeros((300, 260), dtype=int)  # the owned regions partition the image
    yy, xx = np.mgrid[0:300, 0:260]
    for y0, x0 in grid.tiles():
        ylo, yhi, xlo, xhi = grid.owned(y0, x0)
        owned += (yy >= ylo) & (yy < yhi) & (xx >= xlo) & (xx < xhi)
    assert (owned == 1).all()
    corner = next(t for t in tiles if t.meta["tile_y0"] == 236 and t.meta["tile_x0"] == 196)
    assert conform(corner, BANDS, 64, max_bad_fraction=1.0).n_bad == 3 * 50 * 60  # ivar 0: no data

    with pytest.raises(DataError, match=r"coadd.fits: has bands .*lack \['i'\]"):
        MosaicReader(path=str(path), tile_size=64).bind(["g", "r", "i"], 64)


def test_mosaic_cutouts_at_catalog_centres_and_per_band_files(sims, tmp_path) -> None:
    images, _ = sims
    paths, wcs, places, flux = _mosaic(tmp_path, images, per_band=True)
    centres = pd.DataFrame({"id": [f"obj{k}" for k in range(len(places))]})
    xs = np.array([x0 + 32 for _, x0 in places], dtype=float)
    ys = np.array([y0 + 32 for y0, _ in places], dtype=float)
    centres["ra"], centres["dec"] = wcs.all_pix2world(xs, ys, 0)
    centres.loc[len(centres)] = ["far_away", 10.0, -40.0]
    centres.to_csv(tmp_path / "centres.csv", index=False)
    reader = MosaicReader(path=[str(p) for p in paths], centres=str(tmp_path / "centres.csv"), shard_size=4)
    reader.bind(BANDS, 64)
    got = items(reader)
    assert [x.id for x in got] == centres["id"].tolist()
    assert isinstance(got[-1], Reject) and "outside" in got[-1].reason
    for k, (y0, x0) in enumerate(places):
        stamp = got[k]
        assert stamp.meta["x"] == pytest.approx(xs[k], abs=1e-6) and stamp.meta["ra"] == pytest.approx(centres["ra"][k])
        if y0 + 64 <= 300 and x0 + 64 <= 260:
            np.testing.assert_array_equal(stamp.flux, flux[:, y0 : y0 + 64, x0 : x0 + 64])
        else:  # hangs over the edge: padded and counted
            assert conform(stamp, BANDS, 64, max_bad_fraction=1.0).n_bad > 0


# -- de-duplication across tile overlaps ---------------------------------------------------------------------
def test_merge_tile_detections_keeps_one_detection_per_object() -> None:
    rng = np.random.default_rng(11)
    H, W, size, overlap = 500, 420, 100, 30
    grid = TileGrid.make(H, W, size, overlap)
    n = 70
    w_ = rng.uniform(4, 24, n)
    h_ = rng.uniform(4, 24, n)
    x0 = rng.uniform(0, W - 24, n)
    y0 = rng.uniform(0, H - 24, n)
    truth = np.stack([x0, y0, x0 + w_, y0 + h_], axis=1)
    rows = []
    for ty, tx in grid.tiles():
        for k, (a, b, c, d) in enumerate(truth):
            ca, cb, cc, cd = max(a, tx), max(b, ty), min(c, tx + size), min(d, ty + size)
            if cc <= ca or cd <= cb:
                continue
            if (cc - ca) * (cd - cb) < 0.3 * (c - a) * (d - b) or min(cc - ca, cd - cb) < 2.5:
                continue  # too little of it in this tile to be detected
            jitter = rng.normal(0, 0.3, 4)
            rows.append({"tile_y0": ty, "tile_x0": tx, "x_min": ca - tx + jitter[0], "y_min": cb - ty + jitter[1],
                         "x_max": cc - tx + jitter[2], "y_max": cd - ty + jitter[3], "score": rng.uniform(0.5, 1), "truth": k})
    dets = pd.DataFrame(rows)
    assert len(dets) > n * 1.3  # the overlaps did make duplicates
    merged = merge_tile_detections(dets, grid)
    assert len(merged) == n and sorted(merged["truth"]) == list(range(n))
    assert merged["n_merged"].sum() == len(dets) - n
    for _, row in merged.iterrows():  # the kept box is the whole object wherever a tile saw all of it
        a, b, c, d = truth[int(row["truth"])]
        if (c - a) < overlap and (d - b) < overlap:
            assert [row["x_min"], row["y_min"], row["x_max"], row["y_max"]] == pytest.approx([a, b, c, d], abs=1.5)
    # two different objects overlapping in one tile are both kept; across tiles they are the same object
    same_tile = pd.DataFrame({"tile_y0": [0, 0], "tile_x0": [0, 0], "x_min": [10, 14], "y_min": [10, 10],
                              "x_max": [20, 24], "y_max": [20, 20], "score": [0.9, 0.8]})
    assert len(merge_tile_detections(same_tile, grid)) == 2
    across = same_tile.assign(tile_x0=[0, 70], x_min=[80, 10.5], x_max=[90, 20.5])
    assert len(merge_tile_detections(across, grid)) == 1


# -- units, scalings, bad pixels, fitting -----------------------------------------------------------------------
def test_lupton_scaling_preserves_colours_and_inverts() -> None:
    from galframe.data.scaling import build_scaling, clean_pixels, estimate_softening

    scaling = build_scaling({"name": "lupton", "softening": {"g": 0.01, "r": 0.02, "z": 0.05}, "q": 8.0}, BANDS)
    flux = torch.randn(4, 3, 16, 16) * 2.0
    x = scaling(flux)
    assert torch.allclose(scaling.inverse(x), flux, atol=1e-4)
    soft = torch.tensor([0.01, 0.02, 0.05]).view(1, 3, 1, 1)
    ratio = x / (flux / soft)  # one stretch factor per pixel, the same in every band: colours survive
    assert torch.allclose(ratio[:, 0], ratio[:, 2], rtol=1e-4)
    assert ratio.max() <= 1.0 + 1e-6 and x.abs().max() < (flux / soft).abs().max()
    with pytest.raises(ConfigError, match="no option"):
        build_scaling({"name": "lupton", "Q": 3}, BANDS)

    image = np.ones((3, 8, 8), dtype=np.float32)
    image[0, 1, 1], image[1, 2, 2] = np.nan, -np.inf
    bad = np.zeros((8, 8), dtype=bool)
    bad[5, 5] = True
    cleaned, mask = clean_pixels(image, bad, fill="median")
    assert mask.sum() == 2 + 3 and np.isfinite(cleaned).all() and cleaned[0, 1, 1] == 1.0
    assert clean_pixels(image, fill="zero")[0][1, 2, 2] == 0.0
    noise = np.random.default_rng(0).normal(0, [0.01, 0.02, 0.05], (400, 8, 8, 3)).transpose(0, 3, 1, 2)
    est = estimate_softening(noise, BANDS)
    assert est["g"] == pytest.approx(0.01, rel=0.05) and est["z"] == pytest.approx(0.05, rel=0.05)


def test_conform_crop_pad_exact_rebin_and_rejections() -> None:
    big = Stamp("a", np.arange(3 * 70 * 70, dtype=np.float32).reshape(3, 70, 70), ("g", "r", "z"))
    np.testing.assert_array_equal(conform(big, BANDS, 64).flux, big.flux[:, 3:67, 3:67])
    small = Stamp("b", np.ones((3, 60, 60), np.float32), ("r", "g", "z"))
    with pytest.raises(StampError, match="smaller than the model's 64x64"):
        conform(small, BANDS, 64)
    padded = conform(small, BANDS, 64, fit="pad")
    assert padded.n_bad == 3 * (64 * 64 - 60 * 60) and padded.offset == (-2, -2) and padded.flux[0, 0, 0] == 0.0
    with pytest.raises(StampError, match="data.fit=exact"):
        conform(big, BANDS, 64, fit="exact")
    rebinned = conform(Stamp("c", np.ones((3, 128, 128), np.float32), ("g", "r", "z")), BANDS, 64, rebin=2)
    assert rebinned.flux.shape == (3, 64, 64) and (rebinned.flux == 4.0).all()
    with pytest.raises(StampError, match=r"missing band\(s\) \['z'\]"):
        conform(Stamp("d", np.ones((2, 64, 64), np.float32), ("g", "r")), BANDS, 64)
    with pytest.raises(StampError, match=r"wrong shape: image \(2, 64, 64\) for 3 band"):
        conform(Stamp("e", np.ones((2, 64, 64), np.float32), ("g", "r", "z")), BANDS, 64)
    holes = np.ones((3, 64, 64), np.float32)
    holes[:, :40] = np.nan
    with pytest.raises(StampError, match=r"62%\) are NaN/inf"):
        conform(Stamp("f", holes, ("g", "r", "z")), BANDS, 64)


# -- ingest: real data into the dataset format, then train -----------------------------------------------------
def test_ingest_galaxy10_then_train_on_it(sims, tmp_path) -> None:
    from galframe.ingest import ingest
    from galframe.readers import build_reader
    from galframe.train import run
    from tests.helpers import compose_train

    images, _ = sims
    ans = [k % 10 for k in range(16)]
    ans[4] = 40  # a bad label
    _galaxy10_file(tmp_path / "g10.h5", images, ans)
    reader, core = build_reader({"plugin": "galaxy10", "path": str(tmp_path / "g10.h5"), "rebin": 4, "shard_size": 5})
    summary = ingest(reader, core, tmp_path / "g10", bands=BANDS, image_size=64, progress=False, log=lambda s: None)
    assert summary["n"] == 15 and summary["rejects"] == 1
    manifest = json.loads((tmp_path / "g10" / "manifest.json").read_text())
    assert manifest["classes"] == list(GALAXY10_CLASSES) and manifest["bands"] == BANDS
    assert manifest["pixel_scale"] == pytest.approx(0.262 * 4)
    catalog = pd.read_parquet(tmp_path / "g10" / "catalog.parquet")
    assert catalog["class"].tolist() == [a for a in ans if a < 10]
    assert {"ra", "dec", "redshift", "source_id", "n_bad_pixels", "sky_sigma_g", "class_name"} <= set(catalog.columns)
    rejects = pd.read_csv(tmp_path / "g10" / "rejects.csv")
    assert rejects["reason"].str.contains("ans=40").all()
    metrics = run(compose_train(f"data.path={tmp_path / 'g10'}", "trainer=fast", "logger=none", "data.batch_size=4"),
                  run_dir=tmp_path / "run")
    assert metrics == {}  # fast_dev_run trained and validated one batch on the ingested data


def test_ingest_gz_decals_keeps_the_vote_schema(sims, tmp_path) -> None:
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.ingest import ingest
    from galframe.readers import build_reader

    images, _ = sims
    frame, schema = _gz_catalog(tmp_path, images)
    frame.to_csv(tmp_path / "gz.csv", index=False)
    reader, core = build_reader({"plugin": "gz_decals", "catalog": str(tmp_path / "gz.csv"),
                                 "image_root": str(tmp_path / "images"), "schema": schema})
    ingest(reader, core, tmp_path / "gz", bands=BANDS, image_size=64, progress=False, log=lambda s: None)
    manifest = json.loads((tmp_path / "gz" / "manifest.json").read_text())
    assert manifest["votes"]["questions"][2]["asked_if"] == "disk-edge-on_no"
    dm = GalaxyDataModule({"path": str(tmp_path / "gz"), "split": {"train": 1.0}, "batch_size": 4}, requires=["votes"], progress=False)
    dm.prepare()
    item = dm.dataset("train")[0]
    assert item["votes"].shape == (34,) and item["image"].shape == (3, 64, 64)
    assert item["votes"][0] == frame["smooth-or-featured_smooth"][0]
