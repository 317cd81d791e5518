"""The training loop and the MNIST recipe, end to end on real data with tiny models."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cdraw import DRAW, CDrawError, CDrawWarning
from cdraw.cli import main as cdraw_main
from cdraw.config import TrainConfig, parse_train_args, train_arg_parser
from cdraw.data import ImageData
from cdraw.generate import SHIPPED_MODELS
from cdraw.hub import resolve_checkpoint
from cdraw.io import (
    PACKAGE,
    SHIPPED,
    earlier_runs,
    model_source,
    read_record,
    run_length,
    shipped_model,
)
from cdraw.training import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "train_mnist.py"
TINY_FLAGS = ["--steps", "4", "--enc-size", "32", "--dec-size", "32", "--z-size", "5", "--write-size", "3"]
TINY_FLAGS += ["--log-every", "5", "--eval-batch-size", "2000", "--num-samples", "16", "--no-compile"]


@pytest.fixture
def small_sets(mnist):
    """1,000 training and 300 validation digits: 20 steps per epoch at batch 50."""
    return ImageData(mnist["train"][:1000]), ImageData(mnist["valid"][:300])


def tiny_train_config(out: Path, **overrides) -> TrainConfig:
    cfg, _ = parse_train_args([*TINY_FLAGS, "--batch-size", "50", "--output-dir", str(out)])
    return TrainConfig.from_dict({**cfg.to_dict(), **overrides})


def test_recipe_end_to_end_in_one_process(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(RECIPE), *TINY_FLAGS, "--max-steps", "12", "--output-dir", str(out)]
    cmd += ["--data-dir", str(data_dir), "--checkpoint-every", "10"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["split"] for r in rows] == ["train", "train", "train", "valid"]
    assert all(float(r["loss"]) > 0 for r in rows)
    assert (out / "samples" / "step-00000012.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "cdraw"))  # wandb's project name is TensorBoard's folder
    events.Reload()
    assert {"train/bound", "valid/bound", "train/kl"} <= set(events.Tags()["scalars"])  # accelerate's tracker
    assert events.Scalars("valid/bound")[-1].step == 12
    assert any(p.is_dir() for p in (out / "tensorboard" / "cdraw").iterdir())  # add_hparams: the run's settings
    assert (out / "checkpoints" / "latest").read_text() == "step-00000012"
    model = DRAW.from_pretrained(out / "model")
    assert model.config.glimpses == 4 and model.config.attention
    # the config of the run is recorded, and the paper's settings were the base
    recorded = TrainConfig.from_dict(__import__("yaml").safe_load((out / "train_config.yaml").read_text()))
    assert recorded.model.read_size == 2 and recorded.model.z_size == 5
    assert (recorded.lr, recorded.adam_beta1, recorded.lr_schedule) == (4e-3, 0.5, "cosine")  # the recipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recipe_on_two_cpu_processes_shards_data_and_keeps_weights_equal(data_dir, tmp_path):
    """Also the one training test with the compiled step (the default): compiled inside DDP."""
    out = tmp_path / "ddp"
    flags = [f for f in TINY_FLAGS if f != "--no-compile"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(free_port()), str(RECIPE), *flags, "--max-steps", "6"]
    cmd += ["--batch-size", "20", "--record-batches", "--output-dir", str(out), "--data-dir", str(data_dir)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiling the training step" in proc.stderr + proc.stdout
    if shutil.which(os.environ.get("CXX", "g++")):  # torch.compile's CPU backend needs one
        assert "could not compile" not in proc.stderr  # it really ran compiled
    audits = [json.loads((out / f"audit_rank{r}.json").read_text()) for r in range(2)]
    seen = [{i for batch in a["batches"] for i in batch} for a in audits]
    assert len(audits[0]["batches"]) == len(audits[1]["batches"]) == 6
    assert len(seen[0]) == len(seen[1]) == 6 * 20 and not (seen[0] & seen[1])  # disjoint shards
    assert audits[0]["weights_sha256"] == audits[1]["weights_sha256"]  # gradients were all-reduced
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows[-1]["split"] == "valid"


def to_legacy_layout(ckpt: Path) -> None:
    """Rewrite a checkpoint in the layout cdraw wrote before accelerate's save_state."""
    from accelerate.utils.other import load as accelerate_load

    optimizer = torch.load(ckpt / "optimizer.bin", weights_only=True)
    torch.save(optimizer, ckpt / "optimizer.pt")
    state = torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=True)
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    torch.save({"cpu": accelerate_load(ckpt / "random_states_0.pkl")["torch_manual_seed"]}, ckpt / "rng_rank0.pt")
    for name in ("optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (ckpt / name).unlink()


@pytest.mark.parametrize("layout", ["save_state", "legacy"])
def test_resume_continues_exactly(small_sets, tmp_path, layout):
    """20 steps, stop, resume to 40 == 40 straight (crossing an epoch, its validation and a checkpoint);
    also from a checkpoint of the earlier layout (a run started before the update)."""
    train_set, valid_set = small_sets
    try:
        straight = tiny_train_config(tmp_path / "straight", max_steps=40, deterministic=True, checkpoint_every=15)
        train(straight, train_set, valid_set)
        split = tiny_train_config(tmp_path / "split", max_steps=20, deterministic=True, checkpoint_every=15)
        train(split, train_set, valid_set)
        if layout == "legacy":
            to_legacy_layout(
                tmp_path / "split" / "checkpoints" / (tmp_path / "split" / "checkpoints" / "latest").read_text()
            )
        train(TrainConfig.from_dict({**split.to_dict(), "max_steps": 40}), train_set, valid_set, resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda run: [r for r in csv.DictReader(open(tmp_path / run / "log.csv")) if r["split"] == "valid"]  # noqa: E731
    assert [r["loss"] for r in rows("straight")] == [r["loss"] for r in rows("split")]


def test_resume_from_an_older_checkpoint_sets_later_ones_aside_and_keeps_the_runs_settings(
    small_sets, tmp_path, capsys, monkeypatch
):
    """`latest` pointed back at step 4 of 8 (to redo a stretch at a lower rate): the later checkpoints
    move to checkpoints/superseded/ (they were kept as `latest` while the new ones were pruned); the
    resume runs on the run's own settings (batch 50, tiny model) with the flags given now changing
    them, each change said; the optimizer takes the new betas (the checkpoint's used to win)."""
    out = tmp_path / "run"
    train(tiny_train_config(out, max_steps=8, checkpoint_every=2, keep_checkpoints=2, adam_beta1=0.5), *small_sets)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000006", "step-00000008"]
    (ckpts / "latest").write_text("step-00000006")
    capsys.readouterr()
    flags = ["--lr", "5e-4", "--adam-beta1", "0.9", "--batch-size", "25"]
    cfg, resume = parse_train_args(["--resume", "--output-dir", str(out), *flags])
    assert resume and (cfg.model.enc_size, cfg.max_steps, cfg.checkpoint_every) == (32, 8, 2)  # the run's, not defaults
    assert (cfg.lr, cfg.adam_beta1, cfg.batch_size) == (5e-4, 0.9, 25)
    assert parse_train_args(["--resume", str(out), *flags]) == (cfg, True)  # --resume RUN names the folder
    assert parse_train_args([*flags, "--output-dir", str(out), "--resume", str(out) + "/"]) == (cfg, True)
    monkeypatch.chdir(tmp_path)  # the same folder, spelt relative and absolute
    assert parse_train_args(["--resume", "run", *flags, "--output-dir", str(out)])[0].output_dir == "run"
    monkeypatch.setenv("HOME", str(tmp_path))  # `--resume=~/run`: no shell expands that ~
    assert parse_train_args(["--resume=~/run", *flags]) == (cfg, True)
    with pytest.raises(CDrawError, match="name two runs: give one"):
        parse_train_args(["--resume", str(out), "--output-dir", str(tmp_path / "other")])
    # --config is not read on resume: where a file given with it differs from the run (its own keys,
    # flags aside), one warning says so; the same settings, or no --config, say nothing
    mine = tmp_path / "mine.yaml"
    mine.write_text("lr: 1e-4\nbatch_size: 25\nmax_steps: 8\nmodel:\n  z_size: 9\n")
    with pytest.warns(CDrawWarning, match="mine.yaml is not read with --resume") as said:
        again, _ = parse_train_args(["--resume", "--output-dir", str(out), "--config", str(mine), *flags])
    assert again == cfg and len(said) == 1
    assert str(said[0].message).endswith("from them: model.z_size 9 (the run's 5); give a flag to change a setting")
    mine.write_text("max_steps: 8\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_train_args(["--resume", "--output-dir", str(out), "--config", str(mine)])
        parse_train_args(["--resume", "--output-dir", str(out)])
    train(cfg, *small_sets, resume=True)
    said = capsys.readouterr().out
    (line,) = [ln for ln in said.splitlines() if "--resume changes the run's settings: " in ln]
    changes = line.split("settings: ")[1].split(", ")
    assert sorted(changes) == ["adam_beta1 0.5 -> 0.9", "batch_size 50 -> 25", "lr 0.001 -> 0.0005"], line
    assert json.loads((out / "model" / "training.json").read_text())["images_seen"] == 6 * 50 + 2 * 25
    (aside,) = (ckpts / "superseded").iterdir()
    assert [p.name for p in aside.iterdir()] == ["step-00000008"] and "step-00000008" in said
    assert (ckpts / "latest").read_text() == "step-00000008"
    optimizer = torch.load(ckpts / "step-00000008" / "optimizer.bin", weights_only=True)
    assert optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    saved = load_file(ckpts / "step-00000008" / "model" / "model.safetensors")
    old = load_file(aside / "step-00000008" / "model" / "model.safetensors")
    assert any(not torch.equal(saved[k], old[k]) for k in saved)  # trained again at the new rate
    with pytest.raises(CDrawError, match="is at step 8, where it ends .*nothing to train"):
        train(cfg, *small_sets, resume=True)  # finished: says so instead of validating and saving again
    with pytest.raises(CDrawError, match="is at step 8, where it ends .*--epochs 1 of 8 steps"):
        train(
            TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 100, "epochs": 1, "batch_size": 125}),
            *small_sets,
            resume=True,
        )


def test_existing_run_is_never_overwritten_and_resume_needs_a_checkpoint(small_sets, tmp_path):
    train_set, valid_set = small_sets
    cfg = tiny_train_config(tmp_path / "run", max_steps=2)
    with pytest.raises(CDrawError, match="no checkpoint"):
        train(cfg, train_set, valid_set, resume=True)
    assert not (tmp_path / "run").exists()  # refused: no folder left behind (it held a .lock)
    (tmp_path / "run").mkdir()
    with pytest.raises(CDrawError, match="no checkpoint"):
        train(cfg, train_set, valid_set, resume=True)
    assert (tmp_path / "run").is_dir()  # a folder the user made stays
    train(cfg, train_set, valid_set)
    with pytest.raises(CDrawError, match="already holds a training run"):
        train(cfg, train_set, valid_set)
    other = TrainConfig.from_dict({**cfg.to_dict(), "model": {**cfg.model.to_dict(), "z_size": 7}})
    with pytest.raises(CDrawError, match="z_size: checkpoint 5, now 7"):
        train(other, train_set, valid_set, resume=True)


def test_init_weights_starts_a_new_run_from_a_trained_model(small_sets, tmp_path, capsys):
    """--init-weights: a missing model is refused before the run folder is touched; a trained one's
    weights are where the new run starts (at a negligible lr they are still there at its end)."""
    train_set, valid_set = small_sets
    train(tiny_train_config(tmp_path / "a", max_steps=2), train_set, valid_set)
    with pytest.raises(CDrawError, match="nowhere"):
        train(tiny_train_config(tmp_path / "b", init_weights=str(tmp_path / "nowhere")), train_set, valid_set)
    assert not (tmp_path / "b" / "train_config.yaml").exists()
    cfg = tiny_train_config(tmp_path / "b", max_steps=2, lr=1e-12, init_weights=str(tmp_path / "a" / "model"))
    train(cfg, train_set, valid_set)
    source, warm = (DRAW.from_pretrained(tmp_path / run / "model").state_dict() for run in ("a", "b"))
    assert all(torch.allclose(warm[name], w, atol=1e-6) for name, w in source.items())
    # its record says where it started, with the source's own record (so a chain of runs adds up),
    # also after a resume; a later fresh run in a folder without --init-weights says nothing of it
    first = json.loads((tmp_path / "a" / "model" / "training.json").read_text())
    started = json.loads((tmp_path / "b" / "model" / "training.json").read_text())["started_from"]
    assert started["init_weights"] == str(tmp_path / "a" / "model") and started["training"] == first
    assert started["tensors_copied"] == len(source) and "started_from" not in first
    train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), train_set, valid_set, resume=True)
    assert json.loads((tmp_path / "b" / "model" / "training.json").read_text())["started_from"] == started
    # a third run from the second: its model card names both earlier runs and adds up all three
    cfg_c = TrainConfig.from_dict(
        {**cfg.to_dict(), "output_dir": str(tmp_path / "c"), "init_weights": str(tmp_path / "b" / "model")}
    )
    train(cfg_c, train_set, valid_set)
    records = [json.loads((tmp_path / run / "model" / "training.json").read_text()) for run in "cba"]
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from ship_model import started_from
    finally:
        sys.path.pop(0)
    lines = started_from(records[0])
    assert [line.split("`")[1] for line in lines[:2]] == [str(tmp_path / "b" / "model"), str(tmp_path / "a" / "model")]
    total = sum(r["training_s"] for r in records) / 60
    assert lines[2] == f"- training time of all the runs on record: {total:.1f} min"
    assert started_from(first) == []
    cdraw_main(["info", "--checkpoint", str(tmp_path / "c")])  # and `cdraw info` says the same
    info = capsys.readouterr().out
    for (run, steps), record, line in zip((("b", 3), ("a", 2)), records[1:], lines[:2], strict=True):
        assert f"continued    from {tmp_path / run / 'model'}: {steps} steps (" in info
        assert f"from {tmp_path / run / 'model'}: {run_length(record)}" in info  # the card's words
        assert line.endswith(f"itself trained for {run_length(record)}")
    assert "min of training over 3 runs on record" in info
    # a fresh run without --init-weights in a folder an earlier start left a started_from.json in
    (tmp_path / "d").mkdir()
    shutil.copy(tmp_path / "b" / "started_from.json", tmp_path / "d")
    train(tiny_train_config(tmp_path / "d", max_steps=1), train_set, valid_set)
    assert "started_from" not in json.loads((tmp_path / "d" / "model" / "training.json").read_text())


