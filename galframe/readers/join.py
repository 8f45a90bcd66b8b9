"""Cutouts joined with an external catalog and spectra (``reader.join``).

The cutouts come from any other reader (``cutouts``: a reader config, e.g. ``{plugin: fits, path: ...}``);
each of its objects is paired with one row of ``catalog`` (CSV, Parquet or a FITS table)

* ``by: id``: the row whose ``id_column`` equals the object's id (ids compared as text; integral numbers
  without a decimal point), or
* ``by: sky``: the nearest row on the sky (astropy ``SkyCoord.match_to_catalog_sky``) if it lies within
  ``radius`` arcsec of the object's ``ra``/``dec``;

and, when ``spectra`` names a FITS file (layouts in docs/data.md, "Catalogs and spectra joined to cutouts"),
with the spectrum of the same id (the object's id, or with ``by: sky`` the matched row's ``id_column``).

Each object carries the row's ``columns`` (prefixed ``catalog_`` where a name is taken: the object's own metadata,
``id`` and the other columns the pipeline writes, :data:`TAKEN`), ``catalog_row``
(-1: no match), ``match_sep_arcsec`` (``by: sky``), ``has_spectrum`` and, outside the written catalog,
``meta["spectrum"]`` = ``{"wavelength" (nm), "flux", "ivar", "mask" (bool, True = bad)}``.  An object without
a match is kept with ``catalog_row = -1`` (``unmatched: keep``) or is a reject naming why
(``unmatched: reject``); :func:`match_sky` reports both sides of a sky match.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError, check_choice
from galframe.readers.base import Reader, Reject, Shard, Stamp, file_stat, fingerprint

ID_COLUMNS = ("id", "objid", "targetid", "source_id", "iauname")
SPECTRA_ID_COLUMNS = ("ID", "TARGETID", "OBJID", "SOURCE_ID")
#: column names the pipeline writes itself (compared in lower case): a catalog column of one of these names is
#: carried as ``catalog_<name>``
TAKEN = ("id", "shard", "index", "source", "source_id", "class", "class_name", "n_bad_pixels", "catalog_row",
         "match_sep_arcsec", "has_spectrum", "spectrum")
WAVE_UNITS = {"angstrom": 0.1, "a": 0.1, "aa": 0.1, "nm": 1.0, "nanometer": 1.0, "um": 1000.0, "micron": 1000.0}


# -- the sky match ---------------------------------------------------------------------------------
@dataclass
class SkyMatch:
    """A sky match of objects to catalog rows: per object ``index`` (the row, -1 for none within the radius) and
    ``separation`` (arcsec to the nearest row, matched or not); ``unmatched`` (objects without a row),
    ``unmatched_rows`` (rows no object matched) and ``shared_rows`` (rows matched by more than one object)."""

    index: np.ndarray
    separation: np.ndarray
    nearest: np.ndarray
    radius: float

    @property
    def matched(self) -> np.ndarray:
        return self.index >= 0

    @property
    def unmatched(self) -> np.ndarray:
        return np.flatnonzero(self.index < 0)

    def unmatched_rows(self, n_rows: int) -> np.ndarray:
        return np.setdiff1d(np.arange(int(n_rows)), self.index[self.index >= 0])

    @property
    def shared_rows(self) -> np.ndarray:
        rows, counts = np.unique(self.index[self.index >= 0], return_counts=True)
        return rows[counts > 1]


def match_sky(ra: Sequence[float], dec: Sequence[float], cat_ra: Sequence[float], cat_dec: Sequence[float],
              radius: float) -> SkyMatch:
    """Each position (degrees) to its nearest catalog position (astropy ``match_to_catalog_sky``), kept when
    closer than ``radius`` arcsec; positions that are not finite match nothing."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    cat_ra, cat_dec = np.asarray(cat_ra, dtype=np.float64), np.asarray(cat_dec, dtype=np.float64)
    index = np.full(len(ra), -1, dtype=np.int64)
    separation = np.full(len(ra), np.nan)
    nearest = np.full(len(ra), -1, dtype=np.int64)
    good = np.isfinite(ra) & np.isfinite(dec)
    cat_good = np.flatnonzero(np.isfinite(cat_ra) & np.isfinite(cat_dec))
    if good.any() and len(cat_good):
        coords = SkyCoord(ra[good] * u.deg, dec[good] * u.deg)
        catalog = SkyCoord(cat_ra[cat_good] * u.deg, cat_dec[cat_good] * u.deg)
        if len(cat_good) == 1:  # astropy wants at least two catalog entries for its tree
            sep = coords.separation(catalog[0])
            idx = np.zeros(len(coords), dtype=np.int64)
        else:
            idx, sep, _ = coords.match_to_catalog_sky(catalog)
        sep_arcsec = sep.to_value(u.arcsec)
        rows = cat_good[np.asarray(idx, dtype=np.int64)]
        separation[good] = sep_arcsec
        nearest[good] = rows
        index[good] = np.where(sep_arcsec <= float(radius), rows, -1)
    return SkyMatch(index=index, separation=separation, nearest=nearest, radius=float(radius))


