"""Acquisition functions: which unlabelled galaxies to ask a person about next.

Each is a plugin (entry point ``acquisition.<name>``) built from a config such as
``{plugin: class_balanced, inner: entropy}``.  An acquisition reads what the model said about the
pool (a :class:`PoolOutputs`) and returns the indices of the objects to ask about, best first.
``needs`` names the model outputs it reads, so the loop computes only those:

``probs``           (N, C) class probabilities of the trained model (eval mode)
``mc_probs``        (T, N, C) probabilities under T Monte-Carlo dropout passes
``ensemble_probs``  (M, N, C) probabilities of M independently trained members
``embeddings``      (N, D) backbone embeddings of the pool, plus ``labeled_embeddings`` (L, D)

Scores are "higher = ask first".  Ties are broken by pool order, so every selection is
reproducible; ``random`` draws from the generator it is given.

Combinations are acquisitions that hold others: ``class_balanced`` (quotas per predicted class,
ranked inside each class by ``inner``), ``diversity`` (k-center greedy on embeddings, optionally
after a ``prefilter`` keeps the top ``prefilter_factor * K`` of another acquisition) and ``mix``
(a weighted sum of rank-normalised scores).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from galframe import api
from galframe.errors import ConfigError, check_choice

NEEDS = ("probs", "mc_probs", "ensemble_probs", "embeddings")
Spec = Union[str, Mapping[str, Any], "Acquisition"]


@dataclass
class PoolOutputs:
    """What the model(s) said about the N pool objects (any field may be None if not needed)."""

    ids: np.ndarray
    classes: tuple[str, ...] = ()
    probs: Optional[np.ndarray] = None
    mc_probs: Optional[np.ndarray] = None
    ensemble_probs: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None
    labeled_embeddings: Optional[np.ndarray] = None
    labeled_counts: Optional[np.ndarray] = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "PoolOutputs":
        index = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            ids=self.ids[index],
            probs=None if self.probs is None else self.probs[index],
            mc_probs=None if self.mc_probs is None else self.mc_probs[:, index],
            ensemble_probs=None if self.ensemble_probs is None else self.ensemble_probs[:, index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
        )

    def mean_probs(self) -> np.ndarray:
        """The pool's class probabilities: the model's, else the mean of the MC or ensemble samples."""
        for value in (self.probs, None if self.mc_probs is None else self.mc_probs.mean(0),
                      None if self.ensemble_probs is None else self.ensemble_probs.mean(0)):
            if value is not None:
                return value
        raise ConfigError("this acquisition needs class probabilities, and the pool has none.")

    def require(self, name: str, who: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"acquisition '{who}' needs the pool's {name}, which were not computed.")
        return value


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) along ``axis``."""
    q = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(q)).sum(axis=axis)