def test_records_name_a_shipped_model_they_started_from_as_cdraw_path(tmp_path):
    """A run started from a model inside the cdraw package (a shipped one, from any checkout or
    spelling of its path) records it as ``cdraw/...``, not as this machine's path; any other model
    as given. The shipped models' own records follow it."""
    shipped = SHIPPED / "mnist"
    for spelling in (str(shipped), str(shipped) + "/", str(PACKAGE / "assets" / ".." / "assets" / "models" / "mnist")):
        assert model_source(spelling) == "cdraw/assets/models/mnist"
    assert model_source(str(tmp_path)) == str(tmp_path)  # a folder of the user's own
    assert model_source("someone/draw-mnist") == "someone/draw-mnist"  # a Hub id
    for folder in SHIPPED_MODELS:
        for name, _ in earlier_runs(read_record(folder)):
            assert not Path(name).is_absolute(), (folder.name, name)


def test_a_shipped_model_is_found_by_its_name_or_recorded_name_from_any_folder(tmp_path, monkeypatch, capsys):
    """`--checkpoint mnist_labels`, `--init-weights mnist` and the ``cdraw/assets/models/...`` that
    records and `cdraw info` print find the shipped folder from any working folder (an install has
    no checkout to be in); a folder of the user's own of that name comes first."""
    monkeypatch.chdir(tmp_path)
    for name in ("mnist_labels", "cdraw/assets/models/mnist_labels"):
        assert shipped_model(name) == SHIPPED / "mnist_labels"
        assert resolve_checkpoint(name) == SHIPPED / "mnist_labels"
        assert model_source(name) == "cdraw/assets/models/mnist_labels"  # an --init-weights run's record
    for other in (
        "nosuch",
        "someone/mnist",
        "cdraw/assets/models/../../io.py",
        "..",
        "cdraw",
        "cdraw/assets",
        "",
        "./mnist",
    ):
        assert shipped_model(other) is None, other
    assert DRAW.from_pretrained("mnist").config == DRAW.from_pretrained(SHIPPED / "mnist").config
    cdraw_main(["info", "--checkpoint", "mnist"])
    assert "ships        with cdraw as mnist (--checkpoint mnist); also: mnist_captions" in capsys.readouterr().out
    with pytest.raises(CDrawError, match="nosuch does not exist .nor is it a shipped model: mnist, mnist_captions"):
        resolve_checkpoint("nosuch")
    with pytest.raises(CDrawError, match="mnist does not exist"):  # a path, as troubleshooting.md says
        resolve_checkpoint("./mnist")
    (tmp_path / "mnist_labels").mkdir()  # the user's own folder of that name comes first
    with pytest.raises(CDrawError, match="is not a cdraw checkpoint .*; the shipped model mnist_labels is "):
        resolve_checkpoint("mnist_labels")
    assert resolve_checkpoint("cdraw/assets/models/mnist_labels") == SHIPPED / "mnist_labels"  # as that says


