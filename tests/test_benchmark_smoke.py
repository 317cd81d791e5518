"""The benchmark script runs (tiny smoke mode); its timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def test_benchmark_smoke_mode_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["config"] == "tiny" and r["train_images_per_s"] > 0 and r["gflop_per_image"] > 0
    assert r["matmul_gflop_per_s"] > 0 and r["sample_64_s"] > 0
    assert "train images/s" in proc.stdout
