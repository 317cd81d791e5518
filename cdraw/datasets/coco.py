"""MS COCO captions at 32x32 colour, prepared from local files (data_scripts/prepare_coco.py; see cdraw.coco).
Every caption is an example; an image's five captions share its pixels."""

from __future__ import annotations

from cdraw.coco import caption_pairs, load_coco
from cdraw.datasets.base import DataSet, Raw


def _load(split: str, data_dir: str | None) -> Raw:
    coco = load_coco(split, data_dir=data_dir)
    image_index, captions = caption_pairs(coco.captions)
    return coco.images, 256, captions, image_index


def _retrieval_keys(split: str, data_dir: str | None) -> list:
    """One image per key: its first caption stands for it."""
    return caption_pairs(load_coco(split, data_dir=data_dir).captions)[0].tolist()


DATASET = DataSet("coco", "val", None, "caption", None, _load, _retrieval_keys)
