"""ColorTask: regress the g-r colour of a galaxy from its image.

It shows what a task must provide: ``requires`` (catalog columns arrive in the
batch as float32 tensors), a head on the backbone's pooled embedding, a loss,
torchmetrics metrics, a ``monitor`` metric for the best checkpoint and the
columns it adds to the predictions catalog.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from galframe.api import Backbone, DataInfo, Features, Task
from galframe.errors import ConfigError, check_choice


class ColorTask(Task):
    """Predicts ``mag_g - mag_r``; the loss is on the standardised colour, the metrics in magnitudes."""

    requires = ("mag_g", "mag_r")
    monitor = ("mae", "min")

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        loss: str = "huber",
        huber_delta: float = 1.0,
        hidden: int = 64,
        dropout: float = 0.0,
        scale: Optional[float] = None,
    ) -> None:
        super().__init__(name, backbone, data)
        self.loss_name = check_choice(f"loss for task '{name}'", loss, ["huber", "mse"])
        self.huber_delta = float(huber_delta)
        mean, std = _colour_stats(data)
        if scale is not None:
            if float(scale) <= 0:
                raise ConfigError(f"task '{name}' (color): scale must be positive (got {scale}).")
            std = float(scale)
        # buffers, so the normalisation travels with the checkpoint
        self.register_buffer("center", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = backbone.embed_dim
        if hidden:
            layers += [nn.Linear(width, int(hidden)), nn.GELU()]
            width = int(hidden)
        if dropout:
            layers.append(nn.Dropout(float(dropout)))
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        z = self.head(features.embedding).squeeze(-1)
        return {"z": z, "g_r": z * self.scale + self.center}

    @staticmethod
    def target(batch: dict[str, Any]) -> torch.Tensor:
        return batch["mag_g"].float() - batch["mag_r"].float()

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        target = self.target(batch)
        ok = torch.isfinite(target)  # a missing magnitude (NaN) contributes nothing
        if not bool(ok.any()):
            return out["z"].sum() * 0.0
        z_true = (target[ok] - self.center) / self.scale
        z_pred = out["z"][ok]
        if self.loss_name == "mse":
            return F.mse_loss(z_pred, z_true)
        return F.huber_loss(z_pred, z_true, delta=self.huber_delta)

    def make_metrics(self) -> nn.Module:
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

        return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        target = self.target(batch)
        ok = torch.isfinite(target)
        if bool(ok.any()):
            metrics.update(out["g_r"][ok].detach().float(), target[ok])

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {f"{self.name}_g_r": out["g_r"].detach().float().cpu().numpy()}

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        """Optional hook: a predicted-vs-true colour plot of the held-out split."""
        column = f"{self.name}_g_r"
        if column not in pred or not {"mag_g", "mag_r"} <= set(pred.columns):
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        truth = (pred["mag_g"] - pred["mag_r"]).to_numpy(float)
        guess = pred[column].to_numpy(float)
        ok = np.isfinite(truth) & np.isfinite(guess)
        truth, guess = truth[ok], guess[ok]
        if not len(truth):
            return []
        lo, hi = float(min(truth.min(), guess.min())), float(max(truth.max(), guess.max()))
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(truth, guess, s=6, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        mae = float(np.abs(guess - truth).mean())
        ax.set_xlabel("true g-r [mag]")
        ax.set_ylabel("predicted g-r [mag]")
        ax.set_title(f"{self.name}: held-out g-r, MAE {mae:.3f} mag", fontsize=9)
        fig.tight_layout()
        path = run_dir / f"color_{self.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]


def _colour_stats(data: DataInfo) -> tuple[float, float]:
    """Centre and scale of g-r from the training statistics galframe passes in ``data.stats``.

    The mean of a difference is the difference of the means; its spread is not
    known from per-column statistics alone, so the scale assumes independent
    magnitudes (an upper bound for correlated ones) -- override with ``scale``.
    """
    means = data.stats.get("column_mean") or {}
    stds = data.stats.get("column_std") or {}
    if "mag_g" not in means or "mag_r" not in means:
        return 0.0, 1.0
    mean = float(means["mag_g"]) - float(means["mag_r"])
    std = math.hypot(float(stds.get("mag_g", 1.0)), float(stds.get("mag_r", 1.0)))
    if not math.isfinite(mean):
        mean = 0.0
    if not math.isfinite(std) or std <= 0:
        std = 1.0
    return mean, std
