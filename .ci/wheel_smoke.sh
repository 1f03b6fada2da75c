#!/usr/bin/env bash
# Wheel smoke test: build the sdist and, from it, the wheel; install the wheel into a fresh
# virtualenv with only its runtime dependencies (and the CPU torch of the Makefile); then, from a
# folder outside the checkout, run the installed `leanseg`: --help, bench --help, bench on a
# shipped config named without a path, and predict on a generated image with a checkpoint of
# randomly initialised weights.
#
# Environment: PYTHON makes the fresh venv (python3); BUILD_PYTHON has the `build` package (the
# dev extra, .venv/bin/python); TORCH_SPEC as in the Makefile; KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
BUILD_PYTHON="${BUILD_PYTHON:-.venv/bin/python}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
CONFIG=baseline/rn18_bilinear_synthetic # a shipped config, by name
work="$(mktemp -d "${TMPDIR:-/tmp}/leanseg-wheel.XXXXXX")"
if [[ "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
step() { echo "wheel smoke: $*"; }

step "building sdist and wheel into $work/dist"
if ! "$BUILD_PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    exit 1
fi
wheel="$(ls "$work"/dist/leanseg-*.whl)"
configs="$("$PYTHON" -m zipfile -l "$wheel" | grep -c 'leanseg/configs/.*\.yaml' || true)"
if [[ "$configs" -lt 1 ]]; then
    echo "wheel smoke: $wheel carries no configs" >&2
    exit 1
fi
step "$(basename "$wheel") carries $configs configs"

step "installing into a fresh venv"
"$PYTHON" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install --quiet "$TORCH_SPEC"
"$bin/python" -m pip install --quiet "$wheel"
"$bin/python" -m pip check

cd "$work" # nothing of the checkout is importable from here
"$bin/python" - <<'EOF'
import leanseg
assert "site-packages" in leanseg.__file__, f"leanseg imported from {leanseg.__file__}"
EOF
step "leanseg --help, bench --help"
"$bin/leanseg" --help >/dev/null
"$bin/leanseg" bench --help >/dev/null
step "bench $CONFIG (a shipped config by name)"
"$bin/leanseg" bench "$CONFIG" --size 64x96 --warmup 0 --repeats 1 --threads 1

step "predict on a generated image"
"$bin/python" - "$CONFIG" <<'EOF'
import sys

import numpy as np
from PIL import Image

from leanseg.engine.checkpoint import save_checkpoint
from leanseg.models import build_model, load_run_config

cfg = load_run_config(sys.argv[1])
model = build_model(cfg)  # random weights: the smoke test checks the plumbing, not accuracy
save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0}, "tiny.pt")
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save("image.png")
EOF
"$bin/leanseg" predict image.png --checkpoint tiny.pt --out predictions --device cpu
"$bin/python" - <<'EOF'
from PIL import Image

label = Image.open("predictions/image.png")
assert label.size == (90, 70), label.size
assert Image.open("predictions/image_overlay.png").size == (90, 70)
EOF
step "ok"
