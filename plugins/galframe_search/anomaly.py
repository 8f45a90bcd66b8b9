"""Anomaly ranking over an embedding index, and re-ranking it from a person's scores.

Two unsupervised scores of every object: scikit-learn's ``IsolationForest`` (how few random splits isolate
it) and the mean distance to its ``n_neighbors`` nearest neighbours in the index.  Each is turned into its
rank quantile (0 the most ordinary, 1 the most unusual) and ``unsupervised`` is their mean.

Active re-ranking (as Astronomaly does): a person scores some objects (0 boring ... 5 interesting).  A
regression from the embeddings to those scores (a random forest) predicts every object's interest; the
final ``score`` blends the unsupervised score with the predicted interest (``weight`` of the latter, the
objects scored by the person keep their own score), so objects like the ones a person found interesting
rise and those like the boring ones sink.

The scores come from a mapping, a table (CSV/Parquet of ``id, score``) or a HITL label store
(``labels.sqlite`` of ``galframe hitl``, the labeling page's answers in force): its labels are the scores
when they are numbers 0-5 (a store whose classes are ``0 ... 5``), or, with ``interesting=[classes]``, 5 for
an object labelled one of those classes and 0 for any other label (skips are no score).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from galframe.errors import ConfigError, DataError

MAX_SCORE = 5.0


def _quantile(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(values) - 1.0) / max(1, len(values) - 1)


def unsupervised(index: Any, n_neighbors: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """``iforest`` and ``knn`` (higher: more anomalous) of every object, and ``unsupervised``."""
    from sklearn.ensemble import IsolationForest

    x = index.vectors
    if len(x) < 3:
        raise DataError(f"index={index.root}: {len(x)} objects are too few to rank anomalies.")
    iforest = -IsolationForest(random_state=int(seed)).fit(x).score_samples(x)
    k = max(1, min(int(n_neighbors), len(x) - 1))
    from galframe_search.index import prepare

    dist, _ = index.index.search(prepare(x, index.metric), k + 1)  # the first is the object itself
    dist = dist[:, 1:]
    knn = (1.0 - dist if index.metric == "cosine" else np.sqrt(np.maximum(dist, 0.0))).mean(axis=1)
    return {"iforest": iforest, "knn": knn, "unsupervised": (_quantile(iforest) + _quantile(knn)) / 2.0}


STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def store_scores(path: Path, interesting: Optional[Sequence[str]] = None) -> dict[str, float]:
    """id -> score from the labels in force of a HITL label store (see the module's docstring)."""
    from galframe_hitl.store import LabelStore

    if not path.is_file():
        raise DataError(f"scores={path}: no such label store (the labels.sqlite of a galframe hitl run).")
    store = LabelStore(path)
    labels = store.labels()
    if interesting:
        wanted = {str(c) for c in interesting}
        unknown = sorted(wanted - set(store.classes))
        if unknown:
            raise ConfigError(f"interesting={unknown[0]}: not a class of the label store {path} ({', '.join(store.classes)}).")
        return {str(i): MAX_SCORE if label in wanted else 0.0 for i, label in labels.items()}
    out = {}
    for i, label in labels.items():
        try:
            out[str(i)] = float(label)
        except ValueError:
            raise DataError(f"scores={path}: object {i} is labelled '{label}', not a score 0-5; pass "
                            "interesting=[classes] to score those classes 5 and the others 0.") from None
    return out


def read_scores(scores: Union[None, str, Path, Mapping[Any, float]], interesting: Optional[Sequence[str]] = None) -> dict[str, float]:
    """id -> a person's score from a mapping, a CSV/Parquet table with columns ``id`` and ``score``, or a
    HITL label store (``.sqlite``; ``interesting``: the classes that score 5)."""
    if scores is None:
        return {}
    if isinstance(scores, Mapping):
        out = {str(k): float(v) for k, v in scores.items()}
    elif str(scores).lower().endswith(STORE_SUFFIXES):
        out = store_scores(Path(str(scores)).expanduser(), interesting)
    else:
        from galframe.data.labels import read_table

        table = read_table(Path(str(scores)), "the table of scores", "id, score", "scores")
        missing = [c for c in ("id", "score") if c not in table.columns]
        if missing:
            raise DataError(f"scores={scores}: no column(s) {', '.join(missing)} (a table of id, score).")
        out = {str(i): float(s) for i, s in zip(table["id"], table["score"]) if s == s}
    bad = [k for k, v in out.items() if not 0.0 <= v <= MAX_SCORE]
    if bad:
        raise DataError(f"scores: object {bad[0]} has score {out[bad[0]]}; scores run from 0 to {MAX_SCORE:g}.")
    return out


def rank(index: Any, user_scores: Union[None, str, Path, Mapping[Any, float]] = None, weight: float = 0.5,
         n_neighbors: int = 10, seed: int = 0, interesting: Optional[Sequence[str]] = None) -> Any:
    """Every object of ``index`` with its scores, most interesting first: ``iforest``, ``knn``,
    ``unsupervised``, with ``user_scores`` (see :func:`read_scores`) also ``user`` (the person's, NaN where
    unscored), ``predicted`` (the regression's, 0-1) and ``score`` (the blend); ``rank`` 1 the top."""
    from sklearn.ensemble import RandomForestRegressor

    if not 0.0 <= float(weight) <= 1.0:
        raise ConfigError(f"weight={weight}: between 0 (unsupervised only) and 1 (the person's scores only).")
    scores = unsupervised(index, n_neighbors, seed)
    table = index.catalog[["id"]].copy()
    for name, values in scores.items():
        table[name] = values
    score = scores["unsupervised"].copy()
    given = read_scores(user_scores, interesting)
    if given:
        rows = index.rows(list(given))
        y = np.asarray(list(given.values())) / MAX_SCORE
        forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=1, random_state=int(seed))
        predicted = forest.fit(index.vectors[rows], y).predict(index.vectors)
        predicted[rows] = y
        user = np.full(len(index), np.nan)
        user[rows] = y * MAX_SCORE
        table["user"], table["predicted"] = user, predicted
        score = (1.0 - float(weight)) * score + float(weight) * predicted
    table["score"] = score
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def run(cfg: Any, run_dir: Any = None) -> Any:
    """``galframe anomaly index=<dir> [scores=<csv of id,score>] [out=<parquet|csv>] top=20``."""
    from galframe.train import to_dict
    from galframe_search.index import Index

    cfg = to_dict(cfg)
    if cfg.get("index") in (None, "", "???"):
        raise ConfigError("index is not set: galframe anomaly index=<dir made by galframe embed>.")
    index = Index.open(cfg["index"])
    interesting = cfg.get("interesting")
    table = rank(index, cfg.get("scores"), float(cfg.get("weight", 0.5)), int(cfg.get("n_neighbors", 10)),
                 int(cfg.get("seed", 0)), [interesting] if isinstance(interesting, str) else interesting)
    out = Path(str(cfg.get("out") or index.root / "anomalies.parquet"))
    _write(table, out)
    top = int(cfg.get("top", 20))
    print(table.head(top).to_string(index=False))
    print(f"Ranked {len(table)} objects{' with ' + str(int(table['user'].notna().sum())) + ' scored by hand' if 'user' in table else ''}; wrote {out}.")
    return table


def _write(table: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    elif out.suffix.lower() == ".parquet":
        table.to_parquet(out, index=False)
    else:
        raise ConfigError(f"out={out}: a .parquet or .csv table.")
