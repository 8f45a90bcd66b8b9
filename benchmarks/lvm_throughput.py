"""Throughput of the LVM sizes: masked-reconstruction pretraining steps and encoder inference.

Builds each size from its plugins/galframe_lvm/conf/backbone/lvm_*.yaml, feeds synthetic (B, 3, H, W) batches
and times full training steps (SimMIM token mask, encoder + decoder, L1 loss, AdamW) and
encoder-only forward passes.  Needs only torch, timm and PyYAML, so it also runs on a GPU
machine without galframe's other dependencies:

    python benchmarks/lvm_throughput.py --sizes lvm_tiny --batch 32 --out lvm_throughput.json
    python benchmarks/lvm_throughput.py --sizes lvm_tiny lvm_small lvm_base --batch 128   # on a GPU

Writes a JSON file (one entry per size: parameters, images/s for training and inference,
peak GPU memory) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from galframe_lvm.model import SwinUNet, count_parameters  # noqa: E402

ARCH_KEYS = ("patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio", "drop_path_rate", "decoder_depths", "residual")


def build(size: str, bands: int = 3) -> SwinUNet:
    cfg = yaml.safe_load((ROOT / "plugins" / "galframe_lvm" / "conf" / "backbone" / f"{size}.yaml").read_text())
    arch = {k: cfg[k] for k in ARCH_KEYS if k in cfg and cfg[k] is not None}
    return SwinUNet(in_chans=bands, out_chans=bands, img_size=int(cfg["img_size"]), **arch)


def timed(fn, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(size: str, batch: int, device: torch.device, steps: int, warmup: int, mask_ratio: float = 0.5) -> dict:
    model = build(size).to(device)
    img = model.img_size
    grid = img // model.patch_size
    x = torch.randn(batch, 3, img, img, device=device)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train_step() -> None:
        mask = torch.rand(batch, grid, grid, device=device) < mask_ratio
        with amp:
            outs = model.forward_encoder(x, mask)
            y = model.forward_decoder(outs, x)
            loss = (y.float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step() -> None:
        with amp:
            model.embedding(model.forward_encoder(x))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    t_train = timed(train_step, device, warmup, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    model.eval()
    t_infer = timed(infer_step, device, warmup, steps)
    return {
        "size": size,
        "img_size": img,
        "parameters": count_parameters(model),
        "batch": batch,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "train_images_per_s": batch / t_train,
        "infer_images_per_s": batch / t_infer,
        "peak_gpu_memory_gib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["lvm_tiny"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="lvm_throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    for size in args.sizes:
        r = measure(size, args.batch, device, args.steps, args.warmup)
        results.append(r)
        print(
            f"{r['size']:>9}  {r['parameters'] / 1e6:7.1f} M params  {r['img_size']} px  batch {r['batch']}  "
            f"train {r['train_images_per_s']:9.1f} img/s  infer {r['infer_images_per_s']:9.1f} img/s  "
            f"peak {r['peak_gpu_memory_gib'] or 0:.1f} GiB  [{r['device']}, {r['precision']}]",
            flush=True,
        )
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
