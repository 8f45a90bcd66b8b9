"""Image restoration: a noise-free, PSF-free ``clean`` image from the noisy, blurred input.

The network works in the model's scaled units (``model.scaling`` of the flux), so the loss and
PSNR/SSIM are computed there; flux-space quantities (aperture flux, flux ratio) invert the
scaling.  The model hands its scaling to the task with ``bind_scaling`` right after building it,
so the task always uses exactly the checkpoint's scaling; unbound (a task built on its own, as in
unit tests) it uses the core's default, asinh with softening 1 and scale 1.

Where the output comes from: a backbone with a decoder (the LVM) fills ``Features.decoded``
(``n_bands`` channels at full resolution, in scaled units) and the task reads it; any other
backbone (e.g. a timm ResNet) gets a light FPN-like decoder owned by the task, built on the
backbone's multi-scale ``Features.maps``.  ``needs_decoder`` is therefore decided per instance.

Super-resolution (``upscale=2``): the model sees the observed image at 1/``upscale`` resolution and
restores the clean image at full resolution; metrics are computed at full resolution.  The coarse
image is made inside the model from the full-resolution observed stamp (after augmentation): block
sums of ``upscale`` x ``upscale`` pixels (:func:`block_sum`, flux conserved), which is exactly what a
detector with pixels ``upscale`` times larger records for the same sky: the noise of the summed pixels
adds in quadrature (sigma x ``upscale`` per coarse pixel, signal x ``upscale``^2), so no noise has to be
added.  The coarse image is put back on the full grid by pixel replication with flux / ``upscale``^2
per pixel (:func:`replicate`; "pre-upsampling", as in SRCNN), so every backbone (the LVM's fixed
Swin windows included) and any other task of the model run unchanged, and nothing beyond the coarse
pixels reaches the network.  The degradation is the task's :meth:`RestoreTask.transform_input`
(flux in, flux out): GalaxyModel applies it to every input before scaling (training, evaluation,
``predict``, the report).  In a multi-task model every task sees the coarse image, and only one task
may change the input.  Datasets stay untouched (the clean target keeps its full resolution).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from galframe.api import Backbone, DataInfo, Features, Task
from galframe.errors import ConfigError, check_choice


def aperture_mask(height: int, width: int, radius: float, device: Any = None) -> torch.Tensor:
    """(H, W) float mask of the pixels whose centres lie within ``radius`` px of the stamp centre."""
    yy = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2.0
    xx = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2.0
    r2 = yy[:, None] ** 2 + xx[None, :] ** 2
    return (r2 <= float(radius) ** 2).float()


def aperture_flux(flux: torch.Tensor, radius: float) -> torch.Tensor:
    """(B, C) flux summed in a circular aperture of ``radius`` px at the centre of (B, C, H, W) stamps."""
    mask = aperture_mask(flux.shape[-2], flux.shape[-1], radius, flux.device)
    return (flux.float() * mask).sum(dim=(-2, -1))


def block_sum(flux: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., H / factor, W / factor): sums of factor x factor pixel blocks (flux conserved)."""
    f = int(factor)
    h, w = flux.shape[-2], flux.shape[-1]
    if h % f or w % f:
        raise ConfigError(f"a {h} x {w} px stamp cannot be cut into {f} x {f} pixel blocks.")
    return flux.reshape(*flux.shape[:-2], h // f, f, w // f, f).sum(dim=(-1, -3))


def replicate(coarse: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., h, w) -> (..., h * factor, w * factor): each coarse pixel spread evenly over factor x factor
    pixels (flux / factor^2 each), so ``block_sum(replicate(x, f), f) == x``."""
    f = int(factor)
    return coarse.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / float(f * f)


def degrade_resolution(flux: torch.Tensor, factor: int) -> torch.Tensor:
    """The stamp a detector with ``factor`` times larger pixels records, on the original pixel grid."""
    return flux if int(factor) == 1 else replicate(block_sum(flux, factor), factor)


class LightDecoder(nn.Module):
    """FPN-like decoder: 1x1 lateral convs on every map, coarse-to-fine upsample-and-add, a few 3x3
    convs, bilinear upsampling to the full stamp size and a 3x3 conv to ``out_chans`` channels."""

    def __init__(self, in_channels: Sequence[int], out_chans: int, width: int = 64, n_convs: int = 2) -> None:
        super().__init__()
        if not in_channels:
            raise ConfigError("the light restoration decoder needs a backbone with multi-scale feature maps.")
        self.lateral = nn.ModuleList(nn.Conv2d(int(c), width, 1) for c in in_channels)
        convs: list[nn.Module] = []
        for _ in range(int(n_convs)):
            convs += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(min(8, width), width), nn.GELU()]
        self.smooth = nn.Sequential(*convs)
        self.refine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, out_chans, 3, padding=1)

    def forward(self, maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.lateral[-1](maps[-1])
        for lat, fmap in zip(reversed(self.lateral[:-1]), reversed(maps[:-1])):
            x = F.interpolate(x, size=fmap.shape[-2:], mode="bilinear", align_corners=False) + lat(fmap)
        x = self.smooth(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.out(self.refine(x))


def _psnr_metric() -> nn.Module:
    """PSNR over an epoch: 10 log10(range^2 / MSE), MSE pooled over every pixel of every update and
    range = max - min of all targets seen (torchmetrics' own PSNR needs a fixed data range)."""
    from torchmetrics import Metric

    class EpochPSNR(Metric):
        full_state_update = False

        def __init__(self) -> None:
            super().__init__()
            self.add_state("sse", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("n", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("lo", default=torch.tensor(float("inf")), dist_reduce_fx="min")
            self.add_state("hi", default=torch.tensor(float("-inf")), dist_reduce_fx="max")

        def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
            self.sse += ((pred.double() - target.double()) ** 2).sum()
            self.n += target.numel()
            self.lo = torch.minimum(self.lo, target.min().float())
            self.hi = torch.maximum(self.hi, target.max().float())

        def compute(self) -> torch.Tensor:
            mse = self.sse / self.n.clamp_min(1)
            rng = (self.hi - self.lo).double()
            return (10 * torch.log10(rng**2 / mse)).float()

    return EpochPSNR()


class RestoreTask(Task):
    requires = ("clean",)
    monitor = ("psnr", "max")

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        loss: str = "l1",
        decoder: str = "auto",
        decoder_width: int = 64,
        decoder_convs: int = 2,
        aperture_radius: float = 8.0,
        n_report: int = 4,
        upscale: int = 1,
        flux_weight: float = 0.0,
        flux_calibrate: bool = False,
    ) -> None:
        super().__init__(name, backbone, data)
        self.flux_calibrate = bool(flux_calibrate)
        # per-band flux factors from the validation split, applied to evaluated and predicted images (1 until calibrated)
        self.register_buffer("flux_scale", torch.ones(data.n_bands, dtype=torch.float32), persistent=True)
        self.loss_name = check_choice(f"loss for task '{name}'", loss, ["l1", "l2"])
        self.flux_weight = float(flux_weight)
        if self.flux_weight < 0:
            raise ConfigError(f"task '{name}': flux_weight must be >= 0 (got {flux_weight}).")
        decoder = check_choice(f"decoder for task '{name}'", str(decoder), ["auto", "backbone", "light"])
        has_decoder = bool(backbone.has_decoder)
        if decoder == "backbone" and not has_decoder:
            raise ConfigError(f"task '{name}': decoder=backbone, but this backbone has no decoder; use decoder=light or auto.")
        # instance attribute: GalaxyModel reads task.needs_decoder per task
        self.needs_decoder = decoder == "backbone" or (decoder == "auto" and has_decoder)
        self.n_bands = data.n_bands
        self.bands = list(data.bands)
        self.image_size = int(data.image_size)
        self.aperture_radius = float(aperture_radius)
        if self.aperture_radius <= 0:
            raise ConfigError(f"task '{name}': aperture_radius must be positive (got {aperture_radius}).")
        self.n_report = int(n_report)
        self.head: Optional[LightDecoder] = None
        if not self.needs_decoder:
            self.head = LightDecoder(list(backbone.feature_channels), self.n_bands, int(decoder_width), int(decoder_convs))
        from galframe.data.scaling import build_scaling

        self.scaling = build_scaling({"name": "asinh"}, self.bands)
        self.upscale = int(upscale)
        if self.upscale != upscale or self.upscale < 1:
            raise ConfigError(f"task '{name}': upscale must be a whole factor >= 1 (got {upscale}).")
        if self.upscale > 1:
            if self.image_size % self.upscale:
                raise ConfigError(
                    f"task '{name}': upscale={self.upscale} needs stamps whose size is a multiple of it "
                    f"(these are {self.image_size} px)."
                )
        #: GalaxyModel feeds the backbone transform_input(flux) of tasks that change the input
        self.changes_input = self.upscale > 1

    def bind_scaling(self, scaling: nn.Module) -> None:
        """Use the model's scaling (flux -> network units); GalaxyModel calls this after building the task."""
        self.scaling = scaling

    # -- super-resolution input --------------------------------------------------
    def transform_input(self, flux: torch.Tensor) -> torch.Tensor:
        """What the network sees of an observed (B, C, H, W) flux stamp: itself, or with ``upscale`` > 1
        its 1/upscale resolution version on the full grid (see the module doc)."""
        return degrade_resolution(flux, self.upscale)

    # -- forward and loss -------------------------------------------------------
    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        if self.needs_decoder:
            if features.decoded is None:
                raise ConfigError(f"task '{self.name}' reads the backbone decoder, but the backbone returned no decoded image.")
            restored = features.decoded
        else:
            restored = self.head(features.maps, (self.image_size, self.image_size))
        if self.flux_calibrate and not self.training:
            restored = self.scaling(self.scaling.inverse(restored.float()) * self.flux_scale.view(1, -1, 1, 1)).to(restored.dtype)
        return {"restored": restored}

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.scaling(batch["clean"])

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        pred, target = out["restored"].float(), self.target(batch).float()
        pixel = F.mse_loss(pred, target) if self.loss_name == "l2" else F.l1_loss(pred, target)
        if self.flux_weight > 0:
            return pixel + self.flux_weight * self.flux_loss(pred, batch["clean"].float())
        return pixel

    def flux_loss(self, pred: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Mean |log| of the restored / true aperture flux, band by band, over the bands and objects with
        positive true flux.

        Pixel losses in scaled (asinh) units weigh the faint outskirts like the bright core and let the
        flux drift; this term holds the flux in the aperture where photometry is measured, in every band
        (a sum over bands would let one band's excess pay for another's deficit)."""
        pred_ap = aperture_flux(self.scaling.inverse(pred), self.aperture_radius)
        true_ap = aperture_flux(clean, self.aperture_radius)
        ok = true_ap > 0
        if not bool(ok.any()):
            return pred.new_zeros(())
        ratio = pred_ap[ok].clamp_min(1e-3 * true_ap[ok]) / true_ap[ok]
        return torch.log(ratio).abs().clamp_max(5.0).mean()

    def calibrate(self, metrics: nn.Module) -> None:
        """With ``flux_calibrate``: per-band factors that bring the median validation flux ratio to 1."""
        if not self.flux_calibrate:
            return
        for i, band in enumerate(self.bands):
            m = metrics[f"flux_ratio_{band}"]
            values = m.compute().flatten().float() if m.update_count else torch.empty(0)
            values = values[torch.isfinite(values) & (values > 0)]
            if values.numel() >= 10:
                self.flux_scale[i] = float(self.flux_scale[i]) / float(values.median())

    # -- metrics ----------------------------------------------------------------
    def make_metrics(self) -> nn.Module:
        from torchmetrics import CatMetric, MetricCollection
        from torchmetrics.image import StructuralSimilarityIndexMeasure

        metrics = {
            # scaled units; range = max - min of all targets of the epoch, MSE pooled over the epoch
            "psnr": _psnr_metric(),
            "ssim": StructuralSimilarityIndexMeasure(data_range=None),
            "flux_ratio": CatMetric(nan_strategy="ignore"),
        }
        for band in self.bands:
            metrics[f"flux_ratio_{band}"] = CatMetric(nan_strategy="ignore")
        return MetricCollection(metrics, compute_groups=False)

    def flux_ratios(self, restored_flux: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) all-band and (B, C) per-band aperture flux ratios restored / true (NaN where the truth is <= 0)."""
        pred_ap, true_ap = aperture_flux(restored_flux, self.aperture_radius), aperture_flux(clean, self.aperture_radius)
        nan = torch.tensor(float("nan"), device=pred_ap.device)
        total = torch.where(true_ap.sum(1) > 0, pred_ap.sum(1) / true_ap.sum(1).clamp_min(1e-30), nan)
        per_band = torch.where(true_ap > 0, pred_ap / true_ap.clamp_min(1e-30), nan)
        return total, per_band

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        pred, target = out["restored"].float(), self.target(batch).float()
        metrics["psnr"].update(pred, target)
        metrics["ssim"].update(pred, target)
        total, per_band = self.flux_ratios(self.scaling.inverse(pred), batch["clean"].float())
        metrics["flux_ratio"].update(total)
        for i, band in enumerate(self.bands):
            metrics[f"flux_ratio_{band}"].update(per_band[:, i])

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        result = {"psnr": metrics["psnr"].compute(), "ssim": metrics["ssim"].compute()}
        for key in ["flux_ratio"] + [f"flux_ratio_{b}" for b in self.bands]:
            values = metrics[key].compute() if metrics[key].update_count else torch.empty(0)
            values = values.flatten().float()
            values = values[torch.isfinite(values)]
            # median over objects; NaN if no object had a positive true aperture flux
            result[key] = values.median() if values.numel() else torch.tensor(float("nan"))
            if key != "flux_ratio":  # the scatter of a band's photometry: NMAD of its flux ratio
                result[key.replace("ratio", "nmad")] = (1.4826 * (values - values.median()).abs().median()
                                                        if values.numel() else torch.tensor(float("nan")))
        return result

    # -- predictions and report ---------------------------------------------------
    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        flux = self.scaling.inverse(out["restored"].float())
        ap = aperture_flux(flux, self.aperture_radius).cpu().numpy()
        return {f"{self.name}_aperture_flux_{b}": ap[:, i] for i, b in enumerate(self.bands)}

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        """Input / restored / truth / residual for the first ``n_report`` held-out stamps."""
        dataset = dm.dataset("test")
        items = [dataset[i] for i in range(min(self.n_report, len(dataset)))]
        if model is None or not items or "clean" not in items[0]:
            return []
        images = torch.stack([item["image"] for item in items]).to(model.device)
        with torch.no_grad():
            restored = self.scaling.inverse(model(images)[self.name]["restored"].float()).cpu().numpy()
        seen = self.transform_input(images.cpu().float()).numpy()  # what the network was given
        rows = [(seen[k], restored[k], item["clean"].numpy(), int(item["id"])) for k, item in enumerate(items)]
        path = run_dir / f"restore_{self.name}.png"
        if self.upscale > 1:
            title = f"{self.name}: held-out {self.upscale}x super-resolution"
            labels = (f"input (1/{self.upscale} resolution)", f"restored ({self.image_size} px)")
        else:
            title, labels = f"{self.name}: held-out restorations", ("input", "restored")
        return [restore_png(rows, self.bands, path, title, labels)]


def restore_png(rows: list, bands: list[str], path: Any, title: str, labels: Sequence[str] = ("input", "restored")) -> Any:
    """A grid, one object a row: input, restored, truth (Lupton RGB) and the restored - truth residual.
    ``labels`` names the first two columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from galframe.report import rgb

    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows) + 0.4), squeeze=False)
    for r, (image, restored, clean, obj) in enumerate(rows):
        resid = (restored - clean).sum(axis=0)
        lim = float(np.abs(resid).max()) or 1.0
        panels = [rgb(image, bands), rgb(restored, bands), rgb(clean, bands)]
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel, origin="lower")
        axes[r, 3].imshow(resid, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[r, 0].set_ylabel(f"id {obj}", fontsize=8)
        for c, label in enumerate([*labels, "truth", "residual (all bands)"]):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
