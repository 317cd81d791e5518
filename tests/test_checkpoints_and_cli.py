"""save_pretrained / from_pretrained, and the `cdraw` command line through subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cdraw import DRAW, CDrawError, DRAWConfig


@pytest.fixture
def saved(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    model = DRAW(tiny_cfg)
    with torch.no_grad():  # make every weight matter, not just the zero initial states
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_round_trip_gives_the_same_model(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # with its card
    loaded = DRAW.from_pretrained(path)
    assert loaded.config == model.config and not loaded.training  # in eval mode, as Hugging Face models load
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded(x, generator=gen()).loss, model(x, generator=gen()).loss, rtol=0, atol=0)
    torch.testing.assert_close(loaded.sample(2, generator=gen()), model.sample(2, generator=gen()), rtol=0, atol=0)


def test_corrupt_missing_and_mismatched_checkpoints_are_clear_errors(saved, tmp_path):
    _, path = saved
    weights, config = path / "model.safetensors", path / "config.json"
    good_config = config.read_text()

    weights.write_bytes(weights.read_bytes()[:100])  # truncated download
    with pytest.raises(CDrawError, match="corrupt or not a safetensors file"):
        DRAW.from_pretrained(path)

    weights.unlink()
    with pytest.raises(CDrawError, match="model.safetensors is missing"):
        DRAW.from_pretrained(path)

    DRAW(DRAWConfig()).save_pretrained(tmp_path / "big")
    (tmp_path / "big" / "config.json").write_text(good_config)  # tiny config, paper-sized weights
    with pytest.raises(CDrawError, match="does not match its config.json: wrong shapes"):
        DRAW.from_pretrained(tmp_path / "big")

    config.write_text("{not json")
    with pytest.raises(CDrawError, match="not valid JSON"):
        DRAW.from_pretrained(path)
    config.write_text(json.dumps({**json.loads(good_config), "zsize": 3}))
    with pytest.raises(CDrawError, match=r"unknown DRAWConfig fields \['zsize'\] \(did you mean z_size\?\)"):
        DRAW.from_pretrained(path)
    with pytest.raises(CDrawError, match="nowhere does not exist .nor is it a shipped model: mnist, mnist_captions"):
        DRAW.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CDrawError, match="model.safetensors is a file: save_pretrained writes a folder"):
        DRAW(DRAWConfig()).save_pretrained(tmp_path / "big" / "model.safetensors")


def cdraw(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cdraw.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_eval_prints_bound_and_iwae_and_writes_json(saved, data_dir, tmp_path):
    _, path = saved
    out = tmp_path / "figures" / "eval.json"
    proc = cdraw("eval", "--checkpoint", str(path), "--split", "test", "--limit", "300", "--iw-samples", "20",
                 "--data-dir", str(data_dir), "--json", str(out), "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "variational bound:" in proc.stdout and "IWAE estimate" in proc.stdout
    result = json.loads(out.read_text())
    assert result["images"] == 300 and result["split"] == "test"
    assert 0 < result["iwae"] <= result["bound"]  # more samples never loosen the bound
    assert abs(result["bound"] - (result["recon"] + result["kl"])) < 1e-3
    assert result["iwae_images"] == 300 and "iwae_images_bound" not in result  # the bound is on those images
    proc = cdraw("eval", "--checkpoint", str(path), "--split", "test", "--limit", "300", "--iw-samples", "5",
                 "--iw-limit", "40", "--data-dir", str(data_dir), "--json", str(out), "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 300 and result["iwae_images"] == 40 and "40 images" in proc.stdout
    # IWAE on part of the images: the bound on that part beside it (the bound of the first 40 alone)
    assert result["iwae"] <= result["iwae_images_bound"] and "the bound on those images" in proc.stdout
    proc = cdraw("eval", "--checkpoint", str(path), "--split", "test", "--limit", "40", "--iw-samples", "0",
                 "--data-dir", str(data_dir), "--json", str(out), "--quiet")  # fmt: skip
    assert json.loads(out.read_text())["bound"] == pytest.approx(result["iwae_images_bound"], abs=1e-4)


def test_cli_user_mistakes_are_one_line_and_exit_2(tmp_path, saved):
    _, path = saved
    for args, message in [
        (["eval", "--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (["eval", "--checkpoint", str(tmp_path)], "not a cdraw checkpoint"),
        (["eval", "--checkpoint", str(path), "--data-dir", str(tmp_path)], "not found"),
        (["eval", "--checkpoint", str(path), "--device", "gpu"], "unknown device"),
        (["eval", "--checkpoint", str(path), "--device", "cuda:99"], "no such CUDA GPU"),
        (["eval", "--checkpoint", str(path), "--json", str(tmp_path)], "is a folder"),  # before the work
    ]:
        proc = cdraw(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    proc = cdraw("eval", "--checkpoint", str(path), "--iw-samples", "-3")
    assert proc.returncode == 2 and "must be at least 0" in proc.stderr


def test_eval_refuses_fidelity_where_it_is_undefined_before_measuring_anything(tmp_path, monkeypatch):
    """A COCO caption model with --fidelity: the one-line error comes before the bound and IWAE."""
    from cdraw import ConditionConfig, evaluate
    from cdraw.conditioning import SentencePieceTokenizer

    SentencePieceTokenizer.train(["a red bus", "two dogs on grass"] * 20, vocab_size=30, max_length=8).save(
        tmp_path / "tok"
    )
    condition = ConditionConfig(kind="bilstm", embed_size=4, hidden_size=3, tokenizer=str(tmp_path / "tok"))
    cfg = DRAWConfig(image_size=(32, 32), channels=3, glimpses=2, enc_size=4, dec_size=4, z_size=2, condition=condition)
    DRAW(cfg).save_pretrained(tmp_path / "coco-model")
    model = DRAW.from_pretrained(tmp_path / "coco-model")
    monkeypatch.setattr(evaluate, "evaluation_data", lambda *a, **k: pytest.fail("measured before the check"))
    with pytest.raises(CDrawError, match="caption fidelity is defined for MNIST with captions"):
        evaluate.evaluate(model, tmp_path / "coco-model", dataset="coco", fidelity=True, progress=False)


def test_help_explains_with_examples():
    proc = cdraw("eval", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "--iw-samples" in proc.stdout
    assert cdraw("--help").returncode == 0
    assert "--data NAME" in proc.stdout and "data set: binarized-mnist, mnist, fashion-mnist" in proc.stdout
    # help and --version answer without loading torch (seconds of start-up)
    script = (
        "import sys\nfrom cdraw.cli import main\nfor argv in (['--help'], ['generate', '--help'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "cdraw generate --caption" in proc.stdout and proc.stdout.splitlines()[-1] == "False", proc.stdout
    proc = cdraw("eval", "--data", "svhn")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "svhn" in proc.stderr
    assert "binarized-mnist" in proc.stderr and "coco" in proc.stderr  # the choices, read when needed
    import cdraw as package

    assert package.DRAW is DRAW and "DRAW" in dir(package)  # the package's names still load on first use
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(package, "Nope")  # noqa: B009


def test_a_name_whose_module_cannot_import_says_why(monkeypatch):
    """``from cdraw import DRAW`` under a torch that lacks an API: the cause, not 'cannot import name'."""
    import cdraw as package

    def import_module(name: str):
        raise AttributeError("module 'torch' has no attribute 'nope'")

    monkeypatch.setattr(package.importlib, "import_module", import_module)
    with pytest.raises(ImportError, match="importing cdraw.model for cdraw.DRAW failed: module 'torch' has no"):
        package.__getattr__("DRAW")


def test_version():
    import cdraw as package

    proc = cdraw("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"cdraw {package.__version__}"