# -- tables ----------------------------------------------------------------------------------------
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fts")


def read_catalog(path: Any, what: str = "data.catalog") -> Any:
    """A CSV, Parquet or FITS table (the first table HDU) as a DataFrame; a missing or unreadable file is a
    one-line DataError naming it."""
    from galframe.data.labels import read_table

    file = Path(os.path.expanduser(str(path)))
    if not str(file).lower().endswith(FITS_SUFFIXES):
        return read_table(file, "catalog", "the catalog", what)
    if not file.is_file():
        raise DataError(f"{file}: catalog not found ({what}).")
    try:
        from astropy.table import Table

        table = Table.read(file)
        names = [n for n in table.colnames if len(table[n].shape) <= 1]  # vector columns do not fit a frame
        return table[names].to_pandas()
    except Exception as exc:
        raise DataError(f"{file}: cannot read the catalog ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def id_strings(values: Any) -> np.ndarray:
    """Ids as text: integral numbers without a decimal point, bytes decoded, surrounding blanks removed."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return np.array([str(int(v)) for v in arr], dtype=object)
    if arr.dtype.kind == "f":
        return np.array([str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v) for v in arr], dtype=object)
    return np.array([(v.decode(errors="replace") if isinstance(v, bytes) else str(v)).strip() for v in arr], dtype=object)


def _column(columns: Sequence[str], wanted: Optional[str], defaults: Sequence[str], file: Any, what: str,
            required: bool = True) -> Optional[str]:
    """The column ``wanted`` (else the first of ``defaults`` present, case-insensitively) or a DataError."""
    lower = {c.lower(): c for c in columns}
    if wanted:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise DataError(f"{file}: no column '{wanted}' ({what}); the columns are {list(columns)[:12]}.")
    for name in defaults:
        if name.lower() in lower:
            return lower[name.lower()]
    if required:
        raise DataError(f"{file}: no {what} column (looked for {', '.join(defaults)}); set it in the config.")
    return None


# -- spectra ---------------------------------------------------------------------------------------
class Spectra:
    """The spectra of a FITS file, by id (docs/data.md): ``get(id)`` gives ``{"wavelength" (nm), "flux",
    "ivar", "mask"}`` or None.

    Layout ``table``: a binary table (EXTNAME ``SPECTRA``, else the first one with a ``FLUX`` column), one row
    per object: an id column, ``FLUX`` and ``IVAR`` vector columns of one length L, optionally ``MASK`` (nonzero
    = bad) and ``WAVELENGTH`` (a vector column, else an image HDU ``WAVELENGTH`` of length L).
    Layout ``images`` (as DESI writes): image HDUs ``WAVELENGTH`` (L), ``FLUX`` and ``IVAR`` (N, L), optionally
    ``MASK`` (N, L), and a binary table (``FIBERMAP``, else the first one) whose id column names the N rows.
    Wavelength unit: the column's ``TUNITn`` or the HDU's ``BUNIT`` (Angstrom, nm, um), else ``wave_unit``."""

    def __init__(self, path: Any, id_column: Optional[str] = None, wave_unit: str = "Angstrom") -> None:
        from astropy.io import fits

        self.path = os.path.expanduser(str(path))
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: spectra file not found (data.spectra).")
        try:
            with fits.open(self.path, memmap=False) as hdul:
                self._load(hdul, id_column, wave_unit)
        except DataError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise DataError(f"{self.path}: unreadable spectra file ({type(exc).__name__}: {first})") from exc

    def _fail(self, problem: str) -> DataError:
        return DataError(f"{self.path}: {problem} (spectra layouts: docs/data.md).")

    def _load(self, hdul: Any, id_column: Optional[str], wave_unit: str) -> None:
        from astropy.io import fits

        names = {str(h.name).upper(): h for h in hdul}
        tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
        if "FLUX" in names and not isinstance(names["FLUX"], fits.BinTableHDU):
            self.layout = "images"
            meta = names.get("FIBERMAP") or (tables[0] if tables else None)
            if meta is None:
                raise self._fail("has FLUX and IVAR images but no table naming their rows (FIBERMAP)")
            ids = meta.data[_column(meta.columns.names, id_column, SPECTRA_ID_COLUMNS, self.path, "spectrum id")]
            if "IVAR" not in names:
                raise self._fail("has a FLUX image but no IVAR image")
            flux, ivar = np.asarray(names["FLUX"].data, dtype=np.float32), np.asarray(names["IVAR"].data, dtype=np.float32)
            mask = np.asarray(names["MASK"].data) if "MASK" in names else None
            if "WAVELENGTH" not in names:
                raise self._fail("has no WAVELENGTH image")
            wave_hdu = names["WAVELENGTH"]
            wave, unit = np.asarray(wave_hdu.data, dtype=np.float64), wave_hdu.header.get("BUNIT")
        else:
            self.layout = "table"
            table = names.get("SPECTRA") if isinstance(names.get("SPECTRA"), fits.BinTableHDU) else next(
                (t for t in tables if "FLUX" in [c.upper() for c in t.columns.names]), None)
            if table is None:
                raise self._fail("has neither a table with a FLUX column nor FLUX and IVAR images")
            cols = table.columns.names
            get = {c.upper(): c for c in cols}
            for need in ("FLUX", "IVAR"):
                if need not in get:
                    raise self._fail(f"the spectra table {table.name or '(unnamed)'} has no {need} column")
            ids = table.data[_column(cols, id_column, SPECTRA_ID_COLUMNS, self.path, "spectrum id")]
            flux = np.asarray(table.data[get["FLUX"]], dtype=np.float32)
            ivar = np.asarray(table.data[get["IVAR"]], dtype=np.float32)
            mask = np.asarray(table.data[get["MASK"]]) if "MASK" in get else None
            if "WAVELENGTH" in get:
                wave = np.asarray(table.data[get["WAVELENGTH"]], dtype=np.float64)
                unit = table.columns[get["WAVELENGTH"]].unit
            elif "WAVELENGTH" in names:
                wave, unit = np.asarray(names["WAVELENGTH"].data, dtype=np.float64), names["WAVELENGTH"].header.get("BUNIT")
            else:
                raise self._fail("has no WAVELENGTH column or image")
        if flux.ndim != 2 or ivar.shape != flux.shape or (mask is not None and mask.shape != flux.shape):
            raise self._fail(f"FLUX {flux.shape}, IVAR {ivar.shape}" + (f", MASK {mask.shape}" if mask is not None else "")
                             + " must be (objects, wavelengths) of one shape")
        if wave.shape not in ((flux.shape[1],), flux.shape):
            raise self._fail(f"WAVELENGTH {wave.shape} does not fit FLUX {flux.shape}")
        if len(ids) != flux.shape[0]:
            raise self._fail(f"{len(ids)} ids for {flux.shape[0]} spectra")
        key = str(unit or wave_unit).strip().lower().replace("ångström", "angstrom")
        if key not in WAVE_UNITS:
            raise self._fail(f"unknown wavelength unit '{unit or wave_unit}' (use Angstrom, nm or um)")
        self.wave = wave * WAVE_UNITS[key]
        self.flux, self.ivar = flux, ivar
        self.mask = (mask != 0) if mask is not None else ~(ivar > 0)
        self.ids = id_strings(ids)
        seen: dict[str, int] = {}
        for k, value in enumerate(self.ids):
            if value in seen:
                raise self._fail(f"id {value} has two spectra (rows {seen[value]} and {k})")
            seen[value] = k
        self._row = seen

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, object_id: str) -> Optional[dict]:
        k = self._row.get(str(object_id))
        if k is None:
            return None
        wave = self.wave if self.wave.ndim == 1 else self.wave[k]
        return {"wavelength": wave, "flux": self.flux[k], "ivar": self.ivar[k], "mask": self.mask[k] | ~(self.ivar[k] > 0)}


# -- the reader ------------------------------------------------------------------------------------
class JoinReader(Reader):
    def __init__(
        self,
        cutouts: Optional[Mapping[str, Any]] = None,
        catalog: Any = None,
        by: str = "sky",
        id_column: Optional[str] = None,
        ra_column: str = "ra",
        dec_column: str = "dec",
        radius: float = 1.0,
        columns: Union[str, Sequence[str], None] = "all",
        unmatched: str = "keep",
        spectra: Any = None,
        spectra_id_column: Optional[str] = None,
        spectra_wave_unit: str = "Angstrom",
        shard_size: Optional[int] = None,
    ) -> None:
        from galframe import registry
        from galframe.readers import split_reader_cfg

        if not isinstance(cutouts, Mapping) or not cutouts.get("plugin"):
            raise ConfigError("data.cutouts must be a reader config with a plugin, e.g. {plugin: fits, path: cutouts/}.")
        name, _, options = split_reader_cfg(cutouts)
        if name == "join":
            raise ConfigError("data.cutouts cannot itself be a join reader.")
        if shard_size is not None:
            options["shard_size"] = shard_size
        self.inner: Reader = registry.build("reader", name, options)
        super().__init__(self.inner.shard_size)
        self.by = check_choice("data.by", str(by), ("id", "sky"))
        self.unmatched = check_choice("data.unmatched", str(unmatched), ("keep", "reject"))
        self.radius = float(radius)
        if self.by == "sky" and not self.radius > 0:
            raise ConfigError(f"data.radius must be a positive number of arcsec (got {radius}).")
        if catalog in (None, "", "???"):
            raise ConfigError("data.catalog is not set: give the catalog (CSV, Parquet or FITS table) to join.")
        self.catalog_path = os.path.expanduser(str(catalog))
        self.table = read_catalog(self.catalog_path)
        cols = [str(c) for c in self.table.columns]
        self.id_column = _column(cols, id_column, ID_COLUMNS, self.catalog_path, "catalog id",
                                 required=self.by == "id" or spectra not in (None, ""))
        if self.by == "sky":
            self.ra_column = _column(cols, ra_column, (), self.catalog_path, "data.ra_column")
            self.dec_column = _column(cols, dec_column, (), self.catalog_path, "data.dec_column")
            self.cat_ra = np.asarray(self.table[self.ra_column], dtype=np.float64)
            self.cat_dec = np.asarray(self.table[self.dec_column], dtype=np.float64)
        if self.id_column is not None:
            self.cat_ids = id_strings(self.table[self.id_column])
            self._row = {}
            for k, value in enumerate(self.cat_ids):
                if value in self._row and self.by == "id":
                    raise DataError(f"{self.catalog_path}: id {value} appears in rows {self._row[value]} and {k} ({self.id_column}).")
                self._row.setdefault(value, k)
        if columns in (None, "none"):
            self.carry: list[str] = []
        elif columns == "all":
            self.carry = cols
        else:
            wanted = [columns] if isinstance(columns, str) else [str(c) for c in columns]
            missing = [c for c in wanted if c not in cols]
            if missing:
                raise DataError(f"{self.catalog_path}: no column(s) {missing} (data.columns).")
            self.carry = wanted
        self.spectra = Spectra(spectra, spectra_id_column, spectra_wave_unit) if spectra not in (None, "") else None
        self.spectra_path = self.spectra.path if self.spectra is not None else None
        self.bands, self.classes, self.votes = self.inner.bands, self.inner.classes, self.inner.votes
        self.pixel_scale = self.inner.pixel_scale

    def describe(self) -> str:
        how = f"by sky position within {self.radius:g} arcsec" if self.by == "sky" else f"by {self.id_column}"
        return f"{self.inner.describe()} joined with {self.catalog_path} {how}"

    def bind(self, bands: Sequence[str], image_size: int) -> None:
        self.inner.bind(bands, image_size)
        super().bind(bands, image_size)

    def shards(self) -> list[Shard]:
        extra = [file_stat(self.catalog_path), file_stat(self.spectra_path) if self.spectra_path else None,
                 self.by, self.radius, self.id_column]
        return [Shard(key=s.key, items=s.items, n=s.n, fingerprint=fingerprint([s.fingerprint, *extra]))
                for s in self.inner.shards()]

    def tile_grid(self, source: str) -> Any:
        return self.inner.tile_grid(source)

    def pixel_to_world(self, source: str, x: np.ndarray, y: np.ndarray) -> Any:
        return self.inner.pixel_to_world(source, x, y)

    def _rows(self, stamps: list[Stamp]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(catalog row or -1, separation in arcsec (NaN by id), why an object has none) of ``stamps``."""
        if self.by == "id":
            rows = np.array([self._row.get(str(st.id), -1) for st in stamps], dtype=np.int64)
            why = [f"id {st.id} is not in the catalog's {self.id_column} column ({self.catalog_path})" for st in stamps]
            return rows, np.full(len(stamps), np.nan), why
        ra = np.array([float(st.meta.get("ra", np.nan)) for st in stamps])
        dec = np.array([float(st.meta.get("dec", np.nan)) for st in stamps])
        match = match_sky(ra, dec, self.cat_ra, self.cat_dec, self.radius)
        why = []
        for k in range(len(stamps)):
            if not (np.isfinite(ra[k]) and np.isfinite(dec[k])):
                why.append("no sky position (RA/Dec) to match to the catalog")
            else:
                why.append(f"no catalog row within {self.radius:g} arcsec (nearest: row {match.nearest[k]} at "
                           f"{match.separation[k]:.2f} arcsec; {self.catalog_path})")
        return match.index, match.separation, why

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        items = list(self.inner.read(shard))
        stamps = [it for it in items if isinstance(it, Stamp)]
        rows, seps, why = self._rows(stamps) if stamps else (np.zeros(0, np.int64), np.zeros(0), [])
        where = {id(st): k for k, st in enumerate(stamps)}
        frame = self.table.iloc[rows[rows >= 0]] if self.carry else None
        values = frame[self.carry].to_dict("records") if frame is not None else []
        at = {int(r): v for r, v in zip(np.flatnonzero(rows >= 0), values)}
        for item in items:
            if not isinstance(item, Stamp):
                yield item
                continue
            k = where[id(item)]
            row = int(rows[k])
            if row < 0 and self.unmatched == "reject":
                yield Reject(source=str(item.meta.get("source", item.id)), reason=why[k], id=item.id)
                continue
            item.meta["catalog_row"] = row
            if self.by == "sky":
                item.meta["match_sep_arcsec"] = float(seps[k])
            for key, value in at.get(k, {}).items():
                name = key if key not in item.meta and str(key).lower() not in TAKEN else f"catalog_{key}"
                item.meta[name] = value.item() if isinstance(value, np.generic) else value
            if self.spectra is not None:
                spectrum_id = str(item.id) if self.by == "id" else (self.cat_ids[row] if row >= 0 else None)
                spectrum = self.spectra.get(spectrum_id) if spectrum_id is not None else None
                item.meta["has_spectrum"] = spectrum is not None
                if spectrum is not None:
                    item.meta["spectrum"] = spectrum
            yield item
