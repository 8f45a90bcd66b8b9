"""Trust flags: temperature scaling fitted on validation logits, and the kNN out-of-distribution score."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from galframe.api import DataInfo, Features
from galframe.trust import Trust, knn_distance
from galframe_tasks.classify import ClassifyMetrics, ClassifyTask, fit_temperature


class _Backbone(torch.nn.Module):
    embed_dim = 4


def _overconfident(n: int, seed: int, sharpen: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z) and a model reporting sharpen * z: right ranking, too confident."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g) * 1.5
    y = torch.multinomial(z.softmax(dim=1), 1, generator=g).squeeze(1)
    return sharpen * z, y


def _task() -> ClassifyTask:
    info = DataInfo(bands=("g", "r", "z"), image_size=8, classes=("a", "b", "c"), stats={"class_counts": [1, 1, 1]})
    return ClassifyTask("classify", _Backbone(), info)


def test_temperature_scaling_recovers_the_sharpening_and_lowers_the_calibration_error() -> None:
    logits, y = _overconfident(4000, 0)
    assert abs(fit_temperature(logits, y) - 4.0) < 0.4
    task = _task()
    val = task.make_metrics()
    task.update_metrics(val, {"logits": logits}, {"label": y})
    task.calibrate(val)  # fitted on the validation split...
    assert abs(float(task.temperature) - 4.0) < 0.4
    test = task.make_metrics()
    logits_t, y_t = _overconfident(4000, 1)
    task.update_metrics(test, {"logits": logits_t}, {"label": y_t})
    values = task.compute_metrics(test)  # ...and measured on another
    assert values["ece"] > 0.1 and values["ece_calibrated"] < 0.4 * values["ece"]
    cols = task.predict_columns({"logits": logits_t[:5]})
    cal = np.stack([cols[f"classify_pcal_{c}"] for c in "abc"], axis=1)
    raw = np.stack([cols[f"classify_p_{c}"] for c in "abc"], axis=1)
    assert np.allclose(cal.sum(axis=1), 1, atol=1e-5) and (cal.argmax(1) == raw.argmax(1)).all()
    assert (cal.max(axis=1) < raw.max(axis=1) + 1e-6).all()  # calibrated: less confident than the network


def test_too_few_validation_objects_leave_the_temperature_at_one() -> None:
    task = _task()
    metrics = task.make_metrics()
    logits, y = _overconfident(4, 2)
    task.update_metrics(metrics, {"logits": logits}, {"label": y})
    task.calibrate(metrics)
    assert float(task.temperature) == 1.0
    assert isinstance(ClassifyMetrics(3).logits()[0], torch.Tensor)


def test_checkpoints_without_a_temperature_or_trust_set_still_load() -> None:
    task = _task()
    state = {k: v for k, v in task.state_dict().items() if k != "temperature"}
    fresh = _task()
    fresh.temperature.fill_(3.0)
    fresh.load_state_dict(state, strict=True)
    assert float(fresh.temperature) == 1.0
    trust = Trust(4)
    trust.fit(torch.randn(100, 4))
    other = Trust(4)
    other.load_state_dict(trust.state_dict(), strict=True)  # the saved set's size, not the empty one's
    assert other.fitted and torch.equal(other.bank, trust.bank)
    empty = Trust(4)
    empty.load_state_dict({}, strict=True)
    assert not empty.fitted and empty.columns(torch.randn(3, 4)) == {}


def test_the_ood_score_ranks_a_shifted_set_above_the_training_set() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3

    def draw(n: int, shift: float = 0.0) -> torch.Tensor:
        k = torch.randint(0, 5, (n,), generator=g)
        x = centres[k] + torch.randn(n, 16, generator=g)
        x[:, 0] += shift  # a feature the training set never varied
        return x

    trust = Trust(16, capacity=500, k=10, quantile=0.95)
    trust.fit(draw(800))
    assert trust.bank.shape == (500, 16) and trust.reference.shape == (500,)
    inside, shifted = draw(1000), draw(1000, shift=6.0)
    a, b = trust.columns(inside), trust.columns(shifted)
    labels = np.r_[np.zeros(1000), np.ones(1000)]
    assert roc_auc_score(labels, np.r_[a["ood_score"], b["ood_score"]]) > 0.95
    assert 0.02 < a["ood_flag"].mean() < 0.10  # about 1 - quantile of in-distribution objects flagged
    assert b["ood_flag"].mean() > 0.8
    assert 0.4 < np.median(a["ood_pvalue"]) < 0.6  # p-values about uniform inside the distribution


def test_knn_distance_excludes_each_row_from_its_own_neighbours() -> None:
    x = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    with_self = knn_distance(x, x, 1)
    without = knn_distance(x, x, 1, exclude_self=True, chunk=7)
    assert torch.allclose(with_self, torch.zeros(50), atol=1e-5) and (without > 1e-3).all()
    d = 1 - x @ x.T
    d.fill_diagonal_(float("inf"))
    assert torch.allclose(without, d.min(dim=1).values, atol=1e-6)