def test_a_run_that_has_not_written_its_model_yet_is_read_from_its_best_so_far(tmp_path):
    """`cdraw generate --checkpoint runs/x` while x trains (or after it was stopped): its best/, said."""
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "config.json").write_text("{}")
    with pytest.warns(CDrawWarning, match="run has no model/ yet .*: using its best model so far, .*run/best"):
        assert resolve_checkpoint(run) == run / "best"
    shutil.copytree(SHIPPED / "mnist", run / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_checkpoint(run) == run / "model"
        # the library and --init-weights read a run folder as the CLI does
        assert DRAW.from_pretrained(run).folder == run / "model"
    shutil.copytree(SHIPPED / "mnist", tmp_path / "training" / "best")
    with pytest.warns(CDrawWarning, match="training has no model/ yet") as said:
        DRAW.from_pretrained(tmp_path / "training")
    assert said[0].filename == __file__  # the warning names the caller's line, not cdraw's


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(small_sets, tmp_path):
    train_set, valid_set = small_sets
    cfg = tiny_train_config(tmp_path / "run", max_steps=10, checkpoint_every=10)
    train(cfg, train_set, valid_set)
    bad = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30, "lr": float("inf")})
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(bad, train_set, valid_set, resume=True)
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step-00000010"
    model = DRAW.from_pretrained(ckpt / "step-00000010" / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_recipe_run_by_cdraw_train_names_itself_so(monkeypatch, capsys):
    """`cdraw train mnist` runs ``python -m cdraw.recipes.mnist``: its usage and errors say `cdraw train
    mnist`, not `mnist.py`, and a mistyped flag is one line; a script of the user's own keeps its name."""
    import cdraw.recipes.mnist as recipe

    monkeypatch.setattr(sys, "argv", [recipe.__file__])
    assert train_arg_parser().prog == "cdraw train mnist"
    with pytest.raises(SystemExit) as stopped:  # a misspelt flag: one line, not the whole usage
        parse_train_args(["--max-stesp", "2"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1
    guess = "did you mean --max-steps?"
    assert said == f"error: unrecognized arguments: --max-stesp 2; {guess} (see `cdraw train mnist --help`)\n"
    with pytest.raises(SystemExit):  # the YAML key's spelling, value joined or not: the flag it means
        parse_train_args(["--batch_size=3", "--glimpses", "4", "--read_size", "2"])
    assert "did you mean --batch-size, --read-size?" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [str(RECIPE)])
    assert train_arg_parser().prog == RECIPE.name


def test_config_precedence_yaml_then_flags_and_clear_errors(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("lr: 0.0005\nmodel:\n  steps: 16\n  attention: false\n")
    cfg, resume = parse_train_args(["--config", str(yaml_file), "--steps", "8", "--batch-size", "7"])
    # T's earlier name, steps, still reads from a YAML file and as a flag (--glimpses is its name now)
    assert (cfg.lr, cfg.model.glimpses, cfg.model.attention, cfg.batch_size, resume) == (5e-4, 8, False, 7, False)
    assert parse_train_args(["--config", str(yaml_file), "--glimpses", "6"])[0].model.glimpses == 6
    assert cfg.model.z_size == 100  # untouched fields keep the paper's defaults
    yaml_file.write_text("lr: 1e-4\n")  # YAML reads this as a string
    assert parse_train_args(["--config", str(yaml_file)])[0].lr == 1e-4
    for text, message in [("epochs: '5'\n", "epochs must be of type int"), ("model: {image_size: 28}\n", "list of 2")]:
        yaml_file.write_text(text)
        with pytest.raises(CDrawError, match=message):
            parse_train_args(["--config", str(yaml_file)])
    with pytest.raises(CDrawError, match="must be positive"):
        parse_train_args(["--lr", "-1"])
    from cdraw.config import MAX_SEED
    from cdraw.errors import seed_int

    assert parse_train_args(["--seed", str(MAX_SEED)])[0].seed == seed_int(str(MAX_SEED))  # generate/eval: the same
    for seed in (MAX_SEED + 1, 10**23, -1):  # 10**23 overflowed torch's generator in a traceback
        with pytest.raises(CDrawError, match=f"seed must be between 0 and {MAX_SEED}"):
            parse_train_args(["--seed", str(seed)])
        with pytest.raises(argparse.ArgumentTypeError):
            seed_int(str(seed))
    yaml_file.write_text("learning_rate: 0.1\n")
    with pytest.raises(CDrawError, match=r"unknown TrainConfig fields \['learning_rate'\]; known"):
        parse_train_args(["--config", str(yaml_file)])  # nothing near: no guess
    yaml_file.write_text("batch_sise: 3\nmax-steps: 2\n")
    with pytest.raises(CDrawError, match=r"did you mean batch_size for batch_sise, max_steps for max-steps\?"):
        parse_train_args(["--config", str(yaml_file)])
    yaml_file.write_text("model:\n  glimpse: 3\n")
    with pytest.raises(CDrawError, match=r"unknown DRAWConfig fields \['glimpse'\] \(did you mean glimpses\?\)"):
        parse_train_args(["--config", str(yaml_file)])
    yaml_file.write_text("batch_size: [3\n")  # PyYAML says it in 5 lines: one, with where
    with pytest.raises(CDrawError, match=r"not valid YAML \(line 2, column 1\): expected ',' or ']'") as bad:
        parse_train_args(["--config", str(yaml_file)])
    assert "\n" not in str(bad.value)
    with pytest.raises(CDrawError, match="cannot read config file"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(CDrawError, match="shipped configs: coco, coco_paper, mnist, mnist_captions"):
        parse_train_args(["--config", "mnist_paper"])  # not a file, not a shipped name


def test_recipe_default_config_is_the_papers_mnist_setting():
    cfg, _ = parse_train_args([], default_config=REPO / "cdraw" / "recipes" / "configs" / "mnist.yaml")
    m = cfg.model
    assert (m.glimpses, m.read_size, m.write_size, m.enc_size, m.dec_size, m.z_size, m.attention) == (
        64, 2, 5, 256, 256, 100, True,
    )  # fmt: skip
    assert cfg.batch_size == 100 and cfg.grad_clip > 0
    # the optimiser recipe of docs/results.md, for both
    recipe = (cfg.lr, cfg.adam_beta1, cfg.warmup_steps, cfg.lr_schedule, cfg.init_from_data)
    assert recipe == (4e-3, 0.5, 500, "cosine", True)
    base, _ = parse_train_args(["--config", "mnist_no_attention"], default_config="mnist")  # shipped, by name
    assert not base.model.attention and base.output_dir != cfg.output_dir
    assert (base.lr, base.adam_beta1, base.warmup_steps, base.lr_schedule, base.init_from_data) == recipe


def test_help_gives_the_recipes_own_defaults():
    """--help of `cdraw train mnist` names what a run with no flags uses (its config file's lr 4e-3,
    not the dataclass's 1e-3), for every training and model flag; with no config, the dataclass's."""
    for config in ("mnist", "mnist_captions", None):
        cfg, _ = parse_train_args([], default_config=config)
        values = {**cfg.to_dict(), **{f"model.{k}": v for k, v in cfg.model.to_dict().items()}}
        parser = train_arg_parser(config, conditional=config == "mnist_captions")
        shown = {a.dest: a.help for a in parser._actions if a.dest in values and "(default:" in (a.help or "")}
        assert len(shown) > 30
        for dest, text in shown.items():
            if dest != "data_dir":  # its help explains its default in words
                assert text.endswith(f"(default: {values[dest]})"), (config, dest, text)
    assert "(default: 0.004)" in train_arg_parser("mnist").format_help()
    condition = train_arg_parser("mnist_captions", conditional=True).format_help()
    assert "label, bilstm or pretrained (default: bilstm)" in " ".join(condition.split())


def test_nan_gradients_with_a_finite_loss_also_stop_training(small_sets, tmp_path):
    """Filters of variance e^-120 give a finite loss but NaN gradients (0 * inf): caught at once."""
    train_set, valid_set = small_sets
    cfg = tiny_train_config(tmp_path / "run", max_steps=10, checkpoint_every=10)
    train(cfg, train_set, valid_set)
    folder = tmp_path / "run" / "checkpoints" / "step-00000010" / "model"
    model = DRAW.from_pretrained(folder)
    with torch.no_grad():
        model.reader.window.linear.weight[2].zero_()
        model.reader.window.linear.bias[2] = -120.0  # log sigma^2 of the read filters
    model.save_pretrained(folder)
    bad = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30, "log_every": 1})
    with pytest.raises(TrainingDiverged, match="gradients became NaN/Inf at or before step 11"):
        train(bad, train_set, valid_set, resume=True)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-00000010"


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    from cdraw.training import lr_at

    cfg = TrainConfig(lr=2e-3, warmup_steps=10, lr_schedule="cosine")
    assert lr_at(cfg, 0, 110) == pytest.approx(2e-4) and lr_at(cfg, 9, 110) == pytest.approx(2e-3)
    assert lr_at(cfg, 10, 110) == pytest.approx(2e-3)  # the cosine starts after the warm-up
    assert lr_at(cfg, 60, 110) == pytest.approx(1e-3) and lr_at(cfg, 110, 110) == pytest.approx(0, abs=1e-12)
    constant = TrainConfig(lr=2e-3, warmup_steps=4)
    assert [lr_at(constant, s, 100) for s in (1, 3, 50)] == pytest.approx([1e-3, 2e-3, 2e-3])
    with pytest.raises(CDrawError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)
    with pytest.raises(CDrawError, match="max_minutes"):
        TrainConfig(max_minutes=0)


def test_init_from_data_starts_at_the_mean_image_with_a_unit_gain_writer(small_sets):
    """c_0 = logit(mean image): a model that writes nothing draws the mean image; the write window
    starts at gamma = 1 / delta^2 with the patch's weights divided by as much (same first writes)."""
    from cdraw import DRAWConfig

    train_set, _ = small_sets
    torch.manual_seed(0)
    plain = DRAW(DRAWConfig(glimpses=4, enc_size=16, dec_size=16, z_size=3))
    torch.manual_seed(0)
    model = DRAW(DRAWConfig(glimpses=4, enc_size=16, dec_size=16, z_size=3)).init_from_data(train_set.mean_image())
    mean = train_set.images.float().mean(0)
    assert torch.allclose(torch.sigmoid(model.canvas0), mean.clamp(1e-3, 1 - 1e-3), atol=1e-5)
    stride = 27 / 4  # a 5x5 write window spanning 28 pixels
    assert model.writer.window.linear.bias[4].item() == pytest.approx(-2 * torch.log(torch.tensor(stride)).item())
    assert torch.allclose(model.writer.patch.weight * stride**2, plain.writer.patch.weight)
    with torch.no_grad():
        plain.writer.window.linear.bias[4] = 0.0  # gamma = 1, against gamma = 1 / delta^2
    h_dec = torch.randn(2, 16)
    assert torch.allclose(plain.writer(h_dec), model.writer(h_dec), atol=1e-6)  # same first writes
    with pytest.raises(CDrawError, match="mean image"):
        model.init_from_data(torch.zeros(1, 5, 5))


def test_trackers_log_the_runs_flat_hyperparameters_and_wandb_must_be_installed(small_sets, tmp_path):
    from cdraw.training import hyperparameters, trackers

    cfg = tiny_train_config(tmp_path / "run", max_steps=2, log_with="none")
    flat = hyperparameters(cfg)
    assert flat["lr"] == cfg.lr and flat["model.read_size"] == cfg.model.read_size and flat["max_minutes"] == "None"
    assert all(isinstance(v, int | float | str | bool) for v in flat.values())
    train(cfg, *small_sets)
    assert not (tmp_path / "run" / "tensorboard").exists()  # --log-with none: log.csv only
    assert trackers("none") == [] and "tensorboard" in trackers("all")
    from accelerate.utils import is_wandb_available

    if not is_wandb_available():
        with pytest.raises(CDrawError, match="wandb is not installed"):
            trackers("wandb")
    with pytest.raises(CDrawError, match="log_with must be"):
        TrainConfig(log_with="mlflow")


def fake_clock(monkeypatch, seconds_of_step) -> list[float]:
    """Training's clock (time.perf_counter) made to move only with its steps: ``seconds_of_step(step)``
    seconds for each, step counted after it; the clock, a one-element list, is returned to be reset."""
    from cdraw import training

    clock = [0.0]
    real_step = training.Trainer._train_step

    def timed_step(self, idx):
        real_step(self, idx)
        clock[0] += seconds_of_step(self.state.step)

    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(training.Trainer, "_train_step", timed_step)
    return clock


def test_max_minutes_ends_the_cosine_schedule_with_the_time_budget(small_sets, tmp_path, monkeypatch):
    """Each step takes 1 s of a fake clock: a 100 s budget is 100 steps, and the cosine must reach 0
    there (not at the 1,000 epochs of the config)."""
    clock = fake_clock(monkeypatch, lambda step: 1.0)
    cfg = tiny_train_config(
        tmp_path / "run", epochs=1000, max_minutes=100 / 60, log_every=5, lr=1e-3, lr_schedule="cosine"
    )
    train(cfg, *small_sets)
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "log.csv")) if r["split"] == "train"]
    lrs = {int(r["step"]): float(r["lr"]) for r in rows}
    assert max(lrs) == 100  # stopped at the budget
    assert lrs[50] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 49 / 100)), rel=1e-2)  # half-way
    assert lrs[100] < 1e-6  # decayed to 0 at the budget

    # a longer budget on resume: the cosine goes on from where the new budget puts it, from the first
    # step (its end placed by the speed so far), not from the full rate until the speed is measured
    clock[0] = 0.0
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "max_minutes": 200 / 60})
    train(cfg, *small_sets, resume=True)
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "log.csv")) if r["split"] == "train"]
    lrs = {int(r["step"]): float(r["lr"]) for r in rows}
    assert max(lrs) == 200
    assert lrs[105] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 104 / 200)), rel=1e-2)


