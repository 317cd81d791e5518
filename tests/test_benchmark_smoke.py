"""The benchmark script runs (tiny smoke mode); its timings are never asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_train.py"


def test_benchmark_smoke_mode_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--profile", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["config"] == "tiny" and r["train_images_per_s"] > 0 and r["gflop_per_image"] > 0
    assert r["matmul_gflop_per_s"] > 0 and r["sample_64_s"] > 0 and r["first_steps_s"] >= 0
    assert r["cdraw"] == str(REPO / "cdraw") and not r["compiled"]
    assert "train images/s" in proc.stdout
    assert 0 < r["profile"]["matmul_share"] < 1 and r["profile"]["top"][0]["ms_per_step"] > 0


def test_compare_runs_an_older_revision_beside_this_one(tmp_path):
    """benchmarks/compare.py checks the baseline revision out and benchmarks it (smoke mode)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from compare import BASELINE
    finally:
        sys.path.pop(0)
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", BASELINE + "^{commit}"], capture_output=True)
    if have.returncode != 0:
        pytest.skip(f"this checkout lacks the baseline revision {BASELINE} (a shallow clone?)")
    out = tmp_path / "compare.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--smoke", "--rounds", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())
    assert [Path(r["cdraw"]).parent == REPO for r in runs] == [False, True, True]  # the baseline is elsewhere
    assert proc.stdout.count("| tiny |") == 3


def test_gpu_run_smoke_mode_writes_its_report_files(tmp_path, data_dir):
    """benchmarks/gpu_run.py --smoke: every stage on the CPU at tiny sizes, the files it promises."""
    out = tmp_path / "gpu"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "CDRAW_DATA_DIR": str(data_dir)}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"report.md", "report.json", "tests.txt"} | {
        f"model/{n}" for n in ("config.json", "model.safetensors", "training.json", "eval.json")
    }
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert not stages["environment"]["missing"] and stages["tests"]["exit_code"] == 0
    summary = stages["tests"]["summary"]  # no GPU here: the CUDA tests were collected, and each skipped
    assert re.search(r"\d+ skipped", summary) and not re.search(r"passed|failed|error", summary), summary
    assert stages["speed"]["cells"]["8/eager"]["images_per_s"] > 0
    assert stages["speed"]["cells"]["8/cudagraphs"] == {"skipped": "needs CUDA"}
    assert abs(stages["speed"]["precision"]["bf16 autocast"]["bound_minus_fp32"]) < 1.0
    test = stages["training"]["test"]
    assert test["bound"] > 0 and test["iwae"] > 0 and test["iw_samples"] == 2
    assert json.loads((out / "model" / "eval.json").read_text())["bound"] == test["bound"]
    assert "| 8 |" in (out / "report.md").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_run_without_a_gpu_stops_after_the_environment_report(tmp_path):
    """Not eight minutes of a CPU run by mistake (a GPU machine whose torch sees no GPU)."""
    out = tmp_path / "gpu"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("gpu_run: torch sees no CUDA GPU")
    assert set(json.loads((out / "report.json").read_text())["stages"]) == {"environment"}


