"""Binarized MNIST (Larochelle and Murray 2011): DRAW's likelihood benchmark, 50k / 10k / 10k, unconditional."""

from __future__ import annotations

from cdraw.data import SPLITS, load_binarized_mnist
from cdraw.datasets.base import DataSet, Raw, no_folder_of_its_own


def _load(split: str, data_dir: str | None, folder: str | None = None) -> Raw:
    no_folder_of_its_own("binarized-mnist", folder)
    return load_binarized_mnist(split, data_dir), 2, None, None


DATASET = DataSet("binarized-mnist", "test", SPLITS, None, (1, 28, 28), _load)
