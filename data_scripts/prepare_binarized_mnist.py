"""Fetch (or check) binarized MNIST and cache its parsed form.

The same as `cdraw prepare binarized-mnist` (kept for checkouts and the commands written in the docs):
`python data_scripts/prepare_binarized_mnist.py --help` lists the settings.
"""

from __future__ import annotations

import sys

from cdraw.cli import run_main
from cdraw.prepare import prepare

if __name__ == "__main__":
    run_main(lambda: prepare("binarized-mnist", sys.argv[1:]), training=False)
