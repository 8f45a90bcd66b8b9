"""What readers share: listing files, the checks every object goes through (:func:`conform`), and the
reader contract (:mod:`galframe.readers.contract`, public as :mod:`galframe.api`).

Per-object problems (a truncated file, a wrong shape, a missing band) are :class:`Reject` s with a
reason; problems with the whole source (the path does not exist, an HDF5 file without images)
are :class:`~galframe.errors.DataError` s.
"""
from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError, check_choice
from galframe.readers.contract import (  # noqa: F401  (readers import the contract from here too)
    READER_CORE_KEYS,
    Reader,
    Reject,
    Shard,
    Stamp,
    StampError,
    file_stat,
    fingerprint,
)

FITS = ("crop", "pad", "exact")


# -- helpers readers share -------------------------------------------------------------------------
def list_files(path: Any, patterns: Sequence[str], what: str = "data.path") -> list[str]:
    """Sorted files of a directory (matching ``patterns``, recursively), a glob, one file or a list of these.

    A path that names nothing is an error; a dangling link inside a directory is listed (its
    object is rejected when read).  Recursion (a directory, or ``**`` in a glob) does not enter
    links to directories, so a link loop is not followed; a file reached twice (through a link, or
    by two entries of a list) is listed once, with a :class:`DuplicateFileWarning` naming it."""
    if path in (None, "", "???"):
        raise ConfigError(f"{what} is not set: give a directory, a glob or a list of files.")
    specs = list(path) if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for spec in specs:
        spec = os.path.expanduser(str(spec))
        if glob.has_magic(spec):
            found = sorted(set(glob_files(spec)))
            if not found:
                raise DataError(f"{spec}: no file matches this pattern ({what}).")
            files.extend(found)
        elif os.path.isdir(spec):
            found = sorted(
                {str(p) for pat in patterns for p in Path(spec).rglob(pat) if p.is_symlink() or not p.is_dir()}
            )
            if not found:
                raise DataError(f"{spec}: directory has no file matching {', '.join(patterns)} ({what}).")
            files.extend(found)
        elif os.path.lexists(spec):
            files.append(spec)
        else:
            raise DataError(f"{spec}: no such file or directory ({what}).")
    return unique_files(files, what)


class DuplicateFileWarning(UserWarning):
    """The same file was reached by two paths (a link, or two entries of a list); it is read once."""


def unique_files(files: Sequence[str], what: str = "data.path") -> list[str]:
    """``files`` without a second path to a file already listed (compared by real path); of the paths
    to one file the one without links is kept (else the first), in its place in ``files``."""
    import warnings

    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(os.path.realpath(f), []).append(f)
    keep = set()
    for real, paths in groups.items():
        direct = [p for p in paths if os.path.abspath(p) == real]
        chosen = (direct or paths)[0]
        keep.add(chosen)
        others = list(paths)
        others.remove(chosen)
        for other in others:
            warnings.warn(f"{what}: {other} is the file {chosen} reached a second time; it is read once.",
                          DuplicateFileWarning, stacklevel=3)
    out, seen = [], set()
    for f in files:
        if f in keep and f not in seen:
            seen.add(f)
            out.append(f)
    return out


def glob_files(pattern: str) -> Iterator[str]:
    """``glob.glob(pattern, recursive=True)`` that does not enter links to directories through ``**``
    (a link loop would repeat files without end); names starting with '.' need a pattern that does."""
    head, parts = _split_pattern(pattern)
    yield from _glob_walk(head, parts)


def _split_pattern(pattern: str) -> tuple[str, list[str]]:
    drive, rest = os.path.splitdrive(pattern)
    parts = [p for p in rest.replace(os.sep, "/").split("/")]
    head = drive + ("/" if rest.startswith(("/", os.sep)) else "")
    if head.endswith("/"):
        parts = parts[1:]
    literal = []
    while parts and not glob.has_magic(parts[0]) and len(parts) > 1:
        literal.append(parts.pop(0))
    return (os.path.join(head, *literal) if (head or literal) else ""), parts


