"""Single-label morphology classification, built for imbalanced classes, with calibrated probabilities.

The network's softmax is over-confident, most of all on objects unlike its training set.  At every
validation epoch the task fits one temperature ``T`` to the validation split's logits (temperature
scaling, Guo et al. 2017: the ``T`` that minimises the negative log-likelihood; it changes no ranking and
no predicted class) and keeps it in a buffer, so the checkpoint carries it.  Catalogs get both the
network's probabilities (``<task>_p_<class>``) and the calibrated ones (``<task>_pcal_<class>``,
``softmax(logits / T)``), and an energy score (``<task>_energy = -T logsumexp(logits / T)``: higher is less
familiar).  ``T`` stays 1 where a run has no validation data.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from galframe.api import Backbone, DataInfo, Features, Task
from galframe_tasks import mlp_head
from galframe.errors import ConfigError, check_choice


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017), optionally class-weighted, averaged over the batch."""
    logp = F.log_softmax(logits, dim=-1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    p_t = logp_t.exp()
    loss = -((1.0 - p_t) ** gamma) * logp_t
    if weight is not None:
        w = weight[target]
        return (w * loss).sum() / w.sum()
    return loss.mean()


class ClassifyTask(Task):
    requires = ("label",)
    monitor = ("auroc", "max")

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        loss: str = "cross_entropy",
        class_weights: Union[str, Sequence[float], None] = "balanced",
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(name, backbone, data)
        if not data.classes:
            raise ConfigError(f"task '{name}' (classify) needs a dataset with classes; this one has none.")
        self.classes = list(data.classes)
        self.n_classes = len(self.classes)
        self.loss_name = check_choice(f"loss for task '{name}'", loss, ["cross_entropy", "focal"])
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)
        self.head = mlp_head(backbone.embed_dim, self.n_classes, hidden, dropout)
        self.register_buffer("class_weight", self._class_weights(class_weights, data), persistent=True)
        self.register_buffer("temperature", torch.ones(()), persistent=True)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before temperature scaling: T = 1, the network's own probabilities
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _class_weights(self, spec: Any, data: DataInfo) -> torch.Tensor:
        if spec in (None, "none", False):
            return torch.ones(self.n_classes)
        if isinstance(spec, str):
            check_choice(f"class_weights for task '{self.name}'", spec, ["none", "balanced"])
            counts = data.stats.get("class_counts")
            if not counts:
                return torch.ones(self.n_classes)
            counts = torch.tensor([max(float(c), 1.0) for c in counts])
            weight = counts.sum() / (len(counts) * counts)
            return weight / weight.mean()
        weight = torch.tensor([float(w) for w in spec])
        if weight.numel() != self.n_classes:
            raise ConfigError(
                f"task '{self.name}': class_weights has {weight.numel()} values, the data has {self.n_classes} classes "
                f"({', '.join(self.classes)})."
            )
        return weight

    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        logits = self.head(features.embedding)
        return {"logits": logits}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        target = batch["label"]
        if self.loss_name == "focal":
            return focal_loss(out["logits"], target, self.focal_gamma, self.class_weight)
        return F.cross_entropy(
            out["logits"], target, weight=self.class_weight, label_smoothing=self.label_smoothing
        )

    def make_metrics(self) -> nn.Module:
        return ClassifyMetrics(self.n_classes)

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        metrics.update(out["logits"], batch["label"])

    def calibrate(self, metrics: nn.Module) -> None:
        logits, target = metrics.logits()
        if len(target) >= 2 * self.n_classes:  # too few objects say nothing about the temperature
            self.temperature.fill_(fit_temperature(logits, target))

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        values = metrics.compute(self.temperature)
        result = {k: v for k, v in values.items() if k != "recall"}
        for cls, recall in zip(self.classes, values["recall"]):
            result[f"recall_{cls}"] = recall
        return result

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        logits = out["logits"].float()
        t = self.temperature.float()
        prob = logits.softmax(dim=-1).cpu().numpy()
        cal = (logits / t).softmax(dim=-1).cpu().numpy()
        cols: dict[str, Any] = {f"{self.name}_p_{c}": prob[:, i] for i, c in enumerate(self.classes)}
        cols.update({f"{self.name}_pcal_{c}": cal[:, i] for i, c in enumerate(self.classes)})
        cols[f"{self.name}_class"] = [self.classes[i] for i in prob.argmax(axis=1)]
        cols[f"{self.name}_entropy"] = _entropy(prob)
        cols[f"{self.name}_energy"] = (-t * torch.logsumexp(logits / t, dim=-1)).cpu().numpy()
        return cols

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        if "class_name" not in pred:
            return []
        path = run_dir / f"confusion_{self.name}.png"
        return [confusion_png(pred["class_name"], pred[f"{self.name}_class"], self.classes, path, f"{self.name}: held-out confusion")]


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the mean negative log-likelihood of ``softmax(logits / T)`` for
    ``target`` (temperature scaling), searched over log T: the NLL is smooth and unimodal in practice, so a
    bounded scalar minimiser (scipy's Brent method) finds it to 1e-4 in a few dozen evaluations."""
    from scipy.optimize import minimize_scalar

    logits = logits.detach().double().cpu()
    target = target.detach().long().cpu()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), target))

    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


class ClassifyMetrics(nn.Module):
    """The classifier's validation/test state: the usual scores of the network's probabilities, and its
    logits and labels (concatenated over batches and, in distributed runs, over ranks) from which the
    temperature is fitted and the calibration error after scaling (``ece_calibrated``) is measured."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        from torchmetrics import CatMetric, MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassAUROC,
            MulticlassCalibrationError,
            MulticlassRecall,
        )

        k = n_classes
        self.k = k
        self.scores = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes=k, average="micro"),
                "balanced_accuracy": MulticlassAccuracy(num_classes=k, average="macro"),
                "auroc": MulticlassAUROC(num_classes=k, average="macro"),
                "recall": MulticlassRecall(num_classes=k, average="none"),
                "ece": MulticlassCalibrationError(num_classes=k, n_bins=15, norm="l1"),
            }
        )
        self.stored_logits = CatMetric()
        self.stored_target = CatMetric()

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.scores.update(logits.detach().float().softmax(dim=-1), target)
        self.stored_logits.update(logits.detach().float())
        self.stored_target.update(target.detach().float())

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) logits and (N,) labels seen since the last reset; empty when none."""
        if not self.stored_target.update_called:
            return torch.zeros(0, self.k), torch.zeros(0, dtype=torch.long)
        logits = self.stored_logits.compute().reshape(-1, self.k)
        return logits, self.stored_target.compute().reshape(-1).long()

    def compute(self, temperature: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        from torchmetrics.functional.classification import multiclass_calibration_error

        values = dict(self.scores.compute())
        logits, target = self.logits()
        if len(target):
            t = temperature.to(logits) if temperature is not None else torch.ones((), dtype=logits.dtype)
            values["ece_calibrated"] = multiclass_calibration_error(
                (logits / t).softmax(dim=-1), target, num_classes=self.k, n_bins=15, norm="l1")
            values["temperature"] = t.detach().clone()
        return values

    def reset(self) -> None:
        self.scores.reset()
        self.stored_logits.reset()
        self.stored_target.reset()


def _entropy(prob: Any) -> Any:
    import numpy as np

    p = np.clip(prob, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def confusion_png(truth: Any, predicted: Any, classes: Sequence[str], path: Any, title: str) -> Any:
    """Row-normalised confusion matrix (recall on the diagonal) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((k, k))
    for t, p in zip(truth, predicted):
        cm[index[t], index[p]] += 1
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2, 1.0 * k + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
