"""Training and sampling speed of DRAW, against the machine's own matrix-product rate.

Prints one table and, with --json, writes the same figures. Not a test: nothing here asserts a time.

Examples:
  python benchmarks/bench_train.py                              # the paper's MNIST config, CPU
  python benchmarks/bench_train.py --config paper-no-attention
  python benchmarks/bench_train.py --device cuda --batch-size 100 --json bench.json
  python benchmarks/bench_train.py --smoke                      # a few steps of a tiny model (CI)

Figures:
  train images/s   optimiser steps (forward, backward, clip, Adam) over a window after warm-up
  GFLOP/image      forward + backward, counted by torch's FLOP counter (matmuls and einsums)
  achieved         GFLOP/image x images/s, as a fraction of a measured matmul rate on LSTM-sized
                   operands (batch x (input + hidden) @ (input + hidden) x 4 hidden)
  peak memory      CUDA: max allocated; CPU: the process's peak resident set
  sample 64        seconds to draw 64 images with all T steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cdraw import DRAW, DRAWConfig

CONFIGS = {
    "paper": DRAWConfig(),  # DRAW with attention, MNIST (Table 3)
    "paper-no-attention": DRAWConfig(attention=False),
    "tiny": DRAWConfig(steps=4, enc_size=32, dec_size=32, z_size=5, write_size=3),
}
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


def train_step(model: DRAW, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = model(x).loss.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = CONFIGS[args.config]
    torch.manual_seed(0)
    model = DRAW(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (torch.rand(args.batch_size, cfg.channels, *cfg.image_size, device=device) > 0.87).float()

    with FlopCounterMode(display=False) as counter:
        model(x).loss.mean().backward()
    gflop_per_image = counter.get_total_flops() / args.batch_size / 1e9
    opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        train_step(model, opt, x)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, opt, x)
    sync(device)
    images_per_s = args.steps * args.batch_size / (time.perf_counter() - start)

    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is KiB on Linux
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model.sample(SAMPLES)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(args.sample_repeats):
        model.sample(SAMPLES)
    sync(device)
    sample_s = (time.perf_counter() - start) / args.sample_repeats

    k = cfg.dec_size + cfg.enc_size  # the encoder's recurrent + (most of its) input width
    rate = matmul_rate(device, args.batch_size, k, 4 * cfg.enc_size, args.matmul_seconds)
    return {
        "config": args.config,
        "model": dataclasses.asdict(cfg),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "train_images_per_s": images_per_s,
        "gflop_per_image": gflop_per_image,
        "achieved_gflop_per_s": gflop_per_image * images_per_s,
        "matmul_gflop_per_s": rate,
        "fraction_of_matmul_rate": gflop_per_image * images_per_s / rate,
        "ceiling_images_per_s": rate / gflop_per_image,
        "peak_memory_mib": peak_mib,
        "sample_64_s": sample_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default: 10)")
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true", help="tiny config, 2 steps: checks the script runs")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.smoke:
        args.config, args.warmup, args.steps, args.sample_repeats, args.matmul_seconds = "tiny", 1, 2, 1, 0.05
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")
    r = run(args)
    rows = [
        ("config", f"{r['config']} on {r['device']} ({r['threads']} threads, torch {r['torch']})"),
        ("batch", r["batch_size"]),
        ("train images/s", f"{r['train_images_per_s']:.1f}"),
        ("GFLOP/image (fwd+bwd)", f"{r['gflop_per_image']:.3f}"),
        ("matmul rate GFLOP/s", f"{r['matmul_gflop_per_s']:.1f}"),
        ("arithmetic ceiling img/s", f"{r['ceiling_images_per_s']:.0f}"),
        ("fraction of ceiling", f"{r['fraction_of_matmul_rate']:.1%}"),
        ("peak memory MiB", f"{r['peak_memory_mib']:.0f}"),
        ("sample 64 images s", f"{r['sample_64_s']:.3f}"),
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
