"""MNIST with captions: layouts checked from the pixels against the real source digits, the held-out
combos, reproducibility, disjoint source digits, the parquet files and the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cdraw import CDrawError
from cdraw.data import load_labelled
from cdraw.mnist_captions import (
    TEMPLATES,
    Caption,
    all_combos,
    cells_matching,
    choose_heldout,
    generate_mnist_captions,
    load_mnist_captions,
    make_mnist_captions,
    parse_caption,
    t10k_split,
)

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 60, "valid": 20, "test_seen": 20, "test_heldout": 20}


def test_captions_by_hand_parse_to_the_cells_they_describe():
    E = -1
    cases = {
        "the digit 3 is at the top left of the image": {(3, E, E, E)},
        "the digit 3 is at the top right of the image": {(E, 3, E, E)},
        "the digit 3 is at the bottom left of the image": {(E, E, 3, E)},
        "the digit 3 is at the bottom right of the image": {(E, E, E, 3)},
        "the digit 3 is on the left of the digit 5": {(3, 5, E, E), (E, E, 3, 5)},
        "the digit 3 is on the right of the digit 5": {(5, 3, E, E), (E, E, 5, 3)},
        "the digit 3 is at the top of the digit 5": {(3, E, 5, E), (E, 3, E, 5)},
        "the digit 3 is at the bottom of the digit 5": {(5, E, 3, E), (E, 5, E, 3)},
    }
    for caption, cells in cases.items():
        assert set(cells_matching(caption)) == cells, caption
    assert parse_caption("  The digit 3 is AT the top of the  digit 5 ") == Caption(6, (3, 5))
    for outside in ("the digit 3 is in the middle of the image", "the digit 12 is at the top left of the image", ""):
        assert parse_caption(outside) is None
    with pytest.raises(CDrawError, match="fits none of the templates"):
        cells_matching("a cat on a mat")
    combos = all_combos()
    assert len(combos) == 40 + 400 and all(parse_caption(c.text()) == c for c in combos)


def test_layouts_match_captions_from_the_pixels(small_captions, mnist_idx_dir):
    splits, _ = small_captions
    images, labels = load_labelled("mnist", "t10k", mnist_idx_dir, download=False)
    digits = (images[:, 0] >= 128).numpy().astype(np.uint8)  # (10000, 28, 28), binarized independently
    for split, data in splits.items():
        assert data.images.shape == (len(data), 1, 60, 60) and set(data.images.unique().tolist()) <= {0, 1}
        for image, caption, cells, template, sources in zip(
            data.images[:, 0].numpy(),
            data.captions,
            data.cells.tolist(),
            data.templates.tolist(),
            data.sources.tolist(),
            strict=True,
        ):
            parsed = parse_caption(caption)
            assert parsed is not None and parsed.template == template and tuple(cells) in cells_matching(caption)
            assert sorted(d for d in cells if d >= 0) == sorted(parsed.digits), (split, caption)
            for i, (digit, source) in enumerate(zip(cells, sources, strict=True)):
                crop = image[30 * (i // 2) : 30 * (i // 2) + 30, 30 * (i % 2) : 30 * (i % 2) + 30]  # cell i
                if digit < 0:
                    assert source == -1 and not crop.any(), (split, caption, i)
                    continue
                assert labels[source] == digit
                # the cell is exactly the source digit at some offset 0..2: all its pixels are inside this cell
                placed = [np.pad(digits[source], ((dy, 2 - dy), (dx, 2 - dx))) for dy in range(3) for dx in range(3)]
                assert any(np.array_equal(crop, p) for p in placed), (split, caption, i)


def test_heldout_combos_only_in_test_heldout_and_training_keeps_every_digit_and_template(small_captions):
    splits, meta = small_captions
    heldout = set(meta["heldout_captions"])
    assert heldout == {c.text() for c in choose_heldout(0)}
    one = [c for c in heldout if "image" in c]
    assert len(one) == 4 and len(heldout) - len(one) == 40  # 10% of 40 and of 400
    for split in ("train", "valid", "test_seen"):
        assert not heldout & set(splits[split].captions), split
    assert set(splits["test_heldout"].captions) <= heldout
    # held out as image layouts, not only as wordings: no held-out arrangement of digits in cells
    # (whichever of its two captions described it) ever occurs in training
    train_layouts = {tuple(r) for r in splits["train"].cells.tolist()}
    assert not {tuple(r) for r in splits["test_heldout"].cells.tolist()} & train_layouts
    train = [parse_caption(c) for c in splits["train"].captions]
    assert {c.template for c in train} == set(range(len(TEMPLATES)))
    assert {d for c in train for d in c.digits} == set(range(10))
    assert 0.4 < sum(len(c.digits) == 1 for c in train) / len(train) < 0.6  # about half one-digit
    for seed in range(5):  # whatever the seed, no template and no digit in any role is lost to training
        seen = set(all_combos()) - choose_heldout(seed)
        assert {c.template for c in seen} == set(range(8))
        for t in range(4, 8):
            for pos in (0, 1):
                assert {c.digits[pos] for c in seen if c.template == t} == set(range(10))
        assert {c.digits[0] for c in seen if c.template < 4} == set(range(10))


def test_same_seed_same_data_other_seed_other_data(mnist_idx_dir):
    def make(seed, sizes=SIZES):
        return generate_mnist_captions(mnist_idx_dir, sizes=sizes, seed=seed, source="t10k-split", download=False)

    (a, meta_a), (b, _), (c, meta_c) = make(1), make(1), make(2)
    for split in a:
        assert torch.equal(a[split].images, b[split].images) and a[split].captions == b[split].captions
        assert a[split].captions != c[split].captions
    assert meta_a["heldout_captions"] != meta_c["heldout_captions"]
    more_train, _ = make(1, {**SIZES, "train": 90})  # each split has its own random stream
    assert torch.equal(more_train["valid"].images, a["valid"].images)


def test_train_and_test_composites_never_share_a_source_digit(small_captions):
    splits, meta = small_captions
    train_part, test_part = t10k_split()
    assert sorted(torch.cat([train_part, test_part]).tolist()) == list(range(10_000))
    used = {s: set(d.sources[d.sources >= 0].tolist()) for s, d in splits.items()}
    assert used["train"] | used["valid"] <= set(train_part.tolist())
    assert used["test_seen"] | used["test_heldout"] <= set(test_part.tolist())
    assert "t10k" in meta["source"]["train"] and "t10k_split()[0]" in meta["source"]["train"]
    assert "t10k_split()[1]" in meta["source"]["test_seen"]


def test_parquet_files_load_back_and_with_hf_datasets(mnist_idx_dir, tmp_path):
    import datasets

    out = tmp_path / "mc"
    meta = make_mnist_captions(out, mnist_idx_dir, sizes=SIZES, seed=3, source="t10k-split", download=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metadata.json", "train.parquet", "valid.parquet", "test_seen.parquet", "test_heldout.parquet"]
    )
    assert json.loads((out / "metadata.json").read_text()) == meta and meta["sizes"] == SIZES
    expected, _ = generate_mnist_captions(mnist_idx_dir, sizes=SIZES, seed=3, source="t10k-split", download=False)
    for split in SIZES:
        loaded = load_mnist_captions(split, out)
        assert loaded.images.shape == (SIZES[split], 1, 60, 60) and loaded.images.dtype == torch.uint8
        assert torch.equal(loaded.images, expected[split].images) and loaded.captions == expected[split].captions
        assert torch.equal(loaded.cells, expected[split].cells) and torch.equal(loaded.sources, expected[split].sources)
    ds = datasets.load_dataset(
        "parquet", data_files={s: str(out / f"{s}.parquet") for s in SIZES}, cache_dir=str(tmp_path / "hf")
    )
    assert {s: ds[s].num_rows for s in SIZES} == SIZES
    smaller = {**SIZES, "valid": 7}
    make_mnist_captions(out, mnist_idx_dir, sizes=smaller, source="t10k-split", download=False, overwrite=True)
    assert len(load_mnist_captions("valid", out)) == 7
    row = ds["valid"][0]
    assert row["caption"] == expected["valid"].captions[0] and row["cells"] == expected["valid"].cells[0].tolist()
    image = np.frombuffer(row["image"], dtype=np.uint8).reshape(60, 60)
    assert np.array_equal(image, expected["valid"].images[0, 0].numpy())


def test_missing_split_and_non_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(CDrawError, match="make_mnist_captions.py --out"):
        load_mnist_captions("train", tmp_path)
    with pytest.raises(CDrawError, match="unknown split"):
        load_mnist_captions("test", tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CDrawError, match="not empty.*--overwrite"):
        make_mnist_captions(tmp_path, tmp_path / "no-data", download=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(CDrawError, match="size of train"):
        generate_mnist_captions(tmp_path, sizes={"train": -1})


def test_script_writes_the_dataset_and_refuses_to_overwrite(mnist_idx_dir, tmp_path):
    out = tmp_path / "mc"
    cmd = [sys.executable, str(REPO / "data_scripts" / "make_mnist_captions.py"), "--data-dir", str(mnist_idx_dir)]
    cmd += ["--out", str(out), "--train", "30", "--valid", "5", "--test-seen", "5", "--test-heldout", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{out}/train.parquet: 30 examples" in done.stdout and len(load_mnist_captions("valid", out)) == 5
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
