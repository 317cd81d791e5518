"""Binarized MNIST loading, caching and sharding; labelled idx datasets; on the real files."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cdraw import CDrawError
from cdraw.data import (
    LABELLED_URLS,
    ImageData,
    binarize,
    cache_dir,
    load_binarized_mnist,
    load_labelled,
    parse_amat,
    read_idx,
    shard_batches,
)


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


# -- labelled idx datasets ----------------------------------------------------------------------

MNIST_T10K_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the canonical file's first ten labels
MNIST_T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_read_idx_gives_the_real_mnist_test_digits(mnist_idx_dir):
    images = read_idx(mnist_idx_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_idx_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert labels.shape == (10_000,) and labels[:10].tolist() == MNIST_T10K_FIRST_LABELS
    assert np.bincount(labels).tolist() == MNIST_T10K_COUNTS
    # row-major 28 x 28: ink in the middle, none in the corners
    assert images[:, 10:18, 10:18].mean() > 20 * images[:, :3, :3].mean()


def test_load_labelled_shapes_types_and_plain_files(mnist_idx_dir, tmp_path):
    images, labels = load_labelled("mnist", "t10k", mnist_idx_dir, download=False)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels[:10].tolist() == MNIST_T10K_FIRST_LABELS
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # un-gzipped, at the folder's top
        (tmp_path / name).write_bytes(gzip.open(mnist_idx_dir / "mnist" / f"{name}.gz").read())
    plain_images, plain_labels = load_labelled("mnist", "t10k", tmp_path, download=False)
    assert torch.equal(plain_images, images) and torch.equal(plain_labels, labels)


def test_load_labelled_fashion_train(fashion_idx_dir):
    images, labels = load_labelled("fashion-mnist", "train", fashion_idx_dir, download=False)
    assert images.shape == (60_000, 1, 28, 28) and labels.bincount().tolist() == [6_000] * 10


def test_corrupt_or_truncated_idx_files_are_clear_errors(mnist_idx_dir, tmp_path):
    raw = gzip.open(mnist_idx_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read()
    cases = {
        "short.gz": (gzip.compress(raw)[:-100], "truncated"),  # a download cut short
        "short": (raw[:-1], "header says 10000 values, it holds 9999"),
        "header": (raw[:6], "truncated idx header"),
        "magic": (b"\x01\x02" + raw[2:], "bad magic number"),
        "floats": (raw[:2] + b"\x0d" + raw[3:], "only unsigned bytes"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CDrawError, match=message):
            read_idx(tmp_path / name)


def test_missing_labelled_files_offline_name_folder_files_and_url(tmp_path):
    with pytest.raises(CDrawError) as e:
        load_labelled("fashion-mnist", "train", tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "fashion-mnist") in msg and "train-images-idx3-ubyte.gz" in msg
    assert "train-labels-idx1-ubyte.gz" in msg and "http://fashion-mnist.s3-website" in msg
    with pytest.raises(CDrawError, match="unknown dataset"):
        load_labelled("kmnist", "train", tmp_path)
    with pytest.raises(CDrawError, match="unknown part"):
        load_labelled("mnist", "test", tmp_path)


def test_missing_files_are_downloaded_into_the_dataset_folder(mnist_idx_dir, tmp_path, monkeypatch):
    # a file:// URL stands in for the server: the same urllib code path, no network
    monkeypatch.setitem(LABELLED_URLS, "mnist", (mnist_idx_dir / "mnist").as_uri() + "/{file}")
    images, labels = load_labelled("mnist", "t10k", tmp_path / "data", download=True)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert labels[:10].tolist() == MNIST_T10K_FIRST_LABELS and images.shape == (10_000, 1, 28, 28)
    monkeypatch.setitem(LABELLED_URLS, "mnist", (tmp_path / "nowhere").as_uri() + "/{file}")
    with pytest.raises(CDrawError, match="could not download .*nowhere.*t10k-images"):
        load_labelled("mnist", "t10k", tmp_path / "other", download=True)
    assert not list((tmp_path / "other" / "mnist").iterdir())  # no half-written file left behind


def test_offline_as_hugging_face_reads_it(monkeypatch):
    from cdraw.data import downloads_allowed

    for value, allowed in (("1", False), ("true", False), ("ON", False), (" yes ", False), ("0", True), ("", True)):
        for name in ("CDRAW_OFFLINE", "HF_HUB_OFFLINE"):
            monkeypatch.delenv("CDRAW_OFFLINE", raising=False)
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
            monkeypatch.setenv(name, value)
            assert downloads_allowed() is allowed, (name, value)


def test_missing_data_offline_says_why_nothing_was_downloaded(monkeypatch, tmp_path):
    from cdraw.data import load_binarized_mnist

    monkeypatch.delenv("CDRAW_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CDrawError, match=r"not found in .*not downloaded, as HF_HUB_OFFLINE=1 is set$"):
        load_binarized_mnist("test", tmp_path)
    with pytest.raises(CDrawError, match="fashion-mnist 't10k' files not found.*HF_HUB_OFFLINE=1 is set"):
        load_labelled("fashion-mnist", "t10k", tmp_path)
    with pytest.raises(CDrawError, match=r"not found .*; downloading was turned off$"):
        load_binarized_mnist("test", tmp_path, download=False)
    monkeypatch.setenv("CDRAW_OFFLINE", "yes")
    with pytest.raises(CDrawError, match=r"as CDRAW_OFFLINE=yes and HF_HUB_OFFLINE=1 are set$"):
        load_binarized_mnist("test", tmp_path)


def test_binarize_thresholds_at_128():
    grey = torch.tensor([0, 1, 127, 128, 129, 255], dtype=torch.uint8)
    assert binarize(grey).tolist() == [0, 0, 0, 1, 1, 1] and binarize(grey).dtype == torch.uint8
    with pytest.raises(CDrawError, match="uint8"):
        binarize(grey.float() / 255)


def test_the_dataset_registry_loads_every_data_set_the_same_way(data_dir, mnist_idx_dir, tmp_path):
    """One shape for all: get(name).load(split, data_dir, encode) -> ImageData; the data set of a
    model is its training record's, else the first that fits its images and conditions."""
    from cdraw import DRAW, datasets
    from cdraw.evaluate import evaluation_data, measured_on
    from cdraw.generate import DEFAULT_MODELS
    from cdraw.mnist_captions import make_mnist_captions

    test = datasets.get("binarized-mnist").load("test", data_dir)
    assert len(test) == 10_000 and test.batch(slice(0, 2)).shape == (2, 1, 28, 28) and test.conditions is None
    labelled = datasets.get("mnist").load("test", mnist_idx_dir, encode=lambda labels: labels * 0 + 7)
    assert len(labelled) == 10_000 and set(labelled.condition(slice(0, 50)).tolist()) == {7}
    sizes = {"train": 10, "valid": 10, "test_seen": 10, "test_heldout": 10, "test_paraphrase": 10}
    make_mnist_captions(tmp_path / "mnist_captions", mnist_idx_dir, sizes=sizes, source="t10k-split", download=False)
    captions = datasets.get("mnist-captions").load("test_heldout", tmp_path, encode=lambda texts: texts)
    assert len(captions) == 10 and captions.batch(slice(0, 1)).shape == (1, 1, 60, 60)
    elsewhere = datasets.get("mnist-captions").load("test_heldout", folder=str(tmp_path / "mnist_captions"))
    assert torch.equal(elsewhere.images, captions.images)  # a data set made into a folder of its own: any folder
    with pytest.raises(CDrawError, match="binarized-mnist is read from its files in the data folder"):
        datasets.get("binarized-mnist").load("test", data_dir, folder=str(tmp_path))
    for kind, name in (("none", "binarized-mnist"), ("label", "mnist"), ("caption", "mnist-captions")):
        model = DRAW.from_pretrained(DEFAULT_MODELS[kind])
        with warnings.catch_warnings(record=True) as guessed:
            warnings.simplefilter("always")
            assert datasets.for_model(model.config).name == name  # from the config alone
        assert [str(w.message) for w in guessed] == (  # a label model also fits fashion-mnist: a guess, said
            ["the model does not record its data set; taking mnist of those that fit it (mnist, fashion-mnist): "
             "--data names another"] if kind == "label" else []
        )  # fmt: skip
        assert all(w.filename == __file__ for w in guessed)  # a library caller's warning points at its own line
        assert datasets.for_model(model.config, DEFAULT_MODELS[kind]).name == name  # and from the record
    with pytest.raises(CDrawError, match="unknown data set 'svhn'"):
        datasets.get("svhn")
    with pytest.raises(CDrawError, match="binarized-mnist splits are train, valid, test"):
        datasets.get("binarized-mnist").load("val", data_dir)
    with pytest.raises(
        CDrawError, match="binarized-mnist has no labels or captions, and this model is conditioned on labels"
    ):
        evaluation_data(DRAW.from_pretrained(DEFAULT_MODELS["label"]), "binarized-mnist", "test", data_dir)
    plain = DRAW.from_pretrained(DEFAULT_MODELS["none"])
    for split in (None, "valid"):  # cdraw eval --data that does not fit: refused, not first warned of as other data
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(CDrawError, match="fashion-mnist has labels, and this model is conditioned on nothing"):
                measured_on(plain, DEFAULT_MODELS["none"], "fashion-mnist", split)


def test_help_names_the_default_data_folder_the_loaders_use(monkeypatch, tmp_path):
    from cdraw.data import default_data_dir
    from cdraw.errors import DATA_DIR

    variable, fallback = DATA_DIR.split(" or ")
    monkeypatch.setenv(variable.lstrip("$"), str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(variable.lstrip("$"))
    assert default_data_dir() == Path(fallback).expanduser()
