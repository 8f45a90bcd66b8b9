#!/usr/bin/env bash
# The pretraining that produces the shipped lvm_tiny-g10 weights (plugins/galframe_lvm/zoo/): lvm_tiny
# on 20,000 unlabelled sim_galaxy10 stamps of another sky (seed 1; never the test objects), DINO/iBOT
# self-distillation with KoLeo spreading plus masked restoration of the observed image (target=input),
# on the observed images alone (no label, no clean image), 6 epochs on the CPU.
# Resumable: run it again with resume=last.  Then: python scripts/ship_weights.py <run dir> lvm_tiny-g10
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/galframe pretrain data=sim_galaxy10 data.n=20000 data.seed=1 backbone=lvm_tiny logger=csv \
    pretrain.objectives.restore.weight=1 pretrain.target=input pretrain.loss_on=masked \
    pretrain.objectives.distill.weight=1 pretrain.objectives.distill.symmetric=false \
    pretrain.objectives.distill.koleo_weight=0.1 pretrain.objectives.distill.out_dim=512 \
    trainer.max_epochs=6 optimizer.lr=5e-4 optimizer.weight_decay=0.04 pretrain.warmup_steps=150 \
    pretrain.checkpoint_every_n_steps=100 pretrain.knn.max_objects=1000 pretrain.weights_name=lvm_tiny-g10 \
    trainer.progress_bar=false "$@"
