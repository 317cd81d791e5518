"""Train alignDRAW on COCO captions at 32x32 RGB (prepare it first: cdraw prepare coco).

Every caption of an image is a training example (the image itself is stored once). The colour
likelihood is the discretised logistic, so the bound is in nats per 32x32x3 image.

Examples:
  cdraw prepare coco --captions ~/coco/annotations/captions_train2014.json \\
      --images ~/coco/train2014 --split train
  cdraw prepare coco --captions ~/coco/annotations/captions_val2014.json \\
      --images ~/coco/val2014 --split val
  cdraw train coco
  cdraw train coco --text-encoder sentence-transformers/all-MiniLM-L6-v2
"""

from __future__ import annotations

import sys

from cdraw import datasets
from cdraw.cli import run_main
from cdraw.config import SHIPPED_CONFIGS, parse_train_args, train_arg_parser
from cdraw.datasets.coco import split_path
from cdraw.training import conditioned_data, train

CONFIGS = SHIPPED_CONFIGS


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = train_arg_parser(CONFIGS / "coco.yaml", __doc__, conditional=True)
    parser.add_argument("--coco-dir", help="folder made by cdraw prepare coco (default: DATA_DIR/coco32)")
    parser.add_argument(
        "--train-split", default="train", help="split name given to cdraw prepare coco --split (default: train)"
    )
    parser.add_argument(
        "--valid-split", default="val", help="split name given to cdraw prepare coco --split (default: val)"
    )
    args = parser.parse_args(argv)
    cfg, resume = parse_train_args(argv, parser=parser)
    # both splits there before minutes of tokenizing the first; the folder recorded for `cdraw eval --coco-dir`
    paths = [split_path(name, args.coco_dir, data_dir=cfg.data_dir) for name in (args.train_split, args.valid_split)]
    record = {
        "coco_dir": str(paths[0].parent.resolve()),
        "train_split": args.train_split,
        "valid_split": args.valid_split,
    }
    coco, splits = datasets.get("coco"), []
    for name in (args.train_split, args.valid_split):  # the training split first: it fits the tokenizer
        images, levels, captions, image_index = coco.raw(name, cfg.data_dir, folder=args.coco_dir)  # M captions
        splits.append(conditioned_data(cfg, images, levels, captions, image_index, resume=resume))
    train(cfg, *splits, resume=resume, dataset="coco", record=record)


if __name__ == "__main__":
    run_main(main)
