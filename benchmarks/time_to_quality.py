"""The time-to-quality study of docs/results.md: the test bound DRAW reaches on binarized MNIST within a
fixed wall-clock budget, for one optimiser or model change per row.

Every row is one command, ``cdraw train mnist --max-minutes M ...`` (the recipe of
cdraw/recipes/configs/mnist.yaml plus the row's flags) in one process on one CPU thread; ``--parallel 2`` runs
two rows at a time on a 2-core machine, each on its own core. The budget is wall-clock from the start
of the run, compilation and validation included; with ``--max-minutes`` the cosine schedule decays to 0
at the budget. After training, each row's final model is measured on the whole test set
(``cdraw eval --split test --iw-samples 0``). Results go to ``OUT/results.json`` (one entry per row,
with its command) and each row's curve stays in ``OUT/NAME/log.csv``.

Examples:
  python benchmarks/time_to_quality.py --list
  python benchmarks/time_to_quality.py --rows recipe t32 --minutes 20 --parallel 2
  python benchmarks/time_to_quality.py --rows attention-30 no-attention-30 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: what every row starts from: the recipe as it was when the study ran (its lr was 2e-3 then)
BASE = ["--lr", "2e-3"]
#: name -> (what changes against the recipe, minutes or None for --minutes, the recipe flags)
ROWS: dict[str, tuple[str, float | None, list[str]]] = {
    "recipe": ("the study's base: Adam 2e-3, beta1 0.5, 500 warm-up, cosine, batch 100, clip 10, data start", None, []),
    "t32": ("T = 32 glimpses instead of 64", None, ["--steps", "32"]),
    "no-data-start": ("no data start: canvas at 0, write window at its default gain", None, ["--no-init-from-data"]),
    "beta1-0.9": ("Adam beta1 0.9", None, ["--adam-beta1", "0.9"]),
    "constant-lr": ("constant learning rate after the warm-up", None, ["--lr-schedule", "constant"]),
    "lr-4e-3": ("learning rate 4e-3", None, ["--lr", "4e-3"]),
    "lr-1e-3": ("learning rate 1e-3", None, ["--lr", "1e-3"]),
    "batch-50": ("batch 50", None, ["--batch-size", "50"]),
    "clip-1": ("gradient norm clipped to 1", None, ["--grad-clip", "1"]),
    "plain": (
        "a plain start: Adam 1e-3, beta1 0.9, constant, no warm-up, no data start",
        None,
        [
            "--lr",
            "1e-3",
            "--adam-beta1",
            "0.9",
            "--lr-schedule",
            "constant",
            "--warmup-steps",
            "0",
            "--no-init-from-data",
        ],
    ),
    "attention-30": ("the recipe, 30 minutes", 30.0, []),
    "no-attention-30": ("the recipe without attention, 30 minutes", 30.0, ["--config", "mnist_no_attention"]),
}


def row_commands(name: str, out: Path, minutes: float, data_dir: str | None) -> tuple[list[str], list[str]]:
    """The training and the evaluation command of one row."""
    _, own_minutes, flags = ROWS[name]
    flags = flags if "--lr" in flags else [*BASE, *flags]  # the study's base lr (the recipe's default is now 4e-3)
    run = out / name
    data = ["--data-dir", data_dir] if data_dir else []
    train = [
        "cdraw", "train", "--launch-args=--num_processes 1 --num_cpu_threads_per_process 1", "mnist",
        *flags, "--output-dir", str(run), "--max-minutes", str(own_minutes or minutes),
        "--valid-images", "2000", "--checkpoint-every", "1000", *data,
    ]  # fmt: skip
    evaluate = [
        "cdraw", "eval", "--checkpoint", str(run), "--split", "test", "--iw-samples", "0",
        "--json", str(run / "test.json"), "--quiet", *data,
    ]  # fmt: skip
    return train, evaluate


def run_rows(names: list[str], out: Path, minutes: float, parallel: int, data_dir: str | None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per row, also for its evaluation
    for start in range(0, len(names), parallel):
        group = names[start : start + parallel]
        jobs = {}
        for name in group:
            train, evaluate = row_commands(name, out, minutes, data_dir)
            (out / name).mkdir(parents=True, exist_ok=True)
            log = open(out / f"{name}.out", "w")
            print(f"{time.strftime('%H:%M:%S')} start {name}: {shlex.join(train)}", flush=True)
            script = f"{shlex.join(train)} && {shlex.join(evaluate)}"
            jobs[name] = (subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env), log)
        for name, (proc, log) in jobs.items():
            rc = proc.wait()
            log.close()
            record(name, out, minutes, data_dir, rc)


def record(name: str, out: Path, minutes: float, data_dir: str | None, returncode: int = 0) -> dict:
    """Add a finished row (its model's test bound, steps and time) to OUT/results.json."""
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    train, _ = row_commands(name, out, minutes, data_dir)
    entry = {"change": ROWS[name][0], "command": shlex.join(train), "returncode": returncode}
    if returncode == 0:
        test = json.loads((out / name / "test.json").read_text())
        trained = json.loads((out / name / "model" / "training.json").read_text())
        entry.update(
            test_bound=test["bound"], recon=test["recon"], kl=test["kl"], steps=trained["step"],
            images_seen=trained["images_seen"], training_s=trained["training_s"],
        )  # fmt: skip
    results[name] = entry
    results_path.write_text(json.dumps(results, indent=2))
    print(f"{time.strftime('%H:%M:%S')} {name}: {json.dumps(entry)}", flush=True)
    return entry


def own_flags(name: str) -> list[str]:
    """A row's flags of `cdraw train mnist` (besides output folder, budget and validation size)."""
    train = row_commands(name, Path("OUT"), 20, None)[0]
    return train[4 : train.index("--output-dir")]


def table(results: dict) -> str:
    """The study as Markdown: one row per run, best test bound first (within each budget)."""
    rows = [
        "| row | change | flags of `cdraw train mnist` | budget | steps | images | test bound (nats) | recon + KL |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    done = [(name, r) for name, r in results.items() if r.get("returncode") == 0]
    for name, r in sorted(done, key=lambda item: (ROWS[item[0]][1] or 20.0, item[1]["test_bound"])):
        budget = f"{ROWS[name][1] or 20:g} min"
        rows.append(
            f"| `{name}` | {r['change']} | `{shlex.join(own_flags(name))}` | "
            f"{budget} | {r['steps']:,} | {r['images_seen']:,} | "
            f"**{r['test_bound']:.2f}** | {r['recon']:.2f} + {r['kl']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS), metavar="ROW")
    parser.add_argument("--minutes", type=float, default=20.0, help="budget of a row without its own (default 20)")
    parser.add_argument("--parallel", type=int, default=2, help="rows at a time, one thread each (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/time-to-quality"), help="where the runs go")
    parser.add_argument("--data-dir", help="folder with binarized_mnist/ (default: $CDRAW_DATA_DIR or the cache)")
    parser.add_argument("--list", action="store_true", help="print the rows and their flags, then stop")
    parser.add_argument("--collect", action="store_true", help="only record the finished runs of --rows")
    parser.add_argument("--table", action="store_true", help="print OUT/results.json as a Markdown table, then stop")
    args = parser.parse_args(argv)
    if args.list:
        for name, (change, _, flags) in ROWS.items():
            print(f"{name:16s} {change}  [{shlex.join(flags)}]")
        return 0
    if args.table:
        print(table(json.loads((args.out / "results.json").read_text())))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        for name in args.rows:
            record(name, args.out, args.minutes, args.data_dir)
        return 0
    run_rows(args.rows, args.out, args.minutes, args.parallel, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
