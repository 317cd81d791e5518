"""alignDRAW's "MNIST with captions" (Mansimov et al. 2016, section 5.1), in the form of its official code
(emansim/text2image, ``mnist-captions/create-captions.py``).

A 60 x 60 binary canvas holds one 28 x 28 MNIST digit in a corner, or two side by side or one above
the other. The ranges below are a digit's top left corner (both ends included), drawn uniformly:

    one digit    top left     rows 0-2,   columns 0-4      top right     rows 0-2,   columns 28-32
                 bottom left  rows 30-32, columns 0-4      bottom right  rows 30-32, columns 28-32
    side by side one row 16-18 for both digits; the left one in columns 0-4, the right one in 28-32
    one above    one column 16-18 for both; the top one in rows 0-2, the bottom one in rows 30-32

Two digits may share up to 4 columns (or rows): the canvas keeps the pixel-wise maximum (their code
let the second digit overwrite the first). Eight templates, as in the paper, end with " .":

    the digit 3 is at the top left of the image .      (top right, bottom left, bottom right)
    the digit 3 is on the left of the digit 5 .        (on the right of, at the top of, at the bottom of)

A *combo* is a caption: its template and digits (40 one-digit and 400 two-digit combos).

Held-out protocol (their ``banned`` list): for each two-digit template one digit is banned as its
first digit and one as its second, for each one-digit template one digit is banned; the bans are
drawn from the dataset seed and saved in ``metadata.json``. Training (and ``valid`` and
``test_seen``) never shows a banned digit in its banned role; ``test_heldout`` shows only captions
with one. Bans are per template, so a held-out pair caption may show a picture that training shows
under the mirrored caption (:func:`picture_seen`); as in their code. ``test_paraphrase`` shows
seen combos described in other words (:data:`PARAPHRASES`).

Training composites are drawn afresh for every epoch from the source digits
(:func:`train_composites`, deterministic in the seed and the epoch), as their code recomposed its
training set every epoch; the evaluation splits are fixed and written to disk.

Source digits: training and ``valid`` composites use the MNIST training set and the test
composites MNIST t10k. Where only t10k is at hand (offline), its digits are split by a fixed
seeded permutation (8,000 / 2,000) so train and test composites never share a digit; the
dataset's ``metadata.json`` says which source was used. Digits are binarized at grey level 128:
the targets are binary, so the Bernoulli likelihood is a proper one and the bound is in nats of
a discrete distribution, comparable across runs (their code used grey levels as Bernoulli targets).

On disk, :func:`make_mnist_captions` writes one parquet file per evaluation split (loadable with
``datasets.load_dataset("parquet", data_files=...)``) and ``metadata.json``; columns:

    image     binary  3,600 bytes: the 60 x 60 canvas, row-major, values 0/1
    caption   string
    template  int8: index into TEMPLATES (for a paraphrase: the template it says again)
    digits    list of 2 int8: the caption's digits in order, -1 for the second of a one-digit caption
    corners   list of 4 int8: (row, column) of each digit's top left corner, -1 where none
    sources   list of 2 int32: each digit's position in its source file, -1 where none
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from cdraw.data import (
    BINARIZE_THRESHOLD,
    FreshEachEpoch,
    binarize,
    default_data_dir,
    downloads_allowed,
    find_labelled_file,
    labelled_files,
    load_labelled,
)
from cdraw.errors import CDrawError
from cdraw.io import DigitSource, atomic_write

CANVAS_SIZE = 60
DIGIT_SIZE = 28
NONE = -1  # no digit, in `digits`, `corners` and `sources`
#: slot -> ((first row, last row), (first column, last column)) of a digit's top left corner there
SLOTS = {
    "top left": ((0, 2), (0, 4)),
    "top right": ((0, 2), (28, 32)),
    "bottom left": ((30, 32), (0, 4)),
    "bottom right": ((30, 32), (28, 32)),
    "left": ((16, 18), (0, 4)),
    "right": ((16, 18), (28, 32)),
    "top": ((0, 2), (16, 18)),
    "bottom": ((30, 32), (16, 18)),
}
SLOT_NAMES = tuple(SLOTS)
TEMPLATES = (
    "the digit {} is at the top left of the image .",
    "the digit {} is at the top right of the image .",
    "the digit {} is at the bottom left of the image .",
    "the digit {} is at the bottom right of the image .",
    "the digit {} is on the left of the digit {} .",
    "the digit {} is on the right of the digit {} .",
    "the digit {} is at the top of the digit {} .",
    "the digit {} is at the bottom of the digit {} .",
)
#: the slots of a template's digits, in the caption's order
TEMPLATE_SLOTS = (
    ("top left",),
    ("top right",),
    ("bottom left",),
    ("bottom right",),
    ("left", "right"),
    ("right", "left"),
    ("top", "bottom"),
    ("bottom", "top"),
)
ONE_DIGIT_TEMPLATES = range(4)
#: a short name for each template's layout: its one digit's slot, or where its first digit is
#: relative to the second ("left of": the first on the left)
TEMPLATE_NAMES = tuple(slots[0] if len(slots) == 1 else f"{slots[0]} of" for slots in TEMPLATE_SLOTS)
SIDE_BY_SIDE = (4, 5)  # both digits in one row; the other pair templates share one column
#: other words for each template, for the paraphrase split: words the training captions never use
#: (number, upper, lower, corner, beside, above, below, ...) around the same digits
PARAPHRASES = (
    ("the number {} is in the upper left corner", "a {} in the upper left", "upper left corner : a {}"),
    ("the number {} is in the upper right corner", "a {} in the upper right", "upper right corner : a {}"),
    ("the number {} is in the lower left corner", "a {} in the lower left", "lower left corner : a {}"),
    ("the number {} is in the lower right corner", "a {} in the lower right", "lower right corner : a {}"),
    ("a {} to the left of a {}", "the number {} is beside the number {} , on its left", "{} first , then {}"),
    ("a {} to the right of a {}", "the number {} is beside the number {} , on its right", "{} after {}"),
    ("the number {} is above the number {}", "a {} over a {}", "a {} sits above a {}"),
    ("the number {} is below the number {}", "a {} under a {}", "a {} sits below a {}"),
)
EVAL_SPLITS = ("valid", "test_seen", "test_heldout", "test_paraphrase")
SPLITS = ("train", *EVAL_SPLITS)
DEFAULT_SIZES = {"train": 40_000, "valid": 2_000, "test_seen": 2_000, "test_heldout": 2_000, "test_paraphrase": 2_000}
ONE_DIGIT_SHARE = 0.5  # share of examples with one digit (their code: 4 of 8 templates, a bit over half after bans)
BAN_STREAM = 1_000  # the random stream of the bans; split i uses stream i, training epoch e [TRAIN_STREAM, e]
TRAIN_STREAM = 2_000
WORD_DROPOUT_STREAM = 3_000  # training epoch e drops words with the stream [WORD_DROPOUT_STREAM, e]
SOURCES = ("auto", "mnist-train", "t10k-split")
T10K_SPLIT_SEED = 0  # fixed, not the dataset seed: the shipped classifier is trained on the same part
T10K_TRAIN_DIGITS = 8_000  # of the 10,000 t10k digits, the first 8,000 of the permutation feed train/valid
SUBDIR = "mnist_captions"  # its folder inside a data folder
METADATA_NAME = "metadata.json"
FORMAT = "cdraw-mnist-captions-2"
MAKE_COMMAND = "cdraw prepare mnist-captions --out {folder}"


class Caption(NamedTuple):
    """A caption as its template index and its digits: (d,) for one digit, (a, b) for two."""

    template: int
    digits: tuple[int, ...]

    def text(self) -> str:
        return TEMPLATES[self.template].format(*self.digits)

    def slots(self) -> tuple[str, ...]:
        """Where its digits go, in order (names of :data:`SLOTS`)."""
        return TEMPLATE_SLOTS[self.template]


_PATTERNS = [re.compile(re.escape(t[:-2]).replace(r"\{\}", r"(\d)") + r"(?: \.)?\Z") for t in TEMPLATES]


def parse_caption(caption: str) -> Caption | None:
    """The template and digits of a caption; None for text outside the 8 templates.

    Case, runs of white space and the final " ." do not matter:
    ``"The digit 3  is at the top of the digit 5"`` parses to ``Caption(6, (3, 5))``.
    """
    text = " ".join(caption.lower().split())
    for template, pattern in enumerate(_PATTERNS):
        m = pattern.match(text)
        if m:
            return Caption(template, tuple(int(d) for d in m.groups()))
    return None


def as_caption(caption: str | Caption) -> Caption:
    """A :class:`Caption` from one or its text; text outside the templates is a :class:`CDrawError`."""
    parsed = parse_caption(caption) if isinstance(caption, str) else Caption(*caption)
    if parsed is None:
        raise CDrawError(f"caption {caption!r} fits none of the templates: {'; '.join(TEMPLATES)}")
    return parsed


def all_combos() -> list[Caption]:
    """The 40 one-digit and 400 two-digit combos, templates in order, digits ascending."""
    one = [Caption(t, (d,)) for t in ONE_DIGIT_TEMPLATES for d in range(10)]
    two = [
        Caption(t, (a, b))
        for t in range(len(ONE_DIGIT_TEMPLATES), len(TEMPLATES))
        for a in range(10)
        for b in range(10)
    ]
    return one + two


def mirror(caption: Caption) -> Caption:
    """The other caption of the same layout: "a on the left of b" <-> "b on the right of a", and
    "a at the top of b" <-> "b at the bottom of a". A one-digit caption is its own mirror."""
    if caption.template in ONE_DIGIT_TEMPLATES:
        return caption
    first = len(ONE_DIGIT_TEMPLATES)
    return Caption(first + ((caption.template - first) ^ 1), caption.digits[::-1])


Bans = tuple[tuple[int, ...], ...]  # per template, the banned digit of each of its roles


def choose_bans(seed: int) -> Bans:
    """The held-out roles: per template, one banned digit for each of its digits (12 in all), seeded."""
    rng = np.random.default_rng([seed, BAN_STREAM])
    return tuple(tuple(int(d) for d in rng.integers(10, size=len(slots))) for slots in TEMPLATE_SLOTS)


def is_heldout(caption: Caption, bans: Bans) -> bool:
    """Whether a caption puts a banned digit in its banned role."""
    return any(d == banned for d, banned in zip(caption.digits, bans[caption.template], strict=True))


def picture_seen(caption: Caption, bans: Bans) -> bool:
    """Whether training shows the picture a caption asks for: the caption itself, or its mirror
    (:func:`mirror`: a held-out "7 on the left of 5" is the picture of a seen "5 on the right of 7",
    as bans are per template). False: a layout of digits no training image has."""
    return not is_heldout(caption, bans) or not is_heldout(mirror(caption), bans)


def split_combos(bans: Bans) -> tuple[list[Caption], list[Caption]]:
    """(seen, held out): the combos training may show (360) and those only ``test_heldout`` shows (80)."""
    combos = all_combos()
    return [c for c in combos if not is_heldout(c, bans)], [c for c in combos if is_heldout(c, bans)]


@dataclass
class DigitPool:
    """Real digits that composites are made of."""

    images: Tensor  # (M, 1, 28, 28) uint8 grey levels 0..255
    labels: Tensor  # (M,) int64
    index: Tensor  # (M,) int64: each digit's position in its source file
    source: str  # which file and which part of it, in words


def t10k_split() -> tuple[Tensor, Tensor]:
    """The fixed seeded split of MNIST t10k positions: (8,000 for train/valid composites, 2,000 for test)."""
    perm = torch.from_numpy(np.random.default_rng(T10K_SPLIT_SEED).permutation(10_000))
    return perm[:T10K_TRAIN_DIGITS], perm[T10K_TRAIN_DIGITS:]


def resolve_source(
    source: str = "auto", data_dir: str | os.PathLike | None = None, *, download: bool | None = None
) -> str:
    """``mnist-train`` or ``t10k-split``: ``auto`` is the former when the MNIST training files are in
    ``data_dir`` or may be downloaded."""
    if source not in SOURCES:
        raise CDrawError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if source != "auto":
        return source
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    have_train = all(find_labelled_file("mnist", f, folder) for f in labelled_files("train"))
    can_download = downloads_allowed() if download is None else download
    return "mnist-train" if have_train or can_download else "t10k-split"


def source_pools(
    data_dir: str | os.PathLike | None = None, *, source: str = "auto", download: bool | None = None
) -> dict[str, DigitPool]:
    """The digits of the ``train`` composites (also ``valid``) and of the ``test`` composites.

    Args:
        data_dir: folder with ``mnist/`` idx files; default :func:`cdraw.data.default_data_dir`.
        source: ``mnist-train`` (train part for training, t10k for tests), ``t10k-split`` (t10k
            alone, split 8,000 / 2,000 by a fixed permutation) or ``auto`` (see :func:`resolve_source`).
        download: fetch missing files; default: unless ``CDRAW_OFFLINE=1``.
    """
    source = resolve_source(source, data_dir, download=download)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    images, labels = load_labelled("mnist", "t10k", folder, download=download)
    if source == "mnist-train":
        train_images, train_labels = load_labelled("mnist", "train", folder, download=download)
        return {
            "train": DigitPool(
                train_images, train_labels, torch.arange(len(train_images)), DigitSource("train").words()
            ),
            "test": DigitPool(images, labels, torch.arange(len(images)), DigitSource("t10k").words()),
        }
    train, test = t10k_split()
    where = lambda i, part: DigitSource("t10k", i, len(part), T10K_SPLIT_SEED).words()
    return {
        "train": DigitPool(images[train], labels[train], train, where(0, train)),
        "test": DigitPool(images[test], labels[test], test, where(1, test)),
    }


@dataclass
class MnistCaptions:
    """One split of MNIST with captions, in memory."""

    images: Tensor  # (N, 1, 60, 60) uint8 0/1
    captions: list[str]
    templates: Tensor  # (N,) int64: index into TEMPLATES
    digits: Tensor  # (N, 2) int64: the caption's digits in order, -1 for the second of a one-digit caption
    corners: Tensor  # (N, 2, 2) int64: (row, column) of each digit's top left corner, -1 where none
    sources: Tensor  # (N, 2) int64: each digit's position in its source file, -1 where none

    def __len__(self) -> int:
        return len(self.captions)

    def layouts(self) -> list[Caption]:
        """What each image shows, as a template caption (a paraphrase's template and digits)."""
        return [
            Caption(t, tuple(d for d in row if d != NONE))
            for t, row in zip(self.templates.tolist(), self.digits.tolist(), strict=True)
        ]


def paste_digits(canvas: np.ndarray, at: np.ndarray, digits: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """Draw ``digits`` (K, h, w) into ``canvas`` (B, H, W) in place, digit k into image ``at[k]`` (no
    image twice in one call) with its top left corner at (``top[k]``, ``left[k]``); ink already there
    stays (the pixel-wise maximum)."""
    _, h, w = digits.shape
    ys = top[:, None] + np.arange(h)  # (K, h)
    xs = left[:, None] + np.arange(w)  # (K, w)
    where = at[:, None, None], ys[:, :, None], xs[:, None, :]
    canvas[where] = np.maximum(canvas[where], digits)


def _pick_with_labels(labels: np.ndarray, wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each wanted label, the position of a uniformly chosen pool digit with that label."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=10)  # (10,)
    if (counts[wanted] == 0).any():
        raise CDrawError(f"the source digits have no {sorted(set(wanted[counts[wanted] == 0].tolist()))}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order[starts[wanted] + (rng.random(len(wanted)) * counts[wanted]).astype(np.int64)]


_SLOT_LOW = np.array([[rows[0], cols[0]] for rows, cols in SLOTS.values()])  # (8 slots, (row, column))
_SLOT_SPAN = np.array([[rows[1] - rows[0], cols[1] - cols[0]] for rows, cols in SLOTS.values()])
_TEMPLATE_SLOT_INDEX = np.array([[SLOT_NAMES.index(s) for s in (slots * 2)[:2]] for slots in TEMPLATE_SLOTS])


def draw_corners(templates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) templates -> (n, 2, 2) top left corners (row, column) of their digits, uniform in their
    slots; a side-by-side pair shares its row, a pair one above the other its column. The second
    digit of a one-digit template gets a corner too (unused)."""
    slot = _TEMPLATE_SLOT_INDEX[templates]  # (n, 2)
    corners = _SLOT_LOW[slot] + (rng.random((*slot.shape, 2)) * (_SLOT_SPAN[slot] + 1)).astype(np.int64)
    side = np.isin(templates, SIDE_BY_SIDE)
    corners[side, 1, 0] = corners[side, 0, 0]  # one row
    above = (templates >= len(ONE_DIGIT_TEMPLATES)) & ~side
    corners[above, 1, 1] = corners[above, 0, 1]  # one column
    return corners


def compose(
    pool: DigitPool, combos: Iterable[Caption], n: int, rng: np.random.Generator, *, paraphrase: bool = False
) -> MnistCaptions:
    """``n`` composites whose captions are drawn from ``combos``: one digit with probability
    ONE_DIGIT_SHARE (when both kinds are allowed), then a combo of that kind uniformly, a random real
    digit of each label and corners uniform in their slots (:func:`draw_corners`). With
    ``paraphrase`` each caption is one of the template's :data:`PARAPHRASES`, chosen uniformly.
    """
    combos = sorted(combos)
    if n and not combos:
        raise CDrawError("no combos to draw from: ask for 0 examples")
    is_single = np.array([c.template in ONE_DIGIT_TEMPLATES for c in combos], dtype=bool)
    n_one, n_two = int(is_single.sum()), int((~is_single).sum())
    order = np.concatenate([np.flatnonzero(is_single), np.flatnonzero(~is_single)])  # one-digit combos first
    template = np.array([c.template for c in combos], dtype=np.int64)
    first = np.array([c.digits[0] for c in combos], dtype=np.int64)
    second = np.array([c.digits[-1] for c in combos], dtype=np.int64)

    share = ONE_DIGIT_SHARE if n_one and n_two else float(n_one > 0)
    single = rng.random(n) < share  # (n,)
    within = (rng.random(n) * np.where(single, n_one, n_two)).astype(np.int64)
    pick = order[np.where(single, 0, n_one) + within]  # (n,) index into combos
    t, a, b = template[pick], first[pick], second[pick]
    corners = draw_corners(t, rng)  # (n, 2, 2)
    labels = pool.labels.numpy()
    src = np.stack([_pick_with_labels(labels, a, rng), _pick_with_labels(labels, b, rng)], 1)  # (n, 2)
    pair = np.flatnonzero(~single)

    binary = binarize(pool.images[:, 0]).numpy()  # (M, 28, 28) 0/1
    canvas = np.zeros((n, CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)  # (n, 60, 60)
    rows = np.arange(n)
    paste_digits(canvas, rows, binary[src[:, 0]], corners[:, 0, 0], corners[:, 0, 1])
    paste_digits(canvas, pair, binary[src[pair, 1]], corners[pair, 1, 0], corners[pair, 1, 1])

    digits = np.stack([a, np.where(single, NONE, b)], 1)  # (n, 2)
    corners[single, 1] = NONE
    index = pool.index.numpy()
    sources = np.where(digits == NONE, NONE, index[src])  # (n, 2)
    wording = (rng.random(n) * len(PARAPHRASES[0])).astype(np.int64) if paraphrase else None
    captions = [
        (PARAPHRASES[ti][wording[i]] if paraphrase else TEMPLATES[ti]).format(*([ai] if s else [ai, bi]))
        for i, (ti, ai, bi, s) in enumerate(zip(t.tolist(), a.tolist(), b.tolist(), single.tolist(), strict=True))
    ]
    return MnistCaptions(
        images=torch.from_numpy(canvas).unsqueeze(1),
        captions=captions,
        templates=torch.from_numpy(t),
        digits=torch.from_numpy(digits),
        corners=torch.from_numpy(corners),
        sources=torch.from_numpy(sources),
    )


def _sizes(sizes: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(DEFAULT_SIZES)
    for split, n in (sizes or {}).items():
        if split not in SPLITS:
            raise CDrawError(f"unknown split {split!r}: choose among {', '.join(SPLITS)}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CDrawError(f"the size of {split} must be a whole number >= 0, got {n!r}")
        out[split] = n
    return out


def split_pool(split: str) -> str:
    """Which source pool a split's digits come from: ``train`` (train, valid) or ``test``."""
    return "train" if split in ("train", "valid") else "test"


def _compose_split(split: str, pool: DigitPool, bans: Bans, n: int, seed: int) -> MnistCaptions:
    seen, heldout = split_combos(bans)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return compose(pool, heldout if split == "test_heldout" else seen, n, rng, paraphrase=split == "test_paraphrase")


def train_composites(pool: DigitPool, bans: Bans, n: int, seed: int, epoch: int) -> MnistCaptions:
    """The ``n`` training composites of ``epoch``: new ones every epoch, the same for the same seed and
    epoch (on every process and after a resume); seen combos only."""
    return compose(pool, split_combos(bans)[0], n, np.random.default_rng([seed, TRAIN_STREAM, epoch]))


def drop_words(captions: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Each caption with each word other than its digits left out with probability ``p``.

    A training-time augmentation: a model that only ever reads the eight templates learns to lean on
    words that merely mark a template ("of the image" is in every one-digit caption and in no other),
    and then misreads a caption worded otherwise; captions with words missing teach it to read each
    word for what it says. The digits always stay (a caption without them says something else)."""
    out = []
    for caption in captions:
        words = caption.split()
        keep = rng.random(len(words)) >= p
        out.append(" ".join(w for w, k in zip(words, keep, strict=True) if k or w.isdigit()))
    return out


def fresh_train_data(
    pool: DigitPool,
    bans: Bans,
    n: int,
    seed: int,
    encode: Callable[[list[str]], Tensor],
    word_dropout: float = 0.0,
) -> FreshEachEpoch:
    """Training data of ``n`` composites made anew every epoch (:func:`train_composites`), their
    captions encoded by ``encode`` (a tokenizer's: captions -> (N, L) ids), each with words dropped
    (:func:`drop_words`, afresh every epoch, the same for the same seed and epoch) when ``word_dropout``."""
    if not 0.0 <= word_dropout < 1.0:
        raise CDrawError(f"word dropout must be in [0, 1), got {word_dropout}")

    def make(epoch: int) -> tuple[Tensor, Tensor]:
        data = train_composites(pool, bans, n, seed, epoch)
        captions = data.captions
        if word_dropout:
            captions = drop_words(captions, word_dropout, np.random.default_rng([seed, WORD_DROPOUT_STREAM, epoch]))
        texts = sorted(set(captions))  # each distinct caption encoded once
        row = {text: i for i, text in enumerate(texts)}
        return data.images, encode(texts)[torch.tensor([row[c] for c in captions])]  # (n, L)

    return FreshEachEpoch(make)


def generate_mnist_captions(
    data_dir: str | os.PathLike | None = None,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    source: str = "auto",
    download: bool | None = None,
) -> tuple[dict[str, MnistCaptions], dict]:
    """Every split in memory (``train``: the composites of epoch 0), and the metadata that
    :func:`make_mnist_captions` writes next to them.

    Args:
        data_dir: folder with the MNIST idx files (``mnist/``); see :func:`source_pools`.
        sizes: examples per split, e.g. ``{"train": 1000}``; the others keep DEFAULT_SIZES.
        seed: seeds the bans and every split (each split its own stream, so changing one split's
            size leaves the others as they were).
        source: where source digits come from: ``auto``, ``mnist-train`` or ``t10k-split``.
        download: fetch missing MNIST files; default: unless ``CDRAW_OFFLINE=1``.
    """
    sizes = _sizes(sizes)
    bans = choose_bans(seed)
    source = resolve_source(source, data_dir, download=download)
    pools = source_pools(data_dir, source=source, download=download)
    splits = {
        split: train_composites(pools["train"], bans, sizes[split], seed, 0)
        if split == "train"
        else _compose_split(split, pools[split_pool(split)], bans, sizes[split], seed)
        for split in SPLITS
    }
    seen, heldout = split_combos(bans)
    metadata = {
        "format": FORMAT,
        "seed": seed,
        "sizes": sizes,
        "source_kind": source,
        "source": {split: pools[split_pool(split)].source for split in SPLITS},
        "bans": [list(b) for b in bans],
        "bans_read": [
            f"never {' first, never '.join(map(str, b))} second in: {TEMPLATES[t].format(*('_' * len(b)))}"
            if len(b) == 2
            else f"never {b[0]} in: {TEMPLATES[t].format('_')}"
            for t, b in enumerate(bans)
        ],
        "heldout_captions": [c.text() for c in heldout],
        "seen_combos": len(seen),
        "templates": list(TEMPLATES),
        "template_slots": [list(s) for s in TEMPLATE_SLOTS],
        "slots": {name: {"rows": list(r), "columns": list(c)} for name, (r, c) in SLOTS.items()},
        "paraphrases": [list(p) for p in PARAPHRASES],
        "canvas_size": CANVAS_SIZE,
        "one_digit_share": ONE_DIGIT_SHARE,
        "binarize_threshold": BINARIZE_THRESHOLD,
        "train": "composed afresh every epoch from the source digits (cdraw.mnist_captions.train_composites)",
        "columns": {
            "image": f"{CANVAS_SIZE * CANVAS_SIZE} bytes, row-major {CANVAS_SIZE}x{CANVAS_SIZE}, values 0/1",
            "caption": "text from one of the templates (test_paraphrase: from its paraphrases)",
            "template": "index into templates",
            "digits": "the caption's digits in order, -1 for the second of a one-digit caption",
            "corners": "(row, column) of each digit's top left corner, -1 where none",
            "sources": "each digit's position in its source file, -1 where none",
        },
    }
    return splits, metadata


def _to_table(data: MnistCaptions):
    import pyarrow as pa

    images = data.images.numpy().reshape(len(data), -1)  # (N, 3600)
    return pa.table(
        {
            "image": pa.array([row.tobytes() for row in images], pa.binary()),
            "caption": pa.array(data.captions, pa.string()),
            "template": pa.array(data.templates.numpy().astype(np.int8)),
            "digits": pa.array(data.digits.tolist(), pa.list_(pa.int8())),
            "corners": pa.array(data.corners.reshape(len(data), 4).tolist(), pa.list_(pa.int8())),
            "sources": pa.array(data.sources.tolist(), pa.list_(pa.int32())),
        }
    )


def make_mnist_captions(
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    source: str = "auto",
    download: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``out/<split>.parquet`` for the evaluation splits and ``out/metadata.json``; return the
    metadata. Training composites are not written: they are composed afresh every epoch (see
    :func:`cdraw.datasets.mnist_captions.load_train_pool`), and ``sizes["train"]`` is the size of an epoch.

    Refuses a non-empty ``out`` unless ``overwrite``. Everything is generated before anything is
    written, and each file is written to a temporary name and renamed. Other arguments: see
    :func:`generate_mnist_captions`.
    """
    import pyarrow.parquet as pq

    out = Path(out).expanduser()
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CDrawError(f"{out} is not empty: choose another output folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise CDrawError(f"{out} is a file, not a folder")
    splits, metadata = generate_mnist_captions(
        data_dir, sizes={**(sizes or {}), "train": 0}, seed=seed, source=source, download=download
    )
    metadata["sizes"]["train"] = _sizes(sizes)["train"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split in EVAL_SPLITS:
            table = _to_table(splits[split])
            atomic_write(out / f"{split}.parquet", lambda tmp, table=table: pq.write_table(table, tmp))
        text = json.dumps(metadata, indent=2)
        atomic_write(out / METADATA_NAME, lambda tmp: Path(tmp).write_text(text))
    except OSError as e:
        raise CDrawError(f"cannot write into {out}: {e.strerror or e}") from None
    return metadata
