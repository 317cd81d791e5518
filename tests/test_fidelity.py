"""The shipped digit classifier on real digits it never saw, and caption fidelity on real composites."""

from __future__ import annotations

import json

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
    classify_slots,
    label_fidelity,
    shipped_classifier,
    train_digit_classifier,
)
from cdraw.mnist_captions import SLOT_NAMES, Caption, mirror, t10k_split


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


def test_blank_windows_are_empty_and_slots_are_read_where_they_are(classifier, unseen_digits):
    slots = torch.arange(8).repeat(3, 1)  # (3, 8): every slot of 3 blank images
    assert (classify_slots(classifier, torch.zeros(3, 1, 60, 60), slots) == EMPTY_CLASS).all()
    images, labels = unseen_digits
    corners = {"top left": (1, 2), "top right": (1, 30), "bottom left": (31, 2), "bottom right": (31, 30)}
    canvas = torch.zeros(4, 1, 60, 60)
    for k, (row, col) in enumerate(corners.values()):  # unseen digit k alone in corner k
        canvas[k, 0, row : row + 28, col : col + 28] = images[k, 0].float() / 255
    read = classify_slots(classifier, canvas, torch.tensor([[SLOT_NAMES.index(n) for n in corners]] * 4))
    expected = torch.full((4, 4), EMPTY_CLASS)
    expected[range(4), range(4)] = labels[:4]
    assert torch.equal(read, expected)
    with pytest.raises(CDrawError, match=r"\(B, 1, 60, 60\)"):
        classify_slots(classifier, torch.zeros(2, 1, 28, 28), slots[:2])


def test_caption_fidelity_is_high_on_real_composites_and_low_with_wrong_captions(classifier, small_captions):
    splits, _ = small_captions
    for split in ("test_seen", "test_heldout", "test_paraphrase"):  # from digits the classifier never saw
        data = splits[split]
        images, layouts = data.images.float(), data.layouts()
        assert caption_fidelity(classifier, images, layouts) >= 0.95, split
        assert caption_fidelity(classifier, images, [mirror(c) for c in layouts]) >= 0.95, split  # same picture
        other_digits = [Caption(c.template, tuple((d + 1) % 10 for d in c.digits)) for c in layouts]
        assert caption_fidelity(classifier, images, other_digits) < 0.05, split
        other_place = [  # the same digits, another layout of the same kind
            Caption((c.template + 1) % 4 if c.template < 4 else 4 + (c.template - 2) % 4, c.digits) for c in layouts
        ]
        assert caption_fidelity(classifier, images, other_place) < 0.05, split
    seen = splits["test_seen"]
    assert caption_fidelity(classifier, seen.images.float(), seen.captions) >= 0.95  # template text parses
    shifted = seen.captions[1:] + seen.captions[:1]  # each image with its neighbour's caption
    assert caption_fidelity(classifier, seen.images.float(), shifted) < 0.1
    matches = caption_matches(classifier, images[:2], ["the digit 0 is at the top left of the image ."] * 2)
    assert matches.dtype == torch.bool and matches.shape == (2,)
    with pytest.raises(CDrawError, match="2 images but 1 captions"):
        caption_fidelity(classifier, images[:2], data.captions[:1])
    with pytest.raises(CDrawError, match="fits none of the templates"):
        caption_fidelity(classifier, images[:1], ["a cat on a mat"])


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
    x = torch.rand(5, 1, 32, 32)
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
    assert (SHIPPED["fashion-mnist"] / "model.safetensors").is_file(), "the fashion classifier ships"
    images, labels = load_labelled("fashion-mnist", "t10k", fashion_idx_dir, download=False)
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(images), 1000, replace=False))
    accuracy = label_fidelity(shipped_classifier("fashion-mnist"), images[pick].float() / 255, labels[pick])
    assert accuracy >= 0.85  # its README: 89.4% on all 10,000 grey t10k images


def test_label_fidelity_scores_only_the_classes_the_classifier_knows(classifier):
    """A model with 12 classes: classes 10 and 11 are no digit, so they are left out, not scored as "empty"."""
    from cdraw import DRAW, ConditionConfig, DRAWConfig
    from cdraw.evaluate import label_fidelity_of

    cfg = DRAWConfig(
        enc_size=8, dec_size=8, z_size=2, glimpses=2, condition=ConditionConfig(kind="label", num_classes=12)
    )
    found = label_fidelity_of(DRAW(cfg), classifier, 2, generator=torch.Generator().manual_seed(0))
    assert found["fidelity_images"] == 20 and sorted(k for k in found if k.startswith("fidelity_class_")) == sorted(
        f"fidelity_class_{k}" for k in range(10)
    )
