"""What a data set is to the rest of cdraw: a name, its splits, what it conditions on, and one way to load
a split as :class:`~cdraw.data.ImageData`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cdraw.data import ImageData
from cdraw.errors import CDrawError

#: A loader's answer: (images (N, C, H, W) uint8, levels, conditions (labels or captions) or None,
#: image index (M,) or None when example i is image i).
Raw = tuple[torch.Tensor, int, Sequence[Any] | torch.Tensor | None, torch.Tensor | None]


def conditioned_on(config: Any) -> str | None:
    """What a DRAWConfig's model is conditioned on, in a data set's terms: None, "label" or "caption"."""
    if config.condition is None:
        return None
    return "label" if config.condition.kind == "label" else "caption"


@dataclass(frozen=True)
class DataSet:
    """One data set behind the shape every caller uses: :meth:`load` a split."""

    name: str
    eval_split: str  # the split `cdraw eval` measures by default
    splits: tuple[str, ...] | None  # None: whatever splits were prepared (COCO)
    conditions: str | None  # None (unconditional), "label" or "caption"
    # (C, H, W) of its images; None: any height or width (COCO, at the size prepared)
    image_shape: tuple[int, int | None, int | None]
    loader: Callable[[str, str | None, str | None], Raw]  # (split, data_dir, folder)
    # (split, data_dir, folder) -> one key per example: same key, same target
    retrieval_keys: Callable[[str, str | None, str | None], list] | None = None
    own_folder: bool = (
        False  # made into a folder of its own (which ``folder`` may name), not read from data_dir's files
    )

    def raw(self, split: str, data_dir: str | None = None, folder: str | None = None) -> Raw:
        """A split as the loader gives it: (images, levels, labels or caption texts, image index).
        ``folder``: the data set's own folder where it is not in its place inside ``data_dir``."""
        if self.splits is not None and split not in self.splits:
            raise CDrawError(f"{self.name} splits are {', '.join(self.splits)}, got {split!r}")
        if folder is not None and not self.own_folder:
            raise CDrawError(
                f"{self.name} is read from its files in the data folder (--data-dir), not from a folder of its own "
                "(--coco-dir, --captions-dir)"
            )
        return self.loader(split, data_dir, folder)

    def load(
        self, split: str, data_dir: str | None = None, encode: Callable | None = None, folder: str | None = None
    ) -> ImageData:
        """A split as :class:`ImageData`; ``encode`` (a model's ``encode_condition``, a tokenizer's
        ``encode``) turns its labels or captions into the tensor the model reads (without it they
        are left out)."""
        images, levels, conditions, image_index = self.raw(split, data_dir, folder)
        ids = encode(conditions) if encode is not None and conditions is not None else None
        return ImageData(images, levels, ids, image_index)

    def fits(self, config: Any) -> bool:
        """Whether a model of this DRAWConfig could have been trained on this data set."""
        kind = conditioned_on(config)
        shape = (config.channels, *config.image_size)
        shape_ok = all(want is None or want == got for want, got in zip(self.image_shape, shape, strict=True))
        return kind == self.conditions and shape_ok
