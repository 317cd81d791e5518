"""Binarized MNIST (Larochelle & Murray 2011): the 50k/10k/10k split of DRAW's likelihood table.

Where the files come from, in order:
1. ``data_dir`` given by the caller (``--data-dir``), else the ``CDRAW_DATA_DIR`` environment
   variable, else ``~/.cache/cdraw/data``;
2. inside it, ``binarized_mnist/binarized_mnist_{split}.amat[.gz]`` or the same names at its top;
3. when absent and downloads are allowed, the standard files are fetched into that folder.

Parsing 50,000 lines of text takes seconds, so the parsed split is cached as a ``.npy`` of uint8
under ``CDRAW_CACHE_DIR`` (default ``~/.cache/cdraw``), keyed by the source file's path, size and
modification time; the data folder itself may be read-only.

We use a plain in-memory tensor, not HF ``datasets``: the whole training split is 39 MB of uint8,
which fits on any device, so a batch is one index into a tensor (no workers, no collation, no
Arrow files), and sharding across processes is an index computation we control and test.

Labelled MNIST and Fashion-MNIST (:func:`load_labelled`) come from the standard idx files, found
the same way in ``data_dir/mnist/`` or ``data_dir/fashion-mnist/`` (or ``data_dir`` itself). They
are binary already, so they parse in a fraction of a second and are not cached.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cdraw.errors import CDrawError

SPLITS = ("train", "valid", "test")
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
PIXELS = 28 * 28
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
SUBDIR = "binarized_mnist"
DOWNLOAD_TIMEOUT_S = 60

# Labelled idx datasets: where each one's files come from and how many images each part has.
LABELLED_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/{file}",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{file}",
}
LABELLED_SIZES = {"train": 60_000, "t10k": 10_000}
IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one these datasets use
BINARIZE_THRESHOLD = 128  # a grey level >= this (out of 255) becomes 1


def default_data_dir() -> Path:
    """``CDRAW_DATA_DIR`` if set, else ``~/.cache/cdraw/data``."""
    env = os.environ.get("CDRAW_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/cdraw/data").expanduser()


def cache_dir() -> Path:
    """Where parsed datasets are cached: ``CDRAW_CACHE_DIR``, else ``~/.cache/cdraw``."""
    return Path(os.environ.get("CDRAW_CACHE_DIR", "~/.cache/cdraw")).expanduser()


def downloads_allowed() -> bool:
    """False when ``CDRAW_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (1, true, yes or on, as Hugging Face reads it)."""
    return not offline_variables()


def offline_variables() -> list[str]:
    """The variables that keep cdraw offline (``CDRAW_OFFLINE=1``, ...), as set."""
    names = ("CDRAW_OFFLINE", "HF_HUB_OFFLINE")
    return [f"{v}={os.environ[v]}" for v in names if os.environ.get(v, "").strip().upper() in OFFLINE_VALUES]


def why_not_downloading(download: bool | None) -> str | None:
    """None when missing files may be downloaded (``download``; None: unless offline), else why not, as
    the end of the error that says they are missing."""
    if download is None:
        offline = offline_variables()
        verb = "is" if len(offline) == 1 else "are"
        return f"; not downloaded, as {' and '.join(offline)} {verb} set" if offline else None
    return None if download else "; downloading was turned off"


OFFLINE_VALUES = ("1", "TRUE", "YES", "ON")


def find_data_file(data_dir: Path, subdir: str, name: str) -> Path | None:
    """``name`` or ``name.gz`` (either way round) in ``data_dir/<subdir>/``, else at ``data_dir``'s top."""
    plain = name.removesuffix(".gz")
    for folder in (data_dir / subdir, data_dir):
        for candidate in (name, plain, plain + ".gz"):
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def find_split_file(split: str, data_dir: Path) -> Path | None:
    """The split's file inside ``data_dir`` (its ``binarized_mnist/`` subfolder or its top)."""
    return find_data_file(data_dir, SUBDIR, f"binarized_mnist_{split}.amat")


