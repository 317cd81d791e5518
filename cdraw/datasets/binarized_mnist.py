"""Binarized MNIST (Larochelle and Murray 2011): DRAW's likelihood benchmark, 50k / 10k / 10k, unconditional."""

from __future__ import annotations

from cdraw.data import SPLITS, load_binarized_mnist
from cdraw.datasets.base import DataSet, Raw


def _load(split: str, data_dir: str | None, folder: None = None) -> Raw:
    return load_binarized_mnist(split, data_dir), 2, None, None


DATASET = DataSet("binarized-mnist", "test", SPLITS, None, (1, 28, 28), _load)
