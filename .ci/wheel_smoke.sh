#!/usr/bin/env bash
# Wheel smoke test: build the sdist and, from it, the wheel; install the wheel into a fresh
# virtualenv with the README's CPU-only install commands (the block after its "cpu-only install"
# marker) and check that no CUDA package came with it; then, from a folder outside the checkout,
# run the installed `leanseg`: --help, bench --help, bench on a shipped config named without a
# path, and predict on a generated image with a checkpoint of randomly initialised weights.
#
# The README's block installs torch from PyTorch's index of CPU-only builds (TORCH_INDEX), then
# leanseg (LEANSEG). Here LEANSEG is the built wheel and, unless TORCH_INDEX is given, TORCH_INDEX
# is a local index of the same form made from the CPU torch of the Makefile (TORCH_SPEC) and its
# dependencies, as this machine's pip resolves them. The block runs with pip's configuration
# files and PIP_* variables set aside, as on a user's machine: only TORCH_INDEX and PyPI.
#
# Environment: PYTHON makes the fresh venv (python3); BUILD_PYTHON has the `build` package (the
# dev extra, .venv/bin/python); TORCH_SPEC as in the Makefile; TORCH_INDEX (optional) an index of
# CPU-only torch builds to use instead of the local one; KEEP=1 keeps the work folder.
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

if [[ -z "${TORCH_INDEX:-}" ]]; then
    step "a local index of CPU-only torch ($TORCH_SPEC) and its dependencies"
    # (pip's notes about index folders this machine's configuration names are left out)
    "$BUILD_PYTHON" -m pip download --quiet --dest "$work/torch-wheels" "$TORCH_SPEC" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    "$BUILD_PYTHON" - "$work/torch-wheels" "$work/torch-index" <<'EOF'
import re
import sys
from pathlib import Path

# A PEP 503 "simple" index: one folder per normalised project name, linking its files.
wheels, index = Path(sys.argv[1]), Path(sys.argv[2])
for wheel in sorted(wheels.iterdir()):
    project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    folder = index / project
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "index.html").open("a") as page:
        page.write(f'<a href="{wheel.resolve().as_uri()}">{wheel.name}</a><br>\n')
EOF
    TORCH_INDEX="file://$(cd "$work/torch-index" && pwd)"
fi

step "installing into a fresh venv with the README's CPU-only commands"
"$PYTHON" -m venv "$work/venv"
bin="$work/venv/bin"
# The README's block, less the lines that set TORCH_INDEX and LEANSEG (set here).
readme_block="$(awk '/<!-- cpu-only install/ {found = 1; next}
    found && /^```bash/ {inside = 1; next}
    inside && /^```/ {exit}
    inside' README.md | grep -v -E '^(TORCH_INDEX|LEANSEG)=' || true)"
if ! grep -q -F 'pip install torch --index-url "$TORCH_INDEX"' <<<"$readme_block"; then
    echo "wheel smoke: README.md has no CPU-only install block (marker 'cpu-only install')" >&2
    exit 1
fi
echo "$readme_block" | sed 's/^/    /'
(
    # As on a user's machine: no pip configuration files, no PIP_* variables, the venv first.
    for name in $(compgen -e | grep '^PIP_' || true); do unset "$name"; done
    export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_QUIET=1
    export PATH="$bin:$PATH" TORCH_INDEX LEANSEG="$wheel"
    eval "$readme_block"
)
"$bin/python" -m pip check
cuda="$("$bin/python" -m pip list --format=freeze | grep -i -E '^(nvidia-|triton|cuda-)' || true)"
if [[ -n "$cuda" ]]; then
    echo "wheel smoke: the CPU-only install brought CUDA packages:" >&2
    echo "$cuda" >&2
    exit 1
fi
"$bin/python" -c 'import torch; assert torch.version.cuda is None, torch.version.cuda'
step "no nvidia-* package installed; $("$bin/python" -m pip list --format=freeze | grep -i '^torch==')"

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

from leanseg.files.checkpoint import save_checkpoint
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
