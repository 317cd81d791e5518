"""MS COCO captions at 32x32 colour, read back: the folder made from local files by
``cdraw prepare coco`` (:func:`cdraw.coco.prepare_coco`). Every caption is an example; an
image's captions (about five) share its pixels."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from cdraw.coco import CHANNELS, COMMAND, CocoCaptions, caption_pairs, coco_folder
from cdraw.datasets.base import DataSet, Raw
from cdraw.errors import CDrawError


def load_coco(
    split: str, folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None
) -> CocoCaptions:
    """One prepared split (``folder/{split}.parquet``) as a :class:`CocoCaptions`.

    Args:
        split: the ``split_name`` given to :func:`prepare_coco`, e.g. ``train`` or ``val``.
        folder: where it was written; default ``data_dir / "coco32"``.
        data_dir: the data folder; default :func:`~cdraw.data.default_data_dir`.
    """
    path = split_path(split, folder, data_dir=data_dir)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CDrawError("reading COCO splits needs pyarrow: pip install datasets") from None

    try:
        table = pq.read_table(path, columns=["image", "captions", "image_id"])
    except (pa.ArrowException, OSError) as e:
        raise CDrawError(f"could not read {path} ({e}); prepare the split again with {COMMAND}") from None
    chunks = [_image_array(chunk, path) for chunk in table.column("image").chunks]  # each (n, S, S, 3)
    sides = {c.shape[1] for c in chunks if len(c)}
    if len(sides) > 1:
        raise CDrawError(f"{path} mixes image sizes {sorted(sides)}: prepare the split again with {COMMAND}")
    hwc = np.concatenate(chunks) if chunks else np.zeros((0, 0, 0, CHANNELS), np.uint8)  # (N, S, S, 3)
    images = torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))  # (N, 3, S, S)
    return CocoCaptions(images, table.column("captions").to_pylist(), table.column("image_id").to_pylist())


def split_path(
    split: str, folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None
) -> Path:
    """Where :func:`load_coco` reads ``split``; a clear error, with the command that makes it, when it is missing."""
    folder = coco_folder(folder, data_dir)
    path = folder / f"{split}.parquet"
    if not path.is_file():
        source = "train2014" if split == "train" else "val2014"  # a validation or test split: never training images
        raise CDrawError(
            f"COCO split {split!r} not found ({path} is missing): make it with `{COMMAND} --captions "
            f"COCO/annotations/captions_{source}.json --images COCO/{source} --out {folder} --split {split}`"
        )
    return path


def _image_array(column, path: Path) -> np.ndarray:
    """One Arrow chunk of equal-length HWC image bytes -> a (n, S, S, 3) uint8 view, without a copy per image."""
    import pyarrow as pa

    n = len(column)
    if n == 0:
        return np.zeros((0, 0, 0, CHANNELS), np.uint8)
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[column.offset : column.offset + n + 1]  # (n + 1,)
    nbytes = int(offsets[1] - offsets[0])
    side = math.isqrt(nbytes // CHANNELS)
    if column.null_count or side * side * CHANNELS != nbytes or np.any(np.diff(offsets) != nbytes):
        raise CDrawError(f"{path} does not hold equal-size square RGB images: prepare the split again with {COMMAND}")
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]  # (n * S * S * 3,)
    return data.reshape(n, side, side, CHANNELS)


# -- the registry's entry --------------------------------------------------------------------------


def _load(split: str, data_dir: str | None, folder: str | None = None) -> Raw:
    coco = load_coco(split, folder, data_dir=data_dir)
    image_index, captions = caption_pairs(coco.captions)
    return coco.images, 256, captions, image_index


def _retrieval_keys(split: str, data_dir: str | None, folder: str | None = None) -> list:
    """One image per key: its first caption stands for it."""
    return caption_pairs(load_coco(split, folder, data_dir=data_dir).captions)[0].tolist()


DATASET = DataSet("coco", "val", None, "caption", (CHANNELS, None, None), _load, _retrieval_keys, own_folder=True)
