"""Pretext objectives of the LVM (entry points ``pretext.restore`` and ``pretext.distill``).

``restore``: masked, degraded image restoration (SimMIM-style mask token, extra noise and PSF
blur, L1 to the clean or the undegraded image).  Reconstruction alone teaches the encoder what
pixels look like, not what separates a barred spiral from a ring: the U-Net's skips let shallow
stages solve it, and its features linear-probe poorly.

``distill``: joint-embedding self-distillation (DINO with an iBOT masked-token term).  A student
(the backbone plus a projection head) sees two augmented views of each stamp, one of them with
hidden patches; an exponential-moving-average teacher sees the other, unmasked view; the
student's prototype distribution must match the teacher's centred, sharpened one (DINO loss), and
on hidden last-stage tokens the student must predict the teacher's tokens (iBOT patch loss).  It
reads the observed image alone (no clean image, no label, no truth), so the same objective
pretrains on real survey cutouts.

The views respect the sky (:func:`sky_views`): the eight rotations/flips and an arbitrary rotation,
shifts of a few pixels, isotropic rescaling by a few per cent, extra PSF blur and extra noise within
the survey's range, and small per-band gains.  No colour jitter, greyscale, shear or large crops:
colour separates bulges from disks and star-forming arms, axis ratios separate round from cigar
and edge-on, and a crop removes the tidal features and companions that make a merger; invariance
to any of them erases the classes.

Losses, heads and the EMA update are lightly's (``lightly.loss.DINOLoss``, ``IBOTPatchLoss``,
``KoLeoLoss``, ``lightly.models.modules.DINOProjectionHead``, ``lightly.models.utils.update_momentum``).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from galframe.api import Backbone, DataInfo, Pretext
from galframe.errors import ConfigError, check_choice
from galframe_lvm import corrupt

TARGETS = ("clean", "input")
LOSS_ON = ("all", "masked")


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any], what: str) -> dict:
    out = copy.deepcopy(dict(defaults))
    for key, value in dict(given or {}).items():
        if key not in defaults:
            from galframe.errors import closest

            best = closest(key, defaults)
            raise ConfigError(f"{what} has no option '{key}'." + (f" Did you mean '{best}'?" if best else "")
                              + f" Its options: {', '.join(sorted(defaults))}.")
        if isinstance(defaults[key], dict) and isinstance(value, Mapping):
            out[key].update(dict(value))
        else:
            out[key] = value
    return out


# -- masked restoration ---------------------------------------------------------------------------------
class MaskedRestoration(Pretext):
    """Restore masked, degraded stamps (the LVM's original pretext task).

    Options: ``target`` (clean | input), ``loss_on`` (all | masked), ``mask`` {ratio, patch_size},
    ``noise`` {prob, factor}, ``blur`` {prob, profile, fwhm, beta}.
    """

    DEFAULTS: dict[str, Any] = {
        "target": "clean",
        "mask": {"ratio": 0.5, "patch_size": 8},
        "loss_on": "all",
        "noise": {"prob": 0.5, "factor": [0.0, 1.0]},
        "blur": {"prob": 0.3, "profile": "mixed", "fwhm": [0.3, 1.0], "beta": 3.5},
    }

    def __init__(self, backbone: Backbone, data: DataInfo, scaling: Any, **cfg: Any) -> None:
        super().__init__(backbone, data, scaling)
        s = self.settings = _merge(self.DEFAULTS, cfg, "pretrain.objectives.restore")
        check_choice("pretrain.objectives.restore.target", str(s["target"]), TARGETS)
        check_choice("pretrain.objectives.restore.loss_on", str(s["loss_on"]), LOSS_ON)
        if not backbone.has_decoder:
            raise ConfigError(f"pretext 'restore' restores images: backbone '{type(backbone).__name__}' has no decoder "
                              f"(use backbone=lvm_tiny ..., or pretrain.objectives.restore.weight=0).")
        import inspect

        self.token_mask = "mask" in inspect.signature(backbone.forward).parameters
        patch = int(getattr(backbone, "arch", {}).get("patch_size", 0)) if self.token_mask else None
        self.mask_ratio, self.mask_patch = corrupt.check_mask_cfg(s["mask"], data.image_size, patch)
        if s["loss_on"] == "masked" and self.mask_ratio == 0:
            raise ConfigError("pretrain.loss_on=masked needs pretrain.mask.ratio > 0.")

    @classmethod
    def requires_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        return ("clean",) if str(dict(options or {}).get("target", "clean")) == "clean" else ()

    def corrupt(self, batch: Mapping[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Scaled network input (degraded), target, mask and the masked input shown to the identity baseline."""
        flux = batch["image"]
        truth = batch["clean"] if self.settings["target"] == "clean" else flux
        degraded = corrupt.blur(flux, self.settings["blur"], self.data.pixel_scale, gen)
        degraded = corrupt.add_noise(degraded, batch.get("noise_sigma"), self.settings["noise"], gen)
        x = self.scaling(degraded)
        grid = self.data.image_size // self.mask_patch
        mask = corrupt.random_mask(flux.shape[0], grid, self.mask_ratio, gen, device=flux.device)
        pixmask = mask.repeat_interleave(self.mask_patch, 1).repeat_interleave(self.mask_patch, 2)[:, None].to(x.dtype)
        return {"x": x, "target": self.scaling(truth), "mask": mask, "pixmask": pixmask, "masked_input": x * (1 - pixmask)}

    def restore(self, x: torch.Tensor, mask: torch.Tensor, pixmask: torch.Tensor) -> torch.Tensor:
        if self.token_mask:
            return self.backbone(x, decode=True, mask=mask).decoded
        return self.backbone(x * (1 - pixmask), decode=True).decoded

    def l1(self, out: torch.Tensor, target: torch.Tensor, pixmask: torch.Tensor) -> torch.Tensor:
        err = (out - target).abs()
        if self.settings["loss_on"] == "masked":
            return (err * pixmask).sum() / (pixmask.sum() * err.shape[1]).clamp_min(1.0)
        return err.mean()

    def loss(self, batch: dict[str, Any], generator: torch.Generator, progress: float) -> tuple[torch.Tensor, dict]:
        c = self.corrupt(batch, generator)
        out = self.restore(c["x"], c["mask"], c["pixmask"])
        loss = self.l1(out, c["target"], c["pixmask"])
        return loss, {"restore/loss": loss.detach()}

    @torch.no_grad()
    def monitors(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.corrupt(batch, generator)
        out = self.restore(c["x"], c["mask"], c["pixmask"])
        err = (out - c["target"]).abs()
        masked = (err * c["pixmask"]).sum() / (c["pixmask"].sum() * err.shape[1]).clamp_min(1.0)
        return {"restore/loss": self.l1(out, c["target"], c["pixmask"]), "l1": err.mean(), "l1_masked": masked}


# -- sky-respecting views ------------------------------------------------------------------------------
VIEW_DEFAULTS: dict[str, Any] = {
    "dihedral": True,               # one of the 8 rotations/flips
    "rotate_prob": 0.5,             # an arbitrary rotation (bilinear, reflected borders) on this fraction
    "shift": 3,                     # pixels, uniform in [-shift, shift] per axis
    "scale": [0.9, 1.1],            # isotropic rescaling factor
    "blur": {"prob": 0.3, "profile": "mixed", "fwhm": [0.2, 0.8], "beta": 3.5},  # extra PSF (arcsec)
    "noise": {"prob": 0.5, "factor": [0.0, 1.0]},                                # extra sky noise x sigma
    "gain": 0.05,                   # per-band multiplicative gain scatter (1 + gain N(0, 1))
}


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, device: Any) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(device)


def sky_views(flux: torch.Tensor, noise_sigma: Optional[torch.Tensor], cfg: Mapping[str, Any], pixel_scale: float,
              gen: torch.Generator) -> torch.Tensor:
    """One augmented view (flux units) of each stamp in ``flux`` (B, bands, H, W); see the module docstring."""
    b, _, h, w = flux.shape
    dev, dtype = flux.device, flux.dtype
    x = flux
    if cfg.get("dihedral", True):
        k = torch.randint(0, 4, (b,), generator=gen)
        flip = torch.randint(0, 2, (b,), generator=gen).bool()
        x = torch.stack([torch.rot90(xi.flip(-1) if f else xi, int(ki), dims=(-2, -1)) for xi, ki, f in zip(x, k, flip)])
    # one affine resampling: arbitrary rotation (on a fraction), isotropic scale and sub-stamp shift
    angle = _uniform(gen, b, 0.0, 2 * math.pi, dev) * (torch.rand(b, generator=gen).to(dev) < float(cfg.get("rotate_prob", 0)))
    lo, hi = (float(v) for v in cfg.get("scale", [1.0, 1.0]))
    scale = _uniform(gen, b, lo, hi, dev)
    s = float(cfg.get("shift", 0) or 0)
    shift = (torch.rand(b, 2, generator=gen).to(dev) * 2 - 1) * s * 2 / torch.tensor([w, h], device=dev)
    if bool((angle != 0).any()) or lo != 1.0 or hi != 1.0 or s:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = corrupt.blur(x, cfg.get("blur") or {"prob": 0.0}, pixel_scale, gen)
    x = corrupt.add_noise(x, noise_sigma, cfg.get("noise") or {"prob": 0.0}, gen)
    g = float(cfg.get("gain", 0) or 0)
    if g:
        x = x * (1 + g * torch.randn(b, x.shape[1], 1, 1, generator=gen).to(dev, dtype)).clamp_min(0.5)
    return x


# -- self-distillation --------------------------------------------------------------------------------
def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised singular values) of a (N, D) batch: 1 for a collapsed embedding."""
    z = z.float() - z.float().mean(0, keepdim=True)
    s = torch.linalg.svdvals(z)
    if float(s.sum()) <= 1e-12:
        return torch.ones((), device=z.device)
    p = s / s.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def teacher_entropy(logits: torch.Tensor, temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-sample entropy of the teacher's softmax and the entropy of its batch mean (both in nats).

    Collapse to one prototype: both near 0; collapse to uniform: both near log(K).  Healthy: low
    per-sample entropy with a high entropy of the mean.
    """
    p = F.softmax(logits.float() / temp, dim=-1)
    per = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    mean = p.mean(0)
    return per, -(mean * mean.clamp_min(1e-12).log()).sum()