def _glob_walk(base: str, parts: list[str]) -> Iterator[str]:
    import fnmatch

    if not parts:
        yield base
        return
    part, rest = parts[0], parts[1:]
    here = base or os.curdir
    if part == "**" and not rest:  # a final **: everything below, as glob gives it
        if base:
            yield os.path.join(base, "")
        yield from _below(base)
        return
    if part == "**":
        yield from _glob_walk(base, rest)  # ** matches no directory at all ...
        for entry in _entries(here):
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):  # ... or real ones only
                yield from _glob_walk(os.path.join(base, entry.name), parts)
        return
    if not glob.has_magic(part):
        target = os.path.join(base, part)
        if rest:
            if os.path.isdir(target):
                yield from _glob_walk(target, rest)
        elif part and os.path.lexists(target):
            yield target
        elif not part and base:  # a trailing '/': directories only
            yield os.path.join(base, "")
        return
    for entry in _entries(here):
        if entry.name.startswith(".") and not part.startswith("."):
            continue
        if fnmatch.fnmatchcase(entry.name, part) if os.name != "nt" else fnmatch.fnmatch(entry.name, part):
            target = os.path.join(base, entry.name)
            if rest:
                if entry.is_dir():
                    yield from _glob_walk(target, rest)
            else:
                yield target


def _below(base: str) -> Iterator[str]:
    for entry in _entries(base or os.curdir):
        if not entry.name.startswith("."):
            yield os.path.join(base, entry.name)
            if entry.is_dir(follow_symlinks=False):
                yield from _below(os.path.join(base, entry.name))


