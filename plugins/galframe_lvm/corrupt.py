"""What pretraining does to an image before asking the network to restore it.

* ``random_mask``: SimMIM-style random masking of square mask patches (a fixed fraction per image);
* ``add_noise``: extra Gaussian sky noise, a random multiple of each object's own sky sigma;
* ``blur``: convolution with a random Gaussian or Moffat PSF (FWHM in arcsec).

Each step draws from an explicit ``torch.Generator`` (on the CPU, so results do not depend on the
device) and applies to a random subset of the batch with a configurable probability.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from galframe.errors import ConfigError, check_choice

PROFILES = ("gaussian", "moffat", "mixed")


def _rand(gen: torch.Generator, *shape: int, device: Any = None) -> torch.Tensor:
    return torch.rand(*shape, generator=gen).to(device)


def _range(value: Any, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi or lo < 0:
        raise ConfigError(f"{what} must be [low, high] with 0 <= low <= high (got {list(value)}).")
    return lo, hi


def random_mask(n: int, grid: int, ratio: float, gen: torch.Generator, device: Any = None) -> torch.Tensor:
    """(n, grid, grid) booleans, True = masked; exactly ``round(ratio * grid**2)`` patches per image."""
    count = int(round(float(ratio) * grid * grid))
    mask = torch.zeros(n, grid * grid, dtype=torch.bool)
    if count > 0:
        order = torch.rand(n, grid * grid, generator=gen).argsort(dim=1)[:, :count]
        mask.scatter_(1, order, True)
    return mask.view(n, grid, grid).to(device)


def robust_sigma(image: torch.Tensor) -> torch.Tensor:
    """Per-image, per-band noise sigma from the median absolute deviation: (B, C)."""
    flat = image.flatten(2)
    med = flat.median(dim=-1, keepdim=True).values
    return 1.4826 * (flat - med).abs().median(dim=-1).values


def add_noise(
    image: torch.Tensor, sigma: Optional[torch.Tensor], cfg: Mapping[str, Any], gen: torch.Generator
) -> torch.Tensor:
    """``image`` + N(0, (f * sigma)^2) on a random ``prob`` fraction of the batch, f ~ U(factor)."""
    prob = float(cfg.get("prob", 0.0) or 0.0)
    if prob <= 0:
        return image
    lo, hi = _range(cfg.get("factor", [0.0, 1.0]), "pretrain.noise.factor")
    n, dev = image.shape[0], image.device
    if sigma is None:
        sigma = robust_sigma(image)
    on = (_rand(gen, n, device=dev) < prob).to(image.dtype)
    factor = lo + (hi - lo) * _rand(gen, n, device=dev)
    eps = torch.randn(image.shape, generator=gen).to(dev, image.dtype)
    scale = (sigma.to(dev, image.dtype) * (on * factor)[:, None])[:, :, None, None]
    return image + eps * scale


def psf_kernels(fwhm_px: torch.Tensor, moffat: torch.Tensor, beta: float, radius: int) -> torch.Tensor:
    """(B, k, k) normalised PSF images, k = 2 radius + 1; a FWHM of 0 gives a delta function."""
    dev, dtype = fwhm_px.device, fwhm_px.dtype
    r = torch.arange(-radius, radius + 1, device=dev, dtype=dtype)
    r2 = (r[:, None] ** 2 + r[None, :] ** 2)[None]
    fwhm = fwhm_px.clamp_min(1e-3)[:, None, None]
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gauss = torch.exp(-r2 / (2 * sigma**2))
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    moff = (1.0 + r2 / alpha**2) ** (-beta)
    kernel = torch.where(moffat[:, None, None], moff, gauss)
    kernel = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    delta = torch.zeros_like(kernel)
    delta[:, radius, radius] = 1.0
    return torch.where((fwhm_px > 0)[:, None, None], kernel, delta)


def blur(image: torch.Tensor, cfg: Mapping[str, Any], pixel_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Convolve a random ``prob`` fraction of the batch with a PSF of FWHM ~ U(fwhm) arcsec (every band alike)."""
    prob = float(cfg.get("prob", 0.0) or 0.0)
    if prob <= 0:
        return image
    lo, hi = _range(cfg.get("fwhm", [0.3, 1.0]), "pretrain.blur.fwhm")
    profile = check_choice("pretrain.blur.profile", str(cfg.get("profile", "mixed")), PROFILES)
    beta = float(cfg.get("beta", 3.5))
    if beta <= 1:
        raise ConfigError(f"pretrain.blur.beta must be > 1 (got {beta}).")
    n, c, h, w = image.shape
    dev = image.device
    on = _rand(gen, n) < prob
    fwhm = (lo + (hi - lo) * _rand(gen, n)) / float(pixel_scale) * on
    if profile == "mixed":
        moffat = _rand(gen, n) < 0.5
    else:
        moffat = torch.full((n,), profile == "moffat")
    if not on.any() or float(fwhm.max()) <= 0:
        return image
    # Moffat wings are wide: 3 FWHM each side, within the stamp
    radius = int(min(max(1, math.ceil(3.0 * float(fwhm.max()))), min(h, w) // 2 - 1))
    kernel = psf_kernels(fwhm.to(dev, image.dtype), moffat.to(dev), beta, radius)
    weight = kernel.repeat_interleave(c, dim=0)[:, None]  # (B*C, 1, k, k)
    x = F.pad(image.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    return F.conv2d(x, weight, groups=n * c).view(n, c, h, w)


def check_mask_cfg(cfg: Mapping[str, Any], img_size: int, patch_size: Optional[int]) -> tuple[float, int]:
    ratio = float(cfg.get("ratio", 0.5))
    size = int(cfg.get("patch_size", 8))
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"pretrain.mask.ratio must be in [0, 1) (got {ratio}).")
    if size < 1 or img_size % size:
        raise ConfigError(f"pretrain.mask.patch_size={size} must divide the {img_size} px stamps.")
    if patch_size and size % patch_size:
        raise ConfigError(
            f"pretrain.mask.patch_size={size} must be a multiple of backbone.patch_size={patch_size} "
            f"(masking hides whole patch tokens)."
        )
    return ratio, size


__all__: Sequence[str] = ["random_mask", "add_noise", "blur", "psf_kernels", "robust_sigma", "check_mask_cfg"]
