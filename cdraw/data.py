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
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
import warnings
import zlib
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


def default_data_dir() -> Path:
    """``CDRAW_DATA_DIR`` if set, else ``~/.cache/cdraw/data``."""
    env = os.environ.get("CDRAW_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/cdraw/data").expanduser()


def cache_dir() -> Path:
    """Where parsed datasets are cached: ``CDRAW_CACHE_DIR``, else ``~/.cache/cdraw``."""
    return Path(os.environ.get("CDRAW_CACHE_DIR", "~/.cache/cdraw")).expanduser()


def downloads_allowed() -> bool:
    """False when ``CDRAW_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1."""
    return not any(os.environ.get(v, "0") == "1" for v in ("CDRAW_OFFLINE", "HF_HUB_OFFLINE"))


def find_split_file(split: str, data_dir: Path) -> Path | None:
    """The split's file inside ``data_dir`` (its ``binarized_mnist/`` subfolder or its top)."""
    for folder in (data_dir / SUBDIR, data_dir):
        for suffix in (".amat", ".amat.gz"):
            f = folder / f"binarized_mnist_{split}{suffix}"
            if f.is_file():
                return f
    return None


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


def download_split(split: str, data_dir: Path) -> Path:
    """Fetch one split's standard file into ``data_dir/binarized_mnist/``; clear error offline."""
    target = data_dir / SUBDIR / f"binarized_mnist_{split}.amat"
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")  # several processes may download at once
    url = URL.format(split=split)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise CDrawError(f"could not download {url} ({e}); {_where_to_put(data_dir)}") from None
    return target


def _where_to_put(data_dir: Path) -> str:
    return (
        f"put binarized_mnist_{{train,valid,test}}.amat[.gz] in {data_dir / SUBDIR} "
        f"(from {URL.format(split='{train,valid,test}')}, or run "
        f"`python data_scripts/prepare_binarized_mnist.py --data-dir DIR` when online), "
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
        if not (downloads_allowed() if download is None else download):
            raise CDrawError(f"binarized MNIST '{split}' split not found in {data_dir}: {_where_to_put(data_dir)}")
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

    Args:
        images: (N, C, H, W) uint8 with values 0..levels-1.
        levels: number of intensity levels: 2 for binary images, 256 for 8-bit ones.
    """

    def __init__(self, images: torch.Tensor, levels: int = 2):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise CDrawError(f"images must be a (N, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        self.images, self.levels = images, levels

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.images.to(device), self.levels)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """(B, C, H, W) floats in [0, 1] for the examples at ``index``."""
        return self.images[index].float() / (self.levels - 1)
