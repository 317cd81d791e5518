"""Train alignDRAW on COCO captions at 32x32 RGB (prepare it first: cdraw prepare coco).

The recipe lives in the package (cdraw/recipes/coco.py, its config in cdraw/recipes/configs/); this
file runs it from a source checkout: `accelerate launch recipes/train_coco.py --help`. The same:
`cdraw train coco` and `python -m cdraw.recipes.coco`.
"""

from cdraw.cli import run_main
from cdraw.recipes.coco import main

if __name__ == "__main__":
    run_main(main)
