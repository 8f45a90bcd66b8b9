"""Several labelers per galaxy: combining their answers, and how far they agree.

``majority``      the most frequent answer per galaxy (ties broken by the lowest class index, or by
                  ``prior`` when given).
``dawid_skene``   the Dawid-Skene model (Dawid & Skene 1979): each labeler j has a confusion matrix
                  ``pi[j, true, given]``; class priors and confusion matrices are fitted by EM, starting
                  from the (soft) majority vote, with a small Dirichlet smoothing so a labeler who saw few
                  galaxies does not get a degenerate matrix.  It returns per-galaxy class posteriors, so
                  an answer from a careful labeler counts more than one from a careless one.
``cohen_kappa``   agreement of two labelers on the galaxies both answered, corrected for chance.
``fleiss_kappa``  agreement of many labelers (the same number of answers per galaxy), corrected for chance.

Answers are ``(item, labeler, class)`` triples of integers (``encode`` turns store rows into them).
Everything is numpy; nothing here reads the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np


@dataclass
class Encoded:
    """Answers as integer arrays, with the names they stand for."""

    items: np.ndarray  # (N,) item index per answer
    labelers: np.ndarray  # (N,) labeler index per answer
    labels: np.ndarray  # (N,) class index per answer
    item_ids: list
    labeler_names: list
    classes: list

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_labelers(self) -> int:
        return len(self.labeler_names)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def encode(answers: Iterable[tuple], classes: Sequence[str]) -> Encoded:
    """``(object_id, labeler, class name)`` triples (e.g. from ``LabelStore.opinions()``) as index arrays."""
    classes = list(classes)
    index = {c: k for k, c in enumerate(classes)}
    rows = [(o, w, index[c]) for o, w, c in answers if c in index]
    item_ids = sorted({o for o, _, _ in rows})
    names = sorted({w for _, w, _ in rows})
    item_of = {o: k for k, o in enumerate(item_ids)}
    worker_of = {w: k for k, w in enumerate(names)}
    return Encoded(
        items=np.array([item_of[o] for o, _, _ in rows], dtype=np.int64),
        labelers=np.array([worker_of[w] for _, w, _ in rows], dtype=np.int64),
        labels=np.array([c for _, _, c in rows], dtype=np.int64),
        item_ids=item_ids, labeler_names=names, classes=classes,
    )


def vote_counts(items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int) -> np.ndarray:
    """(n_items, n_classes): how many answers gave each class to each item."""
    counts = np.zeros((n_items, n_classes))
    np.add.at(counts, (np.asarray(items), np.asarray(labels)), 1.0)
    return counts


def majority(items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int,
             prior: Optional[np.ndarray] = None) -> np.ndarray:
    """The most frequent class per item (-1 for an item nobody answered)."""
    counts = vote_counts(items, labels, n_items, n_classes)
    if prior is not None:  # ties go to the more common class
        counts = counts + 1e-6 * np.asarray(prior, dtype=float) / max(float(np.max(prior)), 1e-12)
    out = np.argmax(counts, axis=1)
    out[counts.sum(axis=1) == 0] = -1
    return out


@dataclass
class DawidSkene:
    """A fitted Dawid-Skene model."""

    posterior: np.ndarray  # (n_items, n_classes) P(true class | answers)
    prior: np.ndarray  # (n_classes,)
    confusion: np.ndarray  # (n_labelers, n_classes true, n_classes given), rows sum to 1
    iterations: int
    log_likelihood: float

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.posterior, axis=1)

    def accuracy_of_labelers(self) -> np.ndarray:
        """Each labeler's estimated accuracy: the prior-weighted diagonal of their confusion matrix."""
        return np.einsum("k,jkk->j", self.prior, self.confusion)


def dawid_skene(
    items: np.ndarray,
    labelers: np.ndarray,
    labels: np.ndarray,
    n_items: int,
    n_labelers: int,
    n_classes: int,
    max_iter: int = 200,
    tol: float = 1e-7,
    smoothing: float = 0.01,
) -> DawidSkene:
    """Fit the Dawid-Skene model by EM.

    E step: ``T[i, k] ∝ p_k * prod_{answers (i, j, l)} pi[j, k, l]``; M step: ``p = mean_i T[i]`` and
    ``pi[j, k, l] ∝ smoothing + sum_{answers of j with label l} T[i, k]``.  Starts from the vote
    fractions (majority vote as a soft label) and stops when the log-likelihood changes by less than
    ``tol`` (relative) or after ``max_iter`` rounds."""
    items = np.asarray(items, dtype=np.int64)
    labelers = np.asarray(labelers, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    counts = vote_counts(items, labels, n_items, n_classes)
    answered = counts.sum(axis=1) > 0
    T = np.where(answered[:, None], counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), 1.0 / n_classes)
    previous = -np.inf
    log_lik = -np.inf
    it = 0
    for it in range(1, max_iter + 1):
        # M step
        prior = (T.sum(axis=0) + smoothing) / (n_items + smoothing * n_classes)
        confusion = np.full((n_labelers, n_classes, n_classes), smoothing)
        np.add.at(confusion, (labelers, slice(None), labels), T[items])
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E step, in logs
        log_t = np.tile(np.log(prior), (n_items, 1))
        np.add.at(log_t, items, np.log(confusion[labelers, :, labels]))
        top = log_t.max(axis=1, keepdims=True)
        weights = np.exp(log_t - top)
        total = weights.sum(axis=1, keepdims=True)
        T = weights / total
        log_lik = float(np.sum(top[:, 0] + np.log(total[:, 0])))
        if np.isfinite(previous) and abs(log_lik - previous) <= tol * max(1.0, abs(previous)):
            break
        previous = log_lik
    return DawidSkene(posterior=T, prior=prior, confusion=confusion, iterations=it, log_likelihood=log_lik)


