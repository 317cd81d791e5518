"""Train class-conditional DRAW on binarized MNIST (or Fashion-MNIST) digits.

The recipe lives in the package (cdraw/recipes/mnist_labels.py, its config in cdraw/recipes/configs/); this
file runs it from a source checkout: `accelerate launch recipes/train_mnist_labels.py --help`. The same:
`cdraw train mnist_labels` and `python -m cdraw.recipes.mnist_labels`.
"""

from cdraw.cli import run_main
from cdraw.recipes.mnist_labels import main

if __name__ == "__main__":
    run_main(main)
