"""Train unconditional DRAW on binarized MNIST (the paper's MNIST setting by default).

The recipe lives in the package (cdraw/recipes/mnist.py, its config in cdraw/recipes/configs/); this
file runs it from a source checkout: `accelerate launch recipes/train_mnist.py --help`. The same:
`cdraw train mnist` and `python -m cdraw.recipes.mnist`.
"""

from cdraw.cli import run_main
from cdraw.recipes.mnist import main

if __name__ == "__main__":
    run_main(main)