def cohen_kappa(a: Sequence[int], b: Sequence[int], n_classes: Optional[int] = None) -> float:
    """Cohen's kappa of two raters' labels of the same items (NaN when chance agreement is 1)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("cohen_kappa needs two equally long, non-empty label sequences")
    k = int(n_classes or max(a.max(), b.max()) + 1)
    table = np.zeros((k, k))
    np.add.at(table, (a, b), 1.0)
    table /= table.sum()
    observed = np.trace(table)
    expected = float(table.sum(axis=1) @ table.sum(axis=0))
    return float("nan") if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, classes) table of answer counts, the same number n >= 2 per item."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if counts.ndim != 2 or counts.shape[0] == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of answers for every item")
    n = n[0]
    p_item = (np.sum(counts * counts, axis=1) - n) / (n * (n - 1))
    p_class = counts.sum(axis=0) / counts.sum()
    observed, expected = p_item.mean(), float(np.sum(p_class**2))
    return float("nan") if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


def pairwise_cohen(enc: Encoded) -> dict:
    """Cohen's kappa for each pair of labelers with at least one item in common: {(a, b): (kappa, n)}."""
    by = {}
    for i, w, c in zip(enc.items, enc.labelers, enc.labels):
        by.setdefault(int(w), {})[int(i)] = int(c)
    out = {}
    for x in range(enc.n_labelers):
        for y in range(x + 1, enc.n_labelers):
            common = sorted(set(by.get(x, {})) & set(by.get(y, {})))
            if common:
                kappa = cohen_kappa([by[x][i] for i in common], [by[y][i] for i in common], enc.n_classes)
                out[(enc.labeler_names[x], enc.labeler_names[y])] = (kappa, len(common))
    return out


def simulate_volunteers(
    n_items: int,
    n_classes: int,
    accuracies: Sequence[float],
    per_item: int,
    prior: Optional[Sequence[float]] = None,
    seed: int = 0,
    confusion: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulated volunteers with known confusion matrices answering ``per_item`` times per item.

    Volunteer j answers the true class with probability ``accuracies[j]``, otherwise a wrong class drawn
    from a volunteer-specific distribution (so errors are systematic, as people's are), unless
    ``confusion`` (n_volunteers, K, K) is given.  Returns (truth, items, labelers, labels, confusion)."""
    rng = np.random.default_rng(seed)
    m = len(accuracies)
    p = np.full(n_classes, 1.0 / n_classes) if prior is None else np.asarray(prior, dtype=float) / np.sum(prior)
    truth = rng.choice(n_classes, size=n_items, p=p)
    if confusion is None:
        confusion = np.zeros((m, n_classes, n_classes))
        for j, acc in enumerate(accuracies):
            for k in range(n_classes):
                wrong = rng.dirichlet(np.full(n_classes - 1, 0.5))
                confusion[j, k, np.arange(n_classes) != k] = (1.0 - acc) * wrong
                confusion[j, k, k] = acc
    items, labelers, labels = [], [], []
    for i in range(n_items):
        for j in rng.choice(m, size=per_item, replace=False):
            items.append(i)
            labelers.append(j)
            labels.append(rng.choice(n_classes, p=confusion[j, truth[i]]))
    return truth, np.array(items), np.array(labelers), np.array(labels), confusion


METHODS = ("latest", "majority", "dawid_skene")


def aggregate_store(store, method: str = "dawid_skene") -> dict:
    """The label per object from a label store's answers in force, one per labeler (``store.opinions()``).

    ``latest``: the latest answer (the store's own ``current``); ``majority``; ``dawid_skene``."""
    if method not in METHODS:
        raise ValueError(f"aggregation {method!r}: one of {list(METHODS)}")
    if method == "latest":
        return store.labels()
    enc = encode([(a.object_id, a.labeler, a.label) for a in store.opinions()], store.classes)
    if enc.n_items == 0:
        return {}
    if method == "majority":
        labels = majority(enc.items, enc.labels, enc.n_items, enc.n_classes)
    else:
        labels = dawid_skene(enc.items, enc.labelers, enc.labels, enc.n_items, enc.n_labelers, enc.n_classes).labels
    return {enc.item_ids[i]: enc.classes[int(c)] for i, c in enumerate(labels) if c >= 0}
