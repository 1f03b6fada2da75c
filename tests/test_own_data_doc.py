"""docs/own-data.md, run as a user would: its shell blocks, in order, on generated photos.

The test makes the folder the page starts from (``my_photos/images/*.jpg`` and colour masks in
``my_photos/labels/*.png``, in the page's class colours), then runs every ```bash block of the
page in one temporary working folder with ``ITERS=2`` (the page's own variable for the number of
training steps), and checks what the page says each step leaves behind. A block after an
``<!-- own-data-test: skip (...) -->`` line (the install command) is not run. The export block
needs onnx and onnxruntime (the ``export`` extra): without them every other block still runs
and the test then skips, saying so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"
SKIP_MARK = "<!-- own-data-test: skip"
# The page's classes and mask colours (its my_data.yaml), and the colour of unlabelled pixels.
COLOURS = {"sky": (70, 130, 180), "road": (128, 64, 128), "car": (0, 0, 142)}
IGNORE = (0, 0, 0)
NUM_PHOTOS = 10  # the page moves every fifth to val: 8 train, 2 val
PHOTO_SIZE = (120, 160)  # (height, width)

pytestmark = pytest.mark.slow


def shell_blocks(text: str) -> list[str]:
    """The ```bash blocks of a Markdown page, in order, without those marked to skip."""
    blocks = []
    pattern = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)
    for match in pattern.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].startswith(SKIP_MARK):
            continue
        blocks.append(match.group(1))
    return blocks


def make_photos(root: Path, count: int, rng: np.random.Generator) -> None:
    """``root/images/photo_NN.jpg`` street-like pictures and ``root/labels/photo_NN.png`` masks.

    Sky above a horizon, road below, a car as a box on the road, and a strip of unlabelled
    (ignore-coloured) pixels at the bottom; the photos get noise so that colours vary as in
    real pictures, while the masks keep exact colours.
    """
    height, width = PHOTO_SIZE
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    photo_tint = {"sky": (120, 170, 220), "road": (90, 90, 95), "car": (200, 30, 30)}
    for index in range(count):
        classes = np.empty((height, width), dtype=object)
        horizon = int(rng.integers(height // 3, height // 2))
        classes[:horizon] = "sky"
        classes[horizon:] = "road"
        top = int(rng.integers(horizon, height - 30))
        left = int(rng.integers(0, width - 50))
        classes[top : top + 25, left : left + 45] = "car"
        mask = np.zeros((height, width, 3), dtype=np.uint8)
        photo = np.zeros((height, width, 3), dtype=np.float32)
        for name, colour in COLOURS.items():
            mask[classes == name] = colour
            photo[classes == name] = photo_tint[name]
        mask[-4:] = IGNORE
        photo += rng.normal(0, 12, photo.shape)
        stem = f"photo_{index:02d}"
        Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{stem}.jpg")
        Image.fromarray(mask).save(root / "labels" / f"{stem}.png")


def run_block(block: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"block failed ({result.returncode}):\n{block}\n---\n{output}"
    return output


def test_shell_blocks_are_found():
    blocks = shell_blocks(DOC.read_text())
    commands = "\n".join(blocks)
    for step in ("leanseg data check", "leanseg train", "leanseg eval", "leanseg predict"):
        assert step in commands, step
    assert "pip install" not in commands  # the install block is marked to skip
    assert "leanseg export" in blocks[-1]


def test_own_data_doc_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    make_photos(tmp_path / "my_photos", NUM_PHOTOS, rng)
    can_export = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))
    bin_dir = str(Path(sys.executable).parent)  # this environment's leanseg and python
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "ITERS": "2",
        "OMP_NUM_THREADS": "2",
    }
    blocks = shell_blocks(DOC.read_text())
    outputs = []
    for block in blocks:
        if "leanseg export" in block and not can_export:
            continue
        outputs.append(run_block(block, tmp_path, env))

    photos = tmp_path / "my_photos"
    assert len(list((photos / "images" / "train").iterdir())) == 8
    assert sorted(p.stem for p in (photos / "images" / "val").iterdir()) == [
        "photo_04",
        "photo_09",
    ]
    assert sorted(p.stem for p in (photos / "labels" / "val").iterdir()) == [
        "photo_04",
        "photo_09",
    ]
    run = tmp_path / "runs" / "my_data"
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "best.pt").is_file()
    assert '"split": "val"' in (run / "metrics.jsonl").read_text().replace("'", '"')
    assert any("IoU %" in output for output in outputs)  # the scores table of eval
    for stem in ("photo_04", "photo_09"):
        label = Image.open(tmp_path / "predictions" / f"{stem}.png")
        assert label.size == (PHOTO_SIZE[1], PHOTO_SIZE[0])
        assert (tmp_path / "predictions" / f"{stem}_overlay.png").is_file()
    if not can_export:
        pytest.skip(
            "every step of docs/own-data.md ran except the export, which needs onnx and "
            'onnxruntime (pip install "leanseg[export]")'
        )
    assert (tmp_path / "my_data.onnx").is_file()
    assert "label map (120, 160)" in outputs[-1]