def parse_amat(raw: bytes) -> np.ndarray:
    """Text of 0/1 values, 784 per line -> (N, 784) uint8. Vectorised: one pass over the bytes."""
    codes = np.frombuffer(raw, dtype=np.uint8)
    digits = codes[(codes == ord("0")) | (codes == ord("1"))] - ord("0")
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
    if digits.size != lines * PIXELS:
        raise CDrawError(
            f"not a binarized MNIST .amat file: {digits.size} binary values on {lines} lines "
            f"(expected {PIXELS} per line)"
        )
    return digits.reshape(lines, PIXELS)


def _download(url: str, target: Path, hint: str) -> Path:
    """Fetch ``url`` into ``target`` through a temporary name; a failure is a CDrawError ending in ``hint``."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")  # several processes may download at once
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise CDrawError(f"could not download {url} ({e}); {hint}") from None
    return target


def download_split(split: str, data_dir: Path) -> Path:
    """Fetch one split's standard file into ``data_dir/binarized_mnist/``; clear error offline."""
    target = data_dir / SUBDIR / f"binarized_mnist_{split}.amat"
    return _download(URL.format(split=split), target, _where_to_put(data_dir))


def _where_to_put(data_dir: Path) -> str:
    return (
        f"put binarized_mnist_{{train,valid,test}}.amat[.gz] in {data_dir / SUBDIR} "
        f"(from {URL.format(split='{train,valid,test}')}), "
        f"or point --data-dir / CDRAW_DATA_DIR at a folder that has them"
    )


