"""Resize MS COCO images you already have to 32x32 (alignDRAW's setting) and store them with their captions.

The same as `cdraw prepare coco` (kept for checkouts and the commands written in the docs):
`python data_scripts/prepare_coco.py --help` lists the settings.
"""

from __future__ import annotations

import sys

from cdraw.cli import run_main
from cdraw.prepare import prepare

if __name__ == "__main__":
    run_main(lambda: prepare("coco", sys.argv[1:]), training=False)
