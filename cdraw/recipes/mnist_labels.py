"""Train class-conditional DRAW on binarized MNIST (or Fashion-MNIST) digits.

The label's learned embedding is given to the encoder and the decoder at every step; afterwards
`cdraw generate --checkpoint runs/mnist_labels --label 7` draws sevens.

Examples:
  cdraw train mnist_labels                        # MNIST, 55k train / 5k valid
  cdraw train mnist_labels --dataset fashion-mnist
  cdraw train mnist_labels --source t10k          # only the 10k test file at hand
  cdraw train mnist_labels --max-steps 200 --glimpses 8   # a quick look
"""

from __future__ import annotations

import sys

import torch

from cdraw import datasets
from cdraw.cli import run_main
from cdraw.config import SHIPPED_CONFIGS, parse_train_args, train_arg_parser
from cdraw.errors import CDrawError
from cdraw.training import conditioned_data, train

CONFIGS = SHIPPED_CONFIGS
#: Validation images held out of the idx file trained on; the test file stays untouched.
VALID_SIZE = {"train": 5_000, "t10k": 1_000}
SPLIT_SEED = 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = train_arg_parser(CONFIGS / "mnist_labels.yaml", __doc__, conditional=True)
    labelled = [name for name, d in datasets.DATASETS.items() if d.conditions == "label"]
    parser.add_argument("--dataset", choices=labelled, default="mnist", help="default: mnist")
    parser.add_argument(
        "--source",
        choices=("train", "t10k"),
        default="train",
        help="idx file to train and validate on: the 60k training file (default) or the 10k test file",
    )
    args = parser.parse_args(argv)
    cfg, resume = parse_train_args(argv, parser=parser)
    split = {"train": "train", "t10k": "test"}[args.source]
    images, _, labels, _ = datasets.get(args.dataset).loader(split, cfg.data_dir)  # (N, 1, 28, 28) 0/1, (N,)
    classes, asked = int(labels.max()) + 1, cfg.model.condition.num_classes
    if asked < classes:
        raise CDrawError(f"--num-classes {asked}: {args.dataset} has {classes} classes (labels 0..{classes - 1})")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    valid, train_ = perm[: VALID_SIZE[args.source]], perm[VALID_SIZE[args.source] :]
    train_data = conditioned_data(cfg, images[train_], 2, labels[train_])
    valid_data = conditioned_data(cfg, images[valid], 2, labels[valid])
    train(cfg, train_data, valid_data, resume=resume, dataset=args.dataset, record={"source": args.source})


if __name__ == "__main__":
    run_main(main)
