"""Train unconditional DRAW on binarized MNIST (the paper's MNIST setting by default).

Examples:
  cdraw train mnist                      # the paper's config, all epochs
  cdraw train mnist --max-steps 200      # a short run
  cdraw train mnist --no-attention       # the 87.40-nat baseline
  cdraw train mnist --resume             # continue the run in --output-dir (or: --resume RUN)
  cdraw train --launch-args='--multi_gpu --num_processes 2' mnist   # 2 processes
"""

from __future__ import annotations

import sys

from cdraw import datasets
from cdraw.cli import run_main
from cdraw.config import SHIPPED_CONFIGS, parse_train_args
from cdraw.training import train

CONFIGS = SHIPPED_CONFIGS


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # --no-attention picks the baseline's config file (its own output folder), unless --config is given
    default = CONFIGS / ("mnist_no_attention.yaml" if "--no-attention" in argv else "mnist.yaml")
    cfg, resume = parse_train_args(argv, default_config=default, description=__doc__)
    mnist = datasets.get("binarized-mnist")
    train_data, valid_data = mnist.load("train", cfg.data_dir), mnist.load("valid", cfg.data_dir)
    train(cfg, train_data, valid_data, resume=resume, dataset=mnist.name)


if __name__ == "__main__":
    run_main(main)
