"""First-party task plugins: classify, regress, restore."""
from __future__ import annotations

from torch import nn


def mlp_head(width: int, out: int, hidden: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """A head on the pooled embedding: [Linear + GELU if hidden] [Dropout if dropout] Linear."""
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)
