"""Shared fixtures: real data from ../shared/data (or $CDRAW_DATA_DIR), nothing downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault("CDRAW_DATA_DIR", str(SHARED_DATA))
    os.environ["CDRAW_OFFLINE"] = "1"  # tests never download
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Parsed datasets are cached in a folder of this test session, not the user's cache."""
    os.environ["CDRAW_CACHE_DIR"] = str(tmp_path_factory.mktemp("cdraw-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with binarized MNIST; CI must have it, elsewhere the test is skipped with a reason."""
    d = Path(os.environ["CDRAW_DATA_DIR"])
    if not (d / "binarized_mnist" / "binarized_mnist_train.amat.gz").is_file():
        msg = f"binarized MNIST not found under {d}: set CDRAW_DATA_DIR to a folder with binarized_mnist/"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


def _require(files: list[Path], what: str) -> Path:
    """The data folder if it has ``files``; else skip with a reason (fail under CI, which must have them)."""
    d = Path(os.environ["CDRAW_DATA_DIR"])
    if not all((d / f).is_file() for f in files):
        msg = f"{what} not found under {d}: set CDRAW_DATA_DIR to a folder with {', '.join(map(str, files))}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def mnist_idx_dir() -> Path:
    """The data folder with the labelled MNIST test digits, ``mnist/t10k-*-ubyte.gz``."""
    return _require(
        [Path("mnist") / f for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")], "MNIST t10k"
    )


@pytest.fixture(scope="session")
def fashion_idx_dir() -> Path:
    """The data folder with Fashion-MNIST, ``fashion-mnist/{train,t10k}-*-ubyte.gz``."""
    names = [f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    return _require([Path("fashion-mnist") / f for f in names], "Fashion-MNIST")


@pytest.fixture(scope="session")
def small_captions(mnist_idx_dir):
    """A few hundred examples of each MNIST-with-captions split, from the real t10k digits, and the metadata."""
    from cdraw.mnist_captions import generate_mnist_captions

    sizes = {"train": 400, "valid": 100, "test_seen": 500, "test_heldout": 500, "test_paraphrase": 300}
    return generate_mnist_captions(mnist_idx_dir, sizes=sizes, seed=0, source="t10k-split", download=False)


@pytest.fixture(scope="session")
def mnist(data_dir):
    """The real binarized MNIST splits as (N, 1, 28, 28) uint8 tensors."""
    from cdraw.data import load_binarized_mnist

    return {split: load_binarized_mnist(split, data_dir) for split in ("train", "valid", "test")}


@pytest.fixture
def tiny_cfg():
    """A DRAW small enough for many forward passes in a test."""
    from cdraw import DRAWConfig

    return DRAWConfig(glimpses=4, enc_size=24, dec_size=24, z_size=5, read_size=2, write_size=3)
