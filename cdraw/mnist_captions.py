"""alignDRAW's "MNIST with captions" (Mansimov et al. 2016, section 5.1), in our documented form.

A 60 x 60 binary canvas is a 2 x 2 grid of 30 x 30 cells (order: top left, top right, bottom left,
bottom right). Each 28 x 28 binarized MNIST digit goes inside one cell, shifted by 0..2 pixels in
each direction, so digits never overlap. An example holds one digit or two:

    the digit 3 is at the top left of the image        (one digit, in that cell)
    the digit 3 is on the left of the digit 5          (same row, chosen at random)
    the digit 3 is at the top of the digit 5           (same column, chosen at random)

and likewise "top right", "bottom left", "bottom right", "on the right of", "at the bottom of":
8 templates. A *combo* is a caption (template + digits); the position of a two-digit pair within
its row or column is not part of it. A seeded ~10% of the 40 one-digit and of the 400 two-digit
combos is held out: never in ``train``, ``valid`` or ``test_seen``, and the only combos of
``test_heldout``, so a model can be asked to draw captions it never saw.

Source digits: ``train`` and ``valid`` composites use the MNIST training set and the test
composites MNIST t10k. Where only t10k is at hand (offline), its digits are split by a fixed
seeded permutation (8,000 / 2,000) so train and test composites never share a digit; the
dataset's ``metadata.json`` says which source was used.

On disk, :func:`make_mnist_captions` writes one parquet file per split (loadable with
``datasets.load_dataset("parquet", data_files=...)``) and ``metadata.json``; columns:

    image     binary  3,600 bytes: the 60 x 60 canvas, row-major, values 0/1
    caption   string
    cells     list of 4 int8: the digit in each cell, -1 where empty
    template  int8: index into TEMPLATES
    sources   list of 4 int32: each cell's digit's position in its source file, -1 where empty
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from cdraw.data import (
    BINARIZE_THRESHOLD,
    binarize,
    default_data_dir,
    downloads_allowed,
    find_labelled_file,
    labelled_files,
    load_labelled,
)
from cdraw.errors import CDrawError
from cdraw.io import atomic_write

CANVAS_SIZE = 60
CELL_SIZE = 30
DIGIT_SIZE = 28
MAX_OFFSET = CELL_SIZE - DIGIT_SIZE  # a digit sits 0..2 pixels from its cell's top left corner
GRID = CANVAS_SIZE // CELL_SIZE  # 2 x 2 cells
EMPTY = -1  # a cell with no digit, in `cells` and `sources`
CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")  # cell i is at row i // 2, column i % 2
RELATIONS = ("left", "right", "top", "bottom")
TEMPLATES = (
    "the digit {} is at the top left of the image",
    "the digit {} is at the top right of the image",
    "the digit {} is at the bottom left of the image",
    "the digit {} is at the bottom right of the image",
    "the digit {} is on the left of the digit {}",
    "the digit {} is on the right of the digit {}",
    "the digit {} is at the top of the digit {}",
    "the digit {} is at the bottom of the digit {}",
)
ONE_DIGIT_TEMPLATES = range(4)  # template t puts its digit in cell t
# PAIR_CELLS[relation][line] = (cell of a, cell of b); line is the row (left/right) or column (top/bottom).
PAIR_CELLS = np.array(
    [
        [[0, 1], [2, 3]],  # a on the left of b
        [[1, 0], [3, 2]],  # a on the right of b
        [[0, 2], [1, 3]],  # a at the top of b
        [[2, 0], [3, 1]],  # a at the bottom of b
    ]
)
SPLITS = ("train", "valid", "test_seen", "test_heldout")
DEFAULT_SIZES = {"train": 40_000, "valid": 2_000, "test_seen": 2_000, "test_heldout": 2_000}
ONE_DIGIT_SHARE = 0.5  # share of examples with one digit; the rest have two
HELDOUT_FRACTION = 0.1
HELDOUT_STREAM = 1_000  # the random stream of the held-out choice; split i uses stream i
MAX_HELDOUT_TRIES = 1_000
SOURCES = ("auto", "mnist-train", "t10k-split")
T10K_SPLIT_SEED = 0  # fixed, not the dataset seed: the shipped classifier is trained on the same part
T10K_TRAIN_DIGITS = 8_000  # of the 10,000 t10k digits, the first 8,000 of the permutation feed train/valid
SUBDIR = "mnist_captions"  # its folder inside a data folder
METADATA_NAME = "metadata.json"
FORMAT = "cdraw-mnist-captions-1"
MAKE_COMMAND = "python data_scripts/make_mnist_captions.py --out {folder}"


class Caption(NamedTuple):
    """A caption as its template index and its digits: (d,) for one digit, (a, b) for two."""

    template: int
    digits: tuple[int, ...]

    def text(self) -> str:
        return TEMPLATES[self.template].format(*self.digits)


_PATTERNS = [re.compile(re.escape(t).replace(r"\{\}", r"(\d)") + r"\Z") for t in TEMPLATES]


def parse_caption(caption: str) -> Caption | None:
    """The template and digits of a caption; None for text outside the 8 templates.

    Case and runs of white space do not matter: ``"The digit 3  is at the top of the digit 5"``
    parses to ``Caption(6, (3, 5))``.
    """
    text = " ".join(caption.lower().split())
    for template, pattern in enumerate(_PATTERNS):
        m = pattern.match(text)
        if m:
            return Caption(template, tuple(int(d) for d in m.groups()))
    return None


def cells_matching(caption: str | Caption) -> list[tuple[int, int, int, int]]:
    """Every assignment of digits to the 4 cells (order of CELL_NAMES, -1 empty) that fits a caption.

    One cell assignment for a one-digit caption, two for a pair (either row, or either column).
    A caption outside the templates is a :class:`CDrawError`.
    """
    parsed = parse_caption(caption) if isinstance(caption, str) else caption
    if parsed is None:
        raise CDrawError(f"caption {caption!r} fits none of the templates: {'; '.join(TEMPLATES)}")
    if parsed.template in ONE_DIGIT_TEMPLATES:
        cells = [EMPTY] * 4
        cells[parsed.template] = parsed.digits[0]
        return [tuple(cells)]
    out = []
    for cell_a, cell_b in PAIR_CELLS[parsed.template - len(ONE_DIGIT_TEMPLATES)].tolist():
        cells = [EMPTY] * 4
        cells[cell_a], cells[cell_b] = parsed.digits
        out.append(tuple(cells))
    return out


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


def _covers(seen: Iterable[Caption]) -> bool:
    """Training still has every template, every digit alone, and every digit as a and as b of every relation."""
    seen = list(seen)
    if {c.template for c in seen} != set(range(len(TEMPLATES))):
        return False
    if {c.digits[0] for c in seen if c.template in ONE_DIGIT_TEMPLATES} != set(range(10)):
        return False
    for t in range(len(ONE_DIGIT_TEMPLATES), len(TEMPLATES)):
        for position in (0, 1):
            if {c.digits[position] for c in seen if c.template == t} != set(range(10)):
                return False
    return True


def mirror(caption: Caption) -> Caption:
    """The other caption of the same layout: "a on the left of b" <-> "b on the right of a", and
    "a at the top of b" <-> "b at the bottom of a". A one-digit caption is its own mirror."""
    if caption.template in ONE_DIGIT_TEMPLATES:
        return caption
    first = len(ONE_DIGIT_TEMPLATES)
    return Caption(first + ((caption.template - first) ^ 1), caption.digits[::-1])


def choose_heldout(seed: int, fraction: float = HELDOUT_FRACTION) -> frozenset[Caption]:
    """A seeded ``fraction`` of the one-digit combos and of the two-digit layouts, kept out of training.

    A two-digit layout is held out with both its captions (see :func:`mirror`), so no held-out
    image layout is ever seen in training under the other wording. Drawn again (from the same
    seeded stream) until training keeps every template and every digit in every role (see
    ``_covers``), so held-out combos test new *combinations*, not new words.
    """
    if not 0 <= fraction < 1:
        raise CDrawError(f"the held-out fraction must be in [0, 1), got {fraction}")
    combos = all_combos()
    one = [c for c in combos if c.template in ONE_DIGIT_TEMPLATES]
    layouts = sorted({min(c, mirror(c)) for c in combos if c.template not in ONE_DIGIT_TEMPLATES})
    rng = np.random.default_rng([seed, HELDOUT_STREAM])
    for _ in range(MAX_HELDOUT_TRIES):
        held = [one[i] for i in rng.choice(len(one), round(fraction * len(one)), replace=False)]
        for i in rng.choice(len(layouts), round(fraction * len(layouts)), replace=False):
            held += [layouts[i], mirror(layouts[i])]
        if _covers(set(combos) - set(held)):
            return frozenset(held)
    raise CDrawError(f"cannot hold out {fraction:.0%} of the combos and keep every digit and template in training")


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


def source_pools(
    data_dir: str | os.PathLike | None = None, *, source: str = "auto", download: bool | None = None
) -> dict[str, DigitPool]:
    """The digits of the ``train`` composites (also ``valid``) and of the ``test`` composites.

    Args:
        data_dir: folder with ``mnist/`` idx files; default :func:`cdraw.data.default_data_dir`.
        source: ``mnist-train`` (train part for training, t10k for tests), ``t10k-split`` (t10k
            alone, split 8,000 / 2,000 by a fixed permutation) or ``auto``: ``mnist-train`` when its
            files are there or may be downloaded, else ``t10k-split``.
        download: fetch missing files; default: unless ``CDRAW_OFFLINE=1``.
    """
    if source not in SOURCES:
        raise CDrawError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if source == "auto":
        have_train = all(find_labelled_file("mnist", f, folder) for f in labelled_files("train"))
        can_download = downloads_allowed() if download is None else download
        source = "mnist-train" if have_train or can_download else "t10k-split"
    images, labels = load_labelled("mnist", "t10k", folder, download=download)
    if source == "mnist-train":
        train_images, train_labels = load_labelled("mnist", "train", folder, download=download)
        return {
            "train": DigitPool(train_images, train_labels, torch.arange(len(train_images)), "mnist train"),
            "test": DigitPool(images, labels, torch.arange(len(images)), "mnist t10k"),
        }
    train, test = t10k_split()
    where = lambda i, part: f"mnist t10k: the {len(part)} digits of t10k_split()[{i}] (seed {T10K_SPLIT_SEED})"
    return {
        "train": DigitPool(images[train], labels[train], train, where(0, train)),
        "test": DigitPool(images[test], labels[test], test, where(1, test)),
    }


@dataclass
class MnistCaptions:
    """One split of MNIST with captions, in memory."""

    images: Tensor  # (N, 1, 60, 60) uint8 0/1
    captions: list[str]
    cells: Tensor  # (N, 4) int64: the digit in each cell (order of CELL_NAMES), -1 where empty
    templates: Tensor  # (N,) int64: index into TEMPLATES
    sources: Tensor  # (N, 4) int64: each cell's digit's position in its source file, -1 where empty

    def __len__(self) -> int:
        return len(self.captions)


def paste_digits(canvas: np.ndarray, at: np.ndarray, digits: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """Write ``digits`` (K, h, w) into ``canvas`` (B, H, W) in place, digit k into image ``at[k]`` with its
    top left corner at (``top[k]``, ``left[k]``)."""
    _, h, w = digits.shape
    ys = top[:, None] + np.arange(h)  # (K, h)
    xs = left[:, None] + np.arange(w)  # (K, w)
    canvas[at[:, None, None], ys[:, :, None], xs[:, None, :]] = digits


def _pick_with_labels(labels: np.ndarray, wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each wanted label, the position of a uniformly chosen pool digit with that label."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=10)  # (10,)
    if (counts[wanted] == 0).any():
        raise CDrawError(f"the source digits have no {sorted(set(wanted[counts[wanted] == 0].tolist()))}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order[starts[wanted] + (rng.random(len(wanted)) * counts[wanted]).astype(np.int64)]


def compose(pool: DigitPool, combos: Iterable[Caption], n: int, rng: np.random.Generator) -> MnistCaptions:
    """``n`` composites whose captions are drawn from ``combos``: one digit with probability
    ONE_DIGIT_SHARE (when both kinds are allowed), then a combo of that kind uniformly, a line for a
    pair, a random real digit of each label and a random offset 0..MAX_OFFSET in each direction.
    """
    combos = sorted(combos)
    is_single = np.array([c.template in ONE_DIGIT_TEMPLATES for c in combos], dtype=bool)
    n_one, n_two = int(is_single.sum()), int((~is_single).sum())
    if n and not combos:
        raise CDrawError("no combos to draw from: hold out a smaller fraction or ask for 0 examples")
    order = np.concatenate([np.flatnonzero(is_single), np.flatnonzero(~is_single)])  # one-digit combos first
    template = np.array([c.template for c in combos], dtype=np.int64)
    first = np.array([c.digits[0] for c in combos], dtype=np.int64)
    second = np.array([c.digits[-1] for c in combos], dtype=np.int64)  # == first for one digit, unused

    share = ONE_DIGIT_SHARE if n_one and n_two else float(n_one > 0)
    single = rng.random(n) < share  # (n,)
    within = (rng.random(n) * np.where(single, n_one, n_two)).astype(np.int64)
    pick = order[np.where(single, 0, n_one) + within]  # (n,) index into combos
    t, a, b = template[pick], first[pick], second[pick]
    line = rng.integers(GRID, size=n)  # the row or column of a pair
    offsets = rng.integers(MAX_OFFSET + 1, size=(n, 2, 2))  # (n, digit, (dy, dx))
    labels = pool.labels.numpy()
    src_a, src_b = _pick_with_labels(labels, a, rng), _pick_with_labels(labels, b, rng)

    relation = np.clip(t - len(ONE_DIGIT_TEMPLATES), 0, None)
    cell_a = np.where(single, t, PAIR_CELLS[relation, line, 0])  # (n,)
    cell_b = PAIR_CELLS[relation, line, 1]  # (n,) meaningful where not single
    rows = np.arange(n)
    pair = np.flatnonzero(~single)
    cells = np.full((n, 4), EMPTY, dtype=np.int64)
    sources = np.full((n, 4), EMPTY, dtype=np.int64)
    index = pool.index.numpy()
    cells[rows, cell_a], sources[rows, cell_a] = a, index[src_a]
    cells[pair, cell_b[pair]], sources[pair, cell_b[pair]] = b[pair], index[src_b[pair]]

    binary = binarize(pool.images[:, 0]).numpy()  # (M, 28, 28) 0/1
    canvas = np.zeros((n, CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)  # (n, 60, 60)
    for who, (src, cell) in enumerate(((src_a, cell_a), (src_b, cell_b))):
        keep = rows if who == 0 else pair
        top = cell[keep] // GRID * CELL_SIZE + offsets[keep, who, 0]
        left = cell[keep] % GRID * CELL_SIZE + offsets[keep, who, 1]
        paste_digits(canvas, keep, binary[src[keep]], top, left)
    captions = [
        TEMPLATES[ti].format(ai) if s else TEMPLATES[ti].format(ai, bi)
        for ti, ai, bi, s in zip(t.tolist(), a.tolist(), b.tolist(), single.tolist(), strict=True)
    ]
    return MnistCaptions(
        images=torch.from_numpy(canvas).unsqueeze(1),
        captions=captions,
        cells=torch.from_numpy(cells),
        templates=torch.from_numpy(t),
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


def generate_mnist_captions(
    data_dir: str | os.PathLike | None = None,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    heldout_fraction: float = HELDOUT_FRACTION,
    source: str = "auto",
    download: bool | None = None,
) -> tuple[dict[str, MnistCaptions], dict]:
    """All splits in memory, and the metadata that :func:`make_mnist_captions` writes next to them.

    Args:
        data_dir: folder with the MNIST idx files (``mnist/``); see :func:`source_pools`.
        sizes: examples per split, e.g. ``{"train": 1000}``; the others keep DEFAULT_SIZES.
        seed: seeds the held-out choice and every split (each split its own stream, so changing
            one split's size leaves the others as they were).
        heldout_fraction: share of the one-digit and of the two-digit combos kept out of training.
        source: where source digits come from: ``auto``, ``mnist-train`` or ``t10k-split``.
        download: fetch missing MNIST files; default: unless ``CDRAW_OFFLINE=1``.
    """
    sizes = _sizes(sizes)
    heldout = choose_heldout(seed, heldout_fraction)
    if sizes["test_heldout"] and not heldout:
        raise CDrawError("test_heldout needs held-out combos: use a held-out fraction > 0 or size 0")
    seen = set(all_combos()) - heldout
    pools = source_pools(data_dir, source=source, download=download)
    splits = {}
    for i, split in enumerate(SPLITS):
        pool = pools["train"] if split in ("train", "valid") else pools["test"]
        rng = np.random.default_rng([seed, i])
        splits[split] = compose(pool, heldout if split == "test_heldout" else seen, sizes[split], rng)
    metadata = {
        "format": FORMAT,
        "seed": seed,
        "sizes": sizes,
        "source": {
            split: (pools["train"] if split in ("train", "valid") else pools["test"]).source for split in SPLITS
        },
        "heldout_fraction": heldout_fraction,
        "heldout_captions": [c.text() for c in sorted(heldout)],
        "templates": list(TEMPLATES),
        "cell_order": list(CELL_NAMES),
        "canvas_size": CANVAS_SIZE,
        "cell_size": CELL_SIZE,
        "max_offset": MAX_OFFSET,
        "one_digit_share": ONE_DIGIT_SHARE,
        "binarize_threshold": BINARIZE_THRESHOLD,
        "columns": {
            "image": f"{CANVAS_SIZE * CANVAS_SIZE} bytes, row-major {CANVAS_SIZE}x{CANVAS_SIZE}, values 0/1",
            "caption": "text from one of the templates",
            "cells": "digit in each cell (cell_order), -1 where empty",
            "template": "index into templates",
            "sources": "each cell's digit's position in its source file, -1 where empty",
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
            "cells": pa.array(data.cells.tolist(), pa.list_(pa.int8())),
            "template": pa.array(data.templates.numpy().astype(np.int8)),
            "sources": pa.array(data.sources.tolist(), pa.list_(pa.int32())),
        }
    )


def make_mnist_captions(
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    heldout_fraction: float = HELDOUT_FRACTION,
    source: str = "auto",
    download: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate every split and write ``out/<split>.parquet`` and ``out/metadata.json``; return the metadata.

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
        data_dir, sizes=sizes, seed=seed, heldout_fraction=heldout_fraction, source=source, download=download
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split, data in splits.items():
            table = _to_table(data)
            atomic_write(out / f"{split}.parquet", lambda tmp, table=table: pq.write_table(table, tmp))
        text = json.dumps(metadata, indent=2)
        atomic_write(out / METADATA_NAME, lambda tmp: Path(tmp).write_text(text))
    except OSError as e:
        raise CDrawError(f"cannot write into {out}: {e.strerror or e}") from None
    return metadata


def default_folder() -> Path:
    """Where the dataset lives unless told otherwise: ``<data dir>/mnist_captions``."""
    return default_data_dir() / SUBDIR


def load_mnist_captions(
    split: str, folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None
) -> MnistCaptions:
    """Read one split written by :func:`make_mnist_captions`: from ``folder``, else from
    ``data_dir/mnist_captions``, else from :func:`default_folder`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise CDrawError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if folder is None:
        folder = Path(data_dir) / SUBDIR if data_dir is not None else default_folder()
    folder = Path(folder).expanduser()
    file = folder / f"{split}.parquet"
    if not file.is_file():
        raise CDrawError(
            f"MNIST with captions '{split}' not found in {folder}: make it with `{MAKE_COMMAND.format(folder=folder)}`"
        )
    columns = ["image", "caption", "cells", "template", "sources"]
    try:
        table = pq.read_table(file, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise CDrawError(f"{file} is not a readable MNIST-with-captions file ({e}); make it again") from None
    raw = table.column("image").to_pylist()
    pixels = CANVAS_SIZE * CANVAS_SIZE
    if any(len(r) != pixels for r in raw):
        raise CDrawError(f"{file} has images that are not {pixels} bytes: make it again")
    images = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(-1, 1, CANVAS_SIZE, CANVAS_SIZE)
    return MnistCaptions(
        images=torch.from_numpy(images.copy()),
        captions=table.column("caption").to_pylist(),
        cells=torch.tensor(table.column("cells").to_pylist(), dtype=torch.int64).view(-1, 4),
        templates=torch.tensor(table.column("template").to_pylist(), dtype=torch.int64),
        sources=torch.tensor(table.column("sources").to_pylist(), dtype=torch.int64).view(-1, 4),
    )
