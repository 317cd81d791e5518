"""Training speed before and after: an older revision of cdraw (eager) against this one (eager and
compiled), measured side by side by benchmarks/bench_train.py and printed as one Markdown table.

The older revision is checked out into a temporary git worktree and imported through PYTHONPATH;
the same benchmark script measures every variant. Runs alternate (baseline, eager, compiled, then
again) so that a slow spell of a shared machine hits them all alike; the table gives the median of
the rounds.

Examples:
  python benchmarks/compare.py                                  # paper config, CPU, 3 rounds
  python benchmarks/compare.py --configs paper mnist-captions --json docs/figures/speed.json
  python benchmarks/compare.py --device cuda --batch-size 100
  python benchmarks/compare.py --baseline b8e59c9 --compiled-only --rounds 2   # before/after a change
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_train.py"
#: main before the speed work: the eager DRAW step, one small matrix product per layer per step.
BASELINE = "790bed6"
VARIANTS = {  # name -> (use the baseline checkout, compile)
    "baseline (eager, rev {rev})": (True, False),
    "this revision, --no-compile": (False, False),
    "this revision, compiled": (False, True),
}
COMPILED_VARIANTS = {  # --compiled-only: the compiled training step before and after a change
    "baseline (compiled, rev {rev})": (True, True),
    "this revision, compiled": (False, True),
}


def bench(config: str, baseline_dir: Path | None, compiled: bool, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, str(BENCH), "--config", config, "--device", args.device]
    cmd += ["--batch-size", str(args.batch_size), "--json", str(out), "--compile" if compiled else "--no-compile"]
    if args.smoke:
        cmd.append("--smoke")
    env = dict(os.environ)
    if baseline_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(baseline_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(out.read_text())
    want = (baseline_dir or REPO) / "cdraw"
    if Path(r["cdraw"]).resolve() != want.resolve():
        sys.exit(f"error: the benchmark imported cdraw from {r['cdraw']}, not {want}")
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default: {BASELINE})")
    parser.add_argument("--configs", nargs="+", default=["paper"], help="benchmark configs (default: paper)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternated (default: 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--smoke", action="store_true", help="the benchmark's smoke mode: checks the plumbing")
    parser.add_argument(
        "--compiled-only", action="store_true", help="compare the compiled step of both revisions (no eager runs)"
    )
    args = parser.parse_args()
    variants = COMPILED_VARIANTS if args.compiled_only else VARIANTS
    if args.rounds < 1:
        sys.exit("error: --rounds must be at least 1")
    if args.smoke:
        args.configs = ["tiny"]  # what the benchmark's smoke mode runs

    with tempfile.TemporaryDirectory(prefix="cdraw-compare-") as tmp:
        tmp = Path(tmp)
        worktree = tmp / "baseline"
        add = ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline]
        proc = subprocess.run(add, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: cannot check out {args.baseline}: {proc.stderr.strip()}")
        try:
            runs = {}
            for config in args.configs:
                for rnd in range(args.rounds):
                    for name, (old, compiled) in variants.items():
                        out = tmp / f"{config}-{rnd}-{len(runs)}.json"
                        r = bench(config, worktree if old else None, compiled, args, out)
                        runs.setdefault((config, name), []).append(r)
                        print(f"{config} round {rnd + 1}: {name.format(rev=args.baseline)}: "
                              f"{r['train_images_per_s']:.1f} images/s", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)

    def med(rs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    print()
    print("| config | variant | device | batch | train images/s | speed-up | fraction of ceiling | "
          "peak memory MiB | first steps s | sample 64 s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for config in args.configs:
        base = med(runs[(config, next(iter(variants)))], "train_images_per_s")
        for name in variants:
            rs = runs[(config, name)]
            r = rs[0]
            device = f"{r['device']} ({r['threads']} threads)" if r["device"] == "cpu" else r["device_name"]
            speed = med(rs, "train_images_per_s")
            print(
                f"| {config} | {name.format(rev=args.baseline)} | {device} | {r['batch_size']} | "
                f"{speed:.0f} ({min(x['train_images_per_s'] for x in rs):.0f}-"
                f"{max(x['train_images_per_s'] for x in rs):.0f}) | {speed / base:.2f}x | "
                f"{med(rs, 'fraction_of_matmul_rate'):.0%} | {med(rs, 'peak_memory_mib'):.0f} | "
                f"{med(rs, 'first_steps_s'):.1f} | {med(rs, 'sample_64_s'):.3f} |"
            )
    if args.json:
        flat = [{"variant": name.format(rev=args.baseline), **r} for (_, name), rs in runs.items() for r in rs]
        Path(args.json).write_text(json.dumps(flat, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
