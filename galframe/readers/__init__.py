"""Readers of real survey data: plugins of kind ``reader`` (entry points ``reader.<name>``).

========================  ==============================================================
``reader.fits``           FITS cutouts, one file per object (cube or one HDU per band; ivar, mask)
``reader.hdf5``           HDF5 in the layout of the self-supervised DESI Legacy Surveys sets
``reader.galaxy10``       Galaxy10 DECaLS (8-bit RGB, 10 classes)
``reader.gz_decals``      Galaxy Zoo DECaLS vote catalogs with image paths (FITS, PNG, JPEG)
``reader.image``          PNG / JPEG images (one per object, or tiled)
``reader.mosaic``         large FITS mosaics with a WCS, tiled with overlap or cut at catalog centres
``reader.dataset``        a galframe dataset directory (simulated or ingested)
``reader.join``           another reader's cutouts joined with a catalog (by id or sky position) and spectra
========================  ==============================================================

Configs live in ``conf/reader/`` and are selected with ``data=<name>`` by ``galframe predict`` and
``galframe ingest`` (``galframe train`` reads galframe dataset directories: ingest first).
"""
from __future__ import annotations

from typing import Any, Mapping

from galframe.readers.base import READER_CORE_KEYS, Conformed, Reader, Reject, Shard, Stamp, StampError, conform

__all__ = ["Reader", "Stamp", "Reject", "Shard", "StampError", "Conformed", "conform", "build_reader", "reader_overrides"]

#: commands whose ``data=`` names a reader config (conf/reader/) instead of a training data config
READER_COMMANDS = ("predict", "ingest")


def split_reader_cfg(cfg: Mapping[str, Any]) -> tuple[str, dict, dict]:
    """(plugin name, pipeline options (fit, rebin, fill, max_bad_fraction), the plugin's own options)."""
    from galframe.errors import ConfigError

    cfg = dict(cfg)
    if "plugin" not in cfg:
        raise ConfigError("data config has no 'plugin' key naming the reader (data=fits, data=hdf5, ...).")
    core = {k: cfg.pop(k) for k in READER_CORE_KEYS if k in cfg}
    return str(core.pop("plugin")), core, cfg


def build_reader(cfg: Mapping[str, Any]) -> tuple[Reader, dict]:
    """The reader plugin a ``data:`` reader config names, and the pipeline options of that config."""
    from galframe import registry

    name, core, options = split_reader_cfg(cfg)
    reader = registry.build("reader", name, options)
    return reader, core


def reader_overrides(args: list[str]) -> list[str]:
    """For predict/ingest: ``data=<name>`` selects a config of the ``reader`` group placed at ``data``."""
    out = []
    for arg in args:
        head, sep, rest = arg.partition("=")
        if sep and head in ("data", "+data", "++data"):
            arg = f"{head[: len(head) - 4]}reader@data={rest}"
        out.append(arg)
    return out
