"""galframe pieces registered in mmdet's ``MODELS`` registry, so mmdet configs can name them.

* ``GalframeBackbone``: any galframe backbone plugin as an mmdet backbone.  Given an image batch
  it runs the wrapped backbone and returns its multi-scale maps; given a tuple of maps (what
  galframe's own training loop passes, having run the shared backbone once for all tasks) it
  passes them through.  ``dict(type="GalframeBackbone", plugin="lvm", options={...}, bands=[...],
  image_size=128)`` in a plain mmdet config trains a galframe backbone with mmdet's own runner.
* ``SimpleFeaturePyramid``: the ViTDet neck: one map (by default the stride-16 one) turned into
  strides 4, 8, 16, 32 (and an extra max-pooled level) by transposed convolutions and pooling,
  for backbones whose multi-scale maps are weak or absent.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

_REGISTERED = False


def register() -> None:
    """Register galframe's modules (and mmdet's own) in mmdet's registries; idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    import logging

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    # mmengine reports every initialised tensor at INFO level: keep galframe's console readable
    from mmengine.logging import MMLogger

    logging.getLogger("mmengine").setLevel(logging.WARNING)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    register_all_modules(init_default_scope=True)
    for cls in (GalframeBackbone, SimpleFeaturePyramid):
        if MODELS.get(cls.__name__) is None:
            MODELS.register_module(module=cls)
    _REGISTERED = True


class GalframeBackbone(nn.Module):
    def __init__(
        self,
        plugin: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        bands: Sequence[str] = ("g", "r", "z"),
        image_size: int = 128,
        out_indices: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        self.out_indices = None if out_indices is None else tuple(int(i) for i in out_indices)
        self.inner: Optional[nn.Module] = None
        if plugin is not None:
            from galframe import registry
            from galframe.api import DataInfo

            info = DataInfo(bands=tuple(bands), image_size=int(image_size))
            self.inner = registry.build("backbone", plugin, dict(options or {}), data=info)

    def _select(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        maps = tuple(maps)
        return maps if self.out_indices is None else tuple(maps[i] for i in self.out_indices)

    def forward(self, x: Any) -> tuple[torch.Tensor, ...]:
        if isinstance(x, (tuple, list)):
            return self._select(x)
        if self.inner is None:
            raise ValueError(
                "GalframeBackbone got an image batch but wraps no backbone: give plugin= (and options=) "
                "in the mmdet config, or pass precomputed feature maps."
            )
        return self._select(self.inner(x).maps)

    def init_weights(self) -> None:  # mmengine calls this; galframe backbones initialise (or load) themselves
        pass


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple pyramid from one input map (``in_index``, stride ``in_stride``)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 64,
        in_index: int = -1,
        in_stride: int = 16,
        strides: Sequence[int] = (4, 8, 16, 32),
        num_outs: int = 5,
    ) -> None:
        super().__init__()
        c = int(in_channels[in_index])
        self.in_index = int(in_index)
        self.num_outs = int(num_outs)
        self.stages = nn.ModuleList()
        for stride in strides:
            ratio = stride / in_stride
            layers: list[nn.Module] = []
            width = c
            if ratio < 1:
                steps = int(round(torch.log2(torch.tensor(1 / ratio)).item()))
                for k in range(steps):
                    nxt = max(width // 2, out_channels)
                    layers.append(nn.ConvTranspose2d(width, nxt, 2, stride=2))
                    if k < steps - 1:
                        layers += [nn.GroupNorm(1, nxt), nn.GELU()]
                    width = nxt
            elif ratio > 1:
                steps = int(round(torch.log2(torch.tensor(ratio)).item()))
                layers += [nn.MaxPool2d(2) for _ in range(steps)]
            layers += [
                nn.Conv2d(width, out_channels, 1, bias=False),
                nn.GroupNorm(1, out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.GroupNorm(1, out_channels),
            ]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = inputs[self.in_index]
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(nn.functional.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)

    def init_weights(self) -> None:
        pass


def pyramid_strides(feature_strides: Sequence[int], num_outs: int) -> list[int]:
    """Strides of an FPN's outputs: the backbone's, then each extra level twice the last."""
    out = [int(s) for s in feature_strides][:num_outs]
    while len(out) < num_outs:
        out.append(out[-1] * 2)
    return out
