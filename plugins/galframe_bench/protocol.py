"""The few-shot protocol, enforced (docs/fewshot_protocol.md).

* A method sees labels only through a :class:`LabelBudget`: ``reveal(rows)`` returns the labels of
  those training rows and refuses (:class:`BudgetExceeded`) once more distinct rows than the budget
  would have been revealed.  Features, whitening and the unlabelled pool are label-free.
* A method that trains a network through ``galframe train`` must not pick its checkpoint on the
  labelled validation split: :func:`check_trained_overrides` refuses overrides that leave validation
  on or test the best checkpoint.
* The test split is scored once per method, budget and seed, by :func:`score`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from galframe.errors import ConfigError


class BudgetExceeded(ConfigError):
    """A method asked for more labels than its budget."""


class LabelBudget:
    """The labels of a training pool, revealed row by row up to ``budget`` distinct rows."""

    def __init__(self, labels: np.ndarray, budget: int, method: str = "method") -> None:
        self._labels = np.asarray(labels)
        self.budget, self.method = int(budget), str(method)
        self._seen: set[int] = set()

    @property
    def used(self) -> int:
        return len(self._seen)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def reveal(self, rows: Iterable[int]) -> np.ndarray:
        rows = np.asarray(list(rows), dtype=np.int64)
        new = set(rows.tolist()) - self._seen
        if self.used + len(new) > self.budget:
            raise BudgetExceeded(
                f"{self.method}: asked for {self.used + len(new)} labels, but its budget is {self.budget} "
                f"(the protocol reveals no label beyond a method's budget, not even for model selection)."
            )
        self._seen |= new
        return self._labels[rows]


def check_trained_overrides(method: str, overrides: Sequence[str]) -> None:
    """Refuse a ``galframe train`` run that would read validation labels (beyond its budget)."""
    given = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[1] for o in overrides if "=" in o}
    if given.get("trainer.limit_val_batches") not in ("0", "0.0") or given.get("select") != "last":
        raise BudgetExceeded(
            f"{method}: a trained method must run without validation labels (trainer.limit_val_batches=0) and "
            f"test its final weights (select=last); picking a checkpoint on the labelled validation split reads "
            f"labels beyond its budget."
        )


def fast_auc(y: np.ndarray, score: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC of binary ``y`` for ``score``, on each row of bootstrap ``index`` (B, n): (B,)."""
    from scipy.stats import rankdata

    ys, ss = y[index], score[index]
    ranks = rankdata(ss, axis=1)
    pos = ys.sum(1)
    neg = ys.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * ys).sum(1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def score(prob: np.ndarray, y: np.ndarray, rare: Sequence[int], labelled_classes: Sequence[int] = ()) -> dict:
    """Macro and per-class one-vs-rest AUC over the classes present in the test split, the mean AUC of the
    rare classes, accuracy, and how many classes no label reached."""
    from sklearn.metrics import roc_auc_score

    per = {int(k): float(roc_auc_score(y == k, prob[:, k])) for k in range(prob.shape[1]) if 0 < (y == k).sum() < len(y)}
    rare_aucs = [per[k] for k in rare if k in per]
    out = {"macro_auc": float(np.mean(list(per.values()))), "rare_auc": float(np.mean(rare_aucs)) if rare_aucs else float("nan"),
           "accuracy": float((prob.argmax(1) == y).mean()), "per_class_auc": per}
    if labelled_classes is not None:
        out["unlabelled_classes"] = int(prob.shape[1] - len(set(int(c) for c in labelled_classes)))
    return out


def bootstrap_macro_auc(probs: Sequence[np.ndarray], y: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% interval of the seed-mean macro AUC, resampling the test objects (the same draw for every seed)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y), size=(n_boot, len(y)))
    classes = [k for k in range(probs[0].shape[1]) if 0 < (y == k).sum() < len(y)]
    means = np.zeros(n_boot)
    for prob in probs:
        aucs = np.stack([fast_auc((y == k).astype(float), prob[:, k], index) for k in classes])
        means += np.nanmean(aucs, axis=0)
    means /= len(probs)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


__all__ = ["LabelBudget", "BudgetExceeded", "check_trained_overrides", "score", "bootstrap_macro_auc", "fast_auc"]