def test_fresh_examples_every_epoch_are_asked_for_by_epoch_also_after_a_resume(small_sets, tmp_path):
    from cdraw.data import FreshEachEpoch

    train_set, valid_set = small_sets
    asked = []

    def make(epoch):  # each epoch its own images: the training set rolled by the epoch
        asked.append(epoch)
        return torch.roll(train_set.images, epoch, 0), None

    cfg = tiny_train_config(tmp_path / "run", epochs=2, checkpoint_every=1000)
    train(cfg, FreshEachEpoch(make), valid_set)
    assert asked == [0, 1]  # each epoch made once: not again when moved to the device or when it starts
    asked.clear()
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 3})
    train(cfg, FreshEachEpoch(make), valid_set, resume=True)
    assert asked[-1] == 2 and 1 not in asked  # the resumed run starts at epoch 2


def test_max_minutes_stops_where_the_cosine_ends_not_at_the_next_time_check(small_sets, tmp_path, monkeypatch):
    """A slow step late in the run (3 s more at step 93) moves the cosine's end to step 96, between two time
    checks (every 5 steps): training stops there, not after four steps at learning rate 0."""
    fake_clock(monkeypatch, lambda step: 4.0 if step == 93 else 1.0)
    cfg = tiny_train_config(
        tmp_path / "run", epochs=1000, max_minutes=100 / 60, log_every=5, lr=1e-3, lr_schedule="cosine"
    )
    train(cfg, *small_sets)
    record = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert record["step"] == 96


