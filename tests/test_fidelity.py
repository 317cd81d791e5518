"""The shipped digit classifier on real digits it never saw, and caption fidelity on real composites."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from cdraw import CDrawError
from cdraw.data import binarize, load_labelled
from cdraw.fidelity import (
    EMPTY_CLASS,
    SHIPPED,
    DigitClassifier,
    DigitClassifierConfig,
    caption_fidelity,
    caption_matches,
    classify_cells,
    label_fidelity,
    shipped_classifier,
    train_digit_classifier,
)
from cdraw.mnist_captions import t10k_split


@pytest.fixture(scope="module")
def classifier():
    return shipped_classifier("mnist")


@pytest.fixture(scope="module")
def unseen_digits(mnist_idx_dir):
    """1,000 real t10k digits from the part the shipped classifier was not trained on."""
    images, labels = load_labelled("mnist", "t10k", mnist_idx_dir, download=False)
    held = t10k_split()[1][:1000]
    return images[held], labels[held]


def test_shipped_classifier_reads_unseen_real_digits(classifier, unseen_digits):
    images, labels = unseen_digits
    assert label_fidelity(classifier, images.float() / 255, labels) >= 0.97
    assert label_fidelity(classifier, binarize(images).float(), labels) >= 0.97
    assert label_fidelity(classifier, images.float() / 255, (labels + 1) % 10) < 0.05  # wrong labels score low
    n_params = sum(p.numel() for p in classifier.parameters())
    assert (
        10_000 < n_params < 100_000
        and "python data_scripts/train_digit_classifier.py" in (SHIPPED["mnist"] / "README.md").read_text()
    )


def test_blank_cells_are_empty_and_cells_are_read_in_order(classifier, unseen_digits):
    assert (classify_cells(classifier, torch.zeros(3, 1, 60, 60)) == EMPTY_CLASS).all()
    images, labels = unseen_digits
    canvas = torch.zeros(4, 1, 60, 60)
    for cell in range(4):  # digit k of the unseen ones, alone in cell k: top left, top right, bottom left, bottom right
        top, left = 30 * (cell // 2) + 1, 30 * (cell % 2) + 1
        canvas[cell, 0, top : top + 28, left : left + 28] = images[cell, 0].float() / 255
    expected = torch.full((4, 4), EMPTY_CLASS)
    expected[range(4), range(4)] = labels[:4]
    assert torch.equal(classify_cells(classifier, canvas), expected)
    with pytest.raises(CDrawError, match=r"\(B, 1, 60, 60\)"):
        classify_cells(classifier, torch.zeros(2, 1, 28, 28))


def test_caption_fidelity_is_high_on_real_composites_and_low_with_wrong_captions(classifier, small_captions):
    splits, _ = small_captions
    for split in ("test_seen", "test_heldout"):  # 500 each, from digits the classifier never saw
        data = splits[split]
        images = data.images.float()
        assert caption_fidelity(classifier, images, data.captions) >= 0.95, split
        other_digits = [re.sub(r"\d", lambda m: str((int(m[0]) + 1) % 10), c) for c in data.captions]
        assert caption_fidelity(classifier, images, other_digits) < 0.05, split
    seen = splits["test_seen"]
    shifted = seen.captions[1:] + seen.captions[:1]  # each image with its neighbour's caption
    assert caption_fidelity(classifier, seen.images.float(), shifted) < 0.1
    matches = caption_matches(classifier, images[:2], ["the digit 0 is at the top left of the image"] * 2)
    assert matches.dtype == torch.bool and matches.shape == (2,)
    with pytest.raises(CDrawError, match="2 images but 1 captions"):
        caption_fidelity(classifier, images[:2], data.captions[:1])


def test_training_is_reproducible_and_checkpoints_round_trip(unseen_digits, tmp_path):
    images, labels = unseen_digits
    cfg = DigitClassifierConfig(channels=(4, 8, 8), hidden=16)
    first = train_digit_classifier(images[:200], labels[:200], epochs=1, config=cfg, seed=5)
    again = train_digit_classifier(images[:200], labels[:200], epochs=1, config=cfg, seed=5)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    first.save_pretrained(tmp_path / "clf")
    loaded = DigitClassifier.from_pretrained(tmp_path / "clf")
    assert loaded.config == cfg and not loaded.training
    x = torch.rand(5, 1, 30, 30)
    torch.testing.assert_close(loaded(x), first(x), rtol=0, atol=0)
    config = tmp_path / "clf" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden": 32}))
    with pytest.raises(CDrawError, match="does not match"):
        DigitClassifier.from_pretrained(tmp_path / "clf")
    config.write_text(json.dumps({"model_type": "draw"}))
    with pytest.raises(CDrawError, match="not a digit classifier"):
        DigitClassifier.from_pretrained(tmp_path / "clf")
    with pytest.raises(CDrawError, match="uint8"):
        train_digit_classifier(images.float(), labels)


def test_shipped_fashion_classifier_reads_unseen_fashion(fashion_idx_dir):
    if not (SHIPPED["fashion-mnist"] / "model.safetensors").is_file():
        pytest.skip("no fashion classifier shipped")
    images, labels = load_labelled("fashion-mnist", "t10k", fashion_idx_dir, download=False)
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(images), 1000, replace=False))
    accuracy = label_fidelity(shipped_classifier("fashion-mnist"), images[pick].float() / 255, labels[pick])
    assert accuracy >= 0.85  # its README: 89.6% on all 10,000 grey t10k images
