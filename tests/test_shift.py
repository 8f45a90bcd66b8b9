"""galframe bench shift: its figures checked on hand-made predictions, and the headline's schema."""
from __future__ import annotations

import numpy as np
from galframe_bench.shift import evaluate, headline_entry, macro_auc, markdown


def _pred(n: int, k: int, seed: int, skill: float, shift: float = 0.0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = skill * rng.normal(size=(n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])  # p is calibrated by construction
    sharp = np.exp(2 * logits) / np.exp(2 * logits).sum(1, keepdims=True)
    score = rng.normal(size=n) + shift
    return {"p": sharp, "pcal": p, "ood_score": score, "ood_flag": score > 1.64}, y


def test_evaluate_measures_the_drop_the_flag_and_the_calibration() -> None:
    ref, y0 = _pred(1500, 4, 1, 2.5)
    worse, y1 = _pred(1500, 4, 2, 1.0, shift=3.0)  # less separable, and far from the reference embeddings
    figures = evaluate({"none": ref, "faint": worse}, {"none": y0, "faint": y1}, n_boot=50)
    f = figures["faint"]
    assert abs(f["auc_drop"] - (macro_auc(ref["p"], y0) - macro_auc(worse["p"], y1))) < 1e-4
    assert f["auc_drop"] > 0.1 and f["auc_drop_95"][0] < f["auc_drop"] < f["auc_drop_95"][1]
    assert f["ood_auroc"] > 0.95 and f["accuracy_union_unflagged"] > f["accuracy_union"]
    assert figures["none"]["ece_after"] < figures["none"]["ece_before"]  # the sharpened p is over-confident
    result = {"results": {"base": {"lvm": figures, "resnet18": figures}, "randomised": {"lvm": figures, "resnet18": figures}},
              "profile": {"data": "sim_galaxy10", "n_train": 10, "n_test": 1500, "epochs": 1, "bootstrap": 50}}
    head = headline_entry(result)
    assert set(head["auc_drop"]["faint"]) == {"lvm", "resnet18"} and head["setting"] == "randomised"
    assert head["ood_auroc"] == {"faint": f["ood_auroc"]}
    assert set(head["ece"]["faint"]) == {"before", "after"}
    assert "| randomised | lvm | faint |" in markdown(result)
