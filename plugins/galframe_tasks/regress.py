"""Heteroscedastic regression of structural parameters, each with its own uncertainty.

The head predicts, per target dimension, a mean and a log-sigma in *normalised* units and is
trained with the Gaussian negative log-likelihood.  Targets that are undefined (NaN in the
catalog, e.g. the Sersic index of a star) are masked out of the loss and the metrics, parameter
by parameter.

Derived targets:

* ``log_half_light_radius``: log10 of the catalog's ``half_light_radius`` (arcsec); stars (0) -> NaN.
* ``position_angle``: regressed as the 2-vector (cos 2θ, sin 2θ), so 0 and 180 degrees agree.  It is
  masked for round objects (``axis_ratio`` >= ``pa_max_axis_ratio``, e.g. stars), whose angle is
  undefined.  Under the training augmentation a horizontal flip maps θ -> 180 - θ (sin 2θ changes
  sign) and a rot90 by k adds ±90k degrees (2θ moves by 180k: both components change sign for odd k).
  At predict time θ = atan2(s, c) / 2 in [0, 180) degrees; its sigma comes from first-order
  propagation of the two component sigmas through φ = atan2(s, c):
  σ_φ² = (s² σ_c² + c² σ_s²) / (c² + s²)², σ_θ = σ_φ / 2, capped at 180/√12 ≈ 52 degrees
  (the spread of an angle drawn uniformly on [0, 180), i.e. "no information"); the cap is also
  reported when the vector is no longer than its larger component sigma (angle undetermined).

Loss (``loss``): ``nll`` is the Gaussian NLL; ``beta_nll`` (default) weights each object's NLL by its
own predicted variance to the power ``beta`` (gradient stopped; Seitzer et al. 2022), so the means
of objects the head finds hard keep being fitted instead of being given up behind a large sigma
(the plain NLL's failure mode: means shrunk to the sample mean); ``mse`` trains the means alone
(the sigmas then come from the calibration).  ``features``: ``embedding`` (the backbone's pooled
vector) or ``stages`` (the mean and the max of every stage's map, concatenated: the shallow stages
carry the sizes and shapes the bottleneck pools away) or ``stages+embedding`` (both: with
``modalities=[image,tabular]`` the embedding is the fused one, so catalog columns such as the PSF size
reach the head).

Calibration (``calibrate: true``): after each validation pass one factor per parameter scales its
sigmas so that 68.3% of the validation residuals fall within them; the factors live in a buffer,
so checkpoints and predictions carry them.  ``coverage68`` / ``coverage95`` are the fractions of
residuals within 1 and 1.96 sigma (0.683 and 0.95 when calibrated).

Normalisation (``DataInfo.stats`` of the training split): plain columns use ``column_mean`` /
``column_std``.  ``log_half_light_radius`` uses the log-normal moments matched to the column's
mean and std (the stats hold the linear radius only, stars' zeros included, so this is a rough but
well-scaled centre and width); the PA components use mean 0 and std 1/√2 (their values for angles
uniform on [0, 180)).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from galframe.api import Backbone, DataInfo, Features, Task
from galframe_tasks import mlp_head
from galframe.errors import ConfigError, DataError, check_choice, did_you_mean

DEFAULT_PARAMS = (
    "sersic_n",
    "log_half_light_radius",
    "axis_ratio",
    "position_angle",
    "mag_g",
    "mag_r",
    "mag_z",
    "bulge_to_total",
)
#: catalog columns each derived parameter reads (a plain parameter reads its own column)
DERIVED_COLUMNS = {
    "log_half_light_radius": ("half_light_radius",),
    "position_angle": ("position_angle", "axis_ratio"),
}
NMAD_SCALE = 1.4826
#: spread (degrees) of an angle uniform on [0, 180): the cap on a position-angle sigma
PA_SIGMA_MAX = 180.0 / math.sqrt(12.0)
LOG_2PI = math.log(2.0 * math.pi)
LOSSES = ("nll", "beta_nll", "mse")
FEATURES = ("embedding", "stages", "stages+embedding")


def columns_for(params: Sequence[str]) -> tuple[str, ...]:
    """The catalog columns the given parameters need, in first-use order."""
    cols: list[str] = []
    for p in params:
        for c in DERIVED_COLUMNS.get(p, (p,)):
            if c not in cols:
                cols.append(c)
    return tuple(cols)


def nmad(d: torch.Tensor) -> torch.Tensor:
    """Normalised median absolute deviation: 1.4826 * median(|d - median(d)|) (lower medians)."""
    if d.numel() == 0:
        return torch.tensor(float("nan"))
    return NMAD_SCALE * (d - d.median()).abs().median()


def gaussian_nll(mean: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise -log N(target | mean, exp(log_sigma)²)."""
    return 0.5 * ((target - mean) * torch.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * LOG_2PI


def beta_nll(mean: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Elementwise beta-NLL: the Gaussian NLL times sigma^(2 beta), the weight taken out of the gradient."""
    nll = gaussian_nll(mean, log_sigma, target)
    if beta <= 0:
        return nll
    return nll * torch.exp(2.0 * beta * log_sigma).detach()


def coverage_scale(diff: torch.Tensor, sigma: torch.Tensor, level: float = 0.6827) -> float:
    """The factor that makes ``level`` of the residuals fall within ``factor * sigma`` (1.0 if undefined)."""
    ok = torch.isfinite(diff) & torch.isfinite(sigma) & (sigma > 0)
    if int(ok.sum()) < 10:
        return 1.0
    r = (diff[ok].abs() / sigma[ok]).float()
    q = float(torch.quantile(r, level))
    return q if math.isfinite(q) and q > 0 else 1.0


def pa_to_vector(theta_deg: torch.Tensor) -> torch.Tensor:
    """Angles (degrees, period 180) -> (..., 2) vectors (cos 2θ, sin 2θ)."""
    two = torch.deg2rad(theta_deg) * 2.0
    return torch.stack([torch.cos(two), torch.sin(two)], dim=-1)


def vector_to_pa(vec: torch.Tensor, vec_sigma: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(..., 2) vectors (c, s) -> angle in degrees in [0, 180), and its propagated sigma (see module doc)."""
    c, s = vec[..., 0], vec[..., 1]
    theta = torch.remainder(torch.rad2deg(torch.atan2(s, c)) / 2.0, 180.0)
    theta = torch.where(theta >= 180.0, theta - 180.0, theta)
    if vec_sigma is None:
        return theta, None
    r2 = (c * c + s * s).clamp_min(1e-12)
    var_phi = (s * s * vec_sigma[..., 0] ** 2 + c * c * vec_sigma[..., 1] ** 2) / (r2 * r2)
    sigma = torch.rad2deg(var_phi.sqrt() / 2.0).clamp(max=PA_SIGMA_MAX)
    # a vector no longer than its own uncertainty leaves the angle undetermined (and the linear
    # propagation degenerate at the origin): report the no-information value
    undetermined = r2 <= torch.maximum(vec_sigma[..., 0], vec_sigma[..., 1]) ** 2
    return theta, torch.where(undetermined, torch.full_like(sigma, PA_SIGMA_MAX), sigma)


def augment_pa_vector(vec: torch.Tensor, flip: Optional[torch.Tensor], k: Optional[torch.Tensor]) -> torch.Tensor:
    """The (cos 2θ, sin 2θ) truth of an image flipped horizontally (first) then rotated by k * 90 degrees."""
    c, s = vec[..., 0], vec[..., 1]
    if flip is not None:
        s = torch.where(flip.to(torch.bool), -s, s)
    if k is not None:
        sign = 1.0 - 2.0 * (k.to(torch.long) % 2).to(vec.dtype)
        c, s = c * sign, s * sign
    return torch.stack([c, s], dim=-1)


def wrap_pa_diff(d: torch.Tensor) -> torch.Tensor:
    """Angle differences (degrees, period 180) wrapped into [-90, 90)."""
    return torch.remainder(d + 90.0, 180.0) - 90.0


class RegressMetrics(Metric):
    """Accumulates per-parameter residuals (physical units), sigmas and the normalised NLL.

    A torchmetrics ``Metric``: under distributed training ``compute()`` first gathers every rank's
    residuals and sums the NLL totals, so the metrics are those of the whole split."""

    full_state_update = False

    def __init__(self, params: Sequence[str]) -> None:
        super().__init__()
        self.params = list(params)
        for k in range(len(self.params)):
            self.add_state(f"diff_{k}", default=[], dist_reduce_fx="cat")
            self.add_state(f"sigma_{k}", default=[], dist_reduce_fx="cat")
            # (sum of the NLL, number of valid target dimensions)
            self.add_state(f"nll_{k}", default=torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, param: str, diff: torch.Tensor, sigma: torch.Tensor, nll_sum: float, nll_count: int) -> None:
        k = self.params.index(param)
        getattr(self, f"diff_{k}").append(diff.detach().float().to(self.device))
        getattr(self, f"sigma_{k}").append(sigma.detach().float().to(self.device))
        total = getattr(self, f"nll_{k}")
        setattr(self, f"nll_{k}", total + torch.tensor([float(nll_sum), float(nll_count)], dtype=total.dtype, device=total.device))

    def compute(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float, int]]:
        """param -> (residuals, sigmas, NLL sum, NLL count) over every rank."""
        from torchmetrics.utilities import dim_zero_cat

        def cat(state: Any) -> torch.Tensor:
            if isinstance(state, list) and not state:
                return torch.zeros(0, device=self.device)
            return dim_zero_cat(state).float()

        out = {}
        for k, p in enumerate(self.params):
            nll = getattr(self, f"nll_{k}")
            out[p] = (cat(getattr(self, f"diff_{k}")), cat(getattr(self, f"sigma_{k}")), float(nll[0]), int(nll[1]))
        return out

    def gathered(self, param: str) -> tuple[torch.Tensor, torch.Tensor]:
        d, s, _, _ = self.compute()[param]
        return d, s


class RegressTask(Task):
    requires = columns_for(DEFAULT_PARAMS)
    monitor = ("nll", "min")

    @classmethod
    def requires_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        return columns_for(options.get("params") or DEFAULT_PARAMS)

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        params: Sequence[str] = DEFAULT_PARAMS,
        hidden: int = 256,
        dropout: float = 0.0,
        log_sigma_min: float = -7.0,
        log_sigma_max: float = 3.0,
        pa_max_axis_ratio: float = 0.98,
        outlier_nmad: float = 3.0,
        outlier_thresholds: Optional[Mapping[str, float]] = None,
        loss: str = "beta_nll",
        beta: float = 0.5,
        features: str = "embedding",
        calibrate: bool = True,
    ) -> None:
        super().__init__(name, backbone, data)
        self.params = [str(p) for p in params]
        if not self.params:
            raise ConfigError(f"task '{name}' (regress): 'params' is empty; name at least one parameter.")
        if len(set(self.params)) != len(self.params):
            raise ConfigError(f"task '{name}' (regress): 'params' lists a parameter twice: {self.params}.")
        known = set(data.columns) | set(DERIVED_COLUMNS)
        for p in self.params:
            for col in DERIVED_COLUMNS.get(p, (p,)):
                if data.columns and col not in data.columns:
                    raise ConfigError(
                        f"task '{name}' (regress): parameter '{p}' needs catalog column '{col}', which the data does not have."
                        + did_you_mean(p, sorted(known - {"id", "shard", "index", "class"}))
                    )
        if not log_sigma_min < log_sigma_max:
            raise ConfigError(f"task '{name}' (regress): log_sigma_min must be below log_sigma_max.")
        self.requires = columns_for(self.params)  # instance value; the class value covers the defaults
        check_choice(f"tasks.{name}.loss", str(loss), LOSSES)
        check_choice(f"tasks.{name}.features", str(features), FEATURES)
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"task '{name}' (regress): beta must be in [0, 1] (0 = plain NLL, 1 = MSE-like), got {beta}.")
        self.loss_name, self.beta, self.features = str(loss), float(beta), str(features)
        self.do_calibrate = bool(calibrate)
        self.log_sigma_min = float(log_sigma_min)
        self.log_sigma_max = float(log_sigma_max)
        self.pa_max_axis_ratio = float(pa_max_axis_ratio)
        self.outlier_nmad = float(outlier_nmad)
        self.outlier_thresholds = {str(k): float(v) for k, v in dict(outlier_thresholds or {}).items()}
        unknown = set(self.outlier_thresholds) - set(self.params)
        if unknown:
            raise ConfigError(f"task '{name}' (regress): outlier_thresholds names unknown parameter(s) {sorted(unknown)}.")

        # target layout: each parameter owns a slice of the output dimensions
        self.slices: dict[str, slice] = {}
        mean, std = [], []
        for p in self.params:
            m, s = self._norm(p, data.stats)
            self.slices[p] = slice(len(mean), len(mean) + len(m))
            mean += m
            std += s
        self.n_out = len(mean)
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32), persistent=True)
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32), persistent=True)

        # per-parameter sigma factors from the validation split (1 until calibrated)
        self.register_buffer("sigma_scale", torch.ones(len(self.params), dtype=torch.float32), persistent=True)
        stages = 2 * int(sum(getattr(backbone, "feature_channels", ()) or ()))
        width = {"embedding": backbone.embed_dim, "stages": stages, "stages+embedding": stages + backbone.embed_dim}[self.features]
        if self.features != "embedding" and not stages:
            raise ConfigError(f"task '{name}' (regress): features={self.features} needs a backbone that names its feature_channels.")
        self.head = mlp_head(width, 2 * self.n_out, hidden, dropout)

    @staticmethod
    def _norm(param: str, stats: Mapping[str, Any]) -> tuple[list[float], list[float]]:
        means = stats.get("column_mean") or {}
        stds = stats.get("column_std") or {}
        if param == "position_angle":
            return [0.0, 0.0], [1.0 / math.sqrt(2.0)] * 2
        if param == "log_half_light_radius":
            mu, sd = means.get("half_light_radius"), stds.get("half_light_radius")
            if mu is None or sd is None or not mu > 0:
                return [0.0], [1.0]
            s2 = math.log1p((sd / mu) ** 2)  # log-normal moment matching, natural log
            return [(math.log(mu) - s2 / 2) / math.log(10.0)], [max(math.sqrt(s2) / math.log(10.0), 1e-3)]
        mu, sd = means.get(param, 0.0), stds.get(param, 1.0)
        return [float(mu)], [float(sd) if sd and sd > 1e-6 else 1.0]

    # -- targets --------------------------------------------------------------
    def targets(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """(B, n_out) targets in physical units (PA as its 2-vector), NaN where undefined."""
        missing = [c for c in self.requires if c not in batch]
        if missing:
            raise DataError(f"task '{self.name}' (regress): the batch has no column(s) {missing}.")
        cols = []
        for p in self.params:
            if p == "log_half_light_radius":
                r = batch["half_light_radius"].float()
                cols.append(torch.where(r > 0, torch.log10(r.clamp_min(1e-30)), torch.full_like(r, float("nan")))[:, None])
            elif p == "position_angle":
                theta = batch["position_angle"].float()
                vec = augment_pa_vector(pa_to_vector(theta), batch.get("aug_flip"), batch.get("aug_rot90"))
                q = batch["axis_ratio"].float()
                bad = ~torch.isfinite(theta) | ~(q < self.pa_max_axis_ratio)
                cols.append(torch.where(bad[:, None], torch.full_like(vec, float("nan")), vec))
            else:
                cols.append(batch[p].float()[:, None])
        return torch.cat(cols, dim=1)

    # -- model ------------------------------------------------------------------
    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        if self.features != "embedding":
            x = torch.cat([torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3))], dim=1) for m in features.maps], dim=1)
            if self.features == "stages+embedding":
                x = torch.cat([x, features.embedding], dim=1)
        else:
            x = features.embedding
        raw = self.head(x)
        mean, log_sigma = raw[:, : self.n_out], raw[:, self.n_out :]
        return {"mean": mean, "log_sigma": log_sigma.clamp(self.log_sigma_min, self.log_sigma_max)}

    def _nll_terms(self, out: dict[str, torch.Tensor], batch: Mapping[str, Any],
                   kind: str = "nll") -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise normalised loss (``kind``: nll, beta_nll or mse; 0 where masked) and the (B, n_out) validity mask."""
        target = (self.targets(batch).to(out["mean"].device) - self.target_mean) / self.target_std
        valid = torch.isfinite(target)
        target = torch.where(valid, target, torch.zeros_like(target))
        mean, log_sigma = out["mean"].float(), out["log_sigma"].float()
        if kind == "mse":
            # the means alone; the sigmas fit the squared residuals without moving them (their NLL, means detached)
            term = 0.5 * (mean - target) ** 2 + gaussian_nll(mean.detach(), log_sigma, target)
        elif kind == "beta_nll":
            term = beta_nll(mean, log_sigma, target, self.beta)
        else:
            term = gaussian_nll(mean, log_sigma, target)
        return torch.where(valid, term, torch.zeros_like(term)), valid

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Mean over parameters (those with any valid target) of each one's mean loss per dimension."""
        nll, valid = self._nll_terms(out, batch, self.loss_name)
        per_param = []
        for p in self.params:
            sl = self.slices[p]
            n = valid[:, sl].sum()
            if n > 0:
                per_param.append(nll[:, sl].sum() / n)
        if not per_param:
            return out["mean"].sum() * 0.0
        return torch.stack(per_param).mean()

    # -- physical predictions -------------------------------------------------------
    def physical(self, out: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """param -> (mean, sigma) in catalog units (position_angle in degrees in [0, 180))."""
        mean = out["mean"].float() * self.target_std + self.target_mean
        sigma = torch.exp(out["log_sigma"].float()) * self.target_std
        result = {}
        for k, p in enumerate(self.params):
            sl = self.slices[p]
            sigma[:, sl] = sigma[:, sl] * self.sigma_scale[k].to(sigma.device)
            if p == "position_angle":
                theta, theta_sigma = vector_to_pa(mean[:, sl], sigma[:, sl])
                result[p] = (theta, theta_sigma)
            else:
                result[p] = (mean[:, sl.start], sigma[:, sl.start])
        return result

    def truth(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """param -> (B,) truth in catalog units (NaN where undefined)."""
        t = self.targets(batch)
        result = {}
        for p in self.params:
            sl = self.slices[p]
            if p == "position_angle":
                theta, _ = vector_to_pa(t[:, sl])
                result[p] = torch.where(torch.isfinite(t[:, sl]).all(dim=1), theta, torch.full_like(theta, float("nan")))
            else:
                result[p] = t[:, sl.start]
        return result

    # -- metrics ------------------------------------------------------------------
    def make_metrics(self) -> nn.Module:
        return RegressMetrics(self.params)

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        nll, valid = self._nll_terms(out, batch)
        pred = self.physical(out)
        truth = self.truth(batch)
        for p in self.params:
            sl = self.slices[p]
            m, s = pred[p]
            t = truth[p].to(m.device)
            ok = torch.isfinite(t)
            d = m - t
            if p == "position_angle":
                d = wrap_pa_diff(d)
            metrics.update(p, d[ok], s[ok], float(nll[:, sl].sum()), int(valid[:, sl].sum()))

    def calibrate(self, metrics: nn.Module) -> None:
        """Scale each parameter's sigmas so that 68.3% of the validation residuals fall within them."""
        if not self.do_calibrate:
            return
        stats = metrics.compute()
        for k, p in enumerate(self.params):
            d, s, _, _ = stats[p]
            if p == "position_angle":  # capped sigmas ("no information") carry no scale
                keep = s < PA_SIGMA_MAX * 0.999
                d, s = d[keep], s[keep]
            factor = coverage_scale(d, s)
            self.sigma_scale[k] = float(self.sigma_scale[k]) * min(max(factor, 1e-3), 1e3)

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        nlls = []
        nan = torch.tensor(float("nan"))
        stats = metrics.compute()  # every rank's residuals (synchronised under distributed training)
        for p in self.params:
            d, s, nll_sum, nll_count = stats[p]
            if nll_count:
                nlls.append(nll_sum / nll_count)
            if d.numel() == 0:
                for key in ("bias", "nmad", "outlier_frac", "coverage68", "coverage95"):
                    result[f"{p}_{key}"] = nan
                continue
            scatter = nmad(d)
            limit = self.outlier_thresholds.get(p, self.outlier_nmad * float(scatter))
            result[f"{p}_bias"] = d.mean()
            result[f"{p}_nmad"] = scatter
            result[f"{p}_outlier_frac"] = (d.abs() > limit).float().mean()
            result[f"{p}_coverage68"] = (d.abs() < s).float().mean()
            result[f"{p}_coverage95"] = (d.abs() < 1.96 * s).float().mean()
        result["nll"] = torch.tensor(float(np.mean(nlls))) if nlls else nan
        return result

    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        for p, (m, s) in self.physical(out).items():
            cols[f"{p}_mean"] = m.cpu().numpy()
            cols[f"{p}_sigma"] = s.cpu().numpy()
        return cols

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        truth = {}
        for p in self.params:
            if f"{p}_mean" not in pred:
                continue
            if p == "log_half_light_radius" and "half_light_radius" in pred:
                r = pred["half_light_radius"].to_numpy(dtype=float)
                truth[p] = np.where(r > 0, np.log10(np.where(r > 0, r, 1.0)), np.nan)
            elif p == "position_angle" and "position_angle" in pred:
                t = pred["position_angle"].to_numpy(dtype=float)
                if "axis_ratio" in pred:
                    t = np.where(pred["axis_ratio"].to_numpy(dtype=float) < self.pa_max_axis_ratio, t, np.nan)
                truth[p] = t
            elif p in pred:
                truth[p] = pred[p].to_numpy(dtype=float)
        if not truth:
            return []
        path = run_dir / f"regress_{self.name}.png"
        return [scatter_png(truth, {p: pred[f"{p}_mean"].to_numpy(dtype=float) for p in truth}, path, f"{self.name}: held-out")]


def scatter_png(truth: Mapping[str, Any], predicted: Mapping[str, Any], path: Any, title: str) -> Any:
    """Predicted against true, one panel per parameter, with the 1:1 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(truth)
    cols = min(4, len(names))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, p in zip(axes.ravel(), names):
        ax.axis("on")
        t, m = np.asarray(truth[p], dtype=float), np.asarray(predicted[p], dtype=float)
        ok = np.isfinite(t) & np.isfinite(m)
        ax.scatter(t[ok], m[ok], s=4, alpha=0.6)
        if ok.any():
            lo, hi = float(min(t[ok].min(), m[ok].min())), float(max(t[ok].max(), m[ok].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"true {p}", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.set_title(f"{p} (n={int(ok.sum())})", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
