"""The training recipes, one module per data set, each a ``main(argv)`` over :func:`cdraw.training.train`
with its YAML config in ``configs/``. They ship with the package, so ``cdraw train NAME`` works
after ``pip install``; ``python -m cdraw.recipes.NAME`` and, in a source checkout,
``accelerate launch recipes/train_NAME.py`` run the same code."""

NAMES = ("mnist", "mnist_labels", "mnist_captions", "coco")
