"""Make alignDRAW's "MNIST with captions" in its official form: 60x60 composites of real digits with
template captions, the held-out roles (bans) drawn from the seed.

Writes OUT/{valid,test_seen,test_heldout,test_paraphrase}.parquet and OUT/metadata.json (the bans,
the source digits, the size of a training epoch); training composites are made afresh every epoch
by the recipe. See cdraw/mnist_captions.py for the layouts, the protocol and the columns.

Examples:
  python data_scripts/make_mnist_captions.py --out data/mnist_captions
  python data_scripts/make_mnist_captions.py --data-dir ../shared/data --out /tmp/mc --test-seen 500 --seed 3
  python -c "import datasets; print(datasets.load_dataset('parquet', data_files='data/mnist_captions/valid.parquet'))"
"""

from __future__ import annotations

import argparse

from cdraw.cli import non_negative_int, positive_int, run_main
from cdraw.datasets.mnist_captions import default_folder
from cdraw.mnist_captions import DEFAULT_SIZES, EVAL_SPLITS, SOURCES, SPLITS, make_mnist_captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", help="folder with mnist/ idx files (default: $CDRAW_DATA_DIR or ~/.cache/cdraw/data)"
    )
    parser.add_argument("--out", help=f"output folder (default: {default_folder()})")
    for split in SPLITS:
        flag = "--" + split.replace("_", "-")
        what = "composites per training epoch" if split == "train" else f"{split} examples"
        at_least = positive_int if split in ("train", "valid") else non_negative_int  # the recipe needs both
        parser.add_argument(flag, type=at_least, default=DEFAULT_SIZES[split], help=f"{what} (default: %(default)s)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds the bans (held-out roles) and every split (default: 0)"
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="source digits: MNIST train for train/valid and t10k for tests, or t10k split 8,000/2,000; "
        "auto: the former when its files are there or may be downloaded (default: auto)",
    )
    parser.add_argument("--no-download", action="store_true", help="never download MNIST files")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    args = parser.parse_args()
    out = args.out or default_folder()
    meta = make_mnist_captions(
        out,
        args.data_dir,
        sizes={split: getattr(args, split) for split in SPLITS},
        seed=args.seed,
        source=args.source,
        download=False if args.no_download else None,
        overwrite=args.overwrite,
    )
    for split in EVAL_SPLITS:
        print(f"{out}/{split}.parquet: {meta['sizes'][split]} examples from {meta['source'][split]}")
    print(
        f"{out}/metadata.json: seed {meta['seed']}, {len(meta['heldout_captions'])} held-out combos; training "
        f"composes {meta['sizes']['train']} new images per epoch from {meta['source']['train']}"
    )


if __name__ == "__main__":
    run_main(main)
