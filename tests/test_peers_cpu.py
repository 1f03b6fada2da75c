"""``benchmarks/speed/peers_cpu.py``: the leanseg half of the peers table, at a tiny size.

The SMP half needs torchvision and segmentation_models_pytorch, which leanseg's environment does
not have; here only the ``--skip-peers`` path runs, and the refusal without it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def peers_cpu(monkeypatch):
    """The script as a module, its folder on the path as when it runs."""
    monkeypatch.syspath_prepend(str(BENCHMARKS / "speed"))
    return importlib.import_module("peers_cpu")


def test_skip_peers_times_the_leanseg_rows_and_writes_the_json(peers_cpu, tmp_path):
    out = tmp_path / "peers.json"
    argv = ["--skip-peers", "--threads", "1", "--size", "64x128", "--peak-size", "8x16"]
    argv += ["--warmup", "0", "--repeats", "1", "--layout-repeats", "1", "--json", str(out)]
    payload = peers_cpu.main(argv)

    written = json.loads(out.read_text())
    assert written.pop("date")  # common.write_result dates the file
    assert written == json.loads(json.dumps(payload, default=str))
    assert payload["ladder_r18_over_smp_fpn_r18"] is None and payload["peers_skipped"]
    rows = payload["rows"]
    assert [(row["model"], row["dtype"]) for row in rows] == [
        (name, dtype) for dtype in ("fp32", "bf16") for name in peers_cpu.LEANSEG
    ]
    for row in rows:
        assert row["gmac"] > 0 and row["median_ms"] > 0 and row["vs_smp_fpn_r18"] is None
        assert row["gflops_per_s"] == pytest.approx(2 * row["gmac"] / (row["median_ms"] / 1e3))
        peak = payload["peak"][row["dtype"]]["gflops_per_s"]
        assert row["pct_of_peak"] == pytest.approx(100 * row["gflops_per_s"] / peak)
        assert row["settings"]["bn_folded"] and row["settings"]["layout"] in peers_cpu.LAYOUTS
    assert payload["input"] == [1, 3, 64, 128] and payload["machine"]["num_threads"] == 1


def test_without_smp_it_exits_naming_the_peer_environment(peers_cpu, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import fails
    with pytest.raises(SystemExit, match="docs/peers_cpu.md"):
        peers_cpu.main(["--size", "64x128", "--json", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()


def test_size_parsing(peers_cpu):
    assert peers_cpu.parse_size("1024x2048") == (1024, 2048)
    with pytest.raises(Exception, match="HxW"):
        peers_cpu.parse_size("1024")
