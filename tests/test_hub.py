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
        expected = card_data(read_record(folder), figures, None).eval_results[0].dataset_split
        assert {m.dataset_split for m in card.data.eval_results} == {expected}, folder.name
        assert expected.endswith("(includes training images)") == (folder.name == "mnist_labels"), folder.name


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
