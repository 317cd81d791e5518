"""Does an image show what it was asked for? A small CNN reads each 30 x 30 cell as a digit or "empty".

- :func:`caption_fidelity`: the share of 60 x 60 images (MNIST with captions) whose four cells,
  as the classifier reads them, fit their caption (:func:`cdraw.mnist_captions.cells_matching`).
- :func:`label_fidelity`: the share of 28 x 28 images classified as the label they were drawn for.

The classifier is trained on real digits at the same random offsets as the composites (0..2
pixels inside a 30 x 30 cell) and on empty cells. Generated images are Bernoulli means (grey), the
data is binary, so each training digit is a random mix of its grey and binarized versions.

A trained classifier ships in ``cdraw/assets/digit_classifier/`` (:func:`shipped_classifier`);
its README says the command that made it and its accuracy on digits it never saw.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cdraw.data import BINARIZE_THRESHOLD
from cdraw.errors import CDrawError
from cdraw.io import WEIGHTS_NAME, load_weights, read_config, save_folder, typed_fields
from cdraw.mnist_captions import (
    CANVAS_SIZE,
    CELL_SIZE,
    DIGIT_SIZE,
    EMPTY,
    GRID,
    MAX_OFFSET,
    cells_matching,
    paste_digits,
)

EMPTY_CLASS = 10  # the classifier's class for a cell with no digit; classes 0..9 are the digits
MODEL_TYPE = "digit_classifier"
ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = {"mnist": ASSETS / "digit_classifier", "fashion-mnist": ASSETS / "fashion_classifier"}
EMPTY_SHARE = 0.15  # empty cells added to each training epoch, per real digit
EMPTY_NOISE = 0.1  # empty training cells hold uniform noise up to this (times a random factor)
EVAL_BATCH = 1024


@dataclass
class DigitClassifierConfig:
    """The classifier's shape: three stride-2 convolutions (30 -> 15 -> 8 -> 4), one hidden layer."""

    cell_size: int = CELL_SIZE
    channels: tuple[int, int, int] = (16, 32, 32)
    hidden: int = 64
    dropout: float = 0.3
    classes: int = EMPTY_CLASS + 1

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.cell_size < 8 or min(self.channels) < 1 or self.hidden < 1 or self.classes < 2:
            raise CDrawError(f"invalid DigitClassifierConfig {self}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}


class DigitClassifier(nn.Module):
    """(B, 1, S, S) cells in [0, 1] -> (B, classes) logits; class 10 is "empty"."""

    def __init__(self, config: DigitClassifierConfig | None = None):
        super().__init__()
        self.config = cfg = config or DigitClassifierConfig()
        c1, c2, c3 = cfg.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1),  # (B, c1, S/2, S/2)
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),  # (B, c2, ~S/4, ~S/4)
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),  # (B, c3, ~S/8, ~S/8)
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, cfg.cell_size, cfg.cell_size)).shape[1]
        self.head = nn.Sequential(
            nn.Linear(flat, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, classes)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_folder(path, MODEL_TYPE, self.config.to_dict(), self.state_dict())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> DigitClassifier:
        """Load a folder written by :meth:`save_pretrained`, in eval mode, onto ``device``."""
        raw = read_config(path, MODEL_TYPE, "digit classifier")
        model = cls(DigitClassifierConfig(**typed_fields(DigitClassifierConfig, raw)))
        model.load_state_dict(load_weights(path, model))
        return model.to(device).eval()


def shipped_classifier(dataset: str = "mnist", device: str | torch.device = "cpu") -> DigitClassifier:
    """The classifier that ships with cdraw for ``mnist`` (or ``fashion-mnist``, when present)."""
    if dataset not in SHIPPED:
        raise CDrawError(f"no shipped classifier for {dataset!r}: choose one of {', '.join(SHIPPED)}")
    if not (SHIPPED[dataset] / WEIGHTS_NAME).is_file():
        raise CDrawError(
            f"the {dataset} classifier is missing from {SHIPPED[dataset]}: make it with "
            f"`python data_scripts/train_digit_classifier.py --dataset {dataset}`"
        )
    return DigitClassifier.from_pretrained(SHIPPED[dataset], device)


def cell_examples(
    images: Tensor, labels: Tensor, rng: np.random.Generator, *, empty_share: float = EMPTY_SHARE
) -> tuple[Tensor, Tensor]:
    """One epoch of training cells: each real digit at a random offset 0..2 in a 30 x 30 cell, as a
    random mix of its grey and binarized versions, plus ``empty_share`` as many faint-noise empty cells.

    images: (N, 1, 28, 28) uint8 0..255; labels: (N,). Returns (N + E, 1, 30, 30) floats in [0, 1]
    and (N + E,) int64 classes, empty cells last.
    """
    n, e = len(images), round(len(images) * empty_share)
    grey = images[:, 0].numpy().astype(np.float32) / 255  # (N, 28, 28)
    binary = (images[:, 0].numpy() >= BINARIZE_THRESHOLD).astype(np.float32)
    mix = rng.random((n, 1, 1), dtype=np.float32)  # 0: binary, 1: grey
    cells = np.zeros((n + e, CELL_SIZE, CELL_SIZE), dtype=np.float32)  # (N + E, 30, 30)
    offsets = rng.integers(MAX_OFFSET + 1, size=(n, 2))
    paste_digits(cells, np.arange(n), mix * grey + (1 - mix) * binary, offsets[:, 0], offsets[:, 1])
    amplitude = EMPTY_NOISE * rng.random((e, 1, 1), dtype=np.float32)
    cells[n:] = amplitude * rng.random((e, CELL_SIZE, CELL_SIZE), dtype=np.float32)
    classes = np.concatenate([labels.numpy().astype(np.int64), np.full(e, EMPTY_CLASS)])
    return torch.from_numpy(cells).unsqueeze(1), torch.from_numpy(classes)


def train_digit_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 3e-3,
    config: DigitClassifierConfig | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on real digits (N, 1, 28, 28) uint8 0..255 with labels (N,) 0..9.

    Adam with a one-cycle learning-rate schedule; every epoch draws new offsets, grey/binary mixes
    and empty cells (:func:`cell_examples`). Reproducible from ``seed`` (on one thread); the global
    torch random state is left as it was. ``progress(epoch, mean loss)`` is called after each epoch.
    """
    if images.dtype != torch.uint8 or images.shape[1:] != (1, DIGIT_SIZE, DIGIT_SIZE):
        raise CDrawError(f"images must be (N, 1, 28, 28) uint8, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= EMPTY_CLASS:
        raise CDrawError(f"labels must be ({len(images)},) classes 0..{EMPTY_CLASS - 1}")
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier(config)
        steps_per_epoch = math.ceil(round(len(images) * (1 + EMPTY_SHARE)) / batch_size)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
        model.train()
        for epoch in range(epochs):
            x, y = cell_examples(images, labels, rng)  # (N + E, 1, 30, 30), (N + E,)
            order = torch.randperm(len(x))
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item() * len(batch)
            if progress is not None:
                progress(epoch, total / len(x))
    return model.eval()


@torch.no_grad()
def predict(classifier: DigitClassifier, cells: Tensor) -> Tensor:
    """(B, 1, 30, 30) cells in [0, 1] -> (B,) classes (10 = empty), in batches."""
    device, was_training = next(classifier.parameters()).device, classifier.training
    classifier.eval()  # no dropout; the caller's mode is restored below
    out = [classifier(chunk.to(device, torch.float32)).argmax(-1).cpu() for chunk in cells.split(EVAL_BATCH)]
    classifier.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def classify_cells(classifier: DigitClassifier, images: Tensor) -> Tensor:
    """(B, 1, 60, 60) images in [0, 1] -> (B, 4) classes of the cells top left, top right, bottom left,
    bottom right (10 = empty)."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, CANVAS_SIZE, CANVAS_SIZE):
        raise CDrawError(f"images must be (B, 1, {CANVAS_SIZE}, {CANVAS_SIZE}), got {tuple(images.shape)}")
    b = len(images)
    cells = images.reshape(b, 1, GRID, CELL_SIZE, GRID, CELL_SIZE)  # (B, 1, row, y, column, x)
    cells = cells.permute(0, 2, 4, 1, 3, 5).reshape(b * GRID * GRID, 1, CELL_SIZE, CELL_SIZE)  # row-major cells
    return predict(classifier, cells).view(b, GRID * GRID)


def caption_matches(classifier: DigitClassifier, images: Tensor, captions: Sequence[str]) -> Tensor:
    """(B,) bool: whether each image's cells, as classified, are one of the layouts its caption allows."""
    if len(captions) != len(images):
        raise CDrawError(f"{len(images)} images but {len(captions)} captions")
    layouts = [cells_matching(c) for c in captions]
    allowed = torch.tensor([(m * 2)[:2] for m in layouts], dtype=torch.int64)  # (B, 2, 4): a single layout twice
    allowed[allowed == EMPTY] = EMPTY_CLASS
    predicted = classify_cells(classifier, images)  # (B, 4)
    return (predicted[:, None, :] == allowed).all(-1).any(-1)


def caption_fidelity(classifier: DigitClassifier, images: Tensor, captions: Sequence[str]) -> float:
    """The share of (B, 1, 60, 60) images whose classified cells fit their caption (see :func:`caption_matches`)."""
    return caption_matches(classifier, images, captions).float().mean().item()


def label_fidelity(classifier: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """The share of (B, 1, 28, 28) images in [0, 1] classified as their label; each is centred in a 30 x 30 cell."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE):
        raise CDrawError(f"images must be (B, 1, {DIGIT_SIZE}, {DIGIT_SIZE}), got {tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise CDrawError(f"{len(images)} images but labels of shape {tuple(labels.shape)}")
    pad = MAX_OFFSET // 2
    cells = F.pad(images.float(), (pad, MAX_OFFSET - pad, pad, MAX_OFFSET - pad))  # (B, 1, 30, 30)
    return (predict(classifier, cells) == labels.cpu()).float().mean().item()
