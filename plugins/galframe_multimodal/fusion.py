"""Fusion of the modalities' embeddings (``fusion.concat``, ``fusion.gated``, ``fusion.attention``).

Each takes ``{modality: (B, D_m)}`` embeddings and ``{modality: (B,) bool}`` presence and returns the one
(B, D) embedding the tasks read, D the backbone's width.  Every modality is first projected to D
(``Linear``).  An absent modality never reaches the output:

* ``concat``: the projected embeddings side by side, an absent one replaced by a learned "absent" token of
  its modality, with the presence flags appended (so the network knows which were measured), then a Linear
  (or an MLP with ``hidden``) to D.  The absent token is what the model learns to expect for "not measured";
  it is not an imputed measurement.
* ``gated``: a gated sum, sum_m w_m * t_m, with per-feature weights w (B, M + 1, D) a softmax over the present
  modalities (absent ones get weight 0) and a learned null token that is always present, so an object with no
  modality at all still has a defined embedding.
* ``attention``: a learned query attends (``nn.MultiheadAttention``, ``heads`` heads) over the modality
  tokens (projection + a learned modality embedding) and the null token, absent modalities masked by the key
  padding mask; a residual, LayerNorm and an MLP follow.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from galframe.api import Fusion
from galframe.errors import ConfigError


class _Projected(Fusion):
    """Shared part: a Linear per modality to the fused width, in the order of ``dims``."""

    def __init__(self, dims: Mapping[str, int], embed_dim: int) -> None:
        super().__init__(dims, embed_dim)
        if not self.dims:
            raise ConfigError("fusion: no modality to fuse.")
        self.order = list(self.dims)
        self.proj = nn.ModuleDict({m: nn.Linear(int(d), self.embed_dim) for m, d in self.dims.items()})

    def tokens(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, D) projected embeddings and (B, M) presence, in modality order."""
        missing = [m for m in self.order if m not in embeddings or m not in present]
        if missing:
            raise ConfigError(f"fusion: no embedding or presence for modalities {missing} (built for {self.order}).")
        toks = torch.stack([self.proj[m](embeddings[m]) for m in self.order], dim=1)
        here = torch.stack([present[m].to(torch.bool) for m in self.order], dim=1)
        return toks, here


class ConcatFusion(_Projected):
    def __init__(self, dims: Mapping[str, int], embed_dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__(dims, embed_dim)
        m, d = len(self.order), self.embed_dim
        self.absent = nn.Parameter(torch.randn(m, d) * 0.02)
        width = m * d + m
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(width, int(hidden)), nn.GELU()]
            width = int(hidden)
        if dropout:
            layers.append(nn.Dropout(float(dropout)))
        layers.append(nn.Linear(width, d))
        self.out = nn.Sequential(*layers)

    def forward(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        toks, here = self.tokens(embeddings, present)
        toks = torch.where(here[..., None], toks, self.absent.to(toks.dtype).expand_as(toks))
        return self.out(torch.cat([toks.flatten(1), here.to(toks.dtype)], dim=1))


class GatedFusion(_Projected):
    def __init__(self, dims: Mapping[str, int], embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__(dims, embed_dim)
        d = self.embed_dim
        self.gate = nn.Linear(d, d)
        self.null = nn.Parameter(torch.zeros(d))
        self.null_logit = nn.Parameter(torch.zeros(d))
        self.drop = nn.Dropout(float(dropout)) if dropout else nn.Identity()

    def forward(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        toks, here = self.tokens(embeddings, present)
        b = toks.shape[0]
        logits = self.gate(toks).masked_fill(~here[..., None], float("-inf"))
        logits = torch.cat([self.null_logit.to(toks.dtype).expand(b, 1, -1), logits], dim=1)
        toks = torch.cat([self.null.to(toks.dtype).expand(b, 1, -1), toks], dim=1)
        # an absent token's weight is exactly 0; zero it too, so nothing of it (not even 0 * inf) passes
        toks = torch.cat([toks[:, :1], torch.where(here[..., None], toks[:, 1:], torch.zeros_like(toks[:, 1:]))], dim=1)
        return self.drop((torch.softmax(logits, dim=1) * toks).sum(dim=1))


class AttentionFusion(_Projected):
    def __init__(self, dims: Mapping[str, int], embed_dim: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__(dims, embed_dim)
        d = self.embed_dim
        if int(heads) < 1 or d % int(heads):
            raise ConfigError(f"fusion.heads={heads}: it must divide the fused width {d} (the backbone's embed_dim).")
        self.kind_embedding = nn.Parameter(torch.randn(len(self.order), d) * 0.02)
        self.null = nn.Parameter(torch.randn(1, d) * 0.02)
        self.query = nn.Parameter(torch.randn(1, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, int(heads), dropout=float(dropout), batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        toks, here = self.tokens(embeddings, present)
        b = toks.shape[0]
        toks = torch.where(here[..., None], toks + self.kind_embedding.to(toks.dtype), torch.zeros_like(toks))
        keys = torch.cat([self.null.to(toks.dtype).expand(b, 1, -1), toks], dim=1)
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=here.device), ~here], dim=1)
        q = self.query.to(toks.dtype).expand(b, 1, -1)
        attended, _ = self.attn(q, keys, keys, key_padding_mask=padding, need_weights=False)
        h = self.norm1(q + attended)
        return self.norm2(h + self.mlp(h))[:, 0]
