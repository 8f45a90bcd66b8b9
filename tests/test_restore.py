"""The restore task: metrics against hand formulas, the light decoder learns, and training end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from galframe.api import Backbone, DataInfo, Features
from galframe.errors import ConfigError
from galframe_tasks.restore import RestoreTask, aperture_flux, aperture_mask, block_sum, degrade_resolution, replicate
from tests.helpers import build_model, compose_train

INFO = DataInfo(bands=("g", "r", "z"), image_size=32)


class _TinyBackbone(Backbone):
    """Two conv stages (strides 2 and 4), no decoder."""

    feature_channels = (8, 16)
    feature_strides = (2, 4)
    embed_dim = 16

    def __init__(self, data: DataInfo) -> None:
        super().__init__(data)
        self.s1 = nn.Sequential(nn.Conv2d(data.n_bands, 8, 3, stride=2, padding=1), nn.GELU())
        self.s2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU())

    def forward(self, x: torch.Tensor, decode: bool = False) -> Features:
        a = self.s1(x)
        b = self.s2(a)
        return Features(maps=[a, b], embedding=b.mean(dim=(2, 3)))

    def blocks(self) -> list[nn.Module]:
        return [self.s1, self.s2]


class _DecoderBackbone(_TinyBackbone):
    has_decoder = True


def _task(**options) -> RestoreTask:
    return RestoreTask("restore", _TinyBackbone(INFO), INFO, **options)


def test_decoder_choice_is_per_instance() -> None:
    assert _task().needs_decoder is False and _task().head is not None
    with_dec = RestoreTask("restore", _DecoderBackbone(INFO), INFO)
    assert with_dec.needs_decoder is True and with_dec.head is None
    assert RestoreTask("restore", _DecoderBackbone(INFO), INFO, decoder="light").needs_decoder is False
    with pytest.raises(ConfigError, match="has no decoder"):
        _task(decoder="backbone")
    with pytest.raises(ConfigError):
        _task(loss="huber")
    # the decoded image is passed through as is
    decoded = torch.randn(2, 3, 32, 32)
    assert with_dec(Features(maps=[], embedding=torch.zeros(2, 1), decoded=decoded))["restored"] is decoded


def test_psnr_ssim_and_loss_match_hand_values() -> None:
    torch.manual_seed(0)
    task = _task(loss="l2")
    clean = torch.rand(4, 3, 32, 32) * 0.2
    target = task.scaling(clean)  # asinh, softening 1
    assert torch.allclose(target, torch.asinh(clean))
    pred = target + 0.05 * torch.randn_like(target)
    out, batch = {"restored": pred}, {"clean": clean}
    assert float(task.loss(out, batch)) == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)
    assert float(_task().loss(out, batch)) == pytest.approx(float((pred - target).abs().mean()), rel=1e-5)
    metrics = task.make_metrics()
    task.update_metrics(metrics, {"restored": pred[:2]}, {"clean": clean[:2]})
    task.update_metrics(metrics, {"restored": pred[2:]}, {"clean": clean[2:]})
    values = task.compute_metrics(metrics)
    # PSNR over the epoch: data range = max - min of every target seen, MSE pooled over every pixel
    rng = float(target.max() - target.min())
    mse = float(((pred - target) ** 2).mean())
    assert float(values["psnr"]) == pytest.approx(10 * math.log10(rng**2 / mse), rel=1e-4)
    assert 0.0 < float(values["ssim"]) < 1.0
    same = task.make_metrics()
    task.update_metrics(same, {"restored": target}, {"clean": clean})
    assert float(task.compute_metrics(same)["ssim"]) == pytest.approx(1.0, abs=1e-5)


def test_aperture_flux_and_flux_ratio() -> None:
    mask = aperture_mask(8, 8, 1.0)
    # centre (3.5, 3.5): the four central pixels lie 0.707 px away, the next ring >= 1.58 px
    assert int(mask.sum()) == 4 and mask[3:5, 3:5].all()
    task = _task(aperture_radius=3.0)
    clean = torch.zeros(2, 3, 32, 32)
    clean[:, :, 15:17, 15:17] = 1.0  # 4 px of flux 1 at the centre, inside r = 3
    clean[:, :, 0, 0] = 100.0  # far outside the aperture: ignored
    assert torch.allclose(aperture_flux(clean, 3.0), torch.full((2, 3), 4.0))
    restored = clean.clone()
    restored[0, :, 15:17, 15:17] = 0.5  # object 0: half the flux in every band
    restored[1, 0, 15:17, 15:17] = 2.0  # object 1: twice the g flux, r and z right
    total, per_band = task.flux_ratios(restored, clean)
    assert torch.allclose(total, torch.tensor([0.5, (8 + 4 + 4) / 12]))
    assert torch.allclose(per_band, torch.tensor([[0.5, 0.5, 0.5], [2.0, 1.0, 1.0]]))
    metrics = task.make_metrics()
    task.update_metrics(metrics, {"restored": task.scaling(restored)}, {"clean": clean})
    values = task.compute_metrics(metrics)
    assert float(values["flux_ratio"]) == pytest.approx(0.5, rel=1e-4)  # torch median: the lower of two
    assert float(values["flux_ratio_r"]) == pytest.approx(0.5, rel=1e-4)
    cols = task.predict_columns({"restored": task.scaling(restored)})
    assert cols["restore_aperture_flux_g"] == pytest.approx([2.0, 8.0], rel=1e-5)
    assert cols["restore_aperture_flux_z"] == pytest.approx([2.0, 4.0], rel=1e-5)


def test_flux_term_matches_hand_values_and_pulls_the_flux_back() -> None:
    task = _task(aperture_radius=3.0, flux_weight=0.5)
    clean = torch.zeros(2, 3, 32, 32)
    clean[:, :, 15:17, 15:17] = 1.0
    restored = clean.clone()
    restored[0, :, 15:17, 15:17] = 0.5  # object 0 keeps half its aperture flux, object 1 all of it
    pred = task.scaling(restored)
    flux = float(task.flux_loss(pred, clean))
    assert flux == pytest.approx(0.5 * math.log(2.0), rel=1e-4)  # mean of |log 0.5| and |log 1|
    pixel = float((pred - task.scaling(clean)).abs().mean())
    assert float(task.loss({"restored": pred}, {"clean": clean})) == pytest.approx(pixel + 0.5 * flux, rel=1e-5)
    # the gradient raises object 0's restored core, and an object with no true flux is left out
    pred = pred.clone().requires_grad_(True)
    task.flux_loss(pred, clean).backward()
    assert float(pred.grad[0, :, 15:17, 15:17].sum()) < 0 and float(pred.grad[1].abs().sum()) == 0.0
    assert float(task.flux_loss(pred, torch.zeros_like(clean))) == 0.0
    with pytest.raises(ConfigError, match="flux_weight must be >= 0"):
        _task(flux_weight=-1.0)


def test_flux_term_is_per_band_and_calibration_brings_the_median_ratio_to_one() -> None:
    task = _task(aperture_radius=3.0, flux_weight=1.0)
    clean = torch.zeros(1, 3, 32, 32)
    clean[:, :, 15:17, 15:17] = 1.0
    restored = clean.clone()
    restored[0, 0, 15:17, 15:17] = 1.5  # g 1.5x, r 0.5x, z right: the all-band sum is right, the photometry is not
    restored[0, 1, 15:17, 15:17] = 0.5
    expected = (math.log(1.5) + math.log(2.0) + 0.0) / 3
    assert float(task.flux_loss(task.scaling(restored), clean)) == pytest.approx(expected, rel=1e-4)

    # a restorer that keeps 80% of g and 125% of z on every object: calibrated factors undo it at evaluation
    torch.manual_seed(0)
    cal = _task(aperture_radius=3.0, flux_calibrate=True)
    clean = torch.rand(16, 3, 32, 32) * 0.01
    clean[:, :, 14:18, 14:18] += torch.rand(16, 3, 1, 1) + 0.5
    biased = clean * torch.tensor([0.8, 1.0, 1.25]).view(1, 3, 1, 1)
    feats = Features(maps=[], embedding=torch.zeros(16, 1), decoded=cal.scaling(biased))
    cal.needs_decoder = True
    cal.eval()
    for _ in range(2):  # calibration is read from the validation metrics, as after a validation pass
        metrics = cal.make_metrics()
        cal.update_metrics(metrics, cal(feats), {"clean": clean})
        before = cal.compute_metrics(metrics)
        cal.calibrate(metrics)
    assert float(before["flux_ratio_g"]) == pytest.approx(1.0, abs=1e-3)  # second pass: already calibrated
    assert torch.allclose(cal.flux_scale, torch.tensor([1.25, 1.0, 0.8]), rtol=1e-3)
    assert float(before["flux_nmad_z"]) == pytest.approx(0.0, abs=1e-3)
    cal.train()  # training sees the network's own output: the factors never enter the loss
    assert torch.allclose(cal(feats)["restored"], cal.scaling(biased))


def test_model_scaling_is_bound() -> None:
    from galframe.data.scaling import build_scaling

    task = _task()
    scaling = build_scaling({"name": "asinh", "softening": [0.1, 0.2, 0.3], "scale": 2.0}, INFO.bands)
    task.bind_scaling(scaling)
    clean = torch.rand(1, 3, 32, 32)
    assert torch.allclose(task.target({"clean": clean}), 2.0 * torch.asinh(clean / torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)))


def test_loss_falls_on_a_tiny_problem() -> None:
    """Light decoder + tiny backbone learn to denoise smooth blobs."""
    torch.manual_seed(0)
    backbone = _TinyBackbone(INFO)
    task = RestoreTask("restore", backbone, INFO, decoder_width=16)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(16, 2) * 12 + 10
    blob = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 20)
    clean = blob[:, None].repeat(1, 3, 1, 1) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    noisy = clean + 0.1 * torch.randn_like(clean)
    params = list(backbone.parameters()) + list(task.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(80):
        loss = task.loss(task(backbone(task.scaling(noisy))), {"clean": clean})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]


# -- 2x super-resolution -----------------------------------------------------------------

def test_block_sum_and_replicate_conserve_flux_and_bin_noise() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    coarse = block_sum(x, 2)
    assert coarse.tolist() == [[[[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]]]
    fine = replicate(coarse, 2)
    assert fine.shape == (1, 1, 4, 4) and fine[0, 0, :2, :2].eq(10 / 4).all() and fine[0, 0, 2:, 2:].eq(50 / 4).all()
    assert torch.equal(block_sum(fine, 2), coarse) and float(fine.sum()) == float(x.sum())
    assert torch.equal(degrade_resolution(x, 2), fine) and degrade_resolution(x, 1) is x
    # sky noise of sigma per pixel: 2 sigma per 2x2 block (the noise of a pixel twice as large)
    noise = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5
    assert float(block_sum(noise, 2).std()) == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ConfigError, match="cannot be cut into 3 x 3"):
        block_sum(x, 3)


def test_upscale_feeds_the_backbone_the_coarse_image_and_restores_full_resolution(tiny_dataset) -> None:
    from tests.helpers import build_model

    model, _ = build_model(tiny_dataset, "backbone=resnet18", "task=restore", "tasks.restore.upscale=2", "logger=none")
    model.eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    flux = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(flux)["restore"]
    assert out["restored"].shape == (2, 3, 64, 64)  # full resolution
    assert torch.allclose(seen[0], model.scaling(replicate(block_sum(flux, 2), 2)), atol=1e-5)
    # nothing finer than the coarse pixels reaches the network
    given = model.scaling.inverse(seen[0])
    assert torch.allclose(given, given[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1), atol=1e-5)
    # the default leaves the input alone
    plain, _ = build_model(tiny_dataset, "backbone=resnet18", "task=restore", "logger=none")
    plain.eval()
    seen.clear()
    plain.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        plain(flux)
    assert torch.equal(seen[0], plain.scaling(flux))
    with pytest.raises(ConfigError, match="upscale=3 needs stamps whose size is a multiple"):
        RestoreTask("restore", _TinyBackbone(INFO), INFO, upscale=3)
    with pytest.raises(ConfigError, match="upscale must be a whole factor"):
        RestoreTask("restore", _TinyBackbone(INFO), INFO, upscale=0)


def test_super_resolution_loss_falls_on_a_tiny_problem() -> None:
    """Compact blobs at sub-pixel positions, seen at half resolution: the model learns them at full resolution."""
    torch.manual_seed(0)
    backbone = _TinyBackbone(INFO)
    task = RestoreTask("restore", backbone, INFO, decoder_width=8, decoder_convs=1, upscale=2)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(8, 2) * 12 + 10
    blob = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 4)
    clean = blob[:, None].repeat(1, 3, 1, 1) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    noisy = clean + 0.02 * torch.randn_like(clean)
    params = list(backbone.parameters()) + list(task.parameters())
    opt = torch.optim.Adam(params, lr=5e-3)
    losses = []
    for _ in range(60):
        out = task(backbone(task.scaling(noisy)))
        loss = task.loss(out, {"clean": clean})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert out["restored"].shape == clean.shape
    assert losses[-1] < 0.3 * losses[0]


# -- end to end ------------------------------------------------------------------------

def _run(tmp_path: Path, *overrides: str):
    from galframe.train import run

    return run(compose_train(*overrides), run_dir=tmp_path / "run")


@pytest.mark.parametrize("backbone", ["lvm_tiny", "resnet18"])
def test_fast_dev_run(tiny_dataset, tmp_path, backbone) -> None:
    metrics = _run(
        tmp_path, f"backbone={backbone}", "tasks=[restore]", f"data.path={tiny_dataset}",
        "data.batch_size=8", "trainer=fast", "logger=none",
    )
    assert metrics == {}


def test_fast_dev_run_multitask(tiny_dataset, tmp_path) -> None:
    metrics = _run(
        tmp_path, "backbone=resnet18", "tasks=[classify,restore]", f"data.path={tiny_dataset}",
        "data.batch_size=8", "trainer=fast", "logger=none",
    )
    assert metrics == {}


def test_short_run_writes_metrics_and_report(tiny_dataset, tmp_path) -> None:
    import pandas as pd

    _run(
        tmp_path, "backbone=lvm_tiny", "tasks=[restore]", f"data.path={tiny_dataset}", "data.batch_size=8",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.progress_bar=false", "logger=none",
    )
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test/restore/psnr"])
    assert -1.0 <= metrics["test/restore/ssim"] <= 1.0
    assert "test/restore/flux_ratio" in metrics and "test/restore/flux_ratio_g" in metrics
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    assert {"restore_aperture_flux_g", "restore_aperture_flux_r", "restore_aperture_flux_z"} <= set(pred.columns)
    assert (run_dir / "restore_restore.png").stat().st_size > 5000


def test_super_resolution_end_to_end(tiny_dataset, tmp_path) -> None:
    import pandas as pd

    # the model as galframe train builds it: the LVM sees 2x2-binned stamps, restores 64 px
    model, dm = build_model(tiny_dataset, "backbone=lvm_tiny", "tasks=[restore]", "tasks.restore.upscale=2")
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(model.scaling.inverse(args[0])))
    flux = dm.dataset("test")[0]["image"][None]
    with torch.no_grad():
        restored = model(flux)["restore"]["restored"]
    assert restored.shape == (1, 3, 64, 64)
    assert torch.allclose(seen[0], replicate(block_sum(flux, 2), 2), rtol=1e-4, atol=1e-6)

    _run(
        tmp_path, "backbone=lvm_tiny", "tasks=[restore]", "tasks.restore.upscale=2", f"data.path={tiny_dataset}",
        "data.batch_size=8", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=2",
        "trainer.progress_bar=false", "logger=none",
    )
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test/restore/psnr"]) and -1.0 <= metrics["test/restore/ssim"] <= 1.0
    assert np.isfinite(metrics["test/restore/flux_ratio"])
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    assert pred["restore_aperture_flux_r"].notna().all()
    assert (run_dir / "restore_restore.png").stat().st_size > 5000