class SelfDistillation(Pretext):
    """DINO + iBOT self-distillation with an EMA teacher (see the module docstring).

    Options: ``out_dim`` (prototypes), ``hidden_dim``, ``bottleneck_dim`` (projection head),
    ``teacher_temp`` [start, end] (warmed up over ``teacher_temp_warmup`` of the run),
    ``student_temp``, ``center_momentum``, ``momentum`` [start, end] (EMA, cosine),
    ``patch_weight`` (iBOT term; 0 = DINO only), ``mask`` {ratio, patch_size} (hidden patches in the
    student's view; the patch size must be the last stage's stride), ``koleo_weight`` (spread of the
    student's embeddings), ``symmetric`` (both views through the student, as in DINO; false: one
    student view against the teacher's other, half the cost), ``views`` (see :data:`VIEW_DEFAULTS`).
    """

    DEFAULTS: dict[str, Any] = {
        "out_dim": 1024,
        "hidden_dim": 512,
        "bottleneck_dim": 128,
        "teacher_temp": [0.04, 0.06],
        "teacher_temp_warmup": 0.3,
        "student_temp": 0.1,
        "center_momentum": 0.9,
        "momentum": [0.99, 1.0],
        "patch_weight": 1.0,
        "mask": {"ratio": 0.3, "patch_size": None},
        "koleo_weight": 0.0,
        "symmetric": True,
        "views": VIEW_DEFAULTS,
    }

    def __init__(self, backbone: Backbone, data: DataInfo, scaling: Any, **cfg: Any) -> None:
        super().__init__(backbone, data, scaling)
        from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
        from lightly.models.modules import DINOProjectionHead

        s = self.settings = _merge(self.DEFAULTS, cfg, "pretrain.objectives.distill")
        s["views"] = _merge(VIEW_DEFAULTS, s["views"], "pretrain.objectives.distill.views")
        dim = int(backbone.embed_dim)
        head = dict(input_dim=dim, hidden_dim=int(s["hidden_dim"]), bottleneck_dim=int(s["bottleneck_dim"]),
                    output_dim=int(s["out_dim"]))
        self.head = DINOProjectionHead(**head)
        stride = int(list(backbone.feature_strides)[-1]) if backbone.feature_strides else 0
        self.mask_ratio = float(s["mask"].get("ratio") or 0.0)
        self.mask_patch = int(s["mask"].get("patch_size") or stride or 0)
        self.patch_weight = float(s["patch_weight"]) if self.mask_ratio > 0 else 0.0
        if self.mask_ratio > 0:
            import inspect

            if "mask" not in inspect.signature(backbone.forward).parameters:
                raise ConfigError("pretext 'distill' with mask.ratio > 0 needs a backbone with a mask token (lvm); "
                                  "set pretrain.objectives.distill.mask.ratio=0 for this backbone.")
            if not 0 < self.mask_ratio < 1:
                raise ConfigError(f"pretrain.objectives.distill.mask.ratio must be in [0, 1), got {self.mask_ratio}.")
            if self.mask_patch != stride or data.image_size % self.mask_patch:
                raise ConfigError(f"pretrain.objectives.distill.mask.patch_size={self.mask_patch}: hidden patches are "
                                  f"last-stage tokens, so it must be the last stage's stride ({stride} px).")
        patch_head = {**head, "input_dim": int(list(backbone.feature_channels)[-1])}
        self.patch_head = DINOProjectionHead(**patch_head) if self.patch_weight > 0 else None

        def twin(module: nn.Module, kwargs: dict) -> nn.Module:  # the heads' weight norm cannot be deep-copied
            other = DINOProjectionHead(**kwargs)
            other.load_state_dict(module.state_dict())
            return other

        # the teacher: an EMA copy of backbone and heads, never trained by the optimiser
        self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": twin(self.head, head)})
        if self.patch_head is not None:
            self.teacher["patch_head"] = twin(self.patch_head, patch_head)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        t0, t1 = (float(v) for v in s["teacher_temp"])
        self.temps = (t0, t1)
        self.dino = DINOLoss(output_dim=int(s["out_dim"]), warmup_teacher_temp=t0, teacher_temp=t1,
                             warmup_teacher_temp_epochs=0, student_temp=float(s["student_temp"]),
                             center_momentum=float(s["center_momentum"]))
        self.ibot = IBOTPatchLoss(output_dim=int(s["out_dim"]), teacher_temp=t1, student_temp=float(s["student_temp"]),
                                  center_momentum=float(s["center_momentum"])) if self.patch_head is not None else None
        self.koleo = KoLeoLoss() if float(s["koleo_weight"]) > 0 else None

    def teacher_temp(self, progress: float) -> float:
        t0, t1 = self.temps
        warm = float(self.settings["teacher_temp_warmup"] or 0)
        return t1 if warm <= 0 or progress >= warm else t0 + (t1 - t0) * progress / warm

    def views(self, batch: Mapping[str, Any], gen: torch.Generator) -> list[torch.Tensor]:
        flux = batch["image"]
        return [self.scaling(sky_views(flux, batch.get("noise_sigma"), self.settings["views"], self.data.pixel_scale, gen))
                for _ in range(2)]

    def _mask(self, n: int, gen: torch.Generator, device: Any) -> Optional[torch.Tensor]:
        if self.mask_ratio <= 0:
            return None
        return corrupt.random_mask(n, self.data.image_size // self.mask_patch, self.mask_ratio, gen, device=device)

    def _student(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        f = self.backbone(x, mask=mask) if mask is not None else self.backbone(x)
        tokens = f.maps[-1]
        return f.embedding, self.head(f.embedding), tokens

    @torch.no_grad()
    def _teacher(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.teacher["backbone"](x)
        return self.teacher["head"](f.embedding), f.maps[-1]

    def _patch_loss(self, s_tokens: torch.Tensor, t_tokens: torch.Tensor, mask: torch.Tensor, temp: float) -> torch.Tensor:
        m = mask.bool()
        s = s_tokens.permute(0, 2, 3, 1)[m]
        t = t_tokens.permute(0, 2, 3, 1)[m]
        with torch.no_grad():
            t_out = self.teacher["patch_head"](t)
        return self.ibot(t_out, self.patch_head(s), m, teacher_temp=temp)

    def loss(self, batch: dict[str, Any], generator: torch.Generator, progress: float) -> tuple[torch.Tensor, dict]:
        v1, v2 = self.views(batch, generator)
        temp = self.teacher_temp(progress)
        self.teacher.eval()
        t1, tok1 = self._teacher(v1)
        t2, tok2 = self._teacher(v2)
        m1 = self._mask(v1.shape[0], generator, v1.device)
        m2 = self._mask(v1.shape[0], generator, v1.device) if self.settings["symmetric"] else None
        # each student view is masked (iBOT); the teacher always sees the whole view.  Asymmetric
        # (symmetric=false): one student view, matched to the teacher's other view (half the cost)
        z1, s1, stok1 = self._student(v1, m1)
        if self.settings["symmetric"]:
            z2, s2, stok2 = self._student(v2, m2)
            dino = self.dino([t1, t2], [s1, s2], teacher_temp=temp)
        else:
            dino = self.dino([t1, t2], [s1], teacher_temp=temp)
        total = dino
        logs = {"distill/dino": dino.detach(), "distill/teacher_temp": torch.tensor(temp)}
        if self.ibot is not None:
            patch = self._patch_loss(stok1, tok1, m1, temp)
            if self.settings["symmetric"]:
                patch = 0.5 * (patch + self._patch_loss(stok2, tok2, m2, temp))
            total = total + self.patch_weight * patch
            logs["distill/ibot"] = patch.detach()
        if self.koleo is not None:
            kl = self.koleo(F.normalize(z1, dim=-1))
            total = total + float(self.settings["koleo_weight"]) * kl
            logs["distill/koleo"] = kl.detach()
        per, mean = teacher_entropy(t1, temp)
        logs.update({"distill/loss": total.detach(), "distill/teacher_entropy": per, "distill/teacher_mean_entropy": mean})
        return total, logs

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        from lightly.models.utils import update_momentum

        m0, m1 = (float(v) for v in self.settings["momentum"])
        m = m1 - (m1 - m0) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2
        update_momentum(self.backbone, self.teacher["backbone"], m)
        update_momentum(self.head, self.teacher["head"], m)
        if self.patch_head is not None:
            update_momentum(self.patch_head, self.teacher["patch_head"], m)

    @torch.no_grad()
    def monitors(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        self.teacher.eval()
        x = self.scaling(batch["image"])
        t, _ = self._teacher(x)
        f = self.teacher["backbone"](x)
        per, mean = teacher_entropy(t, self.teacher_temp(1.0))
        return {"teacher_entropy": per, "teacher_mean_entropy": mean, "effective_rank": effective_rank(f.embedding),
                "student_effective_rank": effective_rank(self.backbone(x).embedding)}


# -- variance-invariance-covariance -----------------------------------------------------------------------
class VarianceCovariance(Pretext):
    """VICReg: two sky-respecting views of each stamp through the same backbone and an expander MLP; the
    expanded embeddings must agree (invariance), keep a standard deviation of at least 1 in every
    dimension over the batch (variance) and decorrelate their dimensions (covariance).  The last two
    terms forbid the dimensional collapse a self-distillation objective leaves unchecked (an
    embedding that lives in a few of its dimensions), without a teacher, prototypes or large batches.
    Reads the observed image alone.

    Options: ``hidden_dim`` and ``out_dim`` (expander widths), ``num_layers`` (expander depth),
    ``invariance``, ``variance``, ``covariance`` (the three weights: lightly's lambda, mu, nu),
    ``mask`` {ratio} (hidden last-stage tokens in the second view, 0 = none), ``views``.
    """

    DEFAULTS: dict[str, Any] = {
        "hidden_dim": 512,
        "out_dim": 512,
        "num_layers": 3,
        "invariance": 25.0,
        "variance": 25.0,
        "covariance": 1.0,
        "mask": {"ratio": 0.0},
        "views": VIEW_DEFAULTS,
    }

    def __init__(self, backbone: Backbone, data: DataInfo, scaling: Any, **cfg: Any) -> None:
        super().__init__(backbone, data, scaling)
        from lightly.loss import VICRegLoss
        from lightly.models.modules.heads import VICRegProjectionHead

        s = self.settings = _merge(self.DEFAULTS, cfg, "pretrain.objectives.vicreg")
        s["views"] = _merge(VIEW_DEFAULTS, s["views"], "pretrain.objectives.vicreg.views")
        if int(s["num_layers"]) < 1:
            raise ConfigError(f"pretrain.objectives.vicreg.num_layers must be >= 1, got {s['num_layers']}.")
        self.head = VICRegProjectionHead(input_dim=int(backbone.embed_dim), hidden_dim=int(s["hidden_dim"]),
                                         output_dim=int(s["out_dim"]), num_layers=int(s["num_layers"]))
        self.vicreg = VICRegLoss(lambda_param=float(s["invariance"]), mu_param=float(s["variance"]),
                                 nu_param=float(s["covariance"]))
        self.mask_ratio = float(dict(s["mask"]).get("ratio") or 0.0)
        stride = int(list(backbone.feature_strides)[-1]) if backbone.feature_strides else 0
        if self.mask_ratio > 0:
            import inspect

            if "mask" not in inspect.signature(backbone.forward).parameters:
                raise ConfigError("pretext 'vicreg' with mask.ratio > 0 needs a backbone with a mask token (lvm); "
                                  "set pretrain.objectives.vicreg.mask.ratio=0 for this backbone.")
            if not 0 < self.mask_ratio < 1 or not stride or data.image_size % stride:
                raise ConfigError(f"pretrain.objectives.vicreg.mask.ratio must be in [0, 1), got {self.mask_ratio}.")
        self.mask_patch = stride

    def _embed(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (self.backbone(x, mask=mask) if mask is not None else self.backbone(x)).embedding

    def loss(self, batch: dict[str, Any], generator: torch.Generator, progress: float) -> tuple[torch.Tensor, dict]:
        flux, sigma = batch["image"], batch.get("noise_sigma")
        v1, v2 = (self.scaling(sky_views(flux, sigma, self.settings["views"], self.data.pixel_scale, generator))
                  for _ in range(2))
        mask = (corrupt.random_mask(flux.shape[0], self.data.image_size // self.mask_patch, self.mask_ratio, generator,
                                    device=flux.device) if self.mask_ratio > 0 else None)
        z1, z2 = self.head(self._embed(v1)), self.head(self._embed(v2, mask))
        loss = self.vicreg(z1, z2)
        inv = F.mse_loss(z1, z2)
        return loss, {"vicreg/loss": loss.detach(), "vicreg/invariance": inv.detach(),
                      "vicreg/std": torch.sqrt(z1.detach().var(0) + 1e-4).mean()}

    @torch.no_grad()
    def monitors(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.scaling(batch["image"])
        z = self._embed(x)
        return {"effective_rank": effective_rank(z), "expander_effective_rank": effective_rank(self.head(z))}


__all__ = ["MaskedRestoration", "SelfDistillation", "VarianceCovariance", "sky_views", "effective_rank", "teacher_entropy", "VIEW_DEFAULTS"]
