"""Does an image show what it was asked for? A small CNN reads a 32 x 32 window as a digit or "empty".

- :func:`caption_fidelity`: the share of 60 x 60 images (MNIST with captions) that fit their
  caption: the window of each digit's slot (:data:`cdraw.mnist_captions.SLOTS`) reads as that
  digit, and at most :data:`OUTSIDE_INK` of the ink lies outside where the caption's digits may be.
- :func:`label_fidelity`: the share of 28 x 28 images classified as the label they were drawn for.

The classifier is trained on real digits at random offsets 0..4 in a 32 x 32 window (a slot's
range), half of them with a piece of a neighbouring digit at an edge as side-by-side or stacked
pairs have, and on empty windows. Generated images are Bernoulli means (grey), the data is binary,
so each training digit is a random mix of its grey and binarized versions.

Trained classifiers ship in ``cdraw/assets/digit_classifier/`` and ``fashion_classifier/``
(:func:`shipped_classifier`); each README says the command that made it and its accuracy on images
it never saw.
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
    DIGIT_SIZE,
    SLOT_NAMES,
    SLOTS,
    TEMPLATE_SLOTS,
    Caption,
    as_caption,
    paste_digits,
)

EMPTY_CLASS = 10  # the classifier's class for a cell with no digit; classes 0..9 are the digits
MODEL_TYPE = "digit_classifier"
ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = {"mnist": ASSETS / "digit_classifier", "fashion-mnist": ASSETS / "fashion_classifier"}
EMPTY_SHARE = 0.15  # empty windows added to each training epoch, per real digit
EMPTY_NOISE = 0.1  # empty training windows hold uniform noise up to this (times a random factor)
NEIGHBOUR_SHARE = 0.5  # training digits with a piece of a neighbouring digit at an edge
NEIGHBOUR_SHIFT = (24, 32)  # how far that neighbour sits, along one axis (a pair's digits in their slots)
EVAL_BATCH = 1024
WINDOW = 32  # a slot's window: a digit's 28 pixels and its 0..4 pixels of jitter
MAX_OFFSET = WINDOW - DIGIT_SIZE
#: the top left corner (row, column) of each slot's window on the 60 x 60 canvas
SLOT_WINDOWS = {
    name: (min(rows[0], CANVAS_SIZE - WINDOW), min(cols[0], CANVAS_SIZE - WINDOW))
    for name, (rows, cols) in SLOTS.items()
}
OUTSIDE_INK = 0.1  # a fitting image has at most this share of its ink (pixels > 0.5) outside its caption's slots


@dataclass
class DigitClassifierConfig:
    """The classifier's shape: three stride-2 convolutions (32 -> 16 -> 8 -> 4), one hidden layer."""

    cell_size: int = WINDOW
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
    """One epoch of training windows: each real digit at a random offset 0..4 in a 32 x 32 window, as a
    random mix of its grey and binarized versions, half of them with a neighbouring digit 24..32 pixels
    away along one axis (its edge inside the window), plus ``empty_share`` as many faint-noise empty windows.

    images: (N, 1, 28, 28) uint8 0..255; labels: (N,). Returns (N + E, 1, 32, 32) floats in [0, 1]
    and (N + E,) int64 classes, empty windows last.
    """
    n, e = len(images), round(len(images) * empty_share)
    grey = images[:, 0].numpy().astype(np.float32) / 255  # (N, 28, 28)
    binary = (images[:, 0].numpy() >= BINARIZE_THRESHOLD).astype(np.float32)
    mix = rng.random((n, 1, 1), dtype=np.float32)  # 0: binary, 1: grey
    digits = mix * grey + (1 - mix) * binary
    pad = NEIGHBOUR_SHIFT[1]  # the window inside a larger canvas, so a neighbour may stick out of it
    big = np.zeros((n, WINDOW + 2 * pad, WINDOW + 2 * pad), dtype=np.float32)
    at = pad + rng.integers(MAX_OFFSET + 1, size=(n, 2))  # (N, (row, column))
    paste_digits(big, np.arange(n), digits, at[:, 0], at[:, 1])
    near = np.flatnonzero(rng.random(n) < NEIGHBOUR_SHARE)
    shift = rng.integers(NEIGHBOUR_SHIFT[0], NEIGHBOUR_SHIFT[1] + 1, size=len(near)) * rng.choice([-1, 1], len(near))
    axis = rng.integers(2, size=len(near))
    where = at[near].copy()
    where[np.arange(len(near)), axis] += shift
    paste_digits(big, near, digits[rng.integers(n, size=len(near))], where[:, 0], where[:, 1])
    windows = np.zeros((n + e, WINDOW, WINDOW), dtype=np.float32)  # (N + E, 32, 32)
    windows[:n] = big[:, pad : pad + WINDOW, pad : pad + WINDOW]
    amplitude = EMPTY_NOISE * rng.random((e, 1, 1), dtype=np.float32)
    windows[n:] = amplitude * rng.random((e, WINDOW, WINDOW), dtype=np.float32)
    classes = np.concatenate([labels.numpy().astype(np.int64), np.full(e, EMPTY_CLASS)])
    return torch.from_numpy(windows).unsqueeze(1), torch.from_numpy(classes)


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
            x, y = cell_examples(images, labels, rng)  # (N + E, 1, 32, 32), (N + E,)
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
    """(B, 1, S, S) windows in [0, 1] -> (B,) classes (10 = empty), in batches."""
    device, was_training = next(classifier.parameters()).device, classifier.training
    classifier.eval()  # no dropout; the caller's mode is restored below
    out = [classifier(chunk.to(device, torch.float32)).argmax(-1).cpu() for chunk in cells.split(EVAL_BATCH)]
    classifier.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def classify_slots(classifier: DigitClassifier, images: Tensor, slots: Tensor) -> Tensor:
    """(B, 1, 60, 60) images in [0, 1] and (B, K) slot indices (into SLOT_NAMES) -> (B, K) classes of
    those slots' windows (10 = empty)."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, CANVAS_SIZE, CANVAS_SIZE):
        raise CDrawError(f"images must be (B, 1, {CANVAS_SIZE}, {CANVAS_SIZE}), got {tuple(images.shape)}")
    corner = torch.tensor([SLOT_WINDOWS[name] for name in SLOT_NAMES])[slots]  # (B, K, 2)
    rows = corner[..., 0, None] + torch.arange(WINDOW)  # (B, K, 32)
    cols = corner[..., 1, None] + torch.arange(WINDOW)
    b = torch.arange(len(images))[:, None, None, None]
    windows = images[:, 0].cpu()[b, rows[..., :, None], cols[..., None, :]]  # (B, K, 32, 32)
    return predict(classifier, windows.reshape(-1, 1, WINDOW, WINDOW)).view(slots.shape)


def _allowed_regions() -> Tensor:
    """(8 templates, 60, 60) bool: where a template's digits may put ink (the union of their slots' boxes)."""
    region = torch.zeros(len(TEMPLATE_SLOTS), CANVAS_SIZE, CANVAS_SIZE, dtype=torch.bool)
    for t, slots in enumerate(TEMPLATE_SLOTS):
        for name in slots:
            (r0, r1), (c0, c1) = SLOTS[name]
            region[t, r0 : r1 + DIGIT_SIZE, c0 : c1 + DIGIT_SIZE] = True
    return region


def caption_matches(classifier: DigitClassifier, images: Tensor, captions: Sequence[str | Caption]) -> Tensor:
    """(B,) bool: whether each image fits its caption (template text, or a :class:`Caption` for a
    paraphrase): every digit's slot window reads as that digit, and at most OUTSIDE_INK of the ink
    (pixels > 0.5) lies outside the boxes its digits may occupy."""
    if len(captions) != len(images):
        raise CDrawError(f"{len(images)} images but {len(captions)} captions")
    parsed = [as_caption(c) for c in captions]
    slots = torch.tensor([[SLOT_NAMES.index(s) for s in (c.slots() * 2)[:2]] for c in parsed])  # (B, 2)
    wanted = torch.tensor([(c.digits * 2)[:2] for c in parsed])  # (B, 2): a one-digit caption twice
    read = classify_slots(classifier, images, slots)  # (B, 2)
    ink = images[:, 0].cpu() > 0.5  # (B, 60, 60)
    inside = _allowed_regions()[torch.tensor([c.template for c in parsed], dtype=torch.long)]
    total = ink.flatten(1).sum(1)
    outside = (ink & ~inside).flatten(1).sum(1)
    return (read == wanted).all(1) & (total > 0) & (outside <= OUTSIDE_INK * total)


def caption_fidelity(classifier: DigitClassifier, images: Tensor, captions: Sequence[str | Caption]) -> float:
    """The share of (B, 1, 60, 60) images that fit their caption (see :func:`caption_matches`)."""
    return caption_matches(classifier, images, captions).float().mean().item()


def label_fidelity(classifier: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """The share of (B, 1, 28, 28) images in [0, 1] classified as their label; each is centred in the
    classifier's window."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE):
        raise CDrawError(f"images must be (B, 1, {DIGIT_SIZE}, {DIGIT_SIZE}), got {tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise CDrawError(f"{len(images)} images but labels of shape {tuple(labels.shape)}")
    extra = classifier.config.cell_size - DIGIT_SIZE
    pad = extra // 2
    cells = F.pad(images.float(), (pad, extra - pad, pad, extra - pad))  # (B, 1, S, S)
    return (predict(classifier, cells) == labels.cpu()).float().mean().item()
