#!/usr/bin/env bash
# Throughput on a GPU machine (trainer=auto takes the GPU), one run: galframe predict and galframe train against their bare loops for
# lvm_tiny, lvm_small and lvm_base (and resnet18 as the reference network), N = 512 and 8,192, three repeats,
# with peak GPU memory per measurement; the protocol is plugins/galframe_bench/throughput.py's.
# Results: benchmarks/results/bench_gpu/throughput/ (throughput.md, profile.md, PNGs); headline.json's
# "throughput" entry is the CPU profile's and is not overwritten (headline=false below keeps it).
# About 10 minutes on one H100-class GPU after `make venv`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/galframe bench throughput --profile full out=benchmarks/results/bench_gpu \
    "profiles.full.throughput.backbones=[resnet18,lvm_tiny,lvm_small,lvm_base]" \
    "profiles.full.throughput.memory_ns=[]" profiles.full.throughput.processes=1 \
    +profiles.full.throughput.headline=false "$@"
