"""The Hugging Face Hub conventions, offline: DRAW is a ModelHubMixin, loads "owner/name" (at a revision)
from a populated local cache, pushes its folder, and writes model cards with the Hub's YAML metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdraw import DRAW, CDrawError, DRAWConfig
from cdraw.generate import DEFAULT_MODELS, SHIPPED_MODELS
from cdraw.hub import card_data
from cdraw.io import read_record

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny() -> DRAW:
    torch.manual_seed(0)
    return DRAW(DRAWConfig(glimpses=2, enc_size=8, dec_size=8, z_size=3))


def cache_with(model_folder: Path, cache: Path, repo_id: str = "someone/draw-mnist") -> Path:
    """A Hugging Face cache holding ``model_folder`` as ``repo_id`` at COMMIT, with ``main`` pointing at it
    (the layout huggingface_hub writes: models--OWNER--NAME/{refs/main, snapshots/COMMIT/...})."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def test_draw_is_a_model_hub_mixin():
    import huggingface_hub

    import cdraw

    assert issubclass(cdraw.DRAW, huggingface_hub.ModelHubMixin)


def test_from_pretrained_reads_a_hub_id_from_the_local_cache_at_a_revision(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "m")
    cache = cache_with(tmp_path / "m", tmp_path / "hf")
    x = torch.rand(2, 1, 28, 28)
    for revision in (None, "main", COMMIT):
        again = DRAW.from_pretrained("someone/draw-mnist", revision=revision, cache_dir=cache, local_files_only=True)
        gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
        torch.testing.assert_close(again(x, generator=gen()).loss, model(x, generator=gen()).loss)
    with pytest.raises(CDrawError, match="could not be fetched from the Hugging Face Hub"):
        DRAW.from_pretrained("someone/not-there", cache_dir=cache, local_files_only=True)
    with pytest.raises(CDrawError, match="could not be fetched"):
        DRAW.from_pretrained("someone/draw-mnist", revision="v2", cache_dir=cache, local_files_only=True)


def test_the_cli_reads_a_hub_id_offline_from_the_cache(tmp_path):
    cache = cache_with(DEFAULT_MODELS["none"], tmp_path / "hf")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "CDRAW_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cdraw.cli", "info", "--checkpoint", "someone/draw-mnist"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "unconditional" in done.stdout and COMMIT in done.stdout


def test_save_pretrained_writes_a_card_with_hub_metadata_and_keeps_one_written_before(tmp_path):
    from huggingface_hub import ModelCard

    model = tiny()
    model.save_pretrained(tmp_path / "m")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "cdraw" and "draw" in card.data.tags and "model_hub_mixin" not in card.data.tags
    assert "DRAW (unconditional)" in card.text and "Full settings: `config.json`" in card.text
    (tmp_path / "m" / "README.md").write_text("# mine\n")
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "README.md").read_text() == "# mine\n"


def test_shipped_cards_carry_metadata_from_their_records():
    from huggingface_hub import ModelCard

    for folder in SHIPPED_MODELS:
        card = ModelCard.load(folder / "README.md")
        figures = json.loads((folder / "eval.json").read_text())
        assert card.data.library_name == "cdraw" and card.data.datasets == [figures["dataset"]], folder.name
        metrics = {m.metric_name: m.metric_value for m in card.data.eval_results}
        assert metrics["negative variational bound (nats per image)"] == pytest.approx(figures["bound"], abs=1e-3)
        # the split as the records say it: the label model trained on the test file, so its figure is no test one
        made = card_data(read_record(folder), figures, None).eval_results
        expected = {(m.metric_name, m.dataset_split) for m in made}
        assert {(m.metric_name, m.dataset_split) for m in card.data.eval_results} == expected, folder.name
        for _, split in expected:
            assert ("(includes training images)" in split) == (folder.name == "mnist_labels"), folder.name


def test_a_figure_on_part_of_its_split_says_so_in_the_card_and_in_info(tmp_path, capsys):
    """--limit and --iw-limit figures: "test (first N images)", never the test set's figure."""
    from cdraw import cli

    def splits(figures):
        return {m.metric_name.split(" ")[0]: m.dataset_split for m in card_data({}, figures, None).eval_results}

    whole = {"dataset": "binarized-mnist", "split": "test", "bound": 85.0, "images": 10000, "split_images": 10000}
    assert splits({**whole, "iwae": 84.0, "iwae_images": 10000}) == {"negative": "test", "importance-weighted": "test"}
    assert splits({**whole, "iwae": 96.4, "iwae_images": 1000}) == {
        "negative": "test",
        "importance-weighted": "test (first 1,000 images)",
    }
    assert splits({**whole, "images": 300}) == {"negative": "test (first 300 images)"}
    older = {k: v for k, v in whole.items() if k != "split_images"}  # a record from before split_images
    assert splits({**older, "iwae": 96.4, "iwae_images": 1000})["importance-weighted"] == "test (first 1,000 images)"
    torch.manual_seed(0)
    DRAW(DRAWConfig(glimpses=2, enc_size=4, dec_size=4, z_size=2)).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "eval.json").write_text(json.dumps({**whole, "images": 3, "iwae": 90.5, "iwae_images": 2}))
    cli.main(["info", "--checkpoint", str(tmp_path / "m")])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("evaluated"))
    assert "bound 85.00 nats (first 3 images), iwae 90.50 (first 2 images)" in line, line
    part = {**whole, "iwae": 96.3, "iwae_images": 1000, "iwae_images_bound": 100.02}  # and the bound there
    (tmp_path / "m" / "eval.json").write_text(json.dumps(part))
    cli.main(["info", "--checkpoint", str(tmp_path / "m")])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("evaluated"))
    assert "bound 85.00 nats, iwae 96.30 (first 1,000 images, whose bound is 100.02)" in line, line


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["repo"] = repo_id
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["loads"] = DRAW.from_pretrained(folder_path).config == model.config
            return "commit-url"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    model = tiny()
    assert model.push_to_hub("someone/tiny-draw") == "commit-url"
    assert uploaded == {
        "repo": "someone/tiny-draw",
        "files": ["README.md", "config.json", "model.safetensors"],
        "loads": True,
    }
