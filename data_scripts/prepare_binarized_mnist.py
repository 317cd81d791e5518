"""Fetch (or check) binarized MNIST and cache its parsed form.

Examples:
  python data_scripts/prepare_binarized_mnist.py                       # into ~/.cache/cdraw/data
  python data_scripts/prepare_binarized_mnist.py --data-dir data/      # into a folder of yours
  CDRAW_DATA_DIR=/datasets python data_scripts/prepare_binarized_mnist.py --no-download   # check only
"""

from __future__ import annotations

import argparse

from cdraw.cli import run_main
from cdraw.data import SPLITS, default_data_dir, load_binarized_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=f"folder for the files (default: {default_data_dir()})")
    parser.add_argument("--no-download", action="store_true", help="only check and cache files already there")
    args = parser.parse_args()
    for split in SPLITS:
        download = False if args.no_download else None  # None: unless CDRAW_OFFLINE / HF_HUB_OFFLINE
        images = load_binarized_mnist(split, args.data_dir, download=download)
        print(f"{split}: {len(images)} images, mean pixel {images.float().mean():.4f}")


if __name__ == "__main__":
    run_main(main)
