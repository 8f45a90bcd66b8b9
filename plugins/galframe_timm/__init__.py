"""Any timm model as a galframe backbone (ResNet18/50 baselines and more).

Nothing is ever downloaded: ``weights`` names a local file (safetensors or a
PyTorch state dict) to start from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Features
from galframe.errors import ConfigError, DataError, did_you_mean


class TimmBackbone(Backbone):
    """A ``timm`` model in ``features_only`` mode, ``in_chans`` = number of bands."""

    def __init__(
        self,
        data: DataInfo,
        model_name: str = "resnet18",
        weights: Optional[str] = None,
        out_indices: Optional[Sequence[int]] = None,
        drop_path_rate: float = 0.0,
        pretrained: bool = False,
    ) -> None:
        super().__init__(data)
        import timm

        if pretrained and not weights:
            raise ConfigError(
                "backbone.pretrained=true needs backbone.weights=<local file>: galframe never downloads weights."
            )
        if not timm.is_model(model_name):
            raise ConfigError(f"Unknown timm model '{model_name}'.{did_you_mean(model_name, timm.list_models())}")
        kwargs = {"features_only": True, "in_chans": data.n_bands, "pretrained": False}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.model_name = model_name
        self.body = timm.create_model(model_name, **kwargs)
        info = self.body.feature_info
        self.feature_channels = list(info.channels())
        self.feature_strides = list(info.reduction())
        self.embed_dim = self.feature_channels[-1]
        self._stages = self._split_stages(list(info.module_name()))
        if weights:
            self.load_weights(weights)

    def _split_stages(self, feature_modules: list[str]) -> list[nn.Module]:
        """Group the body's children into stages, each ending at a feature-producing module."""
        # timm names nested feature modules with '_' in FeatureListNet (e.g. 'stages_1'); match on the top-level child.
        ends = {name.replace(".", "_") for name in feature_modules}
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        for child_name, child in self.body.named_children():
            current.append(child)
            if child_name in ends:
                stages.append(nn.ModuleList(current))
                current = []
        if current:  # trailing modules (norms) belong to the last stage
            if stages:
                stages[-1] = nn.ModuleList(list(stages[-1]) + current)
            else:
                stages.append(nn.ModuleList(current))
        return stages

    def blocks(self) -> list[nn.Module]:
        return list(self._stages)

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:
        maps = self.body(x)
        embedding = maps[-1].mean(dim=(-2, -1))
        return Features(maps=list(maps), embedding=embedding)

    def load_weights(self, path: str) -> None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"{file}: backbone weights file not found (galframe never downloads weights).")
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(file))
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
        except Exception as exc:
            raise DataError(f"{file}: cannot read backbone weights ({type(exc).__name__}: {exc})") from exc
        own = self.body.state_dict()
        # accept either bare timm keys or keys prefixed as in a galframe checkpoint
        cleaned = {}
        for key, value in state.items():
            for prefix in ("backbone.body.", "body.", "model."):
                if key.startswith(prefix):
                    key = key[len(prefix):]
            cleaned[key.replace(".", "_", 0)] = value
        usable = {k: v for k, v in cleaned.items() if k in own}
        for key, value in usable.items():
            if own[key].shape != value.shape:
                raise DataError(
                    f"{file}: weight '{key}' has shape {tuple(value.shape)}, the model needs {tuple(own[key].shape)} "
                    f"(were these weights made for {self.model_name} with {self.data.n_bands} bands?)"
                )
        if not usable:
            raise DataError(f"{file}: no weight in this file matches a {self.model_name} backbone.")
        self.body.load_state_dict(usable, strict=False)
