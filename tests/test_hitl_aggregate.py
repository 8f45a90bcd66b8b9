"""Several labelers per galaxy: majority vote, Dawid-Skene, Cohen's and Fleiss' kappa, on hand-made inputs with
known answers and on simulated volunteers with known confusion matrices, and through the label store."""
from __future__ import annotations

import numpy as np
import pytest

from galframe_hitl.aggregate import (aggregate_store, cohen_kappa, dawid_skene, encode, fleiss_kappa, majority,
                                     pairwise_cohen, simulate_volunteers)
from tests.test_hitl_store import CLASSES, queued_store

# Fleiss (1971) as tabulated on Wikipedia's "Fleiss' kappa" page: 10 items, 14 raters, 5 categories -> 0.210
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_kappas_on_known_tables() -> None:
    assert fleiss_kappa(np.array(FLEISS_TABLE)) == pytest.approx(0.2099, abs=1e-4)
    # 2x2: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    y[:150] = x[:150]
    assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[1, 1], [3, 0]]))


def test_majority_and_dawid_skene_on_hand_made_answers() -> None:
    # three labelers, four items; c is always wrong in the same way (says 1 for 0)
    items = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3])
    who = np.array([0, 1, 2, 0, 1, 2, 0, 2, 2])
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 1, 1])
    assert majority(items, labels, 5, 2).tolist() == [0, 1, 0, 1, -1]  # item 2: a tie, the lower class; 4: nobody
    ds = dawid_skene(items, who, labels, 4, 3, 2)
    assert np.allclose(ds.posterior.sum(axis=1), 1) and np.allclose(ds.confusion.sum(axis=2), 1)
    assert ds.labels[:2].tolist() == [0, 1]


def test_dawid_skene_beats_majority_on_simulated_volunteers() -> None:
    # 10 volunteers: three careful ones, seven who are often wrong, in their own systematic ways
    accuracies = [0.92, 0.88, 0.85, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.35]
    prior = [0.30, 0.25, 0.18, 0.15, 0.04, 0.08]  # sim_desi-like: merger and star are rare
    scores = []
    for seed in range(3):
        truth, items, who, labels, confusion = simulate_volunteers(1500, 6, accuracies, per_item=5, prior=prior, seed=seed)
        mv = majority(items, labels, 1500, 6)
        ds = dawid_skene(items, who, labels, 1500, len(accuracies), 6)
        scores.append(((mv == truth).mean(), (ds.labels == truth).mean()))
        # the model finds each volunteer's accuracy (what the simulation put in)
        assert np.abs(ds.accuracy_of_labelers() - np.einsum("k,jkk->j", np.bincount(truth, minlength=6) / 1500,
                                                             confusion)).max() < 0.06
    mv_acc, ds_acc = np.mean(scores, axis=0)
    assert ds_acc > mv_acc + 0.05 and ds_acc > 0.9, scores
    # with perfect volunteers both are exact
    truth, items, who, labels, _ = simulate_volunteers(200, 4, [1.0] * 4, per_item=3, seed=5)
    assert (majority(items, labels, 200, 4) == truth).all()
    assert (dawid_skene(items, who, labels, 200, 4, 4).labels == truth).all()


def test_aggregating_the_answers_in_a_label_store(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite", ids=range(6))
    # two careful labelers agree; a third is wrong on everything; the latest answer would be hers
    for name, labels in (("ann", [0, 1, 2, 3, 4, 5]), ("ben", [0, 1, 2, 3, 4, 5]), ("cat", [1, 2, 3, 4, 5, 0])):
        store.answer_many([(i, CLASSES[c]) for i, c in enumerate(labels)], name, round=1)
    assert aggregate_store(store, "latest") == {i: CLASSES[(i + 1) % 6] for i in range(6)}
    assert aggregate_store(store, "majority") == {i: CLASSES[i] for i in range(6)}
    assert aggregate_store(store, "dawid_skene") == {i: CLASSES[i] for i in range(6)}
    enc = encode([(a.object_id, a.labeler, a.label) for a in store.opinions()], store.classes)
    kappas = pairwise_cohen(enc)
    assert kappas[("ann", "ben")] == (pytest.approx(1.0), 6) and kappas[("ann", "cat")][0] < 0
    with pytest.raises(ValueError, match="one of"):
        aggregate_store(store, "mean")


def test_aggregated_exports(tmp_path) -> None:
    import csv
    import subprocess
    import sys

    import httpx

    from tests.test_hitl_web import Live

    store = queued_store(tmp_path / "labels.sqlite", ids=range(3))
    for name, labels in (("ann", [0, 1, 2]), ("ben", [0, 1, 2]), ("cat", [5, 5, 5])):
        store.answer_many([(i, CLASSES[c]) for i, c in enumerate(labels)], name, round=1)
    out = tmp_path / "ds.csv"
    res = subprocess.run([sys.executable, "-m", "galframe_hitl.store", "export", str(store.path), str(out),
                          "--aggregate", "dawid_skene"], capture_output=True, text=True)
    assert res.returncode == 0 and "Wrote 3 labels" in res.stdout, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["id"], r["label"], r["labeler"]) for r in rows] == [("0", "smooth", "dawid_skene"),
                                                                   ("1", "featured_disk", "dawid_skene"),
                                                                   ("2", "edge_on", "dawid_skene")]
    assert len(list(csv.DictReader(store.export_csv(tmp_path / "o.csv", opinions=True).open()))) == 9
    live = Live(store)
    try:
        text = httpx.get(f"{live.url}/api/labels.csv", params={"aggregate": "majority"}).text
        assert [r["label"] for r in csv.DictReader(text.splitlines())] == ["smooth", "featured_disk", "edge_on"]
        latest = httpx.get(f"{live.url}/api/labels.csv").text
        assert [r["label"] for r in csv.DictReader(latest.splitlines())] == ["star"] * 3
        assert httpx.get(f"{live.url}/api/labels.csv", params={"aggregate": "mean"}).status_code == 422
    finally:
        live.close()
