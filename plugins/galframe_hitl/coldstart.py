"""Acquisitions for a cold start: which galaxies to ask about when almost nothing is labelled yet.

At 20-50 labels a uniform draw leaves whole classes unlabelled, and uncertainty sampling from a
model trained on 20 labels picks the noisiest, vote-split objects.  ``typical`` (TypiClust,
Hacohen et al. 2022) clusters the pool's embeddings into as many clusters as there will be
labels and asks about the most typical object (the densest point) of each cluster that holds no
label yet, largest clusters first: the first labels cover the pool's modes.  ``coldstart``
starts with ``typical`` and, once ``warm`` labels exist, gives a share ``discover`` of each round
to ``typical`` (class discovery: clusters still without a label) and the rest to class-balanced
margin sampling among typical objects only (typicality above the pool's ``outlier_quantile``),
so that uncertainty sampling refines boundaries without chasing outliers.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from galframe.errors import ConfigError
from galframe_hitl.acquisition import Acquisition, ClassBalancedAcquisition, PoolOutputs, _check_k


def typicality(emb: np.ndarray, k: int = 20) -> np.ndarray:
    """1 / mean distance to the ``k`` nearest neighbours (in the pool), for every row."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(int(k), len(emb) - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    return 1.0 / (dist[:, 1:].mean(1) + 1e-12)


class TypicalAcquisition(Acquisition):
    """TypiClust: the most typical object of each uncovered k-means cluster of the embeddings."""

    needs = ("embeddings",)
    name = "typical"

    def __init__(self, neighbours: int = 20, max_clusters: int = 500) -> None:
        self.neighbours, self.max_clusters = int(neighbours), int(max_clusters)

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        k = _check_k(k, len(pool))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        emb = np.asarray(pool.require("embeddings", self.name), dtype=np.float64)
        lab = pool.labeled_embeddings
        n_lab = 0 if lab is None else len(lab)
        n_clusters = int(min(n_lab + k, self.max_clusters, len(emb)))
        seed = int(rng.integers(2**31 - 1))
        algo = KMeans if len(emb) <= 20000 else MiniBatchKMeans
        km = algo(n_clusters=n_clusters, n_init=3, random_state=seed).fit(emb)
        assign = km.labels_
        covered = set(km.predict(np.asarray(lab, dtype=np.float64)).tolist()) if n_lab else set()
        typ = typicality(emb, self.neighbours)
        sizes = np.bincount(assign, minlength=n_clusters)
        order = [c for c in np.argsort(-sizes, kind="stable") if c not in covered and sizes[c] > 0]
        picks: list[int] = []
        for c in order:
            members = np.flatnonzero(assign == c)
            picks.append(int(members[np.argmax(typ[members])]))
            if len(picks) == k:
                break
        if len(picks) < k:  # every cluster covered: the most typical of the rest
            rest = np.setdiff1d(np.arange(len(emb)), picks)
            picks += [int(i) for i in rest[np.argsort(-typ[rest], kind="stable")][: k - len(picks)]]
        return np.asarray(picks, dtype=np.int64)


class ColdStartAcquisition(Acquisition):
    """``typical`` until ``warm`` labels, then ``discover`` x K by ``typical`` and the rest by
    class-balanced margin among the pool's typical objects (see the module docstring)."""

    needs = ("probs", "embeddings")
    name = "coldstart"

    def __init__(self, warm: int = 40, discover: float = 0.3, outlier_quantile: float = 0.2, neighbours: int = 20) -> None:
        if not 0 <= float(discover) <= 1:
            raise ConfigError(f"coldstart: discover must be a fraction in [0, 1] (got {discover}).")
        if not 0 <= float(outlier_quantile) < 1:
            raise ConfigError(f"coldstart: outlier_quantile must be in [0, 1) (got {outlier_quantile}).")
        self.warm, self.discover, self.quantile = int(warm), float(discover), float(outlier_quantile)
        self.typical = TypicalAcquisition(neighbours=neighbours)
        self.balanced = ClassBalancedAcquisition(inner="margin")

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = _check_k(k, len(pool))
        n_lab = 0 if pool.labeled_embeddings is None else len(pool.labeled_embeddings)
        if n_lab < self.warm or pool.probs is None:
            return self.typical.select(pool, k, rng)
        n_discover = int(round(self.discover * k))
        first = self.typical.select(pool, n_discover, rng) if n_discover else np.zeros(0, dtype=np.int64)
        emb = np.asarray(pool.embeddings, dtype=np.float64)
        typ = typicality(emb, self.typical.neighbours)
        keep = np.flatnonzero(typ >= np.quantile(typ, self.quantile))
        keep = np.setdiff1d(keep, first)
        inner = self.balanced.select(pool.subset(keep), k - len(first), rng)
        return np.concatenate([first, keep[inner]]).astype(np.int64)

    def describe(self) -> str:
        return f"coldstart(warm={self.warm}, discover={self.discover})"


__all__ = ["TypicalAcquisition", "ColdStartAcquisition", "typicality"]