def load_binarized_mnist(
    split: str, data_dir: str | os.PathLike | None = None, *, download: bool | None = None
) -> torch.Tensor:
    """One split of binarized MNIST as a (N, 1, 28, 28) uint8 tensor of 0/1.

    Args:
        split: ``train`` (50k), ``valid`` (10k) or ``test`` (10k).
        data_dir: folder holding the files; default :func:`default_data_dir`.
        download: fetch missing files; default: unless ``CDRAW_OFFLINE=1``/``HF_HUB_OFFLINE=1``.
    """
    if split not in SPLITS:
        raise CDrawError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    source = find_split_file(split, data_dir)
    if source is None:
        if (why := why_not_downloading(download)) is not None:
            raise CDrawError(f"binarized MNIST '{split}' split not found in {data_dir}: {_where_to_put(data_dir)}{why}")
        source = download_split(split, data_dir)

    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / "binarized_mnist" / f"{split}-{key}.npy"
    if cached.is_file():
        array = np.load(cached)
    else:
        opener = gzip.open if source.suffix == ".gz" else open
        try:
            with opener(source, "rb") as f:
                array = parse_amat(f.read())
        except (OSError, EOFError, zlib.error) as e:
            raise CDrawError(f"could not read {source} ({e}); the file may be truncated: fetch it again") from None
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npy")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp, array)
            os.replace(tmp, cached)
        except OSError as e:  # the cache only saves time: go on without it
            tmp.unlink(missing_ok=True)
            warnings.warn(f"could not cache parsed data in {cached.parent} ({e}); set CDRAW_CACHE_DIR", stacklevel=2)
    if len(array) != SPLIT_SIZES[split]:
        raise CDrawError(f"{source} has {len(array)} images; the standard '{split}' split has {SPLIT_SIZES[split]}")
    return torch.from_numpy(array).view(-1, 1, 28, 28)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (``.gz`` or plain) of unsigned bytes as an array of its shape.

    The format: two zero bytes, a type code (0x08 for unsigned bytes), the number of dimensions,
    one big-endian int32 size per dimension, then the values in row-major order. MNIST images are
    (N, 28, 28) uint8 and labels (N,) uint8. A truncated or corrupt file is a :class:`CDrawError`.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise CDrawError(f"could not read {path} ({e}); the file may be truncated: fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CDrawError(f"{path} is not an idx file (bad magic number {raw[:4].hex() or 'none'}): fetch it again")
    if raw[2] != IDX_UBYTE:
        raise CDrawError(f"{path} holds idx type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CDrawError(f"{path} has a truncated idx header ({len(raw)} bytes): fetch it again")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise CDrawError(
            f"{path} is truncated or corrupt: its header says {'x'.join(map(str, shape))} values, "
            f"it holds {len(raw) - header}: fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def labelled_files(part: str) -> tuple[str, str]:
    """The standard (images, labels) file names of one part (``train`` or ``t10k``), gzipped."""
    return f"{part}-images-idx3-ubyte.gz", f"{part}-labels-idx1-ubyte.gz"


def find_labelled_file(dataset: str, name: str, data_dir: Path) -> Path | None:
    """``name`` (or its un-gzipped twin) in ``data_dir/<dataset>/`` or ``data_dir``."""
    return find_data_file(data_dir, dataset, name)


def _check_labelled_args(dataset: str, part: str) -> None:
    if dataset not in LABELLED_URLS:
        raise CDrawError(f"unknown dataset {dataset!r}: choose one of {', '.join(LABELLED_URLS)}")
    if part not in LABELLED_SIZES:
        raise CDrawError(f"unknown part {part!r} of {dataset}: choose one of {', '.join(LABELLED_SIZES)}")


def load_labelled(
    dataset: str, part: str, data_dir: str | os.PathLike | None = None, *, download: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled MNIST or Fashion-MNIST: images (N, 1, 28, 28) uint8 0..255 and labels (N,) int64.

    Args:
        dataset: ``mnist`` or ``fashion-mnist``.
        part: ``train`` (60k) or ``t10k`` (10k), the names of the standard files.
        data_dir: folder holding ``<dataset>/`` (or the files at its top); default :func:`default_data_dir`.
        download: fetch missing files; default: unless ``CDRAW_OFFLINE=1``/``HF_HUB_OFFLINE=1``.
    """
    _check_labelled_args(dataset, part)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder, url = data_dir / dataset, LABELLED_URLS[dataset]
    names = labelled_files(part)
    paths = [find_labelled_file(dataset, name, data_dir) for name in names]
    missing = [name for name, path in zip(names, paths, strict=True) if path is None]
    if missing:
        hint = (
            f"put {' and '.join(missing)} in {folder} (from {url.format(file='')}), "
            f"or point --data-dir / CDRAW_DATA_DIR at a folder that has them"
        )
        if (why := why_not_downloading(download)) is not None:
            raise CDrawError(f"{dataset} '{part}' files not found in {data_dir}: {hint}{why}")
        paths = [
            path or _download(url.format(file=name), folder / name, hint)
            for name, path in zip(names, paths, strict=True)
        ]
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise CDrawError(f"{paths[0]} holds {images.shape} values, not 28 x 28 images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise CDrawError(f"{paths[1]} holds {labels.shape} labels for {len(images)} images in {paths[0]}")
    if len(images) != LABELLED_SIZES[part]:
        raise CDrawError(f"{paths[0]} has {len(images)} images; the standard '{part}' part has {LABELLED_SIZES[part]}")
    if labels.max(initial=0) > 9:
        raise CDrawError(f"{paths[1]} has label {labels.max()}; {dataset} labels are 0..9")
    images = torch.from_numpy(images.copy()).view(-1, 1, 28, 28)  # copy: frombuffer arrays are read-only
    return images, torch.from_numpy(labels.astype(np.int64))


def binarize(images: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels 0..255 -> uint8 0/1: 1 where the level is >= :data:`BINARIZE_THRESHOLD`."""
    if images.dtype != torch.uint8:
        raise CDrawError(f"binarize expects uint8 grey levels 0..255, got {images.dtype}")
    return (images >= BINARIZE_THRESHOLD).to(torch.uint8)


def shard_batches(
    n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[torch.Tensor]:
    """This process's batches of one epoch: a seeded shuffle cut into ``world_size`` disjoint shards.

    Every process draws the same permutation (seed + epoch), takes its own ``batch_size`` slice of
    each global batch of ``batch_size * world_size`` and drops the incomplete last global batch, so
    all processes run the same number of steps and never see the same example in one epoch.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    global_batch = batch_size * world_size
    starts = range(rank * batch_size, (n // global_batch) * global_batch, global_batch)
    return [perm[s : s + batch_size] for s in starts]


class ImageData:
    """Images kept whole in memory as uint8, turned into floats in [0, 1] one batch at a time.

    An example is an image and, for a conditional model, its condition (a label, or a caption's
    token ids). Several examples may share one image (COCO has five captions per image): then
    ``image_index`` says which image each example shows, and no image is copied.

    Args:
        images: (N, C, H, W) uint8 with values 0..levels-1.
        levels: number of intensity levels: 2 for binary images, 256 for 8-bit ones.
        conditions: (M,) or (M, L) int64, one per example (from the model's tokenizer), or None.
        image_index: (M,) int64, the image of each example; None: example i is image i.
    """

    def __init__(
        self,
        images: torch.Tensor,
        levels: int = 2,
        conditions: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise CDrawError(f"images must be a (N, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        n = len(image_index) if image_index is not None else len(images)
        if conditions is not None and len(conditions) != n:
            raise CDrawError(f"{len(conditions)} conditions for {n} examples")
        self.images, self.levels, self.conditions, self.image_index = images, levels, conditions, image_index

    def __len__(self) -> int:
        return len(self.image_index) if self.image_index is not None else len(self.images)

    def to(self, device: torch.device | str) -> ImageData:
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return ImageData(self.images.to(device), self.levels, move(self.conditions), move(self.image_index))

    def select(self, index: torch.Tensor | slice) -> ImageData:
        """The examples at ``index`` (their images are shared, not copied)."""
        image_index = self.image_index if self.image_index is not None else torch.arange(len(self.images))
        conditions = self.conditions[index] if self.conditions is not None else None
        return ImageData(self.images, self.levels, conditions, image_index.to(self.images.device)[index])

    def mean_image(self) -> torch.Tensor:
        """(C, H, W) the mean of every image, in [0, 1] (what training starts the canvas at)."""
        return (self.images.sum(0, dtype=torch.float64) / (len(self.images) * (self.levels - 1))).float()

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """(B, C, H, W) floats in [0, 1] for the examples at ``index``."""
        rows = self.image_index[index] if self.image_index is not None else index
        return self.images[rows].float() / (self.levels - 1)

    def condition(self, index: torch.Tensor | slice) -> torch.Tensor | None:
        """(B,) or (B, L) conditions of the examples at ``index``; None for unconditional data."""
        return self.conditions[index] if self.conditions is not None else None


class FreshEachEpoch(ImageData):
    """Examples made anew for every epoch (MNIST with captions composes new images each epoch).

    ``make(epoch)`` returns that epoch's ``(images, conditions)``, always as many, and the same for
    the same epoch (on every process and after a resume). The trainer calls :meth:`set_epoch` at the
    start of every epoch, as with PyTorch's ``DistributedSampler.set_epoch``.
    """

    def __init__(
        self,
        make: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]],
        levels: int = 2,
        device: torch.device | str | None = None,
        epoch: int = 0,
    ):
        self.make, self.device, self.levels = make, device, levels
        self.epoch: int | None = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return  # this epoch's examples are already here
        images, conditions = self.make(epoch)
        move = lambda t: t.to(self.device) if t is not None and self.device is not None else t  # noqa: E731
        size = len(self) if hasattr(self, "images") else None
        super().__init__(move(images), self.levels, move(conditions))
        if size is not None and len(self) != size:
            raise CDrawError(f"epoch {epoch} has {len(self)} examples, not {size} as before")
        self.epoch = epoch

    def to(self, device: torch.device | str) -> FreshEachEpoch:
        """The same epoch's examples on ``device`` (moved, not made again); later epochs are made there."""
        moved = copy.copy(self)
        moved.device = device
        ImageData.__init__(
            moved, self.images.to(device), self.levels, None if self.conditions is None else self.conditions.to(device)
        )
        return moved
