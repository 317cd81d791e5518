"""Failures stay one line and lose nothing: damaged checkpoints, absurd configs, a full disk, two
runs in one folder, paths that leave their folder, and a fault-injection sweep over every write
of a checkpoint and of ``cdraw generate`` (docs/troubleshooting.md lists the sweep)."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdraw import DRAW, CDrawError, DRAWConfig
from cdraw.config import TrainConfig, parse_train_args
from cdraw.data import ImageData
from cdraw.training import TrainingDiverged, lock_run_dir, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "4", "--enc-size", "16", "--dec-size", "16", "--z-size", "3", "--write-size", "3"]
TINY += ["--log-every", "5", "--eval-batch-size", "300", "--num-samples", "4", "--no-compile", "--batch-size", "50"]


@pytest.fixture
def sets(mnist):
    return ImageData(mnist["train"][:1000]), ImageData(mnist["valid"][:100])


def config(out: Path, **overrides) -> TrainConfig:
    cfg, _ = parse_train_args([*TINY, "--output-dir", str(out)])
    return TrainConfig.from_dict({**cfg.to_dict(), **overrides})


def cdraw(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDRAW_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cdraw.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def finished_run(tmp_path: Path, sets, steps: int = 20, **overrides) -> TrainConfig:
    cfg = config(tmp_path / "run", max_steps=steps, checkpoint_every=10, **overrides)
    train(cfg, *sets)
    return cfg


# -- 2. damaged checkpoint files on --resume ----------------------------------------------------


@pytest.mark.parametrize(
    "damage", ["pickle in optimizer", "pickle in trainer state", "truncated rng", "rng of another kind"]
)
def test_damaged_optimizer_state_or_rng_files_are_refused_in_one_line(tmp_path, sets, damage):
    cfg = finished_run(tmp_path, sets)
    ckpt = tmp_path / "run" / "checkpoints" / (tmp_path / "run" / "checkpoints" / "latest").read_text()
    if damage == "pickle in optimizer":
        torch.save({"state": {}, "param_groups": [object()]}, ckpt / "optimizer.bin")  # a pickled object
    elif damage == "pickle in trainer state":  # accelerate would unpickle it (weights_only=False)
        torch.save({"step": 10, "hook": object()}, ckpt / "custom_checkpoint_0.pkl")
    elif damage == "truncated rng":  # accelerate's load_state would skip it without a word
        data = (ckpt / "random_states_0.pkl").read_bytes()
        (ckpt / "random_states_0.pkl").write_bytes(data[: len(data) // 2])
    else:
        torch.save([1, 2, 3], ckpt / "random_states_0.pkl")
    more = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30})
    with pytest.raises(CDrawError, match="is damaged") as e:
        train(more, *sets, resume=True)
    assert "\n" not in str(e.value) and "step-00000010" in str(e.value)  # it names the older checkpoint


# -- 3. absurd sizes in config.json ------------------------------------------------------------


def test_absurd_config_sizes_are_refused_before_anything_is_allocated(tmp_path):
    DRAW(DRAWConfig(glimpses=2, enc_size=8, dec_size=8, z_size=2)).save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**raw, "enc_size": 10**12}))
    one_line(cdraw("info", "--checkpoint", str(tmp_path / "m")), "config.json", "enc_size", "at most")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**raw, "enc_size": 60_000, "dec_size": 60_000}))
    one_line(cdraw("info", "--checkpoint", str(tmp_path / "m")), "parameters")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**raw, "z_size": "many"}))  # a type error names the file
    one_line(cdraw("info", "--checkpoint", str(tmp_path / "m")), str(tmp_path / "m" / "config.json"), "z_size")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**raw, "z_size": 3}))  # sane, but not these weights
    one_line(cdraw("info", "--checkpoint", str(tmp_path / "m")), "does not match its config.json", "wrong shapes")


# -- 4. a full disk ----------------------------------------------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_a_checkpoint_is_one_error_and_keeps_the_last_good_checkpoint(tmp_path, sets, monkeypatch):
    cfg = finished_run(tmp_path, sets)
    ckpt = tmp_path / "run" / "checkpoints"
    before = sorted(p.name for p in ckpt.iterdir())
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CDrawError, match="No space left on device") as e:
        train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30}), *sets, resume=True)
    assert "step-00000020" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in ckpt.iterdir()) == before  # no temporary folder left
    monkeypatch.undo()
    train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30}), *sets, resume=True)  # and it resumes
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv")) if r["split"] == "train"]
    assert steps == sorted(set(steps))  # no row logged twice


def test_a_full_disk_while_generating_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from cdraw import cli, pictures

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pictures, "labelled_grid", disk_full)
    with pytest.raises(SystemExit) as done:
        cli.main(["generate", "--num", "2", "--no-gif"])
    assert done.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "No space left on device" in err[0]
    assert not (tmp_path / "cdraw-output").exists() or not any((tmp_path / "cdraw-output").iterdir())
    out = tmp_path / "mine"
    with pytest.raises(SystemExit):
        cli.main(["generate", "--num", "2", "--no-gif", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == []  # the folder the user named, empty: nothing half-written


def test_an_output_folder_that_is_a_file_is_said_so(tmp_path, capsys, monkeypatch):
    from cdraw import cli
    from cdraw.training import lock_run_dir

    (tmp_path / "afile").write_text("mine")
    cases = [("afile", "--out {0}/afile is a file"), ("afile/sub", "--out {0}/afile/sub: {0}/afile is a file")]
    for out, said in cases:
        with pytest.raises(SystemExit):
            cli.main(["generate", "--num", "2", "--no-gif", "--out", str(tmp_path / out)])
        (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert line == "error: " + said.format(tmp_path) + ", not a folder; choose a folder", line
    (tmp_path / "cdraw-output").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # no --out: the default folder, cdraw-output, is a file here
        cli.main(["generate", "--num", "2", "--no-gif"])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line == "error: the default output folder cdraw-output is a file; choose a folder with --out", line
    with pytest.raises(CDrawError, match="--output-dir .*afile is a file, not a folder"):
        lock_run_dir(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"


# -- 5 and 6. one run per folder ---------------------------------------------------------------


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, sets):
    pytest.importorskip("fcntl", reason="run-folder locks use fcntl (POSIX)")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from cdraw.training import lock_run_dir; import pathlib, time; "
         f"held = lock_run_dir(pathlib.Path({str(tmp_path / 'run')!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CDrawError, match=f"another training run \\(process {holder.pid}\\)"):
            train(config(tmp_path / "run", max_steps=2), *sets)
    finally:
        holder.kill()
        holder.wait()
    train(config(tmp_path / "run", max_steps=2), *sets)  # a dead holder's lock never blocks


def test_the_lock_holds_within_a_process_and_is_released_with_its_file(tmp_path):
    pytest.importorskip("fcntl", reason="run-folder locks use fcntl (POSIX)")
    f = lock_run_dir(tmp_path / "a")
    with pytest.raises(CDrawError, match="another training run"):
        lock_run_dir(tmp_path / "a")  # a second open file in this process: refused as well
    f.close()
    lock_run_dir(tmp_path / "a").close()


def test_a_finished_run_without_checkpoints_is_never_overwritten(tmp_path, sets):
    import shutil

    cfg = finished_run(tmp_path, sets, steps=4)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    with pytest.raises(CDrawError, match="already holds a training run .*no checkpoint to resume"):
        train(cfg, *sets)
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == weights


# -- 7. the log after a resume, the NaN stop from scratch ------------------------------------------


def test_resume_from_an_older_checkpoint_logs_no_row_twice(tmp_path, sets):
    import shutil

    cfg = finished_run(tmp_path, sets, steps=20)  # checkpoints at 10 and 20, rows up to 20
    ckpt = tmp_path / "run" / "checkpoints"
    shutil.rmtree(ckpt / "step-00000020")
    (ckpt / "latest").write_text("step-00000010")  # as if it had crashed after step 19
    train(cfg, *sets, resume=True)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)) and ("20", "train") in keys


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path, sets):
    with pytest.raises(TrainingDiverged, match="No checkpoint was written yet"):
        train(config(tmp_path / "run", max_steps=10, lr=float("inf")), *sets)


# -- 8. too many captions ----------------------------------------------------------------------


def test_a_huge_captions_file_says_how_many_captions_one_call_takes(tmp_path):
    file = tmp_path / "captions.txt"
    file.write_text("the digit 1 is at the top left of the image\n" * 37_378)
    one_line(cdraw("generate", "--captions-file", str(file), "--out", str(tmp_path / "o")), "too many captions", "1024")


# -- 9. paths that leave their folder ------------------------------------------------------------


@pytest.mark.parametrize("target", ["../../other-run/checkpoints/step-00000010", "/etc", "", "step-00000099"])
def test_latest_must_name_a_checkpoint_of_this_run(tmp_path, sets, target):
    cfg = finished_run(tmp_path, sets, steps=10)
    (tmp_path / "run" / "checkpoints" / "latest").write_text(target)
    with pytest.raises(CDrawError, match="--resume: .*latest") as e:
        train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 20}), *sets, resume=True)
    assert "step-00000010" in str(e.value)  # names the checkpoint that is there


@pytest.mark.parametrize("where", ["/etc", "../elsewhere"])
def test_a_model_folder_reads_only_its_own_tokenizer(tmp_path, where):
    import shutil

    from cdraw.generate import CAPTION_WITHOUT_TEXT_EXTRA

    folder = tmp_path / "m"
    shutil.copytree(CAPTION_WITHOUT_TEXT_EXTRA, folder)  # a BiLSTM caption model: its tokenizer is a file
    raw = json.loads((folder / "config.json").read_text())
    raw["condition"]["tokenizer"] = where
    (folder / "config.json").write_text(json.dumps(raw))
    proc = cdraw("generate", "--checkpoint", str(folder), "--caption", "the digit 1 is at the top left of the image")
    one_line(proc, "outside the model folder")


# -- 10. smaller ones -----------------------------------------------------------------------------


def test_eval_json_folder_is_not_made_for_a_missing_checkpoint(tmp_path):
    one_line(cdraw("eval", "--checkpoint", str(tmp_path / "none"), "--json", str(tmp_path / "j" / "e.json")))
    assert not (tmp_path / "j").exists()


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        DRAW(DRAWConfig(glimpses=2, enc_size=8, dec_size=8, z_size=2)).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o644, name


# -- the fault-injection sweep -----------------------------------------------------------------------


def test_sweep_a_failure_at_every_write_of_a_checkpoint(tmp_path, sets, monkeypatch):
    """Fail the k-th file write of a checkpoint save, for every k: one error, the previous
    checkpoint intact and named by `latest`, nothing half-written, and --resume works after."""
    import cdraw.model
    import cdraw.training

    cfg = finished_run(tmp_path, sets, steps=10)  # a good checkpoint at step 10
    ckpt = tmp_path / "run" / "checkpoints"
    saved = {"step-00000010": DRAW.from_pretrained(ckpt / "step-00000010" / "model").state_dict()}  # before
    real = {"save": torch.save, "replace": os.replace, "write_text": Path.write_text}
    writes = []

    def counting(kind):
        def wrapper(*args, **kwargs):
            writes.append(kind)
            if len(writes) == fail_at:
                raise OSError(errno.EIO, f"injected failure at write {fail_at} ({kind})")
            return real[kind](*args, **kwargs)

        return wrapper

    fail_at, held = 0, []
    for fail_at in range(1, 40):
        writes.clear()
        monkeypatch.setattr(torch, "save", counting("save"))
        monkeypatch.setattr(cdraw.training.os, "replace", counting("replace"))
        monkeypatch.setattr(cdraw.model.os, "replace", counting("replace"))
        monkeypatch.setattr(Path, "write_text", counting("write_text"))
        try:
            train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 20}), *sets, resume=True)
            finished = True
        except CDrawError as e:
            assert "\n" not in str(e) and "injected failure" in str(e)
            finished = False
        finally:
            monkeypatch.undo()
        latest = (ckpt / "latest").read_text()
        assert latest in ("step-00000010", "step-00000020")
        weights = DRAW.from_pretrained(ckpt / latest / "model").state_dict()
        if latest == "step-00000010":  # intact: the very weights saved before the sweep
            assert all(torch.equal(weights[k], saved[latest][k]) for k in saved[latest]), latest
        else:  # a complete new save: every tensor there and finite
            assert weights.keys() == saved["step-00000010"].keys()
            assert all(torch.isfinite(w).all() for w in weights.values())
        assert not list(ckpt.glob(".*tmp*")), sorted(p.name for p in ckpt.iterdir())
        held.append(fail_at)
        if finished:  # no k-th write any more: every write of the save was tried
            break
        if latest == "step-00000020":  # the failure came after the checkpoint: start the next k from 10
            import shutil

            shutil.rmtree(ckpt / "step-00000020")
            (ckpt / "latest").write_text("step-00000010")
        for leftover in ("model", "best"):  # a failure may come while writing the final model
            assert not list((tmp_path / "run" / leftover).glob(".*tmp*"))
    assert len(held) > 5 and finished
    print(f"checkpoint sweep: failures at writes 1..{len(held) - 1} held")
    train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 30}), *sets, resume=True)


def test_sweep_a_failure_at_every_write_of_generate(tmp_path, monkeypatch, capsys):
    """cdraw generate with the k-th file write failing, for every k: one line, exit 2, and the
    folder exactly as the earlier call left it (no file of this call, the earlier ones whole)."""
    from cdraw import cli, generate

    out = tmp_path / "o"
    args = ["generate", "--caption", "the digit 1 is at the top left of the image", "--num", "2", "--out", str(out)]

    def exit_code(argv: list[str]) -> int:
        try:
            cli.main(argv)
        except SystemExit as e:
            return e.code
        return 0

    assert exit_code(args) == 0
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace, real_write = os.replace, Path.write_text
    calls = []

    def failing(real, at):
        def wrapper(*a, **k):
            calls.append(1)
            if len(calls) == at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*a, **k)

        return wrapper

    for fail_at in range(1, 30):
        calls.clear()
        monkeypatch.setattr(generate.os, "replace", failing(real_replace, fail_at))
        monkeypatch.setattr(Path, "write_text", failing(real_write, fail_at))
        import cdraw.model

        monkeypatch.setattr(cdraw.model.os, "replace", failing(real_replace, fail_at))
        code = exit_code([*args, "--seed", "1"])
        monkeypatch.undo()
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        now = {p.name: p.read_bytes() for p in out.iterdir()}
        if code == 0:
            break
        assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
        assert now == good  # the folder exactly as the earlier call left it
    assert code == 0 and fail_at > 5 and set(now) == set(good)
    print(f"generate sweep: failures at writes 1..{fail_at - 1} held")


def test_did_you_mean_guesses_long_flags_only_and_each_once():
    from cdraw.errors import did_you_mean

    flags = ["-h", "--help", "--max-steps", "--batch-size", "--num"]
    assert did_you_mean(["--max_steps", "5", "--max-stesp=2", "--nmu"], flags) == ["--max-steps", "--num"]
    assert did_you_mean(["--colour", "red", "-x", "--max_steps_per_epoch"], flags) == []  # nothing near: no guess


def test_a_user_error_is_one_line_even_when_it_wraps_a_multi_line_message(capsys):
    from cdraw.cli import run_main
    from cdraw.errors import CDrawError

    def fails():
        raise CDrawError("x.model is not a SentencePiece model (line one\n  line two)")

    with pytest.raises(SystemExit) as stopped:
        run_main(fails, training=False)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: x.model is not a SentencePiece model (line one line two)\n"
