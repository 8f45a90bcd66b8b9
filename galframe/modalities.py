"""Modalities besides the image: which a run selects, the fields that load them and the fused embedding.

``modalities: [image]`` (the default) is a model of images alone, built and run as before: no encoder, no
fusion, nothing added to its config.  ``modalities=[image,tabular]`` (or ``[image,spectrum]``,
``[tabular]`` ...) adds, for every modality but ``image``, the encoder plugin ``encoders.<modality>`` names
(:class:`galframe.api.Encoder`), reading the batch key of that name, and the fusion plugin ``fusion`` names
(:class:`galframe.api.Fusion`), which makes the one embedding the tasks read.  The fused embedding has the
backbone's width; ``Features.maps`` stay the image's.  Without ``image`` the backbone is built but not run
(its parameters are frozen) and ``Features.maps`` is empty.

Missing data is masked, never imputed: each encoder says which objects carry its modality
(``Encoder.present``); a modality absent from the inputs altogether (images predicted without their
catalog or spectra) is absent for every object.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from galframe import registry
from galframe.errors import ConfigError, DataError, did_you_mean

IMAGE = "image"
#: what the fusion plugin is built with by the core (a user's config may not set them)
FUSION_CONTEXT = ("dims", "embed_dim")


def selected(cfg: Mapping[str, Any]) -> list[str]:
    """The modalities a (model or composed) config selects, checked; ``[image]`` when it names none."""
    mods = cfg.get("modalities")
    mods = [IMAGE] if mods is None else [str(m) for m in ([mods] if isinstance(mods, str) else mods)]
    if not mods:
        raise ConfigError("modalities is empty: select at least one, e.g. 'modalities=[image]'.")
    twice = sorted({m for m in mods if mods.count(m) > 1})
    if twice:
        raise ConfigError(f"modalities {mods} names {twice} more than once.")
    encoders = dict(cfg.get("encoders") or {})
    for m in mods:
        if m != IMAGE and m not in encoders:
            known = [IMAGE, *encoders]
            raise ConfigError(
                f"modality '{m}' has no encoder config (encoders.{m}).{did_you_mean(m, known)} "
                f"Modalities with one: {', '.join(known)}."
            )
    return mods


def is_multimodal(cfg: Mapping[str, Any]) -> bool:
    return selected(cfg) != [IMAGE]


def _plugin(cfg: Mapping[str, Any], what: str) -> tuple[str, dict]:
    """(plugin name, its options) of a ``{plugin, options...}`` config."""
    options = dict(cfg or {})
    if "plugin" not in options:
        raise ConfigError(f"{what} config has no 'plugin' key naming the plugin to build.")
    return str(options.pop("plugin")), options


def _encoder_cfg(cfg: Mapping[str, Any], name: str) -> tuple[str, dict]:
    return _plugin(cfg["encoders"][name], f"encoders.{name}")


def model_entries(cfg: Mapping[str, Any]) -> dict:
    """What a GalaxyModel config carries of a composed config's modalities: nothing for images alone."""
    if not is_multimodal(cfg):
        return {}
    mods = selected(cfg)
    if not cfg.get("fusion"):
        raise ConfigError("several modalities are selected but no fusion is configured: choose one, e.g. fusion=concat.")
    return {
        "modalities": mods,
        "encoders": {m: dict(cfg["encoders"][m]) for m in mods if m != IMAGE},
        "fusion": dict(cfg["fusion"]),
    }


def fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The batch fields that load the selected modalities besides the image, by batch key (an encoder's
    own, else the registered ``field.<modality>``)."""
    from galframe.data.fields import field_for

    out = {}
    for m in selected(cfg):
        if m == IMAGE:
            continue
        plugin, options = _encoder_cfg(cfg, m)
        own = registry.load("encoder", plugin).field(m, options)
        out[m] = own if own is not None else field_for(m)
    return out


class Modalities(nn.Module):
    """The encoders of a model's modalities besides the image and their fusion (``GalaxyModel.modal``)."""

    def __init__(self, cfg: Mapping[str, Any], info: Any, embed_dim: int) -> None:
        super().__init__()
        self.modalities = selected(cfg)
        self.encoders = nn.ModuleDict()
        dims: dict[str, int] = {IMAGE: int(embed_dim)} if IMAGE in self.modalities else {}
        for m in self.modalities:
            if m == IMAGE:
                continue
            plugin, options = _encoder_cfg(cfg, m)
            encoder = registry.build("encoder", plugin, options, name=m, data=info)
            if int(encoder.embed_dim) < 1:
                raise ConfigError(f"encoder '{plugin}' (modality {m}) has embed_dim {encoder.embed_dim}; it must be set.")
            self.encoders[m] = encoder
            dims[m] = int(encoder.embed_dim)
        plugin, options = _plugin(cfg["fusion"], "fusion")
        clash = [k for k in FUSION_CONTEXT if k in options]
        if clash:
            raise ConfigError(f"fusion.{clash[0]} is set by galframe (the modalities' widths, the backbone's width); leave it out.")
        self.fusion = registry.build("fusion", plugin, options, dims=dims, embed_dim=int(embed_dim))

    @property
    def uses_image(self) -> bool:
        return IMAGE in self.modalities

    def forward(self, image_embedding: Optional[torch.Tensor], inputs: Optional[Mapping[str, Any]], n: int,
                device: Any) -> torch.Tensor:
        """The fused (n, embed_dim) embedding; ``inputs`` holds the batch values of the other modalities
        (a missing key, or no inputs: that modality is absent for every object)."""
        embeddings: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        if self.uses_image:
            embeddings[IMAGE] = image_embedding
            present[IMAGE] = torch.ones(n, dtype=torch.bool, device=device)
        for m, encoder in self.encoders.items():
            x = None if inputs is None else inputs.get(m)
            if x is None:
                present[m] = torch.zeros(n, dtype=torch.bool, device=device)
                embeddings[m] = torch.zeros(n, encoder.embed_dim, device=device)
                continue
            if len(x) != n:
                raise DataError(f"modality '{m}' has {len(x)} rows for a batch of {n} images.")
            here = encoder.present(x).to(device=device, dtype=torch.bool)
            out = encoder(x)
            # an absent row is zeros, and no gradient reaches the encoder through it
            embeddings[m] = torch.where(here[:, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
            present[m] = here
        return self.fusion(embeddings, present)