def test_max_minutes_stops_training_and_saves_the_model(small_sets, tmp_path):
    train_set, valid_set = small_sets
    cfg = tiny_train_config(tmp_path / "run", epochs=1000, max_minutes=1e-6, log_every=5)
    train(cfg, train_set, valid_set)
    record = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert record["step"] == 5  # stopped at the first check


def test_validation_sees_the_model_in_eval_mode_and_training_goes_on_in_train_mode(small_sets, tmp_path, monkeypatch):
    """Training-only behaviour (a pretrained encoder's state noise) is off while the validation bound
    and the sample grid are made, as in `cdraw eval`; the steps after a validation train again."""
    from cdraw import training

    seen = []
    real_bound_sums, real_step = training.bound_sums, training.Trainer._train_step

    def bound_sums(model, *args, **kwargs):
        seen.append(("valid", model.training))
        return real_bound_sums(model, *args, **kwargs)

    def train_step(self, idx):
        seen.append(("train", self._unwrapped.training))
        return real_step(self, idx)

    monkeypatch.setattr(training, "bound_sums", bound_sums)
    monkeypatch.setattr(training.Trainer, "_train_step", train_step)
    train(tiny_train_config(tmp_path / "run", epochs=2), *small_sets)
    assert set(seen) == {("valid", False), ("train", True)}
    assert seen.index(("valid", False)) < len(seen) - 1 - seen[::-1].index(("train", True))  # steps after it


