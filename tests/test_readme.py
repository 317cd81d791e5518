"""The README's code blocks run, so that they cannot rot.

Every ```python block runs on its own, verbatim. Every line of every ```bash block runs in order
in one scratch folder, with three changes for speed: training stops after 2 steps, eagerly, and
validates on 500 images (``--max-steps 200`` becomes ``--max-steps 2 --no-compile --valid-images
500``); ``../shared/data`` is the test data folder; ``recipes/`` is this checkout's. Install and
server lines are not run here: CI runs the README's install-and-test command itself, and
tests/test_docs_site.py builds and serves the docs site.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
NOT_RUN = ("python3 -m venv", "pip install", "mkdocs serve", "pytest")


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall((REPO / "README.md").read_text()) if lang == language]


def shell_lines(code: str) -> list[str]:
    """The lines of a shell block, a line continued with a backslash joined to the next, stripped."""
    return [ln.strip() for ln in code.replace("\\\n", " ").splitlines()]


def commands() -> list[str]:
    lines = [ln for code in blocks("bash") for ln in shell_lines(code)]
    return [ln for ln in lines if ln and not ln.startswith("#") and not any(n in ln for n in NOT_RUN)]


def run(cmd: list[str], cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDRAW_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "CDRAW_DATA_DIR": str(data_dir)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # cdraw, accelerate
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(blocks("python")) >= 2
    cmds = commands()
    assert any(c.startswith("cdraw train mnist") for c in cmds) and any(c.startswith("cdraw eval") for c in cmds)
    assert any(c.startswith("cdraw generate --caption") for c in cmds)
    assert any(c.startswith("accelerate launch") for c in cmds)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_on_its_own(index, tmp_path, data_dir):
    proc = run([sys.executable, "-c", blocks("python")[index]], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_shell_commands_run_in_order(tmp_path, data_dir):
    outputs = {}
    for line in commands():
        line = line.replace("--max-steps 200", "--max-steps 2 --no-compile --valid-images 500")
        line = line.replace("../shared/data", str(data_dir)).replace("recipes/", f"{REPO}/recipes/")
        proc = run(shlex.split(line), tmp_path, data_dir)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs[line.split()[0] + " " + line.split()[1]] = proc.stdout + proc.stderr
    train = outputs["cdraw train"]
    assert "training run folder:" in train and str(tmp_path / "runs" / "quick") in train
    assert re.search(r"training on \d+ CPU thread", train) and "model saved in" in train
    assert "variational bound" in outputs["cdraw eval"]
    assert len(list((tmp_path / "cdraw-output").iterdir())) == 2  # two generate calls, two folders
