"""One prepared command for a short GPU window: check, test, measure and train DRAW on CUDA.

In this order, writing what it has under --out after every stage (so a timeout still leaves a report):

  a. environment: torch, CUDA, GPU, cdraw and how it was installed, what is missing
  b. the CUDA tests: ``pytest -m cuda`` (model, compiled step, sampling, eval, save/load, a recipe step,
     training steps free of host syncs)
  c. speed of the paper config (T=64, read 2x2, write 5x5, LSTMs 256, z 100) in training images/s at
     batch 100, 500 and 2,000: eager, compiled, compiled with CUDA graphs (mode="reduce-overhead"),
     one eager cell first (a rate to train at whatever else fails); once a mode fails (compiling, or
     running what it compiled; running out of memory aside), its other cells are skipped (each failure
     costs its tracing time; a failed compiled mode stops CUDA graphs too), and a compiled cell starts
     only with the time the last one took (90 s before one is timed) left;
     then the readable step (DRAW.step as written) compiled and eager at the chosen batch, beside the
     fused one; then TF32 and bf16 autocast on 1,000 test images through the shipped default model
     (trained, the paper config), each checked against float32 (within 0.1 nats)
  d. with the time left: the paper config trained at the fastest setting found (the CPU recipe's
     learning rate scaled for the batch), then its test bound and an IWAE estimate (k = 100), the
     model folder (config, weights, training and eval records) saved under --out/model

Files under --out (at most 8 come back from the GPU machine): report.md (the tables), report.json
(every figure), tests.txt (pytest's output), model/{config.json, model.safetensors, training.json,
eval.json}. Scratch files (checkpoints, logs) go to --scratch.

On the GPU machine (its image has torch, accelerate, safetensors, pytest, ...; no network), with
``build/gpu-data/binarized_mnist/*.amat.gz`` copied there beforehand and carried with the tree
(``mkdir -p build/gpu-data && cp -r ../shared/data/binarized_mnist build/gpu-data/``), as one call
with timeout_s=600 (the default budget, 8 minutes, and the final evaluation are meant to fit in that:
not yet tried on a GPU; the machine's start, a minute or two, also counts against the window's 15
minutes of device time):
  PYTHONUNBUFFERED=1 TQDM_DISABLE=1 python3 benchmarks/gpu_run.py --data-dir build/gpu-data --out $OUT
It runs the working tree's cdraw over the image's own torch (no install needed; ``pip install
--no-deps --no-build-isolation -e .`` would do the same, at the cost of the install). It is offline
(CDRAW_OFFLINE=1): data that is not in --data-dir is an error, never a download.

  python benchmarks/gpu_run.py --smoke --out /tmp/x   # the same on the CPU at tiny sizes (CI)

Without a CUDA GPU it stops after the environment report, unless --smoke or --device cpu.

Not a test: nothing asserts a time. Figures that were not measured are written as such.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the working tree's cdraw when it is not installed (no network there)
    sys.path.insert(1, str(REPO))
#: What cdraw's training and evaluation import (the text encoder's packages are not needed here); the
#: last imports the model, data and training modules (``import cdraw`` alone loads none of them).
NEEDED = ("torch", "numpy", "safetensors", "accelerate", "yaml", "tqdm", "PIL", "psutil", "cdraw", "cdraw.training")
PAPER_BATCHES = (100, 500, 2000)
MODES = ("eager", "compiled", "cudagraphs")
#: The time-to-quality study's recipe at batch 100 (docs/results.md); scaled by sqrt(batch / 100).
BASE_LR, BASE_BATCH, BETA1, MAX_LR = 2e-3, 100, 0.5, 4e-3
PRECISION_TOLERANCE = 0.1  # nats per image
COMPILE_RESERVE_S = 90  # a compiled cell is started only with this much of its stage left, until one is timed
COMPILE_FAILED = "torch.compile failed"


class Report:
    """Everything measured so far; written (json + md) after every stage."""

    def __init__(self, out: Path):
        self.out, self.data = out, {"stages": {}}
        out.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, value) -> None:
        self.data["stages"][name] = value
        self.write()

    def write(self) -> None:
        tmp = self.out / "report.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.out / "report.json")
        tmp = self.out / "report.md.tmp"
        tmp.write_text(markdown(self.data))
        tmp.replace(self.out / "report.md")


def log(msg: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- a. environment ---------------------------------------------------------------------------


def environment() -> dict:
    """Versions and what is missing, as one line each; importing nothing that may be absent twice."""
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "missing": []}
    for name in NEEDED:
        try:
            mod = importlib.import_module(name)
            env[name] = getattr(mod, "__version__", "present")
        except Exception as e:  # a broken install is as missing as an absent one
            env["missing"].append(f"{name} ({type(e).__name__}: {e})"[:200])
    if not any(m.startswith("cdraw ") for m in env["missing"]):  # cdraw itself imports (its training may not)
        import cdraw

        env["cdraw_path"] = str(Path(cdraw.__file__).parent)
        from_tree = Path(cdraw.__file__).resolve().parent == REPO / "cdraw"
        env["cdraw_install"] = "this working tree" if from_tree else f"installed at {env['cdraw_path']}"
    try:
        import torch

        env["cuda_available"] = torch.cuda.is_available()
        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = p.name
            env["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
            env["gpus"] = torch.cuda.device_count()
        env["threads"] = torch.get_num_threads()
    except Exception:  # reported as missing above
        pass
    env["nvidia_smi"] = _run_quiet(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    return env


def _run_quiet(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable ({type(e).__name__})"


# -- b. the CUDA tests ------------------------------------------------------------------------


def cuda_tests(out: Path, data_dir: Path, timeout_s: float) -> dict:
    """``pytest -m cuda`` in a subprocess; its output in tests.txt."""
    env = {**os.environ, "CDRAW_DATA_DIR": str(data_dir), "CDRAW_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONUNBUFFERED"] = "1"  # what a timeout cuts off is still in the output
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", str(REPO / "tests")]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        got = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (e.stdout, e.stderr)]
        text, code = f"{got[0]}{got[1]}\n[timed out after {timeout_s:.0f} s]", None
    (out / "tests.txt").write_text(text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return {"exit_code": code, "summary": lines[-1] if lines else "", "seconds": round(time.perf_counter() - start, 1)}


# -- c. speed and precision -------------------------------------------------------------------


def speed_cell(
    cfg, batch: int, mode: str, device, steps: int, tf32: bool = False, bf16: bool = False, readable: bool = False
) -> dict:
    """Training images/s of one (batch, mode): forward, backward, clip, Adam, as the training loop does;
    ``readable``: with DRAW.step as written instead of the fused step (cdraw/fused.py)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        return _speed_cell(cfg, batch, mode, device, steps, bf16, readable)
    finally:  # never left on for what comes next (training sets its own)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def _speed_cell(cfg, batch: int, mode: str, device, steps: int, bf16: bool, readable: bool) -> dict:
    import torch

    from cdraw import DRAW

    torch._dynamo.reset()  # each cell compiles afresh, never against the recompile limit of earlier cells
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = DRAW(cfg).to(device)
    model.use_fused_step(not readable)
    if mode != "eager":
        model.compile_step(**({"mode": "reduce-overhead"} if mode == "cudagraphs" else {}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (torch.rand(batch, cfg.channels, *cfg.image_size, device=device) > 0.87).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    skips = _cudagraph_skips()
    start = time.perf_counter()
    for _ in range(3):  # compilation and warm-up (CUDA graphs: a warm-up run, recording, replays)
        step()
    _sync(device)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    r = {"images_per_s": round(steps * batch / seconds, 1), "first_steps_s": round(first_s, 1), "peak_mib": peak}
    if mode != "eager" and compile_fell_back(model):  # an eager rate, not this cell's: kept apart
        r["eager_images_per_s"] = r.pop("images_per_s")
        r["error"] = f"{COMPILE_FAILED}: the step ran eagerly (see the warning in the log)"
    if mode == "cudagraphs" and _cudagraph_skips() > skips:  # inductor ran it without graphs, with a warning
        r["cudagraphs_skipped"] = _cudagraph_skips() - skips
    return r


def _cudagraph_skips() -> int:
    """How often inductor has declined CUDA graphs so far (a warning each), if this torch counts it."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:
        return 0


def compile_fell_back(model) -> bool:
    """True when the model's compiled step could not be compiled and runs eagerly."""
    steps = getattr(model, "_compiled_steps", None)
    return steps is not None and steps.compiled is steps.eager


def precision_check(cfg, device, data, tf32: bool, bf16: bool) -> dict:
    """The bound on a fixed batch with fixed noise, minus float32's (nats per image): of the shipped
    default model when ``cfg`` is its config (a trained model's bound, about 85 nats on the test set
    and 100 on its first 1,000 images, is what the tolerance is for; an untrained one's is hundreds),
    else of a freshly initialised one."""
    import torch

    from cdraw import DRAW
    from cdraw.generate import DEFAULT_MODELS

    torch.manual_seed(0)
    folder = DEFAULT_MODELS["none"]  # the paper config, trained
    shipped = DRAW.from_pretrained(folder) if (folder / "config.json").is_file() else None
    model = shipped if shipped is not None and shipped.config == cfg else DRAW(cfg)
    model = model.to(device).eval()
    x = data.to(device)

    def bound(tf32_on: bool, bf16_on: bool) -> float:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32_on
        gen = torch.Generator(device).manual_seed(1)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_on):
            return model(x, generator=gen).loss.double().mean().item()

    reference = bound(False, False)
    other = bound(tf32, bf16)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return {
        "model": "shipped default" if model is shipped else "untrained",
        "bound_fp32": reference,
        "bound_minus_fp32": other - reference,
    }


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- d. training and evaluation ---------------------------------------------------------------


def train_and_eval(args, setting: dict, minutes: float, data_dir: Path, out: Path) -> dict:
    """The paper config trained for ``minutes`` through the training loop, then test bound and IWAE."""
    import torch

    from cdraw.config import TrainConfig
    from cdraw.data import ImageData, load_binarized_mnist
    from cdraw.evaluate import bound_sums, iwae_sum
    from cdraw.model import DRAW
    from cdraw.training import train

    batch = setting["batch"]
    lr = min(MAX_LR, BASE_LR * (batch / BASE_BATCH) ** 0.5)  # Adam: square-root scaling, capped
    # a cosine decay over the steps the measured speed allows (compilation and validation aside);
    # --max-minutes stops it in time if the estimate was high; no speed measured: --max-minutes alone
    rate = setting.get("images_per_s", 0)
    steps = max(10, int(0.8 * rate * max(minutes * 60 - 60, 0) / batch)) if rate else None
    run_dir = Path(args.scratch) / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = TrainConfig(
        model=args.model_config,
        output_dir=str(run_dir),
        data_dir=str(data_dir),
        epochs=10_000,
        max_steps=steps,
        max_minutes=minutes,
        batch_size=batch,
        lr=lr,
        adam_beta1=BETA1,
        warmup_steps=min(steps // 10, 100) if steps else 100,
        lr_schedule="cosine",
        compile=setting["mode"] != "eager",
        compile_mode="reduce-overhead" if setting["mode"] == "cudagraphs" else "default",
        tf32=setting.get("tf32", False),
        mixed_precision="bf16" if setting.get("bf16") else "no",
        valid_images=args.valid_images,
        eval_batch_size=args.eval_batch,
        log_every=args.log_every,
        checkpoint_every=10**9,  # each epoch only
        num_samples=16,
    )
    train_set = ImageData(load_binarized_mnist("train", data_dir))
    valid_set = ImageData(load_binarized_mnist("valid", data_dir))
    torch._dynamo.reset()
    start = time.perf_counter()
    valid = train(cfg, train_set, valid_set, dataset="binarized-mnist")
    train_s = time.perf_counter() - start
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # evaluate in float32

    folder = out / "model"  # saved first: a timeout during the evaluation keeps the model
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run_dir / "model", folder)
    model = DRAW.from_pretrained(run_dir / "model", device=args.device)
    test = ImageData(load_binarized_mnist("test", data_dir))
    gen = torch.Generator(args.device).manual_seed(0)
    bound = bound_sums(model, test, args.eval_batch, gen).means()
    eval_record = {"dataset": "binarized-mnist", "split": "test", **bound, "command": "benchmarks/gpu_run.py"}
    (folder / "eval.json").write_text(json.dumps(eval_record, indent=2))
    iw_images = test.select(slice(0, args.iw_images)) if args.iw_images else test
    iwae = iwae_sum(model, iw_images, args.iw_samples, max(1, args.eval_batch // 10), gen) / len(iw_images)
    eval_record.update(iwae=iwae, iw_samples=args.iw_samples, iwae_images=len(iw_images))
    (folder / "eval.json").write_text(json.dumps(eval_record, indent=2))
    curve = _curve(run_dir / "log.csv")
    return {
        "setting": setting,
        "lr": lr,
        "training_s": round(train_s, 1),
        "valid": valid,
        "test": eval_record,
        "curve": curve,
    }


def _curve(path: Path) -> list[dict]:
    import csv

    if not path.is_file():
        return []
    rows = [r for r in csv.DictReader(open(path)) if r["split"] == "valid"]
    return [{k: r[k] for k in ("step", "epoch", "loss", "elapsed_s")} for r in rows]


# -- the report -------------------------------------------------------------------------------


def markdown(data: dict) -> str:
    s = data["stages"]
    lines = ["# cdraw GPU run", ""]
    if "environment" in s:
        e = s["environment"]
        lines += [
            f"- torch {e.get('torch')}, CUDA {e.get('cuda')}, GPU {e.get('gpu', 'none')}, Python {e['python']}",
            f"- cdraw {e.get('cdraw')} ({e.get('cdraw_install', '?')}); "
            f"missing: {', '.join(e['missing']) or 'nothing'}",
            "",
        ]
    if "tests" in s:
        lines += [
            f"CUDA tests: {s['tests']['summary']} (exit {s['tests']['exit_code']}, {s['tests']['seconds']} s)",
            "",
        ]
    if "speed" in s:
        sp = s["speed"]
        lines += [f"Training images/s, {sp['config']} ({sp['device']}):", ""]
        lines += ["| batch | " + " | ".join(MODES) + " |", "| --- |" + " --- |" * len(MODES)]
        for batch in sp["batches"]:
            cells = [_cell(sp["cells"].get(f"{batch}/{mode}")) for mode in MODES]
            lines.append(f"| {batch} | " + " | ".join(cells) + " |")
        lines.append("")
        if "readable" in sp:
            rd, b = sp["readable"], sp["readable"]["batch"]
            lines.append(
                f"- readable step (DRAW.step as written) at batch {b}: compiled {_rate(rd.get('compiled'))}, "
                f"eager {_rate(rd.get('eager'))} (fused: compiled {_rate(sp['cells'].get(f'{b}/compiled'))}, "
                f"eager {_rate(sp['cells'].get(f'{b}/eager'))})"
            )
        for name, r in sp.get("precision", {}).items():
            off = not abs(r.get("bound_minus_fp32", 0)) <= PRECISION_TOLERANCE  # NaN too
            rate = f"not timed (beyond {PRECISION_TOLERANCE} nats)" if off else _rate(r.get("speed"))
            lines.append(f"- {name}: {rate}; bound - float32 = {_delta(r)}")
        if "best" in sp:
            lines.append(f"- fastest within tolerance: {sp['best']}")
        lines.append("")
    if "training" in s:
        t = s["training"]
        if "error" in t:
            lines += [f"Training: failed ({t['error']})", ""]
        else:
            te = t["test"]
            lines += [
                f"Training ({t['setting']}, lr {t['lr']:.2g}): {t['training_s']:.0f} s; "
                f"test bound {te['bound']:.2f} nats, IWAE k={te['iw_samples']} {te['iwae']:.2f} "
                f"({te['iwae_images']} images)",
                "",
            ]
    if "total_s" in data:
        lines.append(f"Total {data['total_s']:.0f} s")
    return "\n".join(lines) + "\n"


def _cell(r: dict | None) -> str:
    if r is None:
        return "not measured"
    if "error" in r:
        return "failed"
    if "skipped" in r:
        return f"skipped ({r['skipped']})"
    if r.get("cudagraphs_skipped"):  # inductor ran it without CUDA graphs: a compiled cell in effect
        return f"{r['images_per_s']:.0f} (without graphs: inductor skipped them {r['cudagraphs_skipped']}x)"
    return f"{r['images_per_s']:.0f}"


def _rate(r: dict | None) -> str:
    """A cell outside the table: with its unit when it was measured."""
    return _cell(r) + (" img/s" if r is not None and "images_per_s" in r and "error" not in r else "")


def _delta(r: dict) -> str:
    d = r.get("bound_minus_fp32")
    return "not measured" if d is None else f"{d:+.3f} nats"


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for report.md, report.json, tests.txt, model/")
    parser.add_argument("--scratch", help="folder for checkpoints and logs (default: a folder beside --out)")
    parser.add_argument("--data-dir", help="folder with binarized_mnist/ (default: $CDRAW_DATA_DIR)")
    parser.add_argument("--budget-min", type=float, default=8.0, help="minutes for everything (default: 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device there is (CI)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    os.environ.setdefault("CDRAW_OFFLINE", "1")  # no network there: missing data is an error, not a wait
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # a stage that hangs shows where, before the window's own limit kills the command
    faulthandler.dump_traceback_later(60 * args.budget_min + 30, exit=False)
    out = Path(args.out)
    args.scratch = args.scratch or str(out.parent / (out.name + "-scratch"))
    report = Report(out)

    env = environment()
    report.stage("environment", env)
    log(f"environment: torch {env.get('torch')}, GPU {env.get('gpu', 'none')}, missing: {env['missing'] or 'nothing'}")
    if env["missing"]:
        sys.exit(f"gpu_run: missing {', '.join(env['missing'])}: install them (see this script's --help)")

    import torch

    from cdraw import DRAWConfig
    from cdraw.data import ImageData, load_binarized_mnist
    from cdraw.errors import CDrawError

    if args.device is None and not args.smoke and not torch.cuda.is_available():  # not 8 minutes of a CPU
        sys.exit("gpu_run: torch sees no CUDA GPU (the environment report says why not): --device cpu runs it here")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_run: --device cuda but torch sees no CUDA GPU")
    data_dir = Path(args.data_dir or os.environ.get("CDRAW_DATA_DIR") or REPO.parent / "shared" / "data")
    try:
        test_batch = ImageData(load_binarized_mnist("test", data_dir)).batch(slice(0, 1000))
    except CDrawError as e:
        sys.exit(f"gpu_run: {e}")
    deadline = t0 + 60 * args.budget_min

    if args.smoke:
        cfg = DRAWConfig(glimpses=4, enc_size=32, dec_size=32, z_size=5, write_size=3)
        batches, speed_steps, test_timeout = (8, 16), 2, 60.0
        args.valid_images, args.eval_batch, args.log_every = 200, 200, 2
        args.iw_samples, args.iw_images, train_minutes = 2, 50, 0.05
    else:
        cfg = DRAWConfig()  # the paper's MNIST model
        batches, speed_steps, test_timeout = PAPER_BATCHES, 10, 150.0
        args.valid_images, args.eval_batch, args.log_every = 2000, 2000, 25
        args.iw_samples, args.iw_images, train_minutes = 100, 2000, None
    args.model_config = cfg

    # b. CUDA tests
    log("CUDA tests (pytest -m cuda)")
    report.stage("tests", cuda_tests(out, data_dir, min(test_timeout, max(10.0, deadline - time.perf_counter() - 60))))
    log(f"tests: {report.data['stages']['tests']['summary']}")

    # c. speed table, then precision at the fastest cell
    speed = {"config": "tiny (smoke)" if args.smoke else "paper", "device": str(device), "batches": list(batches)}
    speed["cells"] = cells = {}
    # speed and precision end at 55% of the budget (4.4 of 8 minutes), leaving training about 2
    speed_deadline = t0 + 0.55 * 60 * args.budget_min
    compiles = Compiles()
    for batch, mode in cell_order(batches):
        key = f"{batch}/{mode}"
        why_not = skip_reason(mode, device.type, args.smoke, compiles, speed_deadline - time.perf_counter())
        if why_not:
            cells[key] = {"skipped": why_not}
        else:
            cells[key] = _guarded(partial(speed_cell, cfg, batch, mode, device, speed_steps))
            if mode != "eager":
                compiles.record(key, cells[key], speed_steps * batch)
        log(f"speed {key}: {_cell(cells[key])}")
        report.stage("speed", speed)
    measured = {k: v for k, v in cells.items() if "images_per_s" in v}
    best_key = pick_setting(measured) if measured else f"{batches[0]}/eager"
    best = {"batch": int(best_key.split("/")[0]), "mode": best_key.split("/")[1]}
    best["images_per_s"] = measured.get(best_key, {}).get("images_per_s", 0)
    # the readable step (DRAW.step as written) beside the fused one, at the chosen batch: on the CPU
    # they train equally fast (docs/performance.md); if a GPU agrees, the fused module can go
    speed["readable"] = readable = {"batch": best["batch"]}
    for mode in ("compiled", "eager"):
        why_not = skip_reason(mode, device.type, args.smoke, compiles, speed_deadline - time.perf_counter())
        if why_not:
            readable[mode] = {"skipped": why_not}
        else:
            readable[mode] = _guarded(partial(speed_cell, cfg, best["batch"], mode, device, speed_steps, readable=True))
        log(f"speed {best['batch']}/{mode}, readable step: {_cell(readable[mode])}")
    speed["precision"] = {}
    checks = [("tf32", True, False), ("bf16 autocast", False, True)] if device.type == "cuda" else []
    if device.type != "cuda":  # bf16 autocast on a CPU is still worth checking for the maths
        checks = [("bf16 autocast", False, True)]
    for name, tf32, bf16 in checks:
        r = _guarded(partial(precision_check, cfg, device, test_batch, tf32, bf16))
        left = speed_deadline - time.perf_counter()
        in_time = skip_reason(best["mode"], device.type, args.smoke, compiles, left) is None
        if "error" not in r and abs(r["bound_minus_fp32"]) <= PRECISION_TOLERANCE and in_time:
            r["speed"] = _guarded(
                partial(speed_cell, cfg, best["batch"], best["mode"], device, speed_steps, tf32=tf32, bf16=bf16)
            )
            rate = r["speed"].get("images_per_s", 0)
            if rate > best["images_per_s"]:
                best = {**best, "tf32": tf32, "bf16": bf16, "images_per_s": rate}
        speed["precision"][name] = r
        log(f"precision {name}: {_delta(r)}")
    speed["best"] = best
    report.stage("speed", speed)

    # d. train with the time left (keeping a reserve for evaluation), then evaluate
    left_min = (deadline - time.perf_counter()) / 60
    minutes = train_minutes if train_minutes is not None else left_min - 1.5  # evaluation + saving
    if minutes <= 0 or left_min < minutes:
        report.stage("training", {"error": f"no time left ({left_min:.1f} min)"})
    else:
        if args.smoke:  # a few eager steps: the smoke run checks the path, not the speed
            best = {**best, "mode": "eager"}
        log(f"training the paper config for {minutes:.1f} min at {best}")
        result = _guarded(lambda: train_and_eval(args, best, minutes, data_dir, out))
        if "error" in result and best["mode"] == "cudagraphs" and (deadline - time.perf_counter()) / 60 > 2.5:
            log(f"training with CUDA graphs failed ({result['error']}); again with the compiled step")
            best = {**best, "mode": "compiled", "cudagraphs_error": result["error"]}
            minutes = (deadline - time.perf_counter()) / 60 - 1.5
            result = _guarded(lambda: train_and_eval(args, best, minutes, data_dir, out))
        report.stage("training", result)
        if "error" not in result:
            log(f"test bound {result['test']['bound']:.2f}, IWAE {result['test']['iwae']:.2f}")
    report.data["total_s"] = round(time.perf_counter() - t0, 1)
    report.write()
    log(f"done in {report.data['total_s']:.0f} s; report in {out / 'report.md'}")


class Compiles:
    """What the compiled cells so far tell the next: whether a mode compiles and runs here (after one
    failure the others of that mode would fail the same way, each costing its tracing time; a failure
    of the compiled mode also stops CUDA graphs, which build on it), and how long a compiled cell
    takes (90 s assumed until one is timed; each new batch size or mode compiles afresh). Any error
    counts (a failed compile, a backward that cannot compile, a graph that cannot be recorded) but
    running out of memory, which is the batch's."""

    def __init__(self):
        self.failed: dict[str, str] = {}  # mode -> the first cell of it that failed
        self.reserve_s: float = COMPILE_RESERVE_S

    def record(self, key: str, cell: dict, images_timed: int) -> None:
        error, mode = cell.get("error", ""), key.split("/")[1]
        if error and "out of memory" not in error.lower():
            for failed in (mode, "cudagraphs") if mode == "compiled" else (mode,):
                self.failed.setdefault(failed, key)
        elif "images_per_s" in cell:  # its first steps (compilation) and its timed ones, with a margin
            self.reserve_s = 1.25 * (cell["first_steps_s"] + images_timed / cell["images_per_s"]) + 5


def skip_reason(mode: str, device_type: str, smoke: bool, compiles: Compiles, left_s: float) -> str | None:
    """Why a speed cell of ``mode`` is not run (None: run it), with ``left_s`` seconds of its stage left."""
    if mode == "cudagraphs" and device_type != "cuda":
        return "needs CUDA"
    if smoke and mode != "eager":
        return "smoke: eager only"
    if mode in compiles.failed:
        return f"failed at {compiles.failed[mode]}"
    if left_s < (compiles.reserve_s if mode != "eager" else 10):
        return "out of time"
    return None


def cell_order(batches) -> list[tuple[int, str]]:
    """The speed table's cells: one eager cell first (seconds, and a rate to train at if no compiled
    cell can be measured), then the likely fastest (a short window may not reach the rest): compiled
    and CUDA graphs at the larger batches, then the others, the other eager cells last."""
    big_first = sorted(batches, reverse=True)
    first = (sorted(batches)[len(batches) // 2], "eager")  # the middle batch
    order = [first, *((b, m) for b in big_first for m in ("compiled", "cudagraphs"))]
    return order + [(b, "eager") for b in batches if (b, "eager") != first]


def pick_setting(measured: dict[str, dict]) -> str:
    """The fastest "batch/mode" cell, or a smaller batch within 80% of it: at equal time a smaller
    batch makes more optimiser steps, which the CPU study found to matter more than a little speed."""
    fastest = max(r["images_per_s"] for r in measured.values())
    good = [k for k, r in measured.items() if r["images_per_s"] >= 0.8 * fastest]
    return min(good, key=lambda k: (int(k.split("/")[0]), -measured[k]["images_per_s"]))


def _guarded(fn) -> dict:
    """A stage's result, or its error (one line, and the traceback's last lines) instead of a crash."""
    try:
        return fn()
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).strip()[:300]}", "traceback": traceback.format_exc()[-2000:]}


if __name__ == "__main__":
    main()
