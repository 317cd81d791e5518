"""The data sets, one module each, behind one shape: ``get(name).load(split, data_dir, encode)`` gives
:class:`~cdraw.data.ImageData`. Training, ``cdraw eval`` and ``cdraw reconstruct`` load through here;
making a data set (MNIST with captions, COCO at 32x32) is a separate step (``cdraw prepare``, :mod:`cdraw.prepare`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from cdraw.datasets import binarized_mnist, coco, labelled, mnist_captions
from cdraw.datasets.base import DataSet
from cdraw.errors import CDrawError, CDrawWarning
from cdraw.io import read_record

DATASETS: dict[str, DataSet] = {
    d.name: d for d in (binarized_mnist.DATASET, labelled.MNIST, labelled.FASHION, mnist_captions.DATASET, coco.DATASET)
}


def get(name: str) -> DataSet:
    if name not in DATASETS:
        raise CDrawError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def for_model(config: Any, folder: str | Path | None = None, stacklevel: int = 2) -> DataSet:
    """The data set a model was trained on: as its folder's ``training.json`` records, else the first
    whose images and conditions fit the model's config (with a warning, ``stacklevel`` frames up,
    when several fit)."""
    recorded = read_record(folder).get("dataset") if folder is not None else None
    if recorded in DATASETS:
        return DATASETS[recorded]
    fitting = [d for d in DATASETS.values() if d.fits(config)]
    if not fitting:
        raise CDrawError("no data set of cdraw fits this model; name one with --data")
    if len(fitting) > 1:  # a guess: say so
        model = "the model" if folder is None else str(folder)
        why = f"records a data set cdraw does not have ({recorded})" if recorded else "does not record its data set"
        warnings.warn(
            f"{model} {why}; taking {fitting[0].name} of those that fit it "
            f"({', '.join(d.name for d in fitting)}): --data names another",
            CDrawWarning,
            stacklevel=stacklevel,
        )
    return fitting[0]


__all__ = ["DATASETS", "DataSet", "for_model", "get"]
