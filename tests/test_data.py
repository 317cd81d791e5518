"""Binarized MNIST loading, caching and sharding, on the real files."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from cdraw import CDrawError
from cdraw.data import ImageData, cache_dir, load_binarized_mnist, parse_amat, shard_batches


def test_real_splits_have_the_standard_sizes_and_binary_pixels(mnist):
    assert {k: tuple(v.shape) for k, v in mnist.items()} == {
        "train": (50_000, 1, 28, 28),
        "valid": (10_000, 1, 28, 28),
        "test": (10_000, 1, 28, 28),
    }
    for images in mnist.values():
        assert images.dtype == torch.uint8 and set(images.unique().tolist()) == {0, 1}
    mean = torch.cat(list(mnist.values())).float().mean().item()
    assert abs(mean - 0.1306) < 0.002, mean  # the data card's mean pixel
    # row-major 28 x 28: a digit's ink sits in the middle, not in the corners
    assert mnist["test"][:, 0, 10:18, 10:18].float().mean() > 5 * mnist["test"][:, 0, :4, :4].float().mean()


def test_parsed_splits_are_cached_and_reused(data_dir):
    first = load_binarized_mnist("valid", data_dir)
    cached = list((cache_dir() / "binarized_mnist").glob("valid-*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.load(cached[0])[::-1].copy())  # mark the cache: reversed rows
    assert torch.equal(load_binarized_mnist("valid", data_dir), first.flip(0))
    os.remove(cached[0])


def test_plain_amat_files_load_the_same_as_gz(data_dir, tmp_path):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    raw = gzip.open(data_dir / "binarized_mnist" / "binarized_mnist_test.amat.gz").read()
    (folder / "binarized_mnist_test.amat").write_bytes(raw)
    assert torch.equal(load_binarized_mnist("test", tmp_path), load_binarized_mnist("test", data_dir))


def test_missing_data_is_one_clear_error_that_says_where_and_how(tmp_path):
    with pytest.raises(CDrawError) as e:
        load_binarized_mnist("train", tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "binarized_mnist") in msg and "CDRAW_DATA_DIR" in msg and "http" in msg


def test_truncated_or_wrong_files_are_rejected(tmp_path):
    with pytest.raises(CDrawError, match="784 per line"):
        parse_amat(b"0 1 1\n1 0 0\n")
    (tmp_path / "binarized_mnist_valid.amat").write_bytes(b"0 " * 783 + b"1\n")
    with pytest.raises(CDrawError, match="has 1 images"):
        load_binarized_mnist("valid", tmp_path)
    with pytest.raises(CDrawError, match="unknown split"):
        load_binarized_mnist("training", tmp_path)


def test_parse_amat_reads_rows_in_order():
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784))
    text = "\n".join(" ".join(map(str, r)) for r in rows).encode()
    np.testing.assert_array_equal(parse_amat(text), rows)


def test_shards_are_disjoint_equal_sized_and_reshuffled_each_epoch():
    n, bs, world = 1_005, 10, 3
    shards = [shard_batches(n, bs, epoch=0, seed=7, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // (bs * world)
    seen = [set(torch.cat(s).tolist()) for s in shards]
    assert all(len(s) == len(shards[0]) * bs for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert torch.equal(torch.cat(shard_batches(n, bs, 0, 7, 1, world)), torch.cat(shards[1]))  # deterministic
    assert not torch.equal(torch.cat(shard_batches(n, bs, 1, 7, 1, world)), torch.cat(shards[1]))


def test_image_data_scales_to_unit_interval():
    data = ImageData(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), levels=256)
    torch.testing.assert_close(data.batch(slice(None)), torch.tensor([[[[0.0, 1.0]]]]))
    with pytest.raises(CDrawError, match="uint8"):
        ImageData(torch.zeros(2, 1, 3, 3))
