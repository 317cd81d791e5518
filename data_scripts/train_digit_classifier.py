"""Train the digit classifier that measures fidelity (cdraw.fidelity) and save it with a README.

MNIST: trains on the t10k digits that the captions' train composites use and reports accuracy on
the others, or on MNIST train and reports on t10k when the train files are there or can be
downloaded (CDRAW_OFFLINE=1 keeps it on t10k, as the shipped one); fashion-mnist: train / t10k.

Examples:
  python data_scripts/train_digit_classifier.py                       # into cdraw/assets/digit_classifier
  python data_scripts/train_digit_classifier.py --dataset fashion-mnist --epochs 15
  python data_scripts/train_digit_classifier.py --data-dir ../shared/data --out /tmp/clf --threads 1
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from cdraw.cli import run_main
from cdraw.data import binarize, load_labelled
from cdraw.errors import positive_int
from cdraw.fidelity import EMPTY_CLASS, SHIPPED, WINDOW, label_fidelity, predict, train_digit_classifier
from cdraw.mnist_captions import source_pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SHIPPED), default="mnist", help="(default: mnist)")
    parser.add_argument("--data-dir", help="folder with <dataset>/ idx files (default: $CDRAW_DATA_DIR)")
    parser.add_argument("--out", help="output folder (default: the shipped one, cdraw/assets/...)")
    parser.add_argument("--epochs", type=positive_int, default=40, help="(default: 40)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset == "mnist":
        pools = source_pools(args.data_dir)
        (train_x, train_y, train_from), (test_x, test_y, test_from) = (
            (p.images, p.labels, p.source) for p in (pools["train"], pools["test"])
        )
    else:
        train_x, train_y = load_labelled(args.dataset, "train", args.data_dir)
        test_x, test_y = load_labelled(args.dataset, "t10k", args.data_dir)
        train_from, test_from = f"{args.dataset} train", f"{args.dataset} t10k"
    print(f"training on {len(train_x)} images ({train_from}) for {args.epochs} epochs")
    start = time.perf_counter()
    progress = lambda epoch, loss: print(f"epoch {epoch + 1}: loss {loss:.4f}", flush=True)
    model = train_digit_classifier(train_x, train_y, epochs=args.epochs, seed=args.seed, progress=progress)
    seconds = time.perf_counter() - start
    grey = label_fidelity(model, test_x.float() / 255, test_y)
    binary = label_fidelity(model, binarize(test_x).float(), test_y)
    empty = (predict(model, torch.zeros(100, 1, WINDOW, WINDOW)) == EMPTY_CLASS).float().mean().item()
    result = (
        f"accuracy on {len(test_x)} held-out images ({test_from}): grey {grey:.2%}, binarized {binary:.2%}; "
        f"blank windows read as empty: {empty:.0%}; training took {seconds:.0f} s"
    )
    print(result)
    out = Path(args.out) if args.out else SHIPPED[args.dataset]
    model.save_pretrained(out)
    command = shlex.join(["python", "data_scripts/train_digit_classifier.py", *sys.argv[1:]])
    (out / "README.md").write_text(
        f"# {args.dataset} window classifier for cdraw.fidelity\n\n"
        f"11 classes: 0-9 and 10 = empty; input a {WINDOW}x{WINDOW} window in [0, 1]. Made by\n\n    {command}\n\n"
        f"trained on {len(train_x)} images ({train_from}); it printed:\n\n    {result}\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