def _entries(directory: str) -> list:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def chunked(seq: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for k, start in enumerate(range(0, len(seq), size)):
        yield k, seq[start : start + size]


def file_id(path: str) -> str:
    """An object id from a file name: the name without its (compression) suffixes."""
    name = os.path.basename(path)
    for suffix in (".gz", ".fz", ".bz2"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return os.path.splitext(name)[0]


def scalar_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata values that fit a catalog column (numbers, strings, booleans)."""
    out = {}
    for key, value in meta.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if value is None or isinstance(value, (bool, int, float, str)):
            out[str(key)] = value
    return out


# -- from a stamp to a model input -------------------------------------------------------------------
def _no_sky() -> np.ndarray:
    return np.zeros(0)


@dataclass
class Conformed:
    flux: np.ndarray  # (bands, size, size) float32, bad pixels filled
    n_bad: int  # band-pixels that were NaN/inf, masked, without data (ivar 0) or padding
    offset: tuple[int, int]  # (y, x) of the model input's origin in the stamp's (rebinned) pixels
    #: the per-band noise estimate, measured on first use of :attr:`sky_sigma` (predict never asks for it)
    sky: Callable[[], np.ndarray] = field(repr=False, compare=False, default=_no_sky)

    @functools.cached_property
    def sky_sigma(self) -> np.ndarray:
        """(bands,) noise estimate in nanomaggies (NaN where unknown): from the inverse variance, else the
        stamp's border (1.4826 x MAD)."""
        return self.sky()


def conform(
    stamp: Stamp,
    bands: Sequence[str],
    size: int,
    fit: str = "crop",
    rebin: int = 1,
    fill: str = "zero",
    max_bad_fraction: float = 0.5,
) -> Conformed:
    """Bands matched by name, bad pixels masked and counted, rebinned and cut to ``size`` x ``size``.

    ``fit``: ``crop`` (larger stamps are centre-cropped, smaller ones rejected), ``pad`` (smaller
    ones are zero-padded and the padding counted as bad pixels) or ``exact``.  ``rebin`` sums
    ``rebin`` x ``rebin`` blocks (flux is conserved; the pixel scale grows by that factor).
    Raises :class:`StampError` for a missing band, a wrong shape or too many bad pixels.
    """
    from galframe.data.scaling import clean_pixels

    check_choice("data.fit", fit, FITS)
    flux = np.asarray(stamp.flux)
    have = [str(b) for b in stamp.bands]
    if flux.ndim != 3 or flux.shape[0] != len(have):
        raise StampError(f"wrong shape: image {tuple(flux.shape)} for {len(have)} band(s) {have}")
    missing = [b for b in bands if b not in have]
    if missing:
        raise StampError(f"missing band(s) {missing} (the file has {have})")
    index = [have.index(b) for b in bands]
    flux = flux[index]
    bad = np.zeros(flux.shape, dtype=bool)
    if stamp.mask is not None:
        mask = np.asarray(stamp.mask, dtype=bool)
        bad |= _per_band(mask, index, flux.shape, "mask")
    ivar = no_data = None
    if stamp.ivar is not None:
        ivar = _per_band(np.asarray(stamp.ivar, dtype=np.float32), index, flux.shape, "inverse variance")
        with np.errstate(invalid="ignore"):
            no_data = ~(ivar > 0)
        bad |= no_data
    flux, bad = clean_pixels(flux, bad, fill=fill)
    rebin = int(rebin or 1)
    if rebin > 1:
        flux, bad = _rebin(flux, bad, rebin)
    flux, bad, offset = _fit(flux, bad, int(size), fit)
    n_bad = int(bad.sum())
    if n_bad > float(max_bad_fraction) * bad.size:
        raise StampError(
            f"{n_bad} of {bad.size} pixel values ({100.0 * n_bad / bad.size:.0f}%) are NaN/inf, masked or "
            f"without data (data.max_bad_fraction={max_bad_fraction})"
        )
    return Conformed(flux=flux, n_bad=n_bad, offset=offset,
                     sky=functools.partial(_sky_sigma, flux, bad, ivar, no_data, rebin))


def conform_many(stamps: Sequence[Stamp], bands: Sequence[str], size: int, fit: str = "crop", rebin: int = 1,
                 fill: str = "zero", max_bad_fraction: float = 0.5) -> tuple[list, Optional[np.ndarray]]:
    """:func:`conform` over a list of stamps: ([a Conformed or the StampError, per stamp], the conformed fluxes of
    the kept stamps stacked (n_kept, bands, size, size), or None if none is kept).  The usual case, stamps of one
    layout (same bands, shape, no mask or inverse variance, ``rebin=1``), is conformed as one array; any other
    stamp one by one, with the same result either way.  The Conformed fluxes are views of the stack."""
    from galframe.data.scaling import FILLS

    check_choice("data.fit", fit, FITS)
    check_choice("data.fill", fill, FILLS)
    results: list = [None] * len(stamps)
    fast: list[int] = []
    stack = None
    if stamps and int(rebin or 1) == 1:
        have, shape = tuple(str(b) for b in stamps[0].bands), np.shape(stamps[0].flux)
        if len(shape) == 3 and shape[0] == len(have) and all(b in have for b in bands):
            fast = [i for i, st in enumerate(stamps) if st.mask is None and st.ivar is None
                    and tuple(str(b) for b in st.bands) == have and np.shape(st.flux) == shape]
    if len(fast) > 1:
        try:
            stack, n_bad, bad, offset = _conform_stack([stamps[i] for i in fast], have, bands, size, fit, fill)
        except StampError:
            fast = []  # every stamp fails alike: conform says why, one by one
    limit = float(max_bad_fraction) * (len(bands) * size * size)
    kept_fast = []
    if len(fast) > 1 and stack is not None:
        for j, i in enumerate(fast):
            if n_bad[j] <= limit:  # too many bad pixels: conform words the rejection below
                results[i] = Conformed(flux=stack[j], n_bad=int(n_bad[j]), offset=offset,
                                       sky=functools.partial(_sky_sigma, stack[j], bad[j], None, None, 1))
                kept_fast.append(j)
    for i, st in enumerate(stamps):
        if results[i] is None:
            try:
                results[i] = conform(st, bands, size, fit=fit, rebin=rebin, fill=fill, max_bad_fraction=max_bad_fraction)
            except StampError as exc:
                results[i] = exc
    ok = [r for r in results if isinstance(r, Conformed)]
    if not ok:
        return results, None
    if stack is not None and len(kept_fast) == len(ok) == len(stack):
        return results, stack  # every stamp on the one-array path and kept: the stack is the batch
    return results, np.stack([r.flux for r in ok])


def _conform_stack(stamps: Sequence[Stamp], have: tuple, bands: Sequence[str], size: int, fit: str,
                   fill: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(flux, n_bad per stamp, bad, offset) of stamps of one layout, as one (n, bands, size, size) array."""
    from galframe.data.scaling import clean_pixels

    index = [have.index(b) for b in bands]
    flux = np.stack([np.asarray(st.flux, dtype=np.float32) for st in stamps])
    if index != list(range(len(have))):
        flux = flux[:, index]
    bad = ~np.isfinite(flux)
    dirty = np.flatnonzero(bad.any(axis=(1, 2, 3)))
    for j in dirty:  # NaN/inf pixels: filled as conform fills them
        flux[j], bad[j] = clean_pixels(flux[j], bad[j], fill=fill)
    flux, bad, offset = _fit(flux, bad, int(size), fit)
    return flux, bad.sum(axis=(1, 2, 3)), bad, offset


def _sky_sigma(flux: np.ndarray, bad: np.ndarray, ivar: Optional[np.ndarray], no_data: Optional[np.ndarray],
               rebin: int) -> np.ndarray:
    """Per band: 1 / sqrt(median inverse variance) of the pixels with data (times ``rebin``: the noise of a sum
    of rebin^2 pixels), else the conformed stamp's border noise."""
    sky = np.full(flux.shape[0], np.nan, dtype=np.float64)
    for k in range(flux.shape[0]):
        if ivar is not None and no_data is not None:
            good = ivar[k][~no_data[k] & np.isfinite(ivar[k])]
            if good.size:
                sky[k] = float(1.0 / np.sqrt(np.median(good))) * rebin
        if not np.isfinite(sky[k]):
            sky[k] = robust_sky_sigma(flux[k], bad[k])
    return sky


def _per_band(arr: np.ndarray, index: list[int], shape: tuple, what: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (len(index), *arr.shape))
        if arr.shape != shape:
            raise StampError(f"wrong shape: {what} {tuple(arr.shape[1:])} for image {tuple(shape[1:])}")
        return arr
    if arr.ndim != 3 or arr.shape[1:] != shape[1:]:
        raise StampError(f"wrong shape: {what} {tuple(arr.shape)} for image {tuple(shape)}")
    return arr[index]


def _rebin(flux: np.ndarray, bad: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b, h, w = flux.shape
    h2, w2 = h // k, w // k
    if h2 == 0 or w2 == 0:
        raise StampError(f"stamp {h}x{w} is smaller than one {k}x{k} rebinning block")
    f = flux[:, : h2 * k, : w2 * k].reshape(b, h2, k, w2, k).sum(axis=(2, 4), dtype=np.float64).astype(np.float32)
    m = bad[:, : h2 * k, : w2 * k].reshape(b, h2, k, w2, k).any(axis=(2, 4))
    return f, m


def _fit(flux: np.ndarray, bad: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cut or pad the last two axes of ``flux`` and ``bad`` (one stamp, or a stack of stamps) to ``size``."""
    h, w = flux.shape[-2:]
    if (h, w) == (size, size):
        return flux, bad, (0, 0)
    if fit == "exact":
        raise StampError(f"stamp is {h}x{w} pixels, the model takes {size}x{size} (data.fit=exact)")
    if (h < size or w < size) and fit == "crop":
        raise StampError(f"stamp is {h}x{w} pixels, smaller than the model's {size}x{size} (data.fit=pad pads it)")
    oy, ox = (h - size) // 2, (w - size) // 2  # negative: padding
    out = np.zeros((*flux.shape[:-2], size, size), dtype=np.float32)
    out_bad = np.ones((*flux.shape[:-2], size, size), dtype=bool)
    ys, xs = max(oy, 0), max(ox, 0)
    yd, xd = max(-oy, 0), max(-ox, 0)
    hh, ww = min(h - ys, size - yd), min(w - xs, size - xd)
    out[..., yd : yd + hh, xd : xd + ww] = flux[..., ys : ys + hh, xs : xs + ww]
    out_bad[..., yd : yd + hh, xd : xd + ww] = bad[..., ys : ys + hh, xs : xs + ww]
    return out, out_bad, (oy, ox)


def robust_sky_sigma(image: np.ndarray, bad: Optional[np.ndarray] = None, border: int = 4) -> float:
    """Noise from the stamp's outer ``border`` pixels (1.4826 x MAD), where the sky dominates."""
    h, w = image.shape
    edge = np.ones((h, w), dtype=bool)
    if h > 2 * border and w > 2 * border:
        edge[border:-border, border:-border] = False
    if bad is not None:
        edge &= ~bad
    values = image[edge]
    if values.size < 8:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
