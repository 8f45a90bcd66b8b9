"""Reader paths: recursive globs do not follow links to directories (a link loop made 82 rows of 2
files), and a file reached twice is read once, with a warning that names it."""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits

from galframe.readers.base import DuplicateFileWarning, glob_files, list_files
from galframe.readers.fits import FitsReader


def cutout(path) -> None:
    header = fits.Header()
    header["BANDS"] = "grz"
    fits.PrimaryHDU(np.ones((3, 16, 16), np.float32), header).writeto(path)


@pytest.fixture()
def looped(tmp_path):
    """Two real cutouts under a/ and a/b/, and a link a/b/loop -> a (a loop)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    cutout(tmp_path / "a" / "one.fits")
    cutout(tmp_path / "a" / "b" / "two.fits")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    return tmp_path


def test_recursive_globs_do_not_follow_directory_links(looped) -> None:
    pattern = str(looped / "**" / "*.fits")
    assert len(glob.glob(pattern, recursive=True)) > 10  # what the reader used to list (glob follows the loop)
    os.symlink(looped, looped / "a" / "b" / "up")  # a second loop: glob's listing would now grow exponentially
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file is reached twice here: no warning either
        files = list_files(pattern, ("*.fits",))
    assert files == [str(looped / "a" / "b" / "two.fits"), str(looped / "a" / "one.fits")]
    reader = FitsReader(path=pattern, shard_size=10)
    assert sum(s.n for s in reader.shards()) == 2
    # a directory (searched recursively) does not enter the loop either
    assert list_files(str(looped), ("*.fits",)) == files


def test_a_file_reached_twice_is_read_once_with_a_warning(looped) -> None:
    os.symlink(looped / "a" / "one.fits", looped / "a" / "b" / "same.fits")  # a second name for one.fits
    with pytest.warns(DuplicateFileWarning, match=r"b/same.fits is the file .*a/one.fits reached a second time"):
        files = list_files(str(looped / "a" / "**" / "*.fits"), ("*.fits",))
    assert [os.path.basename(f) for f in files] == ["two.fits", "one.fits"]
    with pytest.warns(DuplicateFileWarning, match="one.fits reached a second time"):
        twice = list_files([str(looped / "a" / "one.fits"), str(looped / "a" / "*.fits")], ("*.fits",))
    assert twice == [str(looped / "a" / "one.fits")]


def test_glob_files_matches_glob_where_there_are_no_links(tmp_path) -> None:
    for d in ("a/b/c", "d", ".hidden", "a/.h"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    for f in ("a/x.fits", "a/b/y.fits", "a/b/c/z.fits", "d/w.fits", "top.fits", ".hidden/h.fits", "a/.h/q.fits",
              "a/.dot.fits", "a/b/n.txt"):
        (tmp_path / f).write_text("")
    for pattern in ("**/*.fits", "a/**/*.fits", "*/*.fits", "a/**", "a/**/", "a/**/b/**/*.fits", "a/[bx]*",
                    "nothing/*.fits", "a/b/y.fits", ".*/*.fits"):
        full = str(tmp_path / pattern)
        assert sorted(set(glob_files(full))) == sorted(glob.glob(full, recursive=True)), pattern
