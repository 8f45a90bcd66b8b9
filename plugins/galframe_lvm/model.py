"""A Swin-Transformer U-Net: hierarchical shifted-window encoder, Swin-UNet style restoration decoder.

Layout (``L`` = number of encoder stages, ``p`` = patch size, ``C`` = embedding width)::

    image (B, bands, S, S)
      -> patch embedding (conv p x p, stride p) + LayerNorm        tokens (B, S/p, S/p, C)
      -> [optional SimMIM mask token on masked patches]
      -> stage 1: Swin blocks                                        (S/p,       C)       skip 1
      -> stage 2: patch merging (2x2 -> 2C) + Swin blocks            (S/2p,      2C)      skip 2
      ...
      -> stage L: patch merging + Swin blocks                        (S/2^(L-1)p, 2^(L-1)C)  bottleneck
    decoder, coarse to fine, one stage per skip except the bottleneck:
      -> LayerNorm, patch expanding (linear, 1 token -> 2x2 tokens of half width)
      -> concat with the encoder skip of the same scale, linear back to the stage width
      -> Swin blocks (shifted windows)
    -> LayerNorm, final patch expanding (1 token -> p x p pixels), LayerNorm
    -> concat with the (masked) input image (full-resolution skip), 3x3 conv, GELU, 3x3 conv to ``out_chans``
    -> optional global residual: + the (masked) input image

The Swin blocks are timm's (``timm.models.swin_transformer``): they clamp the window to the
stage resolution when the stage is smaller than the window (and then do not shift), so small
stamps work with any configured window size.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn
from timm.layers import trunc_normal_
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches of any number of bands -> tokens (B, H/p, W/p, C), layer-normed."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchExpand(nn.Module):
    """Up-sampling by ``scale``: a linear layer makes ``scale**2`` tokens of ``out_dim`` channels from each token."""

    def __init__(self, in_dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C_in) -> (B, sH, sW, C_out)
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)
        return self.norm(x)


def swin_blocks(
    dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window_size: int, mlp_ratio: float,
    drop_path: Sequence[float],
) -> nn.Sequential:
    """``depth`` timm Swin blocks, alternating regular and shifted windows."""
    return nn.Sequential(
        *[
            SwinTransformerBlock(
                dim=dim,
                input_resolution=resolution,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                drop_path=float(drop_path[i]),
            )
            for i in range(depth)
        ]
    )


class EncoderStem(nn.Module):
    """Patch embedding, the SimMIM mask token and the first Swin stage (no down-sampling)."""

    def __init__(self, patch_embed: PatchEmbed, stage: nn.Module, dim: int) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim))
        trunc_normal_(self.mask_token, std=0.02)
        self.stage = stage

    def forward(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.patch_embed(x)
        if token_mask is not None:
            m = token_mask.to(x.dtype).unsqueeze(-1)
            x = x * (1.0 - m) + self.mask_token.to(x.dtype) * m
        return self.stage(x)


class DecoderStage(nn.Module):
    """LayerNorm -> patch expanding x2 -> concat encoder skip -> linear -> Swin blocks."""

    def __init__(
        self, in_dim: int, out_dim: int, skip_dim: int, resolution: tuple[int, int], depth: int, num_heads: int,
        window_size: int, mlp_ratio: float, drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.up = PatchExpand(in_dim, out_dim, 2)
        self.fuse = nn.Linear(out_dim + skip_dim, out_dim)
        self.blocks = swin_blocks(out_dim, resolution, depth, num_heads, window_size, mlp_ratio, drop_path)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(self.norm(x))
        x = x[:, : skip.shape[1], : skip.shape[2]]  # odd stage sizes: merging padded, crop back
        x = self.fuse(torch.cat([x, skip], dim=-1))
        return self.blocks(x)


class FinalExpand(nn.Module):
    """Back to full resolution: LayerNorm, patch expanding x ``patch_size``, LayerNorm, then a small
    convolutional head on [expanded features, input image] (the U-Net's full-resolution skip: tokens
    of p x p pixels cannot carry every pixel's noise, the head sees the pixels themselves)."""

    def __init__(self, dim: int, patch_size: int, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = PatchExpand(dim, dim, patch_size)
        self.fuse = nn.Conv2d(dim + in_chans, dim, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.head = nn.Conv2d(dim, out_chans, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.up(self.norm(x)).permute(0, 3, 1, 2)
        x = self.act(self.fuse(torch.cat([x, image], dim=1)))
        return self.head(x)


def _per_stage(value: Union[int, Sequence[int]], n: int, what: str) -> list[int]:
    if isinstance(value, (int, float)):
        return [int(value)] * n
    values = [int(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values for {n} stages")
    return values


class SwinUNet(nn.Module):
    """The network.  ``forward_encoder`` gives the stage outputs; ``forward_decoder`` the restored image."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        img_size: int,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Union[int, Sequence[int]] = (3, 6, 12, 24),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        decoder_depths: Optional[Sequence[int]] = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        depths = [int(d) for d in depths]
        n = len(depths)
        heads = _per_stage(num_heads, n, "num_heads")
        decoder_depths = [int(d) for d in (decoder_depths if decoder_depths is not None else depths[:-1][::-1])]
        if len(decoder_depths) != n - 1:
            raise ValueError(f"decoder_depths has {len(decoder_depths)} values; {n - 1} decoder stages (one per encoder stage but the last)")
        self.patch_size, self.residual, self.img_size = int(patch_size), bool(residual), int(img_size)
        self.dims = [int(embed_dim) * 2**i for i in range(n)]
        grid = img_size // patch_size
        res = [grid]
        for _ in range(n - 1):
            res.append((res[-1] + 1) // 2)
        self.resolutions = res
        self.strides = [patch_size * 2**i for i in range(n)]
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        enc_dpr = [dpr[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(n)]

        stages: list[nn.Module] = []
        for i in range(n):
            stage = SwinTransformerStage(
                dim=self.dims[max(i - 1, 0)],
                out_dim=self.dims[i],
                input_resolution=(res[max(i - 1, 0)],) * 2,
                depth=depths[i],
                downsample=i > 0,
                num_heads=heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                drop_path=enc_dpr[i],
            )
            stages.append(stage)
        stages[0] = EncoderStem(PatchEmbed(in_chans, self.dims[0], patch_size), stages[0], self.dims[0])
        self.encoder = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.dims[-1])  # the pooled embedding's norm

        decoder: list[nn.Module] = []
        for j, level in enumerate(range(n - 2, -1, -1)):  # coarse to fine
            rates = list(reversed(enc_dpr[level]))[: decoder_depths[j]]
            rates += [0.0] * (decoder_depths[j] - len(rates))
            decoder.append(
                DecoderStage(
                    in_dim=self.dims[level + 1],
                    out_dim=self.dims[level],
                    skip_dim=self.dims[level],
                    resolution=(res[level],) * 2,
                    depth=decoder_depths[j],
                    num_heads=heads[level],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates,
                )
            )
        self.decoder = nn.ModuleList(decoder)
        self.final = FinalExpand(self.dims[0], patch_size, in_chans, out_chans)
        self.apply(_init_weights)
        if self.residual:  # start as the identity map around the (masked) input
            nn.init.zeros_(self.final.head.weight)
            nn.init.zeros_(self.final.head.bias)

    def forward_encoder(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Stage outputs (B, H_i, W_i, C_i), finest first."""
        outs = []
        for i, stage in enumerate(self.encoder):
            x = stage(x, token_mask) if i == 0 else stage(x)
            outs.append(x)
        return outs

    def embedding(self, outs: list[torch.Tensor]) -> torch.Tensor:
        return self.norm(outs[-1].mean(dim=(1, 2)))

    def forward_decoder(self, outs: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """The restored image (B, out_chans, H, W); ``image`` is the (masked) input for the global residual."""
        x = outs[-1]
        for j, stage in enumerate(self.decoder):
            x = stage(x, outs[len(outs) - 2 - j])
        y = self.final(x, image)
        if self.residual and y.shape[1] == image.shape[1]:
            y = y + image
        return y


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def upsample_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A (B, h, w) boolean mask on a coarse grid, repeated to (B, size, size); ``size`` must be a multiple of h, w."""
    b, h, w = mask.shape
    if size % h or size % w:
        raise ValueError(f"mask grid {h}x{w} does not divide {size}")
    return mask.repeat_interleave(size // h, dim=1).repeat_interleave(size // w, dim=2)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["SwinUNet", "upsample_mask", "count_parameters"]
