"""MNIST and Fashion-MNIST with their labels (the idx files), binarized at grey level 128: class-conditional data."""

from __future__ import annotations

from functools import partial

from cdraw.data import binarize, load_labelled
from cdraw.datasets.base import DataSet, Raw

#: our split names -> the idx files' part
PARTS = {"train": "train", "test": "t10k"}


def _load(name: str, split: str, data_dir: str | None, folder: None = None) -> Raw:
    images, labels = load_labelled(name, PARTS[split], data_dir)
    return binarize(images), 2, labels, None


MNIST = DataSet("mnist", "test", tuple(PARTS), "label", (1, 28, 28), partial(_load, "mnist"))
FASHION = DataSet("fashion-mnist", "test", tuple(PARTS), "label", (1, 28, 28), partial(_load, "fashion-mnist"))
