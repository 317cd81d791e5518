"""MNIST with captions in the official form: the layouts checked from the pixels against the real source
digits and the official slot ranges, the templates, the role bans (no banned role in training), fresh
composites every epoch, reproducibility, disjoint source digits, the parquet files and the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cdraw import CDrawError
from cdraw.data import FreshEachEpoch, load_labelled
from cdraw.datasets.mnist_captions import load_mnist_captions, load_train_pool
from cdraw.mnist_captions import (
    PARAPHRASES,
    SLOTS,
    TEMPLATE_SLOTS,
    TEMPLATES,
    Caption,
    all_combos,
    choose_bans,
    draw_corners,
    drop_words,
    fresh_train_data,
    generate_mnist_captions,
    is_heldout,
    make_mnist_captions,
    mirror,
    parse_caption,
    picture_seen,
    split_combos,
    t10k_split,
    train_composites,
)

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 60, "valid": 20, "test_seen": 20, "test_heldout": 20, "test_paraphrase": 20}
EVAL = ("valid", "test_seen", "test_heldout", "test_paraphrase")


def test_the_eight_templates_of_the_paper_and_their_slots():
    """The captions of create-captions.py (ending " ."), each digit in its official slot."""
    by_hand = {
        "the digit 3 is at the top left of the image .": (Caption(0, (3,)), ("top left",)),
        "the digit 3 is at the top right of the image .": (Caption(1, (3,)), ("top right",)),
        "the digit 3 is at the bottom left of the image .": (Caption(2, (3,)), ("bottom left",)),
        "the digit 3 is at the bottom right of the image .": (Caption(3, (3,)), ("bottom right",)),
        "the digit 3 is on the left of the digit 5 .": (Caption(4, (3, 5)), ("left", "right")),
        "the digit 3 is on the right of the digit 5 .": (Caption(5, (3, 5)), ("right", "left")),
        "the digit 3 is at the top of the digit 5 .": (Caption(6, (3, 5)), ("top", "bottom")),
        "the digit 3 is at the bottom of the digit 5 .": (Caption(7, (3, 5)), ("bottom", "top")),
    }
    for text, (caption, slots) in by_hand.items():
        assert parse_caption(text) == caption and caption.text() == text and caption.slots() == slots
    assert set(by_hand) == {t.format(*([3, 5][: t.count("{}")])) for t in TEMPLATES}
    # the official ranges of a digit's top left corner (rows, columns), create-captions.py
    assert SLOTS["top left"] == ((0, 2), (0, 4)) and SLOTS["bottom right"] == ((30, 32), (28, 32))
    assert SLOTS["left"] == ((16, 18), (0, 4)) and SLOTS["right"] == ((16, 18), (28, 32))
    assert SLOTS["top"] == ((0, 2), (16, 18)) and SLOTS["bottom"] == ((30, 32), (16, 18))
    assert parse_caption("  The digit 3 is AT the top of the  digit 5") == Caption(6, (3, 5))  # " ." optional
    for outside in ("the digit 3 is in the middle of the image .", "the digit 12 is at the top left of the image", ""):
        assert parse_caption(outside) is None
    combos = all_combos()
    assert len(combos) == 40 + 400 and all(parse_caption(c.text()) == c for c in combos)
    assert mirror(Caption(4, (3, 5))) == Caption(5, (5, 3)) and mirror(Caption(6, (3, 5))) == Caption(7, (5, 3))
    words = {w for t in TEMPLATES for w in t.split()}
    for template, wordings in enumerate(PARAPHRASES):  # paraphrases: the same digits, new content words
        assert len(wordings) >= 3 and all(w.count("{}") == TEMPLATES[template].count("{}") for w in wordings)
        assert all(set(w.split()) - words - {"{}"} for w in wordings)


def test_layouts_match_captions_from_the_pixels(small_captions, mnist_idx_dir):
    splits, _ = small_captions
    images, labels = load_labelled("mnist", "t10k", mnist_idx_dir, download=False)
    digits = (images[:, 0] >= 128).numpy().astype(np.uint8)  # (10000, 28, 28), binarized independently
    for split, data in splits.items():
        assert data.images.shape == (len(data), 1, 60, 60) and set(data.images.unique().tolist()) <= {0, 1}
        for image, caption, layout, corners, sources in zip(
            data.images[:, 0].numpy(), data.captions, data.layouts(), data.corners.tolist(), data.sources.tolist(),
            strict=True,
        ):  # fmt: skip
            if split != "test_paraphrase":
                assert parse_caption(caption) == layout, (split, caption)
            expected = np.zeros((60, 60), np.uint8)
            for k, slot in enumerate(layout.slots()):
                (row, col), source = corners[k], sources[k]
                (r0, r1), (c0, c1) = SLOTS[slot]
                assert r0 <= row <= r1 and c0 <= col <= c1, (split, caption, slot)
                assert labels[source] == layout.digits[k]
                expected[row : row + 28, col : col + 28] |= digits[source]
            if len(layout.digits) == 1:
                assert corners[1] == [-1, -1] and sources[1] == -1
            elif layout.template in (4, 5):
                assert corners[0][0] == corners[1][0]  # side by side: one row
            else:
                assert corners[0][1] == corners[1][1]  # one above the other: one column
            assert np.array_equal(image, expected), (split, caption)  # nothing else on the canvas


def test_role_bans_hold_roles_out_of_training_only(small_captions):
    splits, meta = small_captions
    bans = choose_bans(0)
    assert meta["bans"] == [list(b) for b in bans] and [len(b) for b in bans] == [1, 1, 1, 1, 2, 2, 2, 2]
    seen, heldout = split_combos(bans)
    assert len(seen) + len(heldout) == 440 and set(meta["heldout_captions"]) == {c.text() for c in heldout}
    assert len(heldout) == 4 * 1 + 4 * 19  # one digit per one-digit template; 10 + 10 - 1 pairs per pair template
    for c in heldout:  # each held-out caption has a banned digit in its banned role
        assert any(d == b for d, b in zip(c.digits, bans[c.template], strict=True))
    for split in ("train", "valid", "test_seen", "test_paraphrase"):
        assert not any(is_heldout(c, bans) for c in splits[split].layouts()), split
    assert all(is_heldout(c, bans) for c in splits["test_heldout"].layouts())
    train = splits["train"].layouts()
    assert {c.template for c in train} == set(range(len(TEMPLATES)))
    assert 0.3 < sum(len(c.digits) == 1 for c in train) / len(train) < 0.7  # about half one-digit
    assert choose_bans(0) == bans and choose_bans(1) != bans


def test_a_held_out_caption_shows_a_new_picture_only_when_its_mirror_is_held_out_too():
    """Bans are per template (as in the official code), so most held-out pair captions are a seen picture
    under the mirrored wording: "7 on the left of 5" held out, "5 on the right of 7" seen."""
    for seed in range(5):
        bans = choose_bans(seed)
        seen, heldout = split_combos(bans)
        assert all(picture_seen(c, bans) for c in seen)
        for c in heldout:
            assert picture_seen(c, bans) == (mirror(c) in seen) and mirror(mirror(c)) == c
        one_digit = [c for c in heldout if len(c.digits) == 1]
        assert len(one_digit) == 4 and not any(picture_seen(c, bans) for c in one_digit)  # a corner is no pair
        pairs = [picture_seen(c, bans) for c in heldout if len(c.digits) == 2]
        assert 0 < sum(pairs) < len(pairs), seed  # both kinds in every draw of the bans


def test_corners_cover_each_slot_range_uniformly_end_to_end():
    rng = np.random.default_rng(0)
    templates = np.repeat(np.arange(len(TEMPLATES)), 2_000)  # (16000,)
    corners = draw_corners(templates, rng)  # (16000, 2, 2)
    for t, slots in enumerate(TEMPLATE_SLOTS):
        for k, slot in enumerate(slots):
            for axis, (low, high) in enumerate(SLOTS[slot]):
                values = corners[templates == t, k, axis]
                counts = np.bincount(values - low, minlength=high - low + 1)
                assert len(counts) == high - low + 1, (t, slot, axis)  # nothing outside the range
                assert counts.min() > 0.6 * counts.mean(), (t, slot, axis, counts)  # every value, about evenly


def test_training_composites_are_new_every_epoch_and_the_same_for_the_same_epoch(small_captions, mnist_idx_dir):
    from cdraw.mnist_captions import source_pools

    pool = source_pools(mnist_idx_dir, source="t10k-split", download=False)["train"]
    bans = choose_bans(0)
    first, again, second = (train_composites(pool, bans, 50, 7, e) for e in (0, 0, 1))
    assert torch.equal(first.images, again.images) and first.captions == again.captions
    assert not torch.equal(first.images, second.images)
    made = small_captions[0]["train"].images  # as the data set's own training split
    assert first.images.dtype == made.dtype and first.images.shape[1:] == made.shape[1:]
    seen = [c.text() for c in split_combos(bans)[0]]
    encode = lambda texts: torch.tensor([[seen.index(t)] * 3 for t in texts])  # noqa: E731  (captions -> ids)
    data = fresh_train_data(pool, bans, 50, 7, encode)
    assert isinstance(data, FreshEachEpoch) and len(data) == 50 and torch.equal(data.images, first.images)
    assert [seen[i] for i in data.conditions[:, 0].tolist()] == first.captions  # each caption's own ids
    data.set_epoch(1)
    assert torch.equal(data.images, second.images) and data.epoch == 1
    assert torch.equal(data.to("cpu").images, second.images)  # moving keeps the epoch


def test_word_dropout_keeps_the_digits_and_the_order_and_is_the_same_for_the_same_epoch(mnist_idx_dir):
    from cdraw.mnist_captions import source_pools

    captions = [c.text() for c in all_combos()]
    short = drop_words(captions, 0.5, np.random.default_rng(0))
    for caption, kept in zip(captions, short, strict=True):
        words = iter(caption.split())
        assert all(w in words for w in kept.split())  # a subsequence: words only left out, in order
        assert [w for w in kept.split() if w.isdigit()] == [w for w in caption.split() if w.isdigit()]
    dropped = sum(len(c.split()) - len(k.split()) for c, k in zip(captions, short, strict=True))
    others = sum(len([w for w in c.split() if not w.isdigit()]) for c in captions)
    assert 0.45 < dropped / others < 0.55  # about p of the other words
    assert drop_words(captions, 0.0, np.random.default_rng(0)) == captions

    pool = source_pools(mnist_idx_dir, source="t10k-split", download=False)["train"]
    bans, texts = choose_bans(0), {}

    def encode(batch):  # captions -> ids, remembering which text each id row stands for
        ids = [texts.setdefault(t, len(texts)) for t in batch]
        return torch.tensor(ids)[:, None]

    read = lambda data: [list(texts)[i] for i in data.conditions[:, 0].tolist()]  # noqa: E731
    plain = train_composites(pool, bans, 200, 7, 0).captions
    first = read(fresh_train_data(pool, bans, 200, 7, encode, word_dropout=0.4))
    again = read(fresh_train_data(pool, bans, 200, 7, encode, word_dropout=0.4))
    data = fresh_train_data(pool, bans, 200, 7, encode, word_dropout=0.4)
    data.set_epoch(1)
    assert first == again != read(data)  # the same for the same seed and epoch, afresh every epoch
    assert first != plain and all(len(f.split()) <= len(p.split()) for f, p in zip(first, plain, strict=True))
    with pytest.raises(CDrawError, match="word dropout"):
        fresh_train_data(pool, bans, 200, 7, encode, word_dropout=1.0)


def test_same_seed_same_data_other_seed_other_data(mnist_idx_dir):
    def make(seed, sizes=SIZES):
        return generate_mnist_captions(mnist_idx_dir, sizes=sizes, seed=seed, source="t10k-split", download=False)

    (a, meta_a), (b, _), (c, meta_c) = make(1), make(1), make(2)
    for split in a:
        assert torch.equal(a[split].images, b[split].images) and a[split].captions == b[split].captions
        assert a[split].captions != c[split].captions
    assert meta_a["bans"] != meta_c["bans"]
    more_train, _ = make(1, {**SIZES, "train": 90})  # each split has its own random stream
    assert torch.equal(more_train["valid"].images, a["valid"].images)


def test_train_and_test_composites_never_share_a_source_digit(small_captions):
    splits, meta = small_captions
    train_part, test_part = t10k_split()
    assert sorted(torch.cat([train_part, test_part]).tolist()) == list(range(10_000))
    used = {s: set(d.sources[d.sources >= 0].tolist()) for s, d in splits.items()}
    assert used["train"] | used["valid"] <= set(train_part.tolist())
    assert used["test_seen"] | used["test_heldout"] | used["test_paraphrase"] <= set(test_part.tolist())
    assert "t10k" in meta["source"]["train"] and "t10k_split()[0]" in meta["source"]["train"]
    assert "t10k_split()[1]" in meta["source"]["test_seen"] and meta["source_kind"] == "t10k-split"


def test_parquet_files_load_back_and_with_hf_datasets(mnist_idx_dir, tmp_path):
    import datasets

    out = tmp_path / "mc"
    meta = make_mnist_captions(out, mnist_idx_dir, sizes=SIZES, seed=3, source="t10k-split", download=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["metadata.json", *(f"{s}.parquet" for s in EVAL)])
    assert json.loads((out / "metadata.json").read_text()) == meta and meta["sizes"] == SIZES
    expected, _ = generate_mnist_captions(mnist_idx_dir, sizes=SIZES, seed=3, source="t10k-split", download=False)
    for split in EVAL:
        loaded = load_mnist_captions(split, out)
        assert loaded.images.shape == (SIZES[split], 1, 60, 60) and loaded.images.dtype == torch.uint8
        assert torch.equal(loaded.images, expected[split].images) and loaded.captions == expected[split].captions
        for column in ("templates", "digits", "corners", "sources"):
            assert torch.equal(getattr(loaded, column), getattr(expected[split], column)), (split, column)
    train = load_mnist_captions("train", out, data_dir=mnist_idx_dir)  # composed: epoch 0 of the training seed 3
    pool, bans, _ = load_train_pool(out, data_dir=mnist_idx_dir)
    assert torch.equal(train.images, train_composites(pool, bans, SIZES["train"], 3, 0).images)
    ds = datasets.load_dataset(
        "parquet", data_files={s: str(out / f"{s}.parquet") for s in EVAL}, cache_dir=str(tmp_path / "hf")
    )
    assert {s: ds[s].num_rows for s in EVAL} == {s: SIZES[s] for s in EVAL}
    row = ds["valid"][0]
    assert row["caption"] == expected["valid"].captions[0] and row["digits"] == expected["valid"].digits[0].tolist()
    image = np.frombuffer(row["image"], dtype=np.uint8).reshape(60, 60)
    assert np.array_equal(image, expected["valid"].images[0, 0].numpy())
    smaller = {**SIZES, "valid": 7}
    make_mnist_captions(out, mnist_idx_dir, sizes=smaller, source="t10k-split", download=False, overwrite=True)
    assert len(load_mnist_captions("valid", out)) == 7


def test_missing_split_old_form_and_non_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(CDrawError, match="make it with `cdraw prepare mnist-captions --out "):
        load_mnist_captions("valid", tmp_path)
    with pytest.raises(CDrawError, match="unknown split"):
        load_mnist_captions("test", tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "cdraw-mnist-captions-1"}))
    with pytest.raises(CDrawError, match="official layouts.*--overwrite"):  # the earlier grid form
        load_mnist_captions("test_seen", tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CDrawError, match="not empty.*--overwrite"):
        make_mnist_captions(tmp_path, tmp_path / "no-data", download=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(CDrawError, match="size of train"):
        generate_mnist_captions(tmp_path, sizes={"train": -1})


def test_cdraw_prepare_mnist_captions_writes_the_dataset_and_the_script_refuses_to_overwrite(mnist_idx_dir, tmp_path):
    """Without --out, into the data folder, where the recipe and cdraw eval look with that --data-dir."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(mnist_idx_dir / "mnist")
    out = data / "mnist_captions"
    flags = ["--data-dir", str(data), "--train", "30", "--valid", "5", "--test-seen", "5"]
    flags += ["--test-heldout", "5", "--test-paraphrase", "5"]
    done = subprocess.run([sys.executable, "-m", "cdraw.cli", "prepare", "mnist-captions", *flags],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    cmd = [sys.executable, str(REPO / "data_scripts" / "make_mnist_captions.py"), *flags]  # the checkout's script
    assert done.returncode == 0, done.stderr
    assert f"{out}/valid.parquet: 5 examples" in done.stdout and "composes 30 new images per epoch" in done.stdout
    assert len(load_mnist_captions("test_paraphrase", data_dir=data)) == 5
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    for bad, words in (
        (["--seed", "-1"], "--seed: must be at least 0"),
        (["--valid", "0"], "--valid: must be at least 1"),
    ):
        refused = subprocess.run([*cmd, *bad], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr


def test_info_and_cards_say_which_digits_a_caption_model_trained_on_in_words(mnist_idx_dir):
    """The recorded source names a function (t10k_split()[0]); what a user reads names the file and part."""
    from cdraw.io import data_source
    from cdraw.mnist_captions import source_pools

    pools = source_pools(mnist_idx_dir, source="t10k-split", download=False)
    said = data_source({"source": pools["train"].source})
    assert said == "8,000 digits of MNIST's test file (t10k), the training part of its split with seed 0"
    assert "held-out part" in data_source({"source": pools["test"].source})
    assert data_source({"source": "t10k"}) == "MNIST's t10k file"  # the class-label recipe's --source
    assert data_source({"source": "mnist train"}) == "MNIST's train file"
    assert data_source({}) == ""


def test_digit_pools_share_digits_unless_they_are_the_two_parts_of_one_split():
    from cdraw.io import DigitSource

    part = lambda i, n: DigitSource.read(f"mnist t10k: the {n} digits of t10k_split()[{i}] (seed 0)")  # noqa: E731
    train, t10k = DigitSource.read("mnist train"), DigitSource.read("mnist t10k")
    assert part(0, 8000) == DigitSource("t10k", 0, 8000, 0) and t10k == DigitSource("t10k")
    assert not part(0, 8000).shares_digits_with(part(1, 2000))  # the t10k-split protocol: apart
    assert part(0, 8000).shares_digits_with(t10k) and t10k.shares_digits_with(part(1, 2000))
    assert part(0, 8000).shares_digits_with(part(0, 8000)) and train.shares_digits_with(train)
    assert not train.shares_digits_with(t10k) and not train.shares_digits_with(part(1, 2000))
    assert DigitSource.read("t10k") is None and DigitSource.read(None) is None  # a label run's --source; nothing
    for source in (part(0, 8000), part(1, 2000), train, t10k):  # what source_pools records reads back
        assert DigitSource.read(source.words()) == source


def test_eval_warns_of_caption_data_made_from_digits_or_roles_the_model_trained_on(mnist_idx_dir, tmp_path, capsys):
    """The shipped caption model trained on t10k's 8,000 (seed 0 bans): measured on data made the
    same way, nothing to say; on tests drawn from all of t10k (data made from MNIST's train file) or
    with other held-out roles, one warning each, and the figures are marked as not held out."""
    import warnings

    from cdraw import DRAW, CDrawWarning
    from cdraw.evaluate import measured_on
    from cdraw.io import SHIPPED

    folder = SHIPPED / "mnist_captions"
    model = DRAW.from_pretrained(folder)
    sizes = {"train": 10, "valid": 5, "test_seen": 5, "test_heldout": 5, "test_paraphrase": 5}
    data = tmp_path / "mc"
    make_mnist_captions(data, mnist_idx_dir, sizes=sizes, seed=0, source="t10k-split", download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert measured_on(model, folder, data_folder=str(data)) == ("mnist-captions", "test_seen", False)
    meta = json.loads((data / "metadata.json").read_text())
    meta["source"]["test_seen"] = "mnist t10k"  # as --source mnist-train makes it
    (data / "metadata.json").write_text(json.dumps(meta))
    said = r"test_seen split of .* is drawn from MNIST's t10k file: it includes .* --source t10k-split --seed 0 --out"
    with pytest.warns(CDrawWarning, match=said):
        assert measured_on(model, folder, data_folder=str(data))[2]
    with warnings.catch_warnings():  # the valid split is made from the training digits by design
        warnings.simplefilter("error")
        assert not measured_on(model, folder, split="valid", data_folder=str(data))[2]
    other = make_mnist_captions(
        tmp_path / "s3", mnist_idx_dir, sizes=sizes, seed=3, source="t10k-split", download=False
    )
    assert other["bans"] != meta["bans"]
    with pytest.warns(CDrawWarning, match=r"\(data seed 3\) are not the ones .* trained without \(data seed 0\)"):
        measured_on(model, folder, data_folder=str(tmp_path / "s3"))
    # figures marked so (as `cdraw eval --json` writes them into eval.json): cdraw info says so
    import shutil

    from cdraw.cli import main as cdraw_main

    shutil.copytree(folder, tmp_path / "model")
    figures = json.loads((folder / "eval.json").read_text())
    (tmp_path / "model" / "eval.json").write_text(json.dumps({**figures, "test_includes_training": True}))
    cdraw_main(["info", "--checkpoint", str(tmp_path / "model")])
    assert "(not a test figure: the model trained on digits of that split)" in capsys.readouterr().out
