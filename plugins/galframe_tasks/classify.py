"""Single-label morphology classification, built for imbalanced classes."""
from __future__ import annotations

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
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassAUROC,
            MulticlassCalibrationError,
            MulticlassRecall,
        )

        k = self.n_classes
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes=k, average="micro"),
                "balanced_accuracy": MulticlassAccuracy(num_classes=k, average="macro"),
                "auroc": MulticlassAUROC(num_classes=k, average="macro"),
                "recall": MulticlassRecall(num_classes=k, average="none"),
                "ece": MulticlassCalibrationError(num_classes=k, n_bins=15, norm="l1"),
            }
        )

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        metrics.update(out["logits"].softmax(dim=-1), batch["label"])

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        values = metrics.compute()
        result = {k: v for k, v in values.items() if k != "recall"}
        for cls, recall in zip(self.classes, values["recall"]):
            result[f"recall_{cls}"] = recall
        return result

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        prob = out["logits"].float().softmax(dim=-1).cpu().numpy()
        cols: dict[str, Any] = {f"{self.name}_p_{c}": prob[:, i] for i, c in enumerate(self.classes)}
        cols[f"{self.name}_class"] = [self.classes[i] for i in prob.argmax(axis=1)]
        cols[f"{self.name}_entropy"] = _entropy(prob)
        return cols

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        if "class_name" not in pred:
            return []
        path = run_dir / f"confusion_{self.name}.png"
        return [confusion_png(pred["class_name"], pred[f"{self.name}_class"], self.classes, path, f"{self.name}: held-out confusion")]


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
