"""The classify task's losses, class weights, metrics and catalog columns, checked against hand values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galframe.api import DataInfo, Features
from galframe.errors import ConfigError
from galframe_tasks.classify import ClassifyTask, focal_loss


class _Backbone(torch.nn.Module):
    embed_dim = 4


def _task(**options) -> ClassifyTask:
    info = DataInfo(bands=("g", "r", "z"), image_size=8, classes=("a", "b", "c"), stats={"class_counts": [60, 30, 10]})
    return ClassifyTask("classify", _Backbone(), info, **options)


def test_balanced_class_weights_are_inverse_frequency() -> None:
    weight = _task().class_weight
    expected = torch.tensor([1 / 60, 1 / 30, 1 / 10])
    assert torch.allclose(weight, expected / expected.mean())
    assert torch.equal(_task(class_weights="none").class_weight, torch.ones(3))
    assert torch.equal(_task(class_weights=[1, 2, 3]).class_weight, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ConfigError, match="class_weights has 2 values, the data has 3 classes"):
        _task(class_weights=[1, 2])


def test_focal_loss_matches_hand_value_and_reduces_to_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    assert torch.allclose(focal_loss(logits, target, 0.0, None), F.cross_entropy(logits, target))
    p = logits.softmax(-1)[torch.arange(2), target]
    hand = (-(1 - p) ** 2 * p.log()).mean()
    assert torch.allclose(focal_loss(logits, target, 2.0, None), hand)
    w = torch.tensor([1.0, 1.0, 3.0])
    weighted = (-(1 - p) ** 2 * p.log() * w[target]).sum() / w[target].sum()
    assert torch.allclose(focal_loss(logits, target, 2.0, w), weighted)


def test_loss_falls_on_a_tiny_problem() -> None:
    torch.manual_seed(0)
    task = _task(loss="focal")
    x = torch.randn(60, 4)
    y = x[:, :3].argmax(dim=1)
    opt = torch.optim.Adam(task.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = task.loss(task(Features(maps=[], embedding=x)), {"label": y})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]


def test_metrics_match_hand_computed_values() -> None:
    task = _task()
    metrics = task.make_metrics()
    # three objects per class; predictions: class a all right, b one wrong, c all wrong (called a)
    prob = torch.tensor(
        [[0.9, 0.05, 0.05]] * 3
        + [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]
        + [[0.6, 0.2, 0.2]] * 3
    )
    label = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    task.update_metrics(metrics, {"logits": prob.log()}, {"label": label})
    values = task.compute_metrics(metrics)
    assert float(values["accuracy"]) == pytest.approx(5 / 9)
    assert float(values["recall_a"]) == pytest.approx(1.0)
    assert float(values["recall_b"]) == pytest.approx(2 / 3)
    assert float(values["recall_c"]) == pytest.approx(0.0)
    assert float(values["balanced_accuracy"]) == pytest.approx((1 + 2 / 3 + 0) / 3)
    from sklearn.metrics import roc_auc_score

    seen = prob.log().softmax(dim=-1)  # exactly the probabilities the task scores (ties included)
    auc = np.mean([roc_auc_score((label == k).numpy(), seen[:, k].numpy()) for k in range(3)])
    assert float(values["auroc"]) == pytest.approx(auc, abs=1e-6)
    # ECE by hand with 15 equal-width bins over the top-class confidence
    conf, pred = seen.max(dim=1)
    correct = (pred == label).float()
    bins = torch.clamp((conf * 15).ceil().long() - 1, 0, 14)
    ece = sum(
        abs(conf[bins == b].mean() - correct[bins == b].mean()) * (bins == b).sum() / 9 for b in bins.unique()
    )
    assert float(values["ece"]) == pytest.approx(float(ece), abs=1e-6)


def test_predict_columns() -> None:
    task = _task()
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    cols = task.predict_columns({"logits": logits})
    assert cols["classify_class"][0] == "a"
    assert cols["classify_p_a"][0] == pytest.approx(math.exp(3) / (math.exp(3) + 2))
    assert cols["classify_entropy"][1] == pytest.approx(math.log(3))
    assert cols["classify_entropy"][0] < cols["classify_entropy"][1]