def test_gpu_run_says_in_one_line_that_cdraw_cannot_load_its_model(monkeypatch):
    """``import cdraw`` loads no module of the model: the environment check imports the training
    module too, so that an API this torch lacks is one line before any stage, not a traceback later."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_run
    finally:
        sys.path.pop(0)

    real = importlib.import_module

    def import_module(name: str, *args):
        if name == "cdraw.training":
            raise AttributeError("module 'torch' has no attribute 'nope'")
        return real(name, *args)

    monkeypatch.setattr(gpu_run.importlib, "import_module", import_module)
    missing = gpu_run.environment()["missing"]
    assert missing == ["cdraw.training (AttributeError: module 'torch' has no attribute 'nope')"]


def test_gpu_run_checks_precision_on_the_trained_default_model(data_dir):
    """The TF32/bf16 tolerance (0.1 nats) is meant for a trained model's bound (about 85 nats
    on the test set), so for the paper config the check runs the shipped default model, not a fresh one."""
    import torch

    from cdraw import DRAWConfig
    from cdraw.data import ImageData, load_binarized_mnist

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_run import precision_check
    finally:
        sys.path.pop(0)
    images = ImageData(load_binarized_mnist("test", data_dir)).batch(slice(0, 8))
    r = precision_check(DRAWConfig(), torch.device("cpu"), images, tf32=False, bf16=False)
    assert r["model"] == "shipped default" and 40 < r["bound_fp32"] < 150 and r["bound_minus_fp32"] == 0
    small = DRAWConfig(glimpses=2, enc_size=8, dec_size=8, z_size=3)
    assert precision_check(small, torch.device("cpu"), images, tf32=False, bf16=False)["model"] == "untrained"


def test_gpu_run_skips_what_cannot_run_or_would_fail_again():
    """The speed table's cells: what is skipped and why, and the time a compiled cell is given
    (assumed until one is timed, then what that one took with a margin)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_run import COMPILE_FAILED, COMPILE_RESERVE_S, Compiles, cell_order, skip_reason
    finally:
        sys.path.pop(0)
    order = cell_order((100, 500, 2000))  # one eager cell first: a rate to train at whatever fails
    assert order[:3] == [(500, "eager"), (2000, "compiled"), (2000, "cudagraphs")] and len(set(order)) == 9
    compiles = Compiles()
    plenty = COMPILE_RESERVE_S + 1
    assert skip_reason("compiled", "cuda", False, compiles, plenty) is None
    assert skip_reason("compiled", "cuda", False, compiles, COMPILE_RESERVE_S - 1) == "out of time"
    assert skip_reason("cudagraphs", "cpu", False, compiles, plenty) == "needs CUDA"
    assert skip_reason("compiled", "cpu", True, compiles, plenty) == "smoke: eager only"
    compiles.record("2000/compiled", {"images_per_s": 20_000.0, "first_steps_s": 30.0}, images_timed=20_000)
    assert compiles.reserve_s == 1.25 * (30 + 1) + 5 and compiles.failed == {}
    assert skip_reason("cudagraphs", "cuda", False, compiles, 45) is None  # 90 s no longer assumed
    compiles.record("2000/cudagraphs", {"error": "CUDA out of memory"}, images_timed=20_000)
    assert compiles.failed == {} and compiles.reserve_s == 1.25 * 31 + 5  # the batch's error, not the mode's
    compiles.record("1000/cudagraphs", {"error": "RuntimeError: cannot record the graph"}, images_timed=1)
    assert skip_reason("cudagraphs", "cuda", False, compiles, plenty) == "failed at 1000/cudagraphs"
    assert skip_reason("compiled", "cuda", False, compiles, plenty) is None  # CUDA graphs' failure alone
    compiles.record("500/compiled", {"eager_images_per_s": 9.0, "first_steps_s": 1, "error": f"{COMPILE_FAILED}: x"}, 1)
    assert skip_reason("compiled", "cuda", False, compiles, plenty) == "failed at 500/compiled"
    assert skip_reason("eager", "cuda", False, compiles, 11) is None  # eager needs no compiler, little time


def test_paraphrase_wordings_names_the_wording_of_every_paraphrase(small_captions):
    """benchmarks/paraphrase_wordings.py: each test_paraphrase caption is one wording of its layout,
    and the rows split the matches by it."""
    import torch

    from cdraw.mnist_captions import TEMPLATE_NAMES

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from paraphrase_wordings import by_wording
    finally:
        sys.path.pop(0)
    split = small_captions[0]["test_paraphrase"]
    captions, layouts = list(split.captions), split.layouts()
    matches = torch.arange(len(captions)) % 2 == 0  # (N,) every other image fits
    rows = by_wording(matches, captions, layouts)
    assert sum(r["captions"] for r in rows) == len(captions) and len(rows) == 24  # 8 layouts x 3 wordings
    for r in rows:
        t = TEMPLATE_NAMES.index(r["layout"])
        hits = [
            bool(m)
            for m, c, lay in zip(matches, captions, layouts, strict=True)
            if lay.template == t and c == r["wording"].format(*lay.digits)
        ]
        assert r["captions"] == len(hits) and r["share"] == pytest.approx(sum(hits) / len(hits))
