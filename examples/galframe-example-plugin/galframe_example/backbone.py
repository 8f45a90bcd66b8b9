"""TinyCNN: a small convolutional backbone, written against galframe's plugin contract only.

It shows what a backbone must provide: build the network from ``DataInfo``
(``in_chans`` = number of bands), set ``feature_channels``, ``feature_strides``
and ``embed_dim``, return its stages from ``blocks()`` (galframe uses them for
``finetune.mode=frozen|last_n`` and layer-wise learning-rate decay) and return
``Features`` from ``forward``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Features
from galframe.errors import ConfigError


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(Backbone):
    """``len(widths)`` stages of ``depth`` conv-BN-ReLU layers; each stage halves the resolution."""

    def __init__(self, data: DataInfo, widths: Sequence[int] = (16, 32, 64), depth: int = 1) -> None:
        super().__init__(data)
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ConfigError(f"backbone tiny_cnn: widths must be a non-empty list of positive ints (got {widths}).")
        if int(depth) < 1:
            raise ConfigError(f"backbone tiny_cnn: depth must be at least 1 (got {depth}).")
        if data.image_size and data.image_size < 2 ** len(widths):
            raise ConfigError(
                f"backbone tiny_cnn: {len(widths)} stride-2 stages need images of at least {2 ** len(widths)} px; "
                f"these are {data.image_size} px."
            )
        stages = []
        c_in = data.n_bands
        for width in widths:
            layers = [conv_bn_relu(c_in, width, stride=2)]
            layers += [conv_bn_relu(width, width, stride=1) for _ in range(int(depth) - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.feature_channels = list(widths)
        self.feature_strides = [2 ** (i + 1) for i in range(len(widths))]
        self.embed_dim = widths[-1]

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return Features(maps=maps, embedding=x.mean(dim=(-2, -1)))
