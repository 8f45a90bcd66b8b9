"""Few-shot classification on a frozen backbone: features and heads for tens to hundreds of labels.

Features (:func:`embed`): every encoder stage's feature map mean-pooled and concatenated with the
backbone's embedding (shallow stages carry colour and concentration, deep ones structure),
averaged over the eight rotations/flips of each stamp (a galaxy's class does not depend on its
orientation on the sky, so averaging removes variance the head would otherwise have to learn
away from a few labels).

:class:`Whitener`: standardisation, PCA whitening and L2 normalisation fitted on the unlabelled
pool (thousands of rows), never on the few labelled ones, so its statistics are stable.

Heads (:class:`FewShotHead`): ``logistic`` (class-balanced multinomial logistic regression,
scikit-learn), ``propagate`` (label spreading over the pool's kNN graph, scikit-learn: the
unlabelled pool carries the labels along its clusters), ``prototype`` (nearest class mean, cosine)
and ``ensemble`` (the mean of logistic and propagate probabilities).  Classes no label has reached
get probability 0.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

HEADS = ("logistic", "propagate", "prototype", "ensemble")


def dihedral(x: Any, k: int) -> Any:
    """The ``k``-th (0-7) rotation/flip of a (B, C, H, W) tensor."""
    import torch

    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def pooled(features: Any, multistage: bool = True) -> Any:
    """(B, D) features from a backbone's :class:`~galframe.api.Features`."""
    import torch

    if not multistage:
        return features.embedding
    return torch.cat([m.mean(dim=(2, 3)) for m in features.maps] + [features.embedding], dim=1)


def embed(backbone: Any, scaling: Any, dataset: Any, batch_size: int = 256, views: int = 8, multistage: bool = True,
          progress: Optional[Callable[[int, int], None]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), ids (N,)) of a galframe dataset, averaged over ``views`` (1, 4 or 8) rotations/flips."""
    import torch
    from torch.utils.data import DataLoader

    from galframe.data.datamodule import collate

    if views not in (1, 4, 8):
        raise ValueError(f"views must be 1, 4 or 8 (got {views})")
    was = backbone.training
    backbone.eval()
    feats, ids, done = [], [], 0
    with torch.inference_mode():
        for b in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            x = scaling(b["image"])
            acc = None
            for k in range(views):
                f = pooled(backbone(dihedral(x, k)), multistage).float()
                acc = f if acc is None else acc + f
            feats.append((acc / views).numpy())
            ids.append(np.asarray(b["id"]))
            done += len(x)
            if progress is not None:
                progress(done, len(dataset))
    backbone.train(was)
    return np.concatenate(feats), np.concatenate(ids)


class Whitener:
    """Standardise, PCA-whiten (keeping ``variance`` of it, at most ``max_components``), L2-normalise."""

    def __init__(self, variance: float = 0.99, max_components: int = 256) -> None:
        self.variance, self.max_components = float(variance), int(max_components)

    def fit(self, pool: np.ndarray) -> "Whitener":
        from sklearn.decomposition import PCA

        self.mean = pool.mean(0)
        self.std = pool.std(0) + 1e-6
        z = (pool - self.mean) / self.std
        full = PCA(n_components=min(self.max_components, *z.shape), random_state=0).fit(z)
        keep = int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), self.variance) + 1)
        self.components = full.components_[:keep]
        self.scale = np.sqrt(full.explained_variance_[:keep]) + 1e-6
        self.pca_mean = full.mean_
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std - self.pca_mean) @ self.components.T / self.scale
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)


class FewShotHead:
    """A classifier from a few labelled rows (and optionally the unlabelled pool) of whitened features.

    ``fit(x, y, pool=None)``; ``predict(x) -> (N, n_classes)`` probabilities.  ``C`` (logistic):
    inverse regularisation; ``neighbours`` and ``alpha`` (propagate): the kNN graph and the
    clamping factor of label spreading.
    """

    def __init__(self, n_classes: int, head: str = "ensemble", C: float = 1.0, neighbours: int = 10,
                 alpha: float = 0.2, max_pool: int = 10000) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)} (got '{head}')")
        self.n_classes, self.head, self.C = int(n_classes), head, float(C)
        self.neighbours, self.alpha, self.max_pool = int(neighbours), float(alpha), int(max_pool)

    def _full(self, prob: np.ndarray, classes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(prob), self.n_classes))
        out[:, classes] = prob
        return out

    def fit(self, x: np.ndarray, y: np.ndarray, pool: Optional[np.ndarray] = None) -> "FewShotHead":
        y = np.asarray(y, dtype=int)
        self.classes_ = np.unique(y)
        self.parts: list[tuple[str, Any]] = []
        if self.head in ("logistic", "ensemble"):
            from sklearn.linear_model import LogisticRegression

            if len(self.classes_) > 1:
                clf = LogisticRegression(max_iter=3000, C=self.C, class_weight="balanced").fit(x, y)
                self.parts.append(("logistic", clf))
        if self.head in ("propagate", "ensemble"):
            if pool is None:
                raise ValueError(f"head '{self.head}' propagates labels through the unlabelled pool: pass pool=")
            from sklearn.semi_supervised import LabelSpreading

            rng = np.random.default_rng(0)
            if len(pool) > self.max_pool:
                pool = pool[rng.choice(len(pool), self.max_pool, replace=False)]
            # classes are reindexed 0..k-1 so that absent classes do not enter the propagation
            index = {c: i for i, c in enumerate(self.classes_)}
            xs = np.concatenate([x, pool])
            ys = np.concatenate([[index[c] for c in y], -np.ones(len(pool), dtype=int)])
            spread = LabelSpreading(kernel="knn", n_neighbors=self.neighbours, alpha=self.alpha, max_iter=100).fit(xs, ys)
            self.parts.append(("propagate", spread))
        if self.head == "prototype" or not self.parts:
            protos = np.stack([x[y == c].mean(0) for c in self.classes_])
            self.parts.append(("prototype", protos / (np.linalg.norm(protos, axis=1, keepdims=True) + 1e-9)))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        probs = []
        for kind, part in self.parts:
            if kind == "logistic":
                probs.append(self._full(part.predict_proba(x), part.classes_))
            elif kind == "propagate":
                with np.errstate(invalid="ignore", divide="ignore"):
                    p = part.predict_proba(x)
                p = np.nan_to_num(p, nan=1.0 / p.shape[1])
                probs.append(self._full(p, self.classes_))
            else:
                logits = 10.0 * x @ part.T
                e = np.exp(logits - logits.max(1, keepdims=True))
                probs.append(self._full(e / e.sum(1, keepdims=True), self.classes_))
        return np.mean(probs, axis=0)


__all__ = ["embed", "pooled", "dihedral", "Whitener", "FewShotHead", "HEADS"]
