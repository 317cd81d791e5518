"""Make alignDRAW's "MNIST with captions" in its official form (see cdraw/mnist_captions.py).

The same as `cdraw prepare mnist-captions` (kept for checkouts and the commands written in the docs):
`python data_scripts/make_mnist_captions.py --help` lists the settings.
"""

from __future__ import annotations

import sys

from cdraw.cli import run_main
from cdraw.prepare import prepare

if __name__ == "__main__":
    run_main(lambda: prepare("mnist-captions", sys.argv[1:]), training=False)
