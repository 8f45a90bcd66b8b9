"""Cutouts joined with a catalog by id or sky position, and with spectra from FITS files (galframe.readers.join),
on files the tests write: known matches and non-matches, both spectra layouts, and bad files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

fits = pytest.importorskip("astropy.io.fits")
pd = pytest.importorskip("pandas")

from galframe import registry  # noqa: E402
from galframe.errors import ConfigError, DataError  # noqa: E402
from galframe.readers.base import Reject, Stamp  # noqa: E402
from galframe.readers.join import JoinReader, Spectra, match_sky  # noqa: E402
from galframe.testing import check_reader  # noqa: E402

ARCSEC = 1.0 / 3600.0
#: cutout name -> (ra, dec); c4 sits just below RA 360, its catalog row just above 0
CUTOUTS = {"c0": (150.0, 2.0), "c1": (150.01, 2.0), "c2": (150.02, 2.0), "c3": (10.0, -30.0), "c4": (359.99995, 0.5)}


def _offset(ra: float, dec: float, east: float, north: float) -> tuple[float, float]:
    """A position ``east`` / ``north`` arcsec away (small offsets)."""
    return (ra + east * ARCSEC / math.cos(math.radians(dec))) % 360.0, dec + north * ARCSEC


#: catalog rows: id, position; row 1 is c1 + 0.8", row 2 c0 + 0.3", row 3 c2 + 1.5", row 4 c4 across RA 0, row 5 c2 + 3"
ROWS = [
    (100, (200.0, 10.0)),
    (101, _offset(*CUTOUTS["c1"], 0.0, 0.8)),
    (102, _offset(*CUTOUTS["c0"], 0.3, 0.0)),
    (103, _offset(*CUTOUTS["c2"], -1.5, 0.0)),
    (104, _offset(*CUTOUTS["c4"], 0.36, 0.0)),
    (105, _offset(*CUTOUTS["c2"], 0.0, -3.0)),
]


def write_cutout(path: Path, ra: float, dec: float, level: float) -> None:
    hdu = fits.PrimaryHDU(np.full((3, 16, 16), level, dtype=np.float32))
    hdu.header["BANDS"] = "grz"
    hdu.header["RA"], hdu.header["DEC"] = ra, dec
    hdu.writeto(path)


@pytest.fixture()
def files(tmp_path) -> dict:
    cut = tmp_path / "cutouts"
    cut.mkdir()
    for k, (name, (ra, dec)) in enumerate(CUTOUTS.items()):
        write_cutout(cut / f"{name}.fits", ra, dec, float(k))
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame({"objid": [r[0] for r in ROWS], "ra": [r[1][0] for r in ROWS], "dec": [r[1][1] for r in ROWS],
                  "photo_z": [0.1 * k for k in range(len(ROWS))]}).to_csv(catalog, index=False)
    return {"cutouts": cut, "catalog": catalog, "tmp": tmp_path}


def write_spectra_table(path: Path, ids, n_wave: int = 50, **replace) -> None:
    wave = np.linspace(3600.0, 9800.0, n_wave)
    flux = np.stack([np.full(n_wave, float(i)) for i in ids]).astype(np.float32)
    ivar = np.ones_like(flux)
    ivar[:, 5] = 0.0
    mask = np.zeros(flux.shape, dtype=np.int16)
    mask[:, 7] = 4
    cols = {"ID": fits.Column(name="ID", format="K", array=np.asarray(ids)),
            "WAVELENGTH": fits.Column(name="WAVELENGTH", format=f"{n_wave}D", unit="Angstrom", array=np.tile(wave, (len(ids), 1))),
            "FLUX": fits.Column(name="FLUX", format=f"{flux.shape[1]}E", array=flux),
            "IVAR": fits.Column(name="IVAR", format=f"{n_wave}E", array=ivar),
            "MASK": fits.Column(name="MASK", format=f"{n_wave}I", array=mask)}
    cols.update(replace)
    table = fits.BinTableHDU.from_columns([c for c in cols.values() if c is not None], name="SPECTRA")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def write_spectra_images(path: Path, ids, n_wave: int = 40) -> None:
    """The DESI-like layout: WAVELENGTH, FLUX, IVAR, MASK images and a FIBERMAP table of TARGETIDs."""
    wave = fits.ImageHDU(np.linspace(360.0, 980.0, n_wave), name="WAVELENGTH")
    wave.header["BUNIT"] = "nm"
    flux = np.stack([np.arange(n_wave, dtype=np.float32) + i for i in ids])
    hdus = [fits.PrimaryHDU(), wave, fits.ImageHDU(flux, name="FLUX"), fits.ImageHDU(np.full_like(flux, 4.0), name="IVAR"),
            fits.ImageHDU(np.zeros(flux.shape, dtype=np.int32), name="MASK"),
            fits.BinTableHDU.from_columns([fits.Column(name="TARGETID", format="K", array=np.asarray(ids))], name="FIBERMAP")]
    fits.HDUList(hdus).writeto(path)


def join(files: dict, **options) -> JoinReader:
    return JoinReader(cutouts={"plugin": "fits", "path": str(files["cutouts"])}, catalog=str(files["catalog"]), **options)


def test_match_sky_on_a_constructed_catalog():
    ra = [p[0] for p in CUTOUTS.values()] + [np.nan]
    dec = [p[1] for p in CUTOUTS.values()] + [0.0]
    cat_ra, cat_dec = [r[1][0] for r in ROWS], [r[1][1] for r in ROWS]
    m = match_sky(ra, dec, cat_ra, cat_dec, radius=1.0)
    assert m.index.tolist() == [2, 1, -1, -1, 4, -1]
    assert m.separation[:2] == pytest.approx([0.3, 0.8], abs=1e-3)
    assert m.separation[4] == pytest.approx(0.36, abs=1e-3)  # across RA 0/360
    assert m.nearest[2] == 3 and m.separation[2] == pytest.approx(1.5, abs=1e-3)  # nearest, but outside 1"
    assert m.unmatched.tolist() == [2, 3, 5] and m.unmatched_rows(len(ROWS)).tolist() == [0, 3, 5]
    assert match_sky(ra, dec, cat_ra, cat_dec, radius=2.0).index[2] == 3
    # two objects on one row: reported as shared
    twice = match_sky([150.0, 150.0 + 0.1 * ARCSEC], [2.0, 2.0], cat_ra, cat_dec, radius=1.0)
    assert twice.index.tolist() == [2, 2] and twice.shared_rows.tolist() == [2]
    assert match_sky([150.0], [2.0], [150.0], [2.0 + 0.5 * ARCSEC], radius=1.0).index.tolist() == [0]  # a one-row catalog


def test_join_by_sky_position_carries_the_rows_and_keeps_or_rejects_non_matches(files):
    reader = join(files, by="sky", radius=1.0)
    assert registry.load("reader", "join") is JoinReader
    stamps = {st.id: st for st in check_reader(reader, bands=("g", "r", "z"), size=16)}
    assert sorted(stamps) == sorted(CUTOUTS)
    assert {k: stamps[k].meta["catalog_row"] for k in stamps} == {"c0": 2, "c1": 1, "c2": -1, "c3": -1, "c4": 4}
    assert stamps["c0"].meta["objid"] == 102 and stamps["c0"].meta["photo_z"] == pytest.approx(0.2)
    assert stamps["c0"].meta["match_sep_arcsec"] == pytest.approx(0.3, abs=1e-3)
    assert stamps["c0"].meta["catalog_ra"] == pytest.approx(ROWS[2][1][0])  # the cutout's own ra is kept as ra
    assert stamps["c0"].meta["ra"] == pytest.approx(150.0)
    assert "objid" not in stamps["c2"].meta and math.isclose(stamps["c2"].meta["match_sep_arcsec"], 1.5, abs_tol=1e-3)

    strict = join(files, by="sky", radius=1.0, unmatched="reject")
    items = [it for shard in strict.shards() for it in strict.read(shard)]
    rejects = {it.id: it.reason for it in items if isinstance(it, Reject)}
    assert sorted(rejects) == ["c2", "c3"]
    assert "no catalog row within 1 arcsec (nearest: row 3 at 1.50 arcsec" in rejects["c2"]
    assert sorted(it.id for it in items if isinstance(it, Stamp)) == ["c0", "c1", "c4"]
    wide = join(files, by="sky", radius=2.0, columns=["photo_z"])
    rows = {it.id: it.meta for shard in wide.shards() for it in wide.read(shard)}
    assert rows["c2"]["catalog_row"] == 3 and rows["c2"]["photo_z"] == pytest.approx(0.3) and "objid" not in rows["c2"]


def test_join_by_id_with_a_fits_catalog_and_desi_layout_spectra(tmp_path):
    cut = tmp_path / "cutouts"
    cut.mkdir()
    for k, name in enumerate(["101", "102", "7"]):
        write_cutout(cut / f"{name}.fits", 150.0, 2.0, float(k))
    catalog = tmp_path / "catalog.fits"
    fits.BinTableHDU.from_columns([fits.Column(name="TARGETID", format="K", array=np.array([102, 101, 55])),
                                   fits.Column(name="Z", format="D", array=np.array([0.5, 0.25, 0.9]))]).writeto(catalog)
    spectra = tmp_path / "coadd.fits"
    write_spectra_images(spectra, [55, 102])
    reader = JoinReader(cutouts={"plugin": "fits", "path": str(cut)}, catalog=str(catalog), by="id", spectra=str(spectra))
    got = {st.id: st.meta for st in check_reader(reader, bands=("g", "r", "z"), size=16)}
    assert {k: m["catalog_row"] for k, m in got.items()} == {"101": 1, "102": 0, "7": -1}
    assert got["101"]["Z"] == pytest.approx(0.25) and got["102"]["Z"] == pytest.approx(0.5)
    assert [got[k]["has_spectrum"] for k in ("101", "102", "7")] == [False, True, False]
    s = got["102"]["spectrum"]
    assert s["wavelength"][[0, -1]].tolist() == pytest.approx([360.0, 980.0])
    assert s["flux"][:3].tolist() == [102.0, 103.0, 104.0] and (s["ivar"] == 4.0).all() and not s["mask"].any()


def test_spectra_table_layout_joined_through_the_matched_rows(files):
    spectra = files["tmp"] / "spectra.fits"
    write_spectra_table(spectra, [101, 104, 999])
    reader = join(files, by="sky", radius=1.0, spectra=str(spectra))
    got = {it.id: it.meta for shard in reader.shards() for it in reader.read(shard)}
    assert {k: m["has_spectrum"] for k, m in got.items()} == {"c0": False, "c1": True, "c2": False, "c3": False, "c4": True}
    s = got["c4"]["spectrum"]
    assert s["flux"][0] == 104.0
    assert s["wavelength"][[0, -1]].tolist() == pytest.approx([360.0, 980.0])  # Angstrom (TUNIT) to nm
    assert s["mask"][5] and s["mask"][7] and s["mask"].sum() == 2  # ivar 0 and a nonzero mask bit are bad
    assert len(Spectra(spectra)) == 3 and Spectra(spectra).get("12") is None


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: p.write_text("not a FITS file\n"), "unreadable spectra file"),
        (lambda p: write_spectra_table(p, [1, 2], IVAR=None), "has no IVAR column"),
        (lambda p: write_spectra_table(p, [1, 1]), "id 1 has two spectra"),
        (lambda p: write_spectra_table(p, [1, 2], WAVELENGTH=fits.Column(name="WAVELENGTH", format="30D", unit="Angstrom",
                                                                         array=np.ones((2, 30)))), r"WAVELENGTH \(2, 30\) does not fit"),
        (lambda p: write_spectra_table(p, [1, 2], WAVELENGTH=fits.Column(name="WAVELENGTH", format="50D", unit="furlong",
                                                                         array=np.ones((2, 50)))), "unknown wavelength unit 'furlong'"),
    ],
)
def test_bad_spectra_files_are_named_with_the_problem(tmp_path, build, message):
    path = tmp_path / "bad.fits"
    build(path)
    with pytest.raises(DataError, match=message) as err:
        Spectra(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_catalogs_and_settings_are_named(files):
    with pytest.raises(DataError, match="no column 'RA_DEG'"):
        join(files, ra_column="RA_DEG")
    with pytest.raises(DataError, match="catalog not found"):
        JoinReader(cutouts={"plugin": "fits", "path": str(files["cutouts"])}, catalog=str(files["tmp"] / "missing.csv"))
    twice = files["tmp"] / "twice.csv"
    pd.DataFrame({"id": [1, 1], "ra": [0.0, 1.0], "dec": [0.0, 1.0]}).to_csv(twice, index=False)
    with pytest.raises(DataError, match="id 1 appears in rows 0 and 1"):
        JoinReader(cutouts={"plugin": "fits", "path": str(files["cutouts"])}, catalog=str(twice), by="id")
    with pytest.raises(ConfigError, match="Unknown data.by 'position'"):
        join(files, by="position")
    with pytest.raises(ConfigError, match="data.cutouts must be a reader config"):
        JoinReader(catalog=str(files["catalog"]))
    with pytest.raises(ConfigError, match="data.radius"):
        join(files, radius=0)


def test_ingest_through_the_shipped_config(files):
    import yaml

    from galframe.ingest import ingest
    from galframe.readers import build_reader

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "reader" / "join.yaml").read_text())
    catalog = files["tmp"] / "with_id.csv"
    pd.read_csv(files["catalog"]).rename(columns={"objid": "id"}).to_csv(catalog, index=False)
    cfg["cutouts"]["path"] = str(files["cutouts"])
    cfg.update(catalog=str(catalog), unmatched="reject")
    reader, core = build_reader(cfg)
    out = files["tmp"] / "joined"
    summary = ingest(reader, core, out, bands=["g", "r", "z"], image_size=16, progress=False, log=lambda s: None)
    assert summary["n"] == 3 and summary["rejects"] == 2
    table = pd.read_parquet(out / "catalog.parquet").set_index("source_id")
    assert table.loc[["c0", "c1", "c4"], "catalog_id"].tolist() == [102, 101, 104]  # the catalog's id, not the dataset's
    assert table["photo_z"].tolist() == pytest.approx([0.2, 0.1, 0.4])
    assert pd.read_csv(out / "rejects.csv")["reason"].str.contains("no catalog row within 1 arcsec").all()
