#!/usr/bin/env bash
# The pretraining that produces the shipped lvm_tiny-g10 weights (plugins/galframe_lvm/zoo/): lvm_tiny
# on 20,000 unlabelled sim_galaxy10 stamps of another sky (seed 1; never the test objects), VICReg on two
# sky-respecting views of the observed images alone (no label, no clean image), 12 epochs on the CPU
# (29 min on 2 cores). Chosen by the linear probe on the seed-1 development split (never the seed-0
# test set; benchmarks/probe_dev_split.py): macro AUC at 1,000 labels 0.771 against 0.678 for 30 epochs
# of DINO/iBOT self-distillation and 0.590 for a random encoder (docs/pretraining.md).
# Resumable: run it again with resume=last.  Then: python scripts/ship_weights.py <run dir> lvm_tiny-g10
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/galframe pretrain data=sim_galaxy10 data.n=20000 data.seed=1 backbone=lvm_tiny logger=csv \
    pretrain.objectives.restore.weight=0 pretrain.objectives.vicreg.weight=1 \
    trainer.max_epochs=12 optimizer.lr=5e-4 optimizer.weight_decay=0.04 pretrain.warmup_steps=300 \
    pretrain.checkpoint_every_n_steps=200 pretrain.knn.max_objects=1000 pretrain.weights_name=lvm_tiny-g10 \
    trainer.progress_bar=false "$@"
