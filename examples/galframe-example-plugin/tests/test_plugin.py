"""The example plugin's own tests: galframe.testing checks each plugin against galframe's contract.

Run them with ``pytest`` in this directory once the plugin is installed (or on ``PYTHONPATH``).
"""
from __future__ import annotations

import numpy as np
import pytest

from galframe.api import DataInfo
from galframe.testing import check_backbone, check_reader, check_task

from galframe_example.backbone import TinyCNN
from galframe_example.reader import NpyReader
from galframe_example.task import ColorTask

DATA = DataInfo(bands=("g", "r", "z"), image_size=32, stats={"column_mean": {"mag_g": 19.0, "mag_r": 18.5},
                                                               "column_std": {"mag_g": 1.0, "mag_r": 1.0}})


@pytest.mark.parametrize("options", [{}, {"widths": [8, 16], "depth": 2}])
def test_backbone(options):
    backbone = check_backbone(TinyCNN, data=DATA, **options)
    assert backbone.embed_dim == (options.get("widths") or [16, 32, 64])[-1]


def test_task():
    task = check_task(ColorTask, data=DATA, loss="mse")  # mag_g and mag_r: catalog columns, drawn at random
    assert task.monitor == ("mae", "min")


def test_reader(tmp_path):
    cube = np.random.default_rng(0).normal(size=(5, 3, 40, 40)).astype(np.float32)
    cube[2] = np.nan  # an object without any finite pixel: a reject, not an error
    np.save(tmp_path / "cube.npy", cube)
    stamps = check_reader(NpyReader, bands=("g", "r", "z"), size=32, path=str(tmp_path / "cube.npy"), shard_size=2)
    assert [s.id for s in stamps] == ["0", "1", "3", "4"]
    assert np.allclose(stamps[0].flux, cube[0])
