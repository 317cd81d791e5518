"""alignDRAW's MNIST with captions (made by data_scripts/make_mnist_captions.py; see cdraw.mnist_captions)."""

from __future__ import annotations

from cdraw.datasets.base import DataSet, Raw
from cdraw.mnist_captions import CANVAS_SIZE, SPLITS, load_mnist_captions, mirror, parse_caption


def _load(split: str, data_dir: str | None) -> Raw:
    data = load_mnist_captions(split, data_dir=data_dir)
    return data.images, 2, data.captions, None


def _retrieval_keys(split: str, data_dir: str | None) -> list:
    """One layout per key: "a on the left of b" and "b on the right of a" show the same picture."""
    captions = load_mnist_captions(split, data_dir=data_dir).captions
    return [min(c, mirror(c)) if (c := parse_caption(text)) else text for text in captions]


DATASET = DataSet(
    "mnist-captions", "test_seen", SPLITS, "caption", (1, CANVAS_SIZE, CANVAS_SIZE), _load, _retrieval_keys
)
