"""Starting a training recipe as ``cdraw train`` does: one process on every CPU core, or several
through ``accelerate launch`` with the settings a user left out given explicitly, its stderr passed
through up to the recipe's one-line error (not the launcher's traceback after it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from cdraw.errors import EXIT_USER_ERROR, CDrawError


def cpu_thread_flags(launch_args: list[str]) -> list[str]:
    """``--num_cpu_threads_per_process N`` for a machine without a GPU, where ``accelerate launch``
    would otherwise set OMP_NUM_THREADS=1 and train on one core; nothing if the user chose."""
    import torch

    from cdraw.training import cpu_threads_per_process

    chosen = any(a.startswith("--num_cpu_threads_per_process") for a in launch_args)  # --cpu does not set it
    if chosen or "OMP_NUM_THREADS" in os.environ or torch.cuda.is_available():
        return []
    processes = 1
    for i, a in enumerate(launch_args):
        value = a.split("=", 1)[1] if a.startswith("--num_processes=") else None
        if a == "--num_processes" and i + 1 < len(launch_args):
            value = launch_args[i + 1]
        if value is not None and value.isdigit() and int(value) > 0:
            processes = int(value)
    return ["--num_cpu_threads_per_process", str(cpu_threads_per_process(processes))]


def launch_defaults(launch_args: list[str]) -> list[str]:
    """The ``accelerate launch`` settings a user left out, given explicitly (accelerate warns about
    each one it defaults), and ``--quiet`` for one process (no launcher traceback after an error)."""
    given = {a.split("=", 1)[0] for a in launch_args}
    defaults = {"--num_machines": "1", "--mixed_precision": "no", "--dynamo_backend": "no"}
    if "--multi_gpu" not in given:
        defaults["--num_processes"] = "1"
    out = [x for flag, value in defaults.items() if flag not in given for x in (flag, value)]
    single = "--multi_gpu" not in given and "--num_processes" not in given
    return out + (["--quiet"] if single and not given & {"--quiet", "-q"} else [])


def run_recipe(name: str, launch_args: list[str], overrides: list[str]) -> int:
    """Run the recipe ``cdraw.recipes.NAME`` with ``overrides``; returns its exit status.

    One process: the recipe runs as a plain Python process on every core (accelerate needs no
    launcher for one process). Several (``launch_args`` such as ``--multi_gpu --num_processes 2``):
    through ``accelerate launch``; then a recipe's one-line error gives exit status 2 and is not
    followed by the launcher's traceback."""
    from cdraw.recipes import NAMES

    if name not in NAMES:
        raise CDrawError(f"no recipe {name!r}: choose one of {', '.join(NAMES)}")
    module = f"cdraw.recipes.{name}"  # in the installed package: no source checkout needed
    env = dict(os.environ)
    if launch_args:
        cmd = ["accelerate", "launch", *launch_defaults(launch_args), *cpu_thread_flags(launch_args)]
        cmd += [*launch_args, "-m", module, *overrides]
    else:
        cmd = [sys.executable, "-m", module, *overrides]
        threads = cpu_thread_flags([])
        if threads:
            env["OMP_NUM_THREADS"] = threads[1]
    print("running:", " ".join(cmd), flush=True)
    launched = bool(launch_args)  # through accelerate: its stderr is filtered
    try:
        child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE if launched else None)
    except FileNotFoundError:
        raise CDrawError("accelerate is not on PATH: activate the environment cdraw is installed in") from None
    saw_error = False
    try:
        if launched:
            saw_error = pass_stderr(child.stderr)
        code = child.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: it says what it kept, and exits
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut its last words
        if launched:
            saw_error = pass_stderr(child.stderr)
        code = child.wait()
    return EXIT_USER_ERROR if launched and code and saw_error else code


def pass_stderr(stream) -> bool:
    """Copy a launch's stderr through byte for byte (progress bars keep their carriage returns) up
    to the recipe's first ``error:`` line; what follows it is the launcher's report of the failed
    processes (a traceback), not news to the user. Returns whether an ``error:`` line came."""
    saw_error = False
    for line in iter(stream.readline, b""):
        if saw_error:
            continue
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
        saw_error = line.split(b"\r")[-1].startswith(b"error:")
    return saw_error
