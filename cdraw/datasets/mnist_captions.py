"""alignDRAW's MNIST with captions, read back: the folder made by ``cdraw prepare mnist-captions``
(:func:`cdraw.mnist_captions.make_mnist_captions`; the grammar, the layouts and how examples are
composed live there), its splits and the source digits training composites are made of."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from cdraw.data import default_data_dir
from cdraw.datasets.base import DataSet, Raw
from cdraw.errors import CDrawError
from cdraw.mnist_captions import (
    CANVAS_SIZE,
    FORMAT,
    MAKE_COMMAND,
    METADATA_NAME,
    SPLITS,
    SUBDIR,
    Bans,
    DigitPool,
    MnistCaptions,
    mirror,
    source_pools,
    train_composites,
)


def default_folder() -> Path:
    """Where the dataset lives unless told otherwise: ``<data dir>/mnist_captions``."""
    return default_data_dir() / SUBDIR


def captions_folder(folder: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the data set is: ``folder``, else ``data_dir/mnist_captions``, else :func:`default_folder`."""
    if folder is None:
        folder = Path(data_dir) / SUBDIR if data_dir is not None else default_folder()
    return Path(folder).expanduser()


def read_metadata(folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None) -> dict:
    """The ``metadata.json`` of a dataset folder (see :func:`load_mnist_captions` for where it is looked for)."""
    folder = captions_folder(folder, data_dir)
    file = folder / METADATA_NAME
    if not file.is_file():
        raise CDrawError(
            f"MNIST with captions not found in {folder}: make it with `{MAKE_COMMAND.format(folder=folder)}`"
        )
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise CDrawError(f"{file} is not readable ({e}); make the dataset again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CDrawError(
            f"{folder} holds MNIST with captions in the form {found!r}, not {FORMAT!r} (the official layouts and "
            f"held-out roles): make it again with `{MAKE_COMMAND.format(folder=folder)} --overwrite`"
        )
    return meta


def load_train_pool(
    folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None
) -> tuple[DigitPool, Bans, dict]:
    """What training composites are made of: the source digits named by the dataset's metadata, its
    bans, and the metadata (``sizes["train"]`` is the default size of an epoch, ``seed`` the dataset's seed: the
    training recipe composes its epochs with its own ``--seed``, so ``load_mnist_captions("train")`` shows the
    dataset seed's epoch 0, not a run's)."""
    meta = read_metadata(folder, data_dir=data_dir)
    pools = source_pools(data_dir, source=meta["source_kind"], download=None)
    return pools["train"], tuple(tuple(b) for b in meta["bans"]), meta


def load_mnist_captions(
    split: str, folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None
) -> MnistCaptions:
    """Read one split written by :func:`make_mnist_captions`: from ``folder``, else from
    ``data_dir/mnist_captions``, else from :func:`default_folder`. ``train`` is composed (epoch 0)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise CDrawError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = captions_folder(folder, data_dir)
    if split == "train":
        pool, bans, meta = load_train_pool(folder, data_dir=data_dir)
        return train_composites(pool, bans, meta["sizes"]["train"], meta["seed"], 0)
    read_metadata(folder)
    file = folder / f"{split}.parquet"
    if not file.is_file():
        raise CDrawError(
            f"MNIST with captions '{split}' not found in {folder}: make it with `{MAKE_COMMAND.format(folder=folder)}`"
        )
    columns = ["image", "caption", "template", "digits", "corners", "sources"]
    try:
        table = pq.read_table(file, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise CDrawError(f"{file} is not a readable MNIST-with-captions file ({e}); make it again") from None
    raw = table.column("image").to_pylist()
    pixels = CANVAS_SIZE * CANVAS_SIZE
    if any(len(r) != pixels for r in raw):
        raise CDrawError(f"{file} has images that are not {pixels} bytes: make it again")
    images = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(-1, 1, CANVAS_SIZE, CANVAS_SIZE)
    column = lambda name: torch.tensor(table.column(name).to_pylist(), dtype=torch.int64)  # noqa: E731
    return MnistCaptions(
        images=torch.from_numpy(images.copy()),
        captions=table.column("caption").to_pylist(),
        templates=column("template"),
        digits=column("digits").view(-1, 2),
        corners=column("corners").view(-1, 2, 2),
        sources=column("sources").view(-1, 2),
    )


# -- the registry's entry --------------------------------------------------------------------------


def _load(split: str, data_dir: str | None, folder: str | None = None) -> Raw:
    data = load_mnist_captions(split, folder, data_dir=data_dir)
    return data.images, 2, data.captions, None


def _retrieval_keys(split: str, data_dir: str | None, folder: str | None = None) -> list:
    """One layout per key: "a on the left of b" and "b on the right of a" show the same picture, and so
    do the paraphrases of one layout (the split's template and digit columns, not its words)."""
    return [min(c, mirror(c)) for c in load_mnist_captions(split, folder, data_dir=data_dir).layouts()]


DATASET = DataSet(
    "mnist-captions",
    "test_seen",
    SPLITS,
    "caption",
    (1, CANVAS_SIZE, CANVAS_SIZE),
    _load,
    _retrieval_keys,
    own_folder=True,
)
