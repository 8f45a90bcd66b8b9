#!/usr/bin/env bash
# Install the detection stack (mmcv 2.1.0 with ops, mmengine 0.10.7, mmdet 3.3.0) into a venv.
#
# mmcv 2.1.0 publishes no wheel for torch 2.14, so it is built once from its sdist
# (C++20, since torch 2.14's headers need it; about 16 minutes on 2 cores) and the wheel
# is cached under $GALFRAME_WHEELS (default ~/.cache/galframe/wheels). Later installs,
# fresh clones and CI on the same machine reuse it.
#
# usage: scripts/install_mmdet.sh [python]   (default .venv/bin/python)
set -euo pipefail
PY="${1:-.venv/bin/python}"
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"   # absolute: the build runs in the sdist dir
WHEELS="${GALFRAME_WHEELS:-$HOME/.cache/galframe/wheels}"
MMCV=2.1.0
mkdir -p "$WHEELS"

TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
# the cached wheel is only valid for the torch it was built against
TAGGED="$WHEELS/torch-$TORCH_TAG"
mkdir -p "$TAGGED"

if ! ls "$TAGGED"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
    echo "galframe: building mmcv $MMCV from source for torch $TORCH_TAG (one time, ~16 min on 2 cores)"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PY" -m pip install --quiet "setuptools>=68,<80" wheel ninja
    "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV" -d "$WORK"
    tar -xzf "$WORK"/mmcv-$MMCV.tar.gz -C "$WORK"
    SRC="$WORK/mmcv-$MMCV"
    # torch 2.14's C++ headers require C++20
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' \
           -e "s/'c++14'/'c++20'/g" -e "s/'c++17'/'c++20'/g" "$SRC/setup.py"
    grep -q 'c++20' "$SRC/setup.py" || { echo "galframe: could not patch mmcv setup.py for C++20" >&2; exit 1; }
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" FORCE_CUDA=0 \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/dist" .)
    cp "$WORK"/dist/mmcv-$MMCV-*.whl "$TAGGED/.tmp-wheel" && \
        mv "$TAGGED/.tmp-wheel" "$TAGGED/$(basename "$WORK"/dist/mmcv-$MMCV-*.whl)"
fi

"$PY" -m pip install --quiet --no-deps "$TAGGED"/mmcv-$MMCV-*.whl
# mmcv's runtime requirements (addict, yapf, ...) come with mmengine
"$PY" -m pip install --quiet "mmengine==0.10.7" "mmdet==3.3.0" "pycocotools==2.0.11" "sep==1.4.1"
"$PY" -c 'import mmcv.ops, mmdet; print("galframe: mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "ops ok")'
