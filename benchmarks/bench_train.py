"""Training and sampling speed of DRAW, against the machine's own matrix-product rate.

Prints one table and, with --json, writes the same figures. Not a test: nothing here asserts a time.

Examples:
  python benchmarks/bench_train.py                              # the paper's MNIST config, CPU, compiled
  python benchmarks/bench_train.py --no-compile                 # the same, eager
  python benchmarks/bench_train.py --config mnist-captions      # alignDRAW's MNIST-with-captions model
  python benchmarks/bench_train.py --device cuda --batch-size 100 --json bench.json
  python benchmarks/bench_train.py --smoke                      # a few steps of a tiny model (CI)
  python benchmarks/compare.py                                  # side by side with the eager baseline

Figures:
  train images/s   optimiser steps (forward, backward, clip, Adam) on a fixed batch: the median over
                   --windows timing windows of --steps steps each, after warm-up (and compilation)
  first steps s    the untimed warm-up steps, compilation included
  GFLOP/image      forward + backward, counted by torch's FLOP counter (matmuls and einsums)
  achieved         GFLOP/image x images/s, as a fraction of a measured matmul rate on LSTM-sized
                   operands (batch x (input + hidden) @ (input + hidden) x 4 hidden)
  peak memory      CUDA: max allocated; CPU: the process's peak resident set
  sample 64        seconds to draw 64 images with all T steps (eager: sampling is never compiled)
  profile          with --profile N: self time per operator over N more steps, and the share of
                   matrix products (aten::mm, addmm, bmm) in it

Only the public API (DRAW, DRAWConfig, from_pretrained, encode_condition, sample, compile_step) is
used, and compile_step only when compiling, so with PYTHONPATH pointing at an older checkout this
script measures that version (what benchmarks/compare.py does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import cdraw
from cdraw import DRAW, DRAWConfig

CONFIGS = {
    "paper": DRAWConfig(),  # DRAW with attention, MNIST (Table 3)
    "paper-no-attention": DRAWConfig(attention=False),
    "mnist-captions": None,  # alignDRAW on MNIST with captions: the shipped model's config
    "tiny": DRAWConfig.from_dict(dict(steps=4, enc_size=32, dec_size=32, z_size=5, write_size=3)),
}
CAPTIONS_MODEL = Path(cdraw.__file__).parent / "assets" / "models" / "mnist_captions"
CAPTIONS = [  # the two kinds of sentence of MNIST with captions
    "the digit 3 is at the top left of the image",
    "the digit 1 is on the left of the digit 7",
    "the digit 8 is at the bottom right of the image",
    "the digit 0 is at the right of the digit 5",
]
GRAD_CLIP = 10.0
SAMPLES = 64


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, batch: int, k: int, n: int, seconds: float) -> float:
    """GFLOP/s of (batch x k) @ (k x n) in float32, repeated for about ``seconds``."""
    a, b = torch.randn(batch, k, device=device), torch.randn(k, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        reps += 10
        sync(device)
    return 2 * batch * k * n * reps / (time.perf_counter() - start) / 1e9


def make_model(name: str) -> tuple[DRAW, list[str] | None]:
    """The model of a named config (random weights), and captions for a caption model."""
    if name == "mnist-captions":
        return DRAW.from_pretrained(CAPTIONS_MODEL), CAPTIONS
    return DRAW(CONFIGS[name]), None


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, captions = make_model(args.config)
    model = model.to(device).train()  # a loaded model comes in eval mode
    cfg = model.config
    condition = None
    if captions is not None:  # token ids, as training passes them
        condition = model.encode_condition([captions[i % len(captions)] for i in range(args.batch_size)])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = (torch.rand(args.batch_size, cfg.channels, *cfg.image_size, device=device) > 0.87).float()

    def train_step() -> None:
        loss = model(x, condition).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()

    with FlopCounterMode(display=False) as counter:  # eager, before any compilation
        model(x, condition).loss.mean().backward()
    gflop_per_image = counter.get_total_flops() / args.batch_size / 1e9
    opt.zero_grad(set_to_none=True)
    if args.readable:  # DRAW.step as written instead of cdraw.fused (revisions that have both)
        model.use_fused_step(False)
    if args.compile:
        model.compile_step(steps_per_call=args.steps_per_call)

    start = time.perf_counter()
    for _ in range(args.warmup):
        train_step()
    sync(device)
    first_steps_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        sync(device)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    images_per_s = statistics.median(rates)

    profile = None
    if args.profile:
        profile = profile_steps(train_step, args.profile, device)

    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is KiB on Linux
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    sample_condition = None if captions is None else [captions[i % len(captions)] for i in range(SAMPLES)]
    model.sample(SAMPLES, sample_condition)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(args.sample_repeats):
        model.sample(SAMPLES, sample_condition)
    sync(device)
    sample_s = (time.perf_counter() - start) / args.sample_repeats

    k = cfg.dec_size + cfg.enc_size  # the encoder's recurrent + (most of its) input width
    rate = matmul_rate(device, args.batch_size, k, 4 * cfg.enc_size, args.matmul_seconds)
    return {
        "config": args.config,
        "model": dataclasses.asdict(cfg),
        "compiled": args.compile,
        "readable_step": args.readable,
        "cdraw": str(Path(cdraw.__file__).parent),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "train_images_per_s": images_per_s,
        "train_images_per_s_windows": rates,
        "first_steps_s": first_steps_s,
        "gflop_per_image": gflop_per_image,
        "achieved_gflop_per_s": gflop_per_image * images_per_s,
        "matmul_gflop_per_s": rate,
        "fraction_of_matmul_rate": gflop_per_image * images_per_s / rate,
        "ceiling_images_per_s": rate / gflop_per_image,
        "peak_memory_mib": peak_mib,
        "sample_64_s": sample_s,
        "profile": profile,
    }


def profile_steps(train_step, steps: int, device: torch.device) -> dict:
    """Self time of every operator over ``steps`` training steps, per step: the share of matrix
    products, and the 15 costliest operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ops = sorted(prof.key_averages(), key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in ops)
    matmul = sum(getattr(e, attr) for e in ops if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    top = [
        {"op": e.key, "ms_per_step": getattr(e, attr) / steps / 1e3, "calls_per_step": e.count / steps}
        for e in ops[:15]
    ]
    return {"ms_per_step": total / steps / 1e3, "matmul_share": matmul / total, "top": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the training step, as training does by default (default: on)",
    )
    parser.add_argument("--steps-per-call", type=int, default=8, help="glimpses per compiled graph (default: 8)")
    parser.add_argument("--readable", action="store_true", help="time DRAW.step as written, not the fused step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timing window (default: 5)")
    parser.add_argument("--windows", type=int, default=5, help="timing windows; the median is reported (default: 5)")
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N steps (default: 0)")
    parser.add_argument("--smoke", action="store_true", help="tiny config, eager, 2 steps: checks the script runs")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.smoke:
        args.config, args.compile, args.warmup, args.steps, args.windows = "tiny", False, 1, 2, 1
        args.sample_repeats, args.matmul_seconds = 1, 0.05
    if min(args.batch_size, args.steps, args.windows, args.steps_per_call) < 1 or args.warmup < 0:
        sys.exit("error: --batch-size, --steps, --windows and --steps-per-call must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")
    if args.config == "mnist-captions" and not CAPTIONS_MODEL.is_dir():
        sys.exit(f"error: the mnist-captions config is read from {CAPTIONS_MODEL}, which this cdraw lacks")
    r = run(args)
    rows = [
        ("config", f"{r['config']} on {r['device']} ({r['threads']} threads, torch {r['torch']})"),
        ("step", "compiled" if r["compiled"] else "eager"),
        ("batch", r["batch_size"]),
        ("train images/s (median)", f"{r['train_images_per_s']:.1f}"),
        ("  windows", " ".join(f"{v:.0f}" for v in r["train_images_per_s_windows"])),
        ("first steps s (compile)", f"{r['first_steps_s']:.1f}"),
        ("GFLOP/image (fwd+bwd)", f"{r['gflop_per_image']:.3f}"),
        ("matmul rate GFLOP/s", f"{r['matmul_gflop_per_s']:.1f}"),
        ("arithmetic ceiling img/s", f"{r['ceiling_images_per_s']:.0f}"),
        ("fraction of ceiling", f"{r['fraction_of_matmul_rate']:.1%}"),
        ("peak memory MiB", f"{r['peak_memory_mib']:.0f}"),
        ("sample 64 images s", f"{r['sample_64_s']:.3f}"),
    ]
    if r["profile"]:
        rows.append(("profiled ms/step (self)", f"{r['profile']['ms_per_step']:.1f}"))
        rows.append(("  of it matrix products", f"{r['profile']['matmul_share']:.0%}"))
        rows += [
            (f"  {t['op'][:40]}", f"{t['ms_per_step']:.1f} ms, {t['calls_per_step']:.0f} calls")
            for t in r["profile"]["top"]
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