class Acquisition(api.Acquisition):
    """Base class of the scoring acquisitions: subclasses set ``needs`` and implement ``score`` (or override ``select``)."""

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        """Indices (into the pool) of up to ``k`` distinct objects, best first."""
        k = _check_k(k, len(pool))
        return top_k(self.score(pool, rng), k)


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k < 0:
        raise ConfigError(f"cannot select {k} objects.")
    return min(k, n)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest scores, highest first; ties keep pool order; NaN ranks last."""
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    return np.argsort(-s, kind="stable")[:k].astype(np.int64)


# -- single-criterion acquisitions --------------------------------------------
class RandomAcquisition(Acquisition):
    """Uniformly at random (the baseline)."""

    needs = ()
    name = "random"

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(pool))

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = _check_k(k, len(pool))
        return rng.permutation(len(pool))[:k].astype(np.int64)


class EntropyAcquisition(Acquisition):
    """Predictive entropy of the class probabilities (maximum uncertainty)."""

    name = "entropy"

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        return entropy(pool.mean_probs())


class MarginAcquisition(Acquisition):
    """Smallest gap between the two most probable classes (score = 1 - gap)."""

    name = "margin"

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        p = pool.mean_probs()
        if p.shape[1] < 2:
            return np.zeros(len(p))
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])


class BALDAcquisition(Acquisition):
    """BALD (Houlsby et al. 2011) with MC dropout: mutual information between the label and the weights,
    H[mean_t p_t] - mean_t H[p_t], over T stochastic forward passes."""

    needs = ("mc_probs",)
    name = "bald"

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        mc = pool.require("mc_probs", self.name)
        return entropy(mc.mean(0)) - entropy(mc).mean(0)


class EnsembleAcquisition(Acquisition):
    """Disagreement between independently trained members.

    ``measure``: ``kl`` (mean KL divergence of each member from the consensus; the ensemble's mutual
    information) or ``vote_entropy`` (entropy of the members' hard votes).
    """

    needs = ("ensemble_probs",)
    name = "ensemble"

    def __init__(self, measure: str = "kl") -> None:
        self.measure = check_choice("ensemble acquisition measure", str(measure), ["kl", "vote_entropy"])

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        ens = pool.require("ensemble_probs", self.name)
        if self.measure == "kl":
            mean = ens.mean(0)
            return entropy(mean) - entropy(ens).mean(0)
        votes = ens.argmax(-1)  # (M, N)
        n_classes = ens.shape[-1]
        share = np.stack([(votes == c).mean(0) for c in range(n_classes)], axis=-1)
        return entropy(share)

    def describe(self) -> str:
        return f"ensemble({self.measure})"


# -- combinations --------------------------------------------------------------
def build_acquisition(spec: Spec) -> Acquisition:
    """An acquisition from a name (``entropy``), a config (``{plugin: class_balanced, inner: margin}``) or itself."""
    if isinstance(spec, Acquisition):
        return spec
    if isinstance(spec, str):
        spec = {"plugin": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"an acquisition is a name or a mapping with 'plugin'; got {spec!r}.")
    options = dict(spec)
    if "plugin" not in options:
        raise ConfigError(f"acquisition config {dict(spec)} has no 'plugin' key naming the acquisition function.")
    from galframe import registry

    plugin = str(options.pop("plugin"))
    acq = registry.build("acquisition", plugin, options)
    if not isinstance(acq, Acquisition):
        raise ConfigError(f"acquisition plugin '{plugin}' did not build a galframe_hitl Acquisition.")
    return acq


class ClassBalancedAcquisition(Acquisition):
    """Quotas per predicted class, so that rare classes are asked about too.

    The K slots are shared among the classes the model predicts somewhere in the pool, in proportion
    to ``quota`` weights: ``equal`` (the same for every class) or ``inverse_labeled`` (1 / (1 + labels
    of that class so far)).  A class with fewer candidates than its share gives the rest to the others.
    Inside each class, ``inner`` (any acquisition; default entropy) picks which objects.  The result
    interleaves the classes, best of each first.
    """

    name = "class_balanced"

    def __init__(self, inner: Spec = "entropy", quota: str = "equal") -> None:
        self.inner = build_acquisition(inner)
        self.quota = check_choice("class_balanced quota", str(quota), ["equal", "inverse_labeled"])

    def requirements(self) -> set[str]:
        return {"probs"} | self.inner.requirements()

    def allocate(self, k: int, capacity: np.ndarray, labeled_counts: Optional[np.ndarray]) -> np.ndarray:
        """Slots per class: one at a time to the class furthest below its weighted share."""
        n = len(capacity)
        if self.quota == "inverse_labeled":
            counts = np.zeros(n) if labeled_counts is None else np.asarray(labeled_counts, dtype=float)
            weight = 1.0 / (1.0 + counts)
        else:
            weight = np.ones(n)
        alloc = np.zeros(n, dtype=np.int64)
        for _ in range(int(k)):
            open_ = alloc < capacity
            if not open_.any():
                break
            ratio = np.where(open_, alloc / weight, np.inf)
            # ties: the class with the larger weight, then the lower index
            alloc[int(np.lexsort((np.arange(n), -weight, ratio))[0])] += 1
        return alloc

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = _check_k(k, len(pool))
        p = pool.mean_probs()
        predicted = p.argmax(1)
        n_classes = p.shape[1]
        members = [np.flatnonzero(predicted == c) for c in range(n_classes)]
        alloc = self.allocate(k, np.array([len(m) for m in members]), pool.labeled_counts)
        chosen = []
        for c, m in enumerate(members):
            if alloc[c]:
                chosen.append(m[self.inner.select(pool.subset(m), int(alloc[c]), rng)])
            else:
                chosen.append(np.zeros(0, dtype=np.int64))
        order = []
        for rank in range(max((len(x) for x in chosen), default=0)):
            order += [int(x[rank]) for x in chosen if rank < len(x)]
        return np.asarray(order, dtype=np.int64)

    def describe(self) -> str:
        return f"class_balanced({self.inner.describe()}, {self.quota})"


def k_center_greedy(x: np.ndarray, centres: Optional[np.ndarray], k: int, first: int = 0) -> np.ndarray:
    """Greedy k-center: repeatedly take the point furthest from every centre so far (Sener & Savarese 2018).

    With no ``centres`` the first pick is ``first``.  Returns indices into ``x`` in pick order.
    """
    n = len(x)
    k = min(int(k), n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    if centres is not None and len(centres):
        c = np.asarray(centres, dtype=np.float64)
        d2 = np.full(n, np.inf)
        for start in range(0, len(c), 1024):  # bounded memory for large labelled sets
            block = c[start:start + 1024]
            d2 = np.minimum(d2, ((x[:, None, :] - block[None, :, :]) ** 2).sum(-1).min(1))
        picks: list[int] = []
    else:
        picks = [int(first)]
        d2 = ((x - x[first]) ** 2).sum(-1)
    picked = np.zeros(n, dtype=bool)
    picked[picks] = True
    while len(picks) < k:
        masked = np.where(picked, -np.inf, d2)
        i = int(np.argmax(masked))  # ties: the lowest index
        picks.append(i)
        picked[i] = True
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(-1))
    return np.asarray(picks, dtype=np.int64)


class DiversityAcquisition(Acquisition):
    """k-center greedy on backbone embeddings: cover the pool, starting from the labelled objects as centres.

    ``prefilter`` (an acquisition, e.g. ``entropy``) first keeps its top ``prefilter_factor * K``
    candidates, so the batch is both uncertain and diverse.  ``normalize`` compares directions
    (L2-normalised embeddings).  With nothing labelled yet, the first pick is the prefilter's best
    (or a random object).
    """

    needs = ("embeddings",)
    name = "diversity"

    def __init__(self, prefilter: Optional[Spec] = None, prefilter_factor: float = 4.0, normalize: bool = True) -> None:
        self.prefilter = None if prefilter in (None, "", "none") else build_acquisition(prefilter)  # type: ignore[arg-type]
        self.prefilter_factor = float(prefilter_factor)
        if self.prefilter_factor < 1:
            raise ConfigError(f"diversity prefilter_factor must be >= 1 (got {prefilter_factor}).")
        self.normalize = bool(normalize)

    def requirements(self) -> set[str]:
        return set(self.needs) | (self.prefilter.requirements() if self.prefilter else set())

    def _norm(self, x: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if x is None or not self.normalize:
            return x
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def select(self, pool: PoolOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = _check_k(k, len(pool))
        emb = pool.require("embeddings", self.name)
        if self.prefilter is not None:
            m = min(len(pool), max(k, int(np.ceil(self.prefilter_factor * k))))
            candidates = self.prefilter.select(pool, m, rng)
        else:
            candidates = np.arange(len(pool))
        first = 0 if self.prefilter is not None else int(rng.integers(len(candidates))) if len(candidates) else 0
        picks = k_center_greedy(self._norm(emb[candidates]), self._norm(pool.labeled_embeddings), k, first=first)
        return candidates[picks]

    def describe(self) -> str:
        return f"diversity({self.prefilter.describe() + ' x' + format(self.prefilter_factor, 'g') if self.prefilter else 'all'})"


class MixAcquisition(Acquisition):
    """A weighted sum of rank-normalised scores: ``components: {entropy: 0.5, bald: 0.5}``, or a list of
    ``{plugin: ..., weight: ..., <options>}``.  Each score is turned into its rank in [0, 1] first, so
    scores on different scales mix fairly."""

    name = "mix"

    def __init__(self, components: Union[Mapping[str, float], Sequence[Mapping[str, Any]]] = ()) -> None:
        self.parts: list[tuple[Acquisition, float]] = []
        items: list[tuple[Spec, float]]
        if isinstance(components, Mapping):
            items = [(name, float(w)) for name, w in components.items()]
        else:
            items = []
            for comp in components:
                comp = dict(comp)
                items.append((comp, float(comp.pop("weight", 1.0))))
        for spec, weight in items:
            acq = build_acquisition(spec)
            if isinstance(acq, (ClassBalancedAcquisition, DiversityAcquisition)):
                raise ConfigError(
                    f"mix combines scores; '{acq.name}' picks a set instead. Put the mix inside it "
                    f"(e.g. class_balanced with inner: mix)."
                )
            self.parts.append((acq, weight))
        if not self.parts:
            raise ConfigError("acquisition 'mix' needs components, e.g. {entropy: 0.5, margin: 0.5}.")

    def requirements(self) -> set[str]:
        return set().union(*(a.requirements() for a, _ in self.parts))

    def score(self, pool: PoolOutputs, rng: np.random.Generator) -> np.ndarray:
        total = np.zeros(len(pool))
        for acq, weight in self.parts:
            total += weight * rank01(acq.score(pool, rng))
        return total

    def describe(self) -> str:
        return "mix(" + ", ".join(f"{w:g}*{a.describe()}" for a, w in self.parts) + ")"


def rank01(scores: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share their mean rank)."""
    from scipy.stats import rankdata

    n = len(scores)
    if n <= 1:
        return np.ones(n)
    return (rankdata(np.nan_to_num(scores, nan=-np.inf)) - 1) / (n - 1)