def test_a_checkpoint_without_its_random_state_resumes_with_a_warning_that_says_so(small_sets, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_train_config(out, max_steps=4, checkpoint_every=2)
    train(cfg, *small_sets)
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    (ckpt / "random_states_0.pkl").unlink()
    capsys.readouterr()
    train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6}), *small_sets, resume=True)
    said = capsys.readouterr().out
    assert "has no random-number state for this process: the run continues but is not step-for-step" in said, said
    assert "processes" not in said.split("has no random-number state")[0].splitlines()[-1]


def test_resume_with_another_recipe_is_one_line_before_any_data_is_read(tmp_path):
    """`cdraw train mnist_labels --resume RUN` on an unconditional run (and the reverse) used to read
    the data and then fail in a traceback (no condition to size the labels by)."""
    import yaml

    from cdraw.config import RUN_CONFIG, SHIPPED_CONFIGS

    def resume(recipe: str, run_of: str):
        run = tmp_path / run_of
        run.mkdir(exist_ok=True)
        saved = TrainConfig.from_yaml(SHIPPED_CONFIGS / f"{run_of}.yaml").to_dict()
        (run / RUN_CONFIG).write_text(yaml.safe_dump({**saved, "output_dir": str(run)}))
        parser = train_arg_parser(SHIPPED_CONFIGS / f"{recipe}.yaml", conditional=recipe != "mnist")
        return parse_train_args(["--resume", str(run)], parser=parser)

    with pytest.raises(CDrawError, match=r"mnist trained an unconditional model, and .* trains a class-label model"):
        resume("mnist_labels", "mnist")
    with pytest.raises(CDrawError, match="trained a class-label model, and .* trains an unconditional model"):
        resume("mnist", "mnist_labels")
    with pytest.raises(CDrawError, match="trained a caption model, and .* trains a class-label model: resume it with"):
        resume("mnist_labels", "mnist_captions")
    assert resume("mnist_captions", "mnist_captions")[1] is True  # its own recipe: resumed
