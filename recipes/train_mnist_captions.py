"""Train alignDRAW on "MNIST with captions" (made when missing, or first: cdraw prepare mnist-captions).

The recipe lives in the package (cdraw/recipes/mnist_captions.py, its config in cdraw/recipes/configs/); this
file runs it from a source checkout: `accelerate launch recipes/train_mnist_captions.py --help`. The same:
`cdraw train mnist_captions` and `python -m cdraw.recipes.mnist_captions`.
"""

from cdraw.cli import run_main
from cdraw.recipes.mnist_captions import main

if __name__ == "__main__":
    run_main(main)
