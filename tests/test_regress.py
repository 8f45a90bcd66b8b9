"""The regress task: NLL, metrics, position-angle handling and augmentation, checked against hand values; end-to-end runs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galframe.api import DataInfo, Features
from galframe.data.augment import augment_batch
from galframe.errors import ConfigError, DataError
from galframe_tasks.regress import (
    DEFAULT_PARAMS,
    PA_SIGMA_MAX,
    RegressTask,
    augment_pa_vector,
    gaussian_nll,
    nmad,
    pa_to_vector,
    vector_to_pa,
    wrap_pa_diff,
)
from tests.helpers import compose_train

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.progress_bar=false"]
STATS = {
    "column_mean": {"sersic_n": 2.0, "half_light_radius": 1.5, "axis_ratio": 0.6, "position_angle": 90.0, "mag_g": 18.5,
                    "mag_r": 18.0, "mag_z": 17.5, "bulge_to_total": 0.4},
    "column_std": {"sersic_n": 1.0, "half_light_radius": 0.5, "axis_ratio": 0.2, "position_angle": 52.0, "mag_g": 1.0,
                   "mag_r": 1.0, "mag_z": 1.0, "bulge_to_total": 0.3},
}


class _Backbone(torch.nn.Module):
    embed_dim = 4


def _task(**options) -> RegressTask:
    info = DataInfo(bands=("g", "r", "z"), image_size=8, stats=STATS)
    return RegressTask("regress", _Backbone(), info, **options)


def _batch(n: int, **cols) -> dict:
    base = {c: torch.full((n,), STATS["column_mean"][c]) for c in STATS["column_mean"]}
    base.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in cols.items()})
    return base


def test_requires_and_normalisation() -> None:
    assert set(RegressTask.requires) == {"sersic_n", "half_light_radius", "axis_ratio", "position_angle", "mag_g", "mag_r",
                                         "mag_z", "bulge_to_total"}
    task = _task()
    assert task.params == list(DEFAULT_PARAMS) and task.n_out == 9  # PA takes two dimensions
    assert _task(params=["mag_r", "log_half_light_radius"]).requires == ("mag_r", "half_light_radius")
    sl = task.slices["mag_r"]
    assert float(task.target_mean[sl][0]) == 18.0 and float(task.target_std[sl][0]) == 1.0
    pa = task.slices["position_angle"]
    assert torch.allclose(task.target_std[pa], torch.full((2,), 1 / math.sqrt(2)))
    # log-normal moment matching of the linear radius' mean and std
    s2 = math.log(1 + (0.5 / 1.5) ** 2)
    lh = task.slices["log_half_light_radius"]
    assert float(task.target_mean[lh][0]) == pytest.approx((math.log(1.5) - s2 / 2) / math.log(10), rel=1e-6)
    assert float(task.target_std[lh][0]) == pytest.approx(math.sqrt(s2) / math.log(10), rel=1e-6)
    with pytest.raises(DataError, match="no column"):
        _task(params=["mag_r"]).targets({"sersic_n": torch.zeros(2)})
    info = DataInfo(bands=("g",), image_size=8, columns=("id", "mag_r"), stats=STATS)
    with pytest.raises(ConfigError, match="needs catalog column 'sersc_n'"):
        RegressTask("regress", _Backbone(), info, params=["sersc_n"])


def test_nmad_bias_and_nll_hand_values() -> None:
    d = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    # median 3; |d - 3| = 2, 1, 0, 1, 97 -> median 1
    assert float(nmad(d)) == pytest.approx(1.4826)
    mean, log_sigma, target = torch.tensor([0.5, -1.0]), torch.tensor([0.0, math.log(2.0)]), torch.tensor([1.5, 0.0])
    hand = [0.5 * 1.0 + 0.0 + 0.5 * math.log(2 * math.pi), 0.5 * 0.25 + math.log(2.0) + 0.5 * math.log(2 * math.pi)]
    assert torch.allclose(gaussian_nll(mean, log_sigma, target), torch.tensor(hand))
    ref = torch.nn.GaussianNLLLoss(full=True, reduction="none")(mean, target, torch.exp(2 * log_sigma))
    assert torch.allclose(gaussian_nll(mean, log_sigma, target), ref)


def test_loss_masks_nan_targets_and_matches_closed_form() -> None:
    task = _task(params=["sersic_n", "mag_r"], loss="nll")
    out = {"mean": torch.tensor([[0.0, 1.0], [2.0, 0.0]]), "log_sigma": torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])}
    batch = _batch(2, sersic_n=[float("nan"), 3.0], mag_r=[18.0, 18.0])
    # normalised targets: sersic (3-2)/1 = 1 for row 1 only; mag_r 0 for both
    c = 0.5 * math.log(2 * math.pi)
    sersic = 0.5 * ((1 - 2) / 2) ** 2 + math.log(2) + c
    mag = ((0.5 * 1 + c) + (0 + c)) / 2
    assert float(task.loss(out, batch)) == pytest.approx((sersic + mag) / 2, rel=1e-6)
    # beta-NLL (beta 0.5): each term times its sigma^(2 * 0.5); the sersic row has sigma 2
    beta = _task(params=["sersic_n", "mag_r"], loss="beta_nll", beta=0.5)
    assert float(beta.loss(out, batch)) == pytest.approx((2 * sersic + mag) / 2, rel=1e-6)
    # every target missing: a zero loss (kept on the graph, so backward still works)
    mean = out["mean"].clone().requires_grad_(True)
    none = task.loss({**out, "mean": mean}, _batch(2, sersic_n=[float("nan")] * 2, mag_r=[float("nan")] * 2))
    assert float(none.detach()) == 0.0
    none.backward()


def test_metrics_bias_nmad_outliers_coverage() -> None:
    torch.manual_seed(0)
    task = _task(params=["mag_r"], outlier_thresholds={"mag_r": 2.5})
    metrics = task.make_metrics()
    n, sigma = 20000, 0.5
    truth = 18.0 + torch.randn(n)
    pred = truth + 0.1 + sigma * torch.randn(n)  # bias 0.1, scatter 0.5, predicted sigma 0.5
    for part in range(4):  # several batches
        sl = slice(part * n // 4, (part + 1) * n // 4)
        out = {"mean": (pred[sl] - 18.0)[:, None], "log_sigma": torch.full((n // 4, 1), math.log(sigma))}
        task.update_metrics(metrics, out, _batch(n // 4, mag_r=truth[sl]))
    values = task.compute_metrics(metrics)
    assert float(values["mag_r_bias"]) == pytest.approx(0.1, abs=0.01)
    assert float(values["mag_r_nmad"]) == pytest.approx(0.5, rel=0.03)
    # |d| < sigma with d ~ N(0.1, 0.5): P(-1.2 < z < 0.8)
    from scipy.stats import norm

    assert float(values["mag_r_coverage68"]) == pytest.approx(norm.cdf(0.8) - norm.cdf(-1.2), abs=0.01)
    # |d| > 2.5 with d ~ N(0.1, 0.5): the Gaussian tails beyond (2.5 -/+ 0.1) / 0.5

    expected = norm.sf(2.4 / 0.5) + norm.cdf(-2.6 / 0.5)
    assert float(values["mag_r_outlier_frac"]) == pytest.approx(expected, abs=2e-4)
    # normalised z = d / 0.5 with d ~ N(0.1, 0.5): E[z^2] = (0.1^2 + 0.5^2) / 0.5^2 = 1.04
    assert float(values["nll"]) == pytest.approx(0.5 * 1.04 + math.log(0.5) + 0.5 * math.log(2 * math.pi), abs=0.03)
    metrics.reset()
    assert math.isnan(float(task.compute_metrics(metrics)["mag_r_bias"]))
    # an unbiased, honestly calibrated Gaussian covers 68.3% within one sigma
    out = {"mean": (truth + sigma * torch.randn(n) - 18.0)[:, None], "log_sigma": torch.full((n, 1), math.log(sigma))}
    task.update_metrics(metrics, out, _batch(n, mag_r=truth))
    assert float(task.compute_metrics(metrics)["mag_r_coverage68"]) == pytest.approx(0.6827, abs=0.01)
    metrics.reset()
    assert math.isnan(float(task.compute_metrics(metrics)["mag_r_bias"]))


def test_beta_nll_keeps_fitting_the_means_of_uncertain_objects() -> None:
    """The plain NLL's gradient on a mean is (m - t) / sigma^2: an object given a large sigma stops being
    fitted.  beta-NLL (beta 0.5) scales it by sigma, so it falls as 1 / sigma only; mse ignores sigma."""
    target = _batch(2, mag_r=[19.0, 19.0])
    grads = {}
    for loss in ("nll", "beta_nll", "mse"):
        mean = torch.zeros(2, 1, requires_grad=True)
        out = {"mean": mean, "log_sigma": torch.tensor([[0.0], [math.log(4.0)]])}
        _task(params=["mag_r"], loss=loss, beta=0.5).loss(out, target).backward()
        grads[loss] = mean.grad[:, 0].abs()
    assert float(grads["nll"][1] / grads["nll"][0]) == pytest.approx(1 / 16, rel=1e-5)
    assert float(grads["beta_nll"][1] / grads["beta_nll"][0]) == pytest.approx(1 / 4, rel=1e-5)
    assert float(grads["mse"][1] / grads["mse"][0]) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ConfigError, match="beta must be in"):
        _task(beta=2.0)
    with pytest.raises(ConfigError, match="Unknown tasks.regress.loss 'nlll'"):
        _task(loss="nlll")


def test_calibration_rescales_sigmas_to_the_validation_coverage() -> None:
    """Gaussian residuals of sigma 1.0 with predicted sigmas of 0.5: calibration doubles the sigmas, and
    the coverage of fresh residuals from the same law becomes 68.3% and 95%."""
    torch.manual_seed(1)
    task = _task(params=["mag_r", "axis_ratio"])
    n = 20000

    def fill():
        metrics = task.make_metrics()
        truth = _batch(n, mag_r=18.0 + torch.randn(n), axis_ratio=0.6 + 0.2 * torch.randn(n))
        # mag_r: true scatter 1.0 (normalised 1.0) predicted 0.5; axis_ratio: true scatter 0.05 (normalised 0.25) predicted 0.25
        mean = torch.stack([(truth["mag_r"] - 18.0) + torch.randn(n), (truth["axis_ratio"] - 0.6) / 0.2 + 0.25 * torch.randn(n)], 1)
        out = {"mean": mean, "log_sigma": torch.log(torch.tensor([[0.5, 0.25]])).expand(n, 2)}
        task.update_metrics(metrics, out, truth)
        return metrics

    before = task.compute_metrics(fill())
    assert float(before["mag_r_coverage68"]) == pytest.approx(0.383, abs=0.01)  # P(|z| < 0.5)
    task.calibrate(fill())
    assert float(task.sigma_scale[0]) == pytest.approx(2.0, rel=0.03)
    assert float(task.sigma_scale[1]) == pytest.approx(1.0, rel=0.03)  # already honest: left alone
    after = task.compute_metrics(fill())
    for p in ("mag_r", "axis_ratio"):
        assert float(after[f"{p}_coverage68"]) == pytest.approx(0.683, abs=0.01), p
        assert float(after[f"{p}_coverage95"]) == pytest.approx(0.95, abs=0.01), p
    # without calibration the factors stay 1
    fixed = _task(params=["mag_r", "axis_ratio"], calibrate=False)
    fixed.calibrate(fill())
    assert torch.equal(fixed.sigma_scale, torch.ones(2))


def test_stage_features_read_every_stage() -> None:
    class Staged(torch.nn.Module):
        embed_dim = 4
        feature_channels = (3, 5)

    info = DataInfo(bands=("g", "r", "z"), image_size=8, stats=STATS)
    task = RegressTask("regress", Staged(), info, params=["mag_r"], features="stages", hidden=0)
    assert task.head[-1].in_features == 2 * (3 + 5)
    maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    out = task(Features(maps=maps, embedding=torch.zeros(2, 4)))
    assert out["mean"].shape == (2, 1)
    # a change in the finest stage alone reaches the prediction (the pooled embedding would not see it)
    changed = task(Features(maps=[maps[0] + 1.0, maps[1]], embedding=torch.zeros(2, 4)))
    assert not torch.allclose(out["mean"], changed["mean"])
    with pytest.raises(ConfigError, match="Unknown tasks.regress.features"):
        RegressTask("regress", Staged(), info, params=["mag_r"], features="stage")
    # stages+embedding: the (possibly fused) embedding reaches the head as well
    both = RegressTask("regress", Staged(), info, params=["mag_r"], features="stages+embedding", hidden=0)
    assert both.head[-1].in_features == 2 * (3 + 5) + 4
    base = both(Features(maps=maps, embedding=torch.zeros(2, 4)))
    moved = both(Features(maps=maps, embedding=torch.ones(2, 4)))
    assert not torch.allclose(base["mean"], moved["mean"])


def test_metric_nll_is_the_mean_normalised_nll() -> None:
    task = _task(params=["mag_r", "sersic_n"])
    metrics = task.make_metrics()
    out = {"mean": torch.tensor([[0.5, 0.0], [0.0, 1.0]]), "log_sigma": torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])}
    batch = _batch(2, mag_r=[18.0, 18.0], sersic_n=[2.0, float("nan")])
    task.update_metrics(metrics, out, batch)
    values = task.compute_metrics(metrics)
    c = 0.5 * math.log(2 * math.pi)
    mag = ((0.125 + c) + (math.log(2.0) + c)) / 2
    sersic = c
    assert float(values["nll"]) == pytest.approx((mag + sersic) / 2, rel=1e-6)
    assert float(values["sersic_n_bias"]) == pytest.approx(0.0)
    assert float(values["mag_r_bias"]) == pytest.approx(0.25)


def test_position_angle_round_trip_and_sigma() -> None:
    theta = torch.tensor([0.0, 179.9, 90.0, 45.0, 135.0])
    vec = pa_to_vector(theta)
    back, _ = vector_to_pa(vec)
    assert torch.allclose(back[2:], theta[2:], atol=1e-3)
    assert torch.allclose(vec[0], vec[1], atol=5e-3)  # 0 and 179.9 degrees agree ...
    assert torch.dist(vec[0], vec[2]) > 1.9  # ... 90 degrees is as far as it gets
    assert float(wrap_pa_diff(back[1] - theta[0]).abs()) < 0.2
    assert ((back >= 0) & (back < 180)).all()
    # sigma: unit vector at 2θ = 0 with sigma_s = 0.1 -> sigma_θ = 0.1 / 2 rad; capped when the vector vanishes
    _, sig = vector_to_pa(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.3, 0.1], [0.1, 0.1]]))
    assert float(sig[0]) == pytest.approx(math.degrees(0.05), rel=1e-5)
    assert float(sig[1]) == pytest.approx(PA_SIGMA_MAX)


def test_pa_masked_for_round_objects_and_log_radius_for_stars() -> None:
    task = _task(params=["log_half_light_radius", "position_angle"])
    batch = _batch(3, half_light_radius=[1.0, 0.0, 10.0], position_angle=[30.0, 0.0, 60.0], axis_ratio=[0.5, 1.0, 0.99])
    t = task.targets(batch)
    assert t[0, 0] == 0.0 and torch.isnan(t[1, 0]) and t[2, 0] == pytest.approx(1.0)
    assert torch.isfinite(t[0, 1:]).all() and torch.isnan(t[1:, 1:]).all()


def _gaussian_image(size: int, theta_deg: float, q: float = 0.4, sigma: float = 5.0) -> torch.Tensor:
    """An elongated Gaussian, major axis at theta (counter-clockwise from +x = columns, +y = rows)."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    c = (size - 1) / 2
    x, y = x - c, y - c
    t = math.radians(theta_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return torch.exp(-0.5 * ((u / sigma) ** 2 + (v / (q * sigma)) ** 2))


def _moment_pa(img: torch.Tensor) -> float:
    y, x = torch.meshgrid(torch.arange(img.shape[0], dtype=torch.float64), torch.arange(img.shape[1], dtype=torch.float64), indexing="ij")
    w = img / img.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    xx, yy, xy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum(), (w * (x - mx) * (y - my)).sum()
    return math.degrees(0.5 * math.atan2(2 * xy, xx - yy)) % 180.0


def test_augmentation_moves_the_pa_truth_as_the_image() -> None:
    theta0 = 25.0
    n = 16
    img = _gaussian_image(33, theta0)
    assert abs(float(wrap_pa_diff(torch.tensor(_moment_pa(img) - theta0)))) < 0.5
    batch = _batch(n, position_angle=[theta0] * n, axis_ratio=[0.4] * n)
    batch["image"] = img.float()[None, None].repeat(n, 3, 1, 1)
    batch = augment_batch(batch, {"rot90": True, "flip": True, "shift": 0}, torch.Generator().manual_seed(3))
    flips, ks = batch["aug_flip"], batch["aug_rot90"]
    assert flips.any() and (~flips).any() and (ks % 2 == 1).any() and (ks % 2 == 0).any()
    task = _task(params=["position_angle"])
    target, _ = vector_to_pa(task.targets(batch))
    for i in range(n):
        measured = _moment_pa(batch["image"][i, 0].double())
        assert abs(float(wrap_pa_diff(target[i] - measured))) < 0.5, (i, bool(flips[i]), int(ks[i]), float(target[i]), measured)
    # the pure transform: a flip maps θ -> 180 - θ, a rot90 adds 90 degrees
    v = pa_to_vector(torch.tensor([theta0]))
    assert float(vector_to_pa(augment_pa_vector(v, torch.tensor([True]), None))[0]) == pytest.approx(180 - theta0, abs=1e-4)
    assert float(vector_to_pa(augment_pa_vector(v, None, torch.tensor([1])))[0]) == pytest.approx(theta0 + 90, abs=1e-4)


def test_loss_falls_on_a_tiny_problem() -> None:
    torch.manual_seed(0)
    task = _task(params=["mag_r", "position_angle"], hidden=32)
    x = torch.randn(128, 4)
    theta = (torch.rad2deg(torch.atan2(x[:, 1], x[:, 0])) / 2) % 180
    batch = _batch(128, mag_r=18.0 + x[:, 2] + 0.05 * torch.randn(128), position_angle=theta, axis_ratio=[0.5] * 128)
    opt = torch.optim.Adam(task.parameters(), lr=0.02)
    losses = []
    for _ in range(150):
        loss = task.loss(task(Features(maps=[], embedding=x)), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    with torch.no_grad():
        pred = task.physical(task(Features(maps=[], embedding=x)))
    assert float(wrap_pa_diff(pred["position_angle"][0] - theta).abs().median()) < 10.0
    assert float((pred["mag_r"][0] - batch["mag_r"]).abs().median()) < 0.2


def test_predict_columns() -> None:
    task = _task()
    out = {"mean": torch.zeros(2, task.n_out), "log_sigma": torch.zeros(2, task.n_out)}
    pa = task.slices["position_angle"]
    out["mean"][:, pa] = torch.tensor([[0.0, 1.0], [-1.0, 0.0]]) * math.sqrt(2)  # physical vectors (0, 1) and (-1, 0)
    cols = task.predict_columns(out)
    assert set(cols) == {f"{p}_{s}" for p in DEFAULT_PARAMS for s in ("mean", "sigma")}
    assert cols["mag_r_mean"][0] == pytest.approx(18.0) and cols["mag_r_sigma"][0] == pytest.approx(1.0)
    assert cols["position_angle_mean"] == pytest.approx([45.0, 90.0], abs=1e-4)
    assert cols["position_angle_sigma"][0] == pytest.approx(math.degrees(1 / math.sqrt(2) / 2), rel=1e-4)


def _run(tmp_path: Path, *overrides: str):
    from galframe.train import run

    return run(compose_train(*overrides), run_dir=tmp_path / "run")


@pytest.mark.parametrize("tasks", ["[regress]", "[classify,regress]"])
def test_fast_dev_run(tiny_dataset, tmp_path, tasks) -> None:
    metrics = _run(tmp_path, "backbone=resnet18", f"tasks={tasks}", f"data.path={tiny_dataset}", "data.batch_size=8",
                   "trainer=fast", "logger=none")
    assert metrics == {}


def test_short_run_writes_metrics_and_predictions(tiny_dataset, tmp_path) -> None:
    metrics = _run(tmp_path, "backbone=resnet18", "tasks=[regress]", f"data.path={tiny_dataset}", "data.batch_size=16",
                   *SHORT, "logger=none")
    run_dir = tmp_path / "run"
    for p in DEFAULT_PARAMS:
        for key in ("bias", "nmad", "outlier_frac", "coverage68"):
            assert f"test/regress/{p}_{key}" in metrics
        assert 0.0 <= metrics[f"test/regress/{p}_coverage68"] <= 1.0
    assert np.isfinite(metrics["test/regress/nll"])
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    for p in DEFAULT_PARAMS:
        assert {f"{p}_mean", f"{p}_sigma"} <= set(pred.columns)
        assert (pred[f"{p}_sigma"] > 0).all()
    assert ((pred["position_angle_mean"] >= 0) & (pred["position_angle_mean"] < 180)).all()
    assert (run_dir / "regress_regress.png").stat().st_size > 5000
    assert (run_dir / "metrics.json").is_file()


def test_custom_params_load_only_the_columns_they_need(tiny_dataset, tmp_path) -> None:
    from galframe.train import _task_requires, run, to_dict

    cfg = compose_train(f"data.path={tiny_dataset}", "backbone=resnet18", "tasks=[regress]", "tasks.regress.params=[mag_r,log_half_light_radius]", "trainer=fast", "logger=none")
    assert _task_requires(to_dict(cfg)) == ["half_light_radius", "mag_r"]
    assert run(cfg, run_dir=tmp_path / "run") == {}
