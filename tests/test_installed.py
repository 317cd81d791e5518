"""The package works without its source checkout: installed into a folder of its own and run from
another, `cdraw train mnist` trains and saves (the recipes and their configs ship inside it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cdraw_train_works_from_the_installed_package_outside_the_checkout(data_dir, tmp_path):
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*install, "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (site / "cdraw" / "recipes" / "configs" / "mnist.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}  # the installed copy, not the checkout
    where = subprocess.run([sys.executable, "-c", "import cdraw; print(cdraw.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    out = tmp_path / "O"
    train = [str(site / "bin" / "cdraw"), "train", "mnist", "--max-steps", "2", "--no-compile"]
    train += ["--data-dir", str(data_dir), "--output-dir", str(out)]
    done = subprocess.run(train, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "training.json").is_file()
    assert "-m cdraw.recipes.mnist" in done.stdout
