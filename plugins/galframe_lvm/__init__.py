"""galframe's large vision model (LVM): a Swin-Transformer U-Net pretrained without labels.

``backbone=lvm_tiny|lvm_small|lvm_base`` select a size; ``backbone.weights=<file or zoo name>``
starts from pretrained weights (``galframe pretrain`` writes them; nothing is ever downloaded).

The encoder's stage outputs are the multi-scale feature maps, the layer-normed global average
of the last stage is the embedding, and the U-Net decoder restores a full-resolution image in
the network's input space (the scaled flux), for restoration tasks and for pretraining.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Features
from galframe.errors import ConfigError, DataError

ARCH_KEYS = (
    "img_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio", "decoder_depths", "residual",
)


class LVMBackbone(Backbone):
    """Swin-Transformer U-Net backbone.

    Options: ``img_size`` (input stamp size in pixels; null = the data's), ``patch_size``,
    ``embed_dim`` (width of the first stage; each stage doubles it), ``depths`` (Swin blocks per
    encoder stage), ``num_heads`` (one number, or one per stage), ``window_size`` (clamped to each
    stage's resolution), ``mlp_ratio``, ``drop_path_rate``, ``decoder_depths`` (Swin blocks per
    decoder stage, coarse to fine, one per encoder stage but the last; null mirrors the encoder),
    ``residual`` (the decoder predicts a correction added to its input image: good when the output
should reproduce the input, as for ``pretrain.target=input``; off by default, since restoring
noise-free, PSF-free ``clean`` images learns faster without it), ``weights``.

    ``blocks()``: [patch embedding + stage 1, stage 2, ..., stage L + embedding norm,
    decoder stage 1, ..., last decoder stage + final expansion].
    """

    has_decoder = True

    def __init__(
        self,
        data: DataInfo,
        img_size: Optional[int] = None,
        patch_size: int = 4,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2),
        num_heads: Union[int, Sequence[int]] = (2, 4, 8),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        decoder_depths: Optional[Sequence[int]] = None,
        residual: bool = False,
        weights: Optional[str] = None,
    ) -> None:
        super().__init__(data)
        from galframe_lvm.model import SwinUNet

        size = int(img_size) if img_size else int(data.image_size)
        if int(data.image_size) != size:
            raise DataError(
                f"backbone lvm is built for {size} x {size} px stamps (backbone.img_size={size}), but the data are "
                f"{data.image_size} px: use data of that size or set backbone.img_size={data.image_size}."
            )
        depths = [int(d) for d in depths]
        if not depths or any(d < 1 for d in depths):
            raise ConfigError(f"backbone.depths must list at least one stage of >= 1 block (got {depths}).")
        if patch_size < 1 or size % int(patch_size):
            raise ConfigError(f"backbone.img_size={size} is not a multiple of backbone.patch_size={patch_size}.")
        heads = [int(num_heads)] * len(depths) if isinstance(num_heads, (int, float)) else [int(h) for h in num_heads]
        if len(heads) != len(depths):
            raise ConfigError(f"backbone.num_heads has {len(heads)} values for {len(depths)} stages (backbone.depths).")
        for i, h in enumerate(heads):
            width = int(embed_dim) * 2**i
            if h < 1 or width % h:
                raise ConfigError(f"backbone.num_heads: stage {i + 1} is {width} wide, not divisible by {h} heads.")
        if decoder_depths is not None and len(decoder_depths) != len(depths) - 1:
            raise ConfigError(
                f"backbone.decoder_depths has {len(decoder_depths)} values; the decoder has {len(depths) - 1} stages "
                f"(one per encoder stage but the last)."
            )
        if (size // int(patch_size)) < 2 ** (len(depths) - 1):
            raise ConfigError(
                f"backbone: {len(depths)} stages halve a {size // int(patch_size)}-token grid below one token; "
                f"use fewer stages or a smaller patch_size."
            )
        self.arch = {
            "img_size": size,
            "patch_size": int(patch_size),
            "embed_dim": int(embed_dim),
            "depths": depths,
            "num_heads": heads,
            "window_size": int(window_size),
            "mlp_ratio": float(mlp_ratio),
            "decoder_depths": [int(d) for d in decoder_depths] if decoder_depths is not None else depths[:-1][::-1],
            "residual": bool(residual),
        }
        self.in_chans = data.n_bands
        self.net = SwinUNet(
            in_chans=data.n_bands, out_chans=data.n_bands, drop_path_rate=float(drop_path_rate), **self.arch
        )
        self.feature_channels = list(self.net.dims)
        self.feature_strides = list(self.net.strides)
        self.embed_dim = self.net.dims[-1]  # the Backbone contract: width of Features.embedding
        self.img_size = size
        #: the JSON sidecar of the weights this backbone started from (None: random init)
        self.weights_meta: Optional[dict] = None
        self._blocks = self._make_blocks()
        if weights:
            from galframe_lvm.weights import load_into

            self.weights_meta = load_into(self, str(weights))

    # -- the Backbone contract ----------------------------------------------
    def _make_blocks(self) -> list[nn.Module]:
        enc = list(self.net.encoder)
        blocks: list[nn.Module] = enc[:-1] + [nn.ModuleList([enc[-1], self.net.norm])]
        dec = list(self.net.decoder)
        if dec:
            blocks += dec[:-1] + [nn.ModuleList([dec[-1], self.net.final])]
        else:
            blocks[-1] = nn.ModuleList([*blocks[-1], self.net.final])
        return blocks

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def encoder_blocks(self) -> list[nn.Module]:
        """The blocks a task without decoder uses (the first ``len(depths)`` of ``blocks()``)."""
        return list(self._blocks[: len(self.arch["depths"])])

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise DataError(
                f"backbone lvm expects (batch, {self.in_chans} bands {list(self.data.bands)}, {self.img_size}, "
                f"{self.img_size}) input, got shape {tuple(x.shape)}."
            )
        if x.shape[-2] != self.img_size or x.shape[-1] != self.img_size:
            raise DataError(
                f"backbone lvm is built for {self.img_size} x {self.img_size} px stamps (backbone.img_size), "
                f"got {x.shape[-2]} x {x.shape[-1]} px."
            )

    def forward(self, x: torch.Tensor, decode: bool = False, mask: Optional[torch.Tensor] = None) -> Features:
        """``mask`` (pretraining only): (B, h, w) booleans on a grid dividing the patch grid; True = hidden.

        Masked patches are replaced by the learnable mask token after the patch embedding, and the
        decoder's global residual uses the input with the masked pixels set to zero.
        """
        self.check_input(x)
        token_mask = None
        if mask is not None:
            from galframe_lvm.model import upsample_mask

            grid = self.img_size // self.arch["patch_size"]
            token_mask = upsample_mask(mask.bool(), grid)
            x = x * (~upsample_mask(mask.bool(), self.img_size)).unsqueeze(1).to(x.dtype)
        outs = self.net.forward_encoder(x, token_mask)
        maps = [o.permute(0, 3, 1, 2).contiguous() for o in outs]
        embedding = self.net.embedding(outs)
        decoded = self.net.forward_decoder(outs, x) if decode else None
        return Features(maps=maps, embedding=embedding, decoded=decoded)

    # -- self-supervised pretraining (galframe pretrain) ----------------------
    @staticmethod
    def pretrain() -> Any:
        """``galframe pretrain``'s recipe for galframe train's loop: :class:`galframe_lvm.pretrain.PretrainRecipe`."""
        from galframe_lvm.pretrain import PretrainRecipe

        return PretrainRecipe()

    # -- weights --------------------------------------------------------------
    def save_weights(self, path: Any, scaling: Optional[dict] = None, extra: Optional[dict] = None) -> Any:
        """Write ``<path>.safetensors`` and its JSON sidecar ``<path>.json``; returns the safetensors path."""
        from galframe_lvm.weights import save_weights

        return save_weights(self, path, scaling=scaling, extra=extra)


__all__ = ["LVMBackbone", "ARCH_KEYS"]
