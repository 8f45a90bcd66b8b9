"""When not to trust a prediction: an out-of-distribution score for every object a model predicts.

A network trained on one sky gives confident answers on objects unlike anything it saw (another PSF, other
noise, a morphology its training set never drew).  :class:`Trust` keeps a reference set of embeddings (the
backbone's pooled vector) of in-distribution images, at most ``capacity`` of them, and scores a new object
by its mean cosine distance to its ``k`` nearest references: the embedding-density score of kNN
out-of-distribution detection (Sun et al. 2022, "Out-of-distribution detection with deep nearest
neighbors").  The reference set is label-free: :class:`galframe.model.GalaxyModel` fills it from the
validation split's images at every validation epoch (so a checkpoint carries the set it was selected with),
and predictions read it from the checkpoint.

Catalog columns (``galframe predict``, the run report): ``ood_score`` (the distance; higher is less
familiar), ``ood_pvalue`` (the fraction of reference objects, each scored against the others, that score
at least as high: about uniform for in-distribution objects) and ``ood_flag`` (``ood_pvalue`` below
``1 - quantile``, by default the 5% least familiar of in-distribution objects, more of a shifted set).
Without a reference set (a run without validation data) the columns are absent.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Trust", "knn_distance"]


def knn_distance(query: torch.Tensor, bank: torch.Tensor, k: int, exclude_self: bool = False,
                 chunk: int = 4096) -> torch.Tensor:
    """Mean cosine distance of each row of ``query`` (L2-normalised) to its ``k`` nearest rows of ``bank``
    (L2-normalised); ``exclude_self``: ``query`` is ``bank`` and a row is not its own neighbour."""
    out = []
    k = min(k, bank.shape[0] - (1 if exclude_self else 0))
    for start in range(0, query.shape[0], chunk):
        d = 1.0 - query[start:start + chunk] @ bank.T
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).values.mean(dim=1))
    return torch.cat(out) if out else query.new_zeros(0)


class Trust(nn.Module):
    """The reference embeddings and the in-distribution score distribution; buffers, so checkpoints carry them."""

    def __init__(self, dim: int, capacity: int = 2000, k: int = 10, quantile: float = 0.95) -> None:
        super().__init__()
        self.dim, self.capacity, self.k, self.quantile = int(dim), int(capacity), int(k), float(quantile)
        self.register_buffer("bank", torch.zeros(0, self.dim), persistent=True)
        self.register_buffer("reference", torch.zeros(0), persistent=True)  # sorted leave-one-out scores

    @property
    def fitted(self) -> bool:
        return self.bank.shape[0] > self.k

    def fit(self, embeddings: torch.Tensor, seed: int = 0) -> None:
        """Keep (a seeded draw of at most ``capacity`` of) ``embeddings`` as the reference set and score each
        against the others; fewer than ``k + 1`` embeddings leave the set empty."""
        x = embeddings.detach().float().cpu()
        x = x[torch.isfinite(x).all(dim=1)]
        if x.shape[0] > self.capacity:
            keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: self.capacity]
            x = x[keep.sort().values]
        if x.shape[0] <= self.k:
            self.bank, self.reference = torch.zeros(0, self.dim), torch.zeros(0)
            return
        bank = F.normalize(x, dim=1)
        self.bank = bank.to(self.bank.device)
        self.reference = knn_distance(bank, bank, self.k, exclude_self=True).sort().values.to(self.bank.device)

    def score(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) mean cosine distance to the ``k`` nearest reference embeddings."""
        q = F.normalize(embeddings.detach().float(), dim=1).to(self.bank.device)
        return knn_distance(q, self.bank, self.k)

    def pvalue(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) fraction of the reference objects scoring at least ``score``."""
        n = self.reference.shape[0]
        below = torch.searchsorted(self.reference, score.to(self.reference), right=False)
        return (n - below).float() / n

    def columns(self, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        """Catalog columns for a batch's embeddings: ``ood_score``, ``ood_pvalue``, ``ood_flag``; {} when unfitted."""
        if not self.fitted:
            return {}
        score = self.score(embeddings)
        p = self.pvalue(score)
        return {"ood_score": score.cpu().numpy(), "ood_pvalue": p.cpu().numpy(),
                "ood_flag": (p < 1.0 - self.quantile).cpu().numpy()}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # the reference set's size is the checkpoint's; checkpoints written before it existed have none
        for name, empty in (("bank", torch.zeros(0, self.dim)), ("reference", torch.zeros(0))):
            value = state_dict.setdefault(prefix + name, empty)
            setattr(self, name, torch.zeros_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
