"""The ``cdraw`` command line: ``generate``, ``reconstruct``, ``eval``, ``info``, ``train``.

User mistakes (a missing checkpoint, a bad number, missing data) are printed on one line and exit
with status 2; nothing is half-written. Warnings (an unknown word, a truncated caption) are one
line each, starting with ``warning:``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from cdraw.errors import (
    DATA_DIR,
    EXIT_USER_ERROR,
    CDrawError,
    OneLineParser,
    non_negative_int,
    positive_int,
    seed_int,
)

EXIT_INTERRUPTED = 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_main(main: Callable[[], object], training: bool = True) -> None:
    """Run ``main``; a :class:`CDrawError` becomes one line on stderr and exit status 2, Ctrl-C one
    line (for ``training``, that its checkpoints are intact) and exit status 130."""
    warnings.showwarning = _one_line_warning
    try:
        main()
        sys.stdout.flush()  # a closed pipe shows here, where it is caught, not at exit
    except BrokenPipeError:  # the reader went away (`cdraw info | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)
    except CDrawError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever a wrapped error held
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        kept = ": the last complete checkpoint (if any) is intact" if training else ""
        print(f"interrupted{kept}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def pick_device(name: str | None):
    """The torch device a user asked for (default: CUDA when available), checked."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CDrawError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise CDrawError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise CDrawError(
            f"--device {name}: no such CUDA GPU here ({torch.cuda.device_count()} found); use --device cpu"
        )
    return device


def _load_model(args: argparse.Namespace, condition: str = "none"):
    """The model of --checkpoint (or the shipped default for ``condition``) on --device, in eval mode."""
    from cdraw.generate import default_checkpoint
    from cdraw.hub import resolve_checkpoint
    from cdraw.model import DRAW

    folder = resolve_checkpoint(args.checkpoint) if args.checkpoint else default_checkpoint(condition)
    return folder, DRAW.from_pretrained(folder, device=pick_device(args.device)).eval()


def cmd_generate(args: argparse.Namespace) -> None:
    from cdraw.generate import generate

    captions = list(args.caption or [])
    if args.captions_file:
        try:
            lines = Path(args.captions_file).expanduser().read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise CDrawError(f"cannot read --captions-file {args.captions_file}: {e}") from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise CDrawError(f"--captions-file {args.captions_file} has no captions (one per line)")
        captions += from_file
    labels = args.label
    if captions and labels is not None:  # --caption and --label are exclusive in the parser
        raise CDrawError("--captions-file gives captions and --label labels: a call draws one or the other")
    condition = "caption" if captions else "label" if labels is not None else "none"
    folder, model = _load_model(args, condition)
    kind = model.config.condition.kind if model.config.condition is not None else "none"
    if captions and kind not in ("bilstm", "pretrained"):
        raise CDrawError(f"{folder} is not a caption model (it is {_describe(kind)}): drop --caption")
    if labels is not None and kind != "label":
        raise CDrawError(f"{folder} is not a label model (it is {_describe(kind)}): drop --label")
    if not captions and labels is None and kind != "none":
        wants = "--label K (e.g. --label 3 7)" if kind == "label" else "--caption TEXT or --captions-file F"
        raise CDrawError(f"{folder} is {_describe(kind)}: give it {wants}")
    from cdraw.generate import output_dir

    start = time.perf_counter()
    with output_dir(args.out) as out:
        paths = generate(
            model,
            out,
            captions=captions or None,
            labels=labels,
            num=args.num,
            seed=args.seed,
            glimpses=args.glimpses,
            gif=args.gif,
        )
    print(
        f"model {folder}: {len(captions or labels or [None]) * args.num} images in {time.perf_counter() - start:.1f} s"
    )
    for path in paths:
        print(path)


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from cdraw.evaluate import evaluation_data, measured_on
    from cdraw.generate import reconstruct

    folder, model = _load_model(args)
    dataset, split, _ = measured_on(
        model, folder, args.data, args.split, stacklevel=3, data_dir=args.data_dir, data_folder=args.data_folder
    )
    data = evaluation_data(model, dataset, split, args.data_dir, args.data_folder)
    rows = slice(0, args.num)
    from cdraw.generate import output_dir

    with output_dir(args.out) as out:
        paths = reconstruct(model, data.batch(rows), out, condition=data.condition(rows), seed=args.seed, gif=args.gif)
    print(f"model {folder}: {min(args.num, len(data))} {dataset} images redrawn")
    for path in paths:
        print(path)


def cmd_info(args: argparse.Namespace) -> None:
    import importlib.util

    from cdraw.generate import default_checkpoint
    from cdraw.hub import resolve_checkpoint
    from cdraw.io import (
        EVAL_RECORD,
        SHIPPED,
        TRAINING_RECORD,
        data_source,
        earlier_runs,
        figures_include_training,
        measured_on_part,
        read_record,
        run_length,
        shipped_model_names,
        stored_parameters,
        training_seconds,
    )
    from cdraw.model import DRAW, load_config

    folder = resolve_checkpoint(args.checkpoint) if args.checkpoint else default_checkpoint("none")
    cfg = load_config(folder)
    pretrained = cfg.condition is not None and cfg.condition.kind == "pretrained"
    if pretrained and not importlib.util.find_spec("transformers"):
        # described without its text encoder, which needs the text extra to load (generating does)
        parameters = (
            f"{stored_parameters(folder):,} parameters trained, and the frozen text encoder "
            f"{cfg.condition.text_encoder} (to use the model: pip install 'cdraw[text]')"
        )
    else:
        model = DRAW.from_pretrained(folder, device=pick_device(args.device))
        parameters = f"{sum(p.numel() for p in model.parameters()):,} parameters"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    h, w = cfg.image_size
    print(f"checkpoint   {folder} ({size / 1e6:.1f} MB on disk)")
    if (where := folder.resolve()).parent == SHIPPED:
        name = where.name
        others = ", ".join(other for other in shipped_model_names() if other != name)
        print(f"ships        with cdraw as {name} (--checkpoint {name}); also: {others}")
    print(f"model        DRAW, {parameters}; {cfg.channels}x{h}x{w} images, {cfg.likelihood} likelihood")
    print(f"glimpses     T = {cfg.glimpses}; encoder LSTM {cfg.enc_size}, decoder LSTM {cfg.dec_size}, z {cfg.z_size}")
    if cfg.attention:
        print(f"attention    read {cfg.read_size}x{cfg.read_size}, write {cfg.write_size}x{cfg.write_size}")
    else:
        print("attention    none (reads the whole image, writes the whole canvas)")
    kind = cfg.condition.kind if cfg.condition is not None else "none"
    prior = "learned from the decoder state" if cfg.learned_prior else "N(0, I)"
    prior += " (alignDRAW's bounded form: tanh)" if cfg.bounded_prior else ""
    print(f"conditioning {_describe(kind)}; prior {prior}")
    r = read_record(folder)
    if r:
        source = f" ({source})" if (source := data_source(r)) else ""
        print(
            f"trained on   {r.get('dataset') or 'an unrecorded data set'}{source}: {run_length(r)}; "
            f"validation bound {r.get('valid', {}).get('bound', float('nan')):.2f} nats"
        )
        runs = earlier_runs(r)
        for name, earlier in runs:
            print(f"continued    from {name}: {run_length(earlier)}")
        if runs:
            print(f"in all       {training_seconds(r) / 60:.1f} min of training over {len(runs) + 1} runs on record")
    else:
        print(f"trained on   (no {TRAINING_RECORD} in the folder)")
    e = read_record(folder, EVAL_RECORD)
    if "bound" in e:
        keys = (
            "label_fidelity",
            "fidelity_test_seen",
            "fidelity_test_heldout",
            "fidelity_test_paraphrase",
            "retrieval_images_r_at_1",
            "retrieval_captions_r_at_1",
            "iwae",
        )

        def on(key: str) -> str:  # a figure on part of the split says so (and the bound there, if recorded)
            part = measured_on_part(e, key)
            there = e.get("iwae_images_bound") if key == "iwae" else None
            there = f", whose bound is {there:.2f}" if isinstance(there, float) else ""
            return f" (first {part:,} images{there})" if part is not None else ""

        def value(key: str) -> str:  # nats to two decimals like the bound, fractions to three
            return f"{e[key]:.2f}" if key == "iwae" else f"{e[key]:.3f}"

        extra = "".join(f", {k} {value(k)}{on(k)}" for k in keys if isinstance(e.get(k), float))
        bound = f"bound {e['bound']:.2f} nats{on('bound')}"
        print(f"evaluated    {e.get('dataset')} {e.get('split')}: {bound}{extra} ({EVAL_RECORD})")
        if figures_include_training(r, e):
            why = "images of the test file, --source t10k" if e.get("split") == "test" else "digits of that split"
            print(f"             (not a test figure: the model trained on {why})")
    card = folder / "README.md"
    if card.is_file():
        print(f"model card   {card}")


def _describe(kind: str) -> str:
    return {
        "none": "unconditional",
        "label": "a class-label model",
        "bilstm": "a caption model (BiLSTM encoder)",
        "pretrained": "a caption model (pretrained text encoder)",
    }[kind]


def cmd_train(args: argparse.Namespace) -> None:
    from cdraw.launch import run_recipe
    from cdraw.recipes import NAMES

    if args.recipe is None:  # argparse would also name the optional overrides as missing
        raise CDrawError(f"which recipe? cdraw train RECIPE, with RECIPE one of {', '.join(NAMES)}")
    launch_args, overrides = _launch_args_after_recipe(args.overrides)
    sys.exit(run_recipe(args.recipe, args.launch_args + launch_args, overrides))


def cmd_prepare(args: argparse.Namespace) -> None:
    from cdraw.prepare import DATASETS, prepare

    if args.dataset not in DATASETS:
        which = "which data set?" if args.dataset is None else f"no data set {args.dataset!r} to prepare:"
        raise CDrawError(f"{which} cdraw prepare DATASET, with DATASET one of {', '.join(DATASETS)}")
    prepare(args.dataset, args.flags)


def _launch_args_after_recipe(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--launch-args`` given after the recipe's name (where the recipe's own flags go) split out of
    them: no recipe has such a flag, so it can only be meant for the launcher."""
    launch, rest, args = [], [], iter(overrides)
    for a in args:
        value = None
        if a == "--launch-args":
            value = next(args, None)  # none: left to the recipe's parser, which says what is wrong
        elif a.startswith("--launch-args="):
            value = a.removeprefix("--launch-args=")
        if value is None:
            rest.append(a)
        else:
            launch += value.split()
    return launch, rest


def cmd_eval(args: argparse.Namespace) -> None:
    from cdraw.evaluate import evaluate
    from cdraw.io import atomic_write

    out = Path(args.json).expanduser() if args.json else None
    folder, model = _load_model(args)
    if out is not None:  # find an unwritable --json before the work, not after
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CDrawError(f"cannot write {out}: {e.strerror}") from None
        if out.is_dir():
            raise CDrawError(f"--json {out} is a folder: give a file name (for example {out / 'eval.json'})")
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise CDrawError(f"cannot write {out}: the folder {out.parent} is not writable")
    result = evaluate(
        model,
        folder,
        dataset=args.data,
        split=args.split,
        data_dir=args.data_dir,
        data_folder=args.data_folder,
        limit=args.limit,
        batch_size=args.batch_size,
        iw_samples=args.iw_samples,
        iw_limit=args.iw_limit,
        fidelity=args.fidelity,
        fidelity_samples=args.fidelity_samples,
        retrieval=args.retrieval,
        seed=args.seed,
        progress=not args.quiet,
    )
    if out is not None:
        try:
            atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
        except OSError as e:  # the figures are not lost: printed whole before the one-line error
            print(json.dumps(result, indent=2))
            raise CDrawError(f"cannot write {out}: {e.strerror} (the figures are printed above)") from None
        print(f"wrote {out}")


def _add_common(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    p.add_argument("--checkpoint", help=checkpoint_help)
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random draws (default: 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def _add_data_places(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=f"folder with the data (default: {DATA_DIR})")
    p.add_argument(
        "--coco-dir",
        "--captions-dir",
        dest="data_folder",
        metavar="FOLDER",
        help="a data set made in a folder of its own elsewhere, as given to the training recipe: "
        "cdraw prepare coco/mnist-captions --out (default: inside --data-dir)",
    )


class _DataSetNames:
    """The data sets' names as argparse's ``choices``, read only when a ``--data`` is checked or its
    help shown (with a metavar, so that argparse does not list them while building the parser):
    importing the data sets imports torch, which ``cdraw --help`` need not wait for."""

    def __iter__(self):
        from cdraw.datasets import DATASETS

        return iter(DATASETS)

    def __contains__(self, name: object) -> bool:
        return name in list(self)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cdraw",
        description="DRAW and alignDRAW image generation. `cdraw COMMAND --help` for each command.",
        epilog="examples:\n"
        '  cdraw generate --caption "the digit 7 is at the top left of the image ."\n'
        "  cdraw generate --num 64 --out samples/\n"
        "  cdraw info --checkpoint runs/mnist\n"
        "  cdraw eval --checkpoint runs/mnist --split test",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from cdraw import __version__

    parser.add_argument("--version", action="version", version=f"cdraw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    raw = argparse.RawDescriptionHelpFormatter

    gen = sub.add_parser(
        "generate",
        help="draw images (from captions, a label, or nothing) and an animation of the drawing",
        description="Draw images with a model and save images.png (one row per caption or label), "
        "drawing.gif (the canvas step by step, write windows in green) and, for caption models, "
        "alignment-K.png (which words each step looked at). Without --checkpoint the models that "
        "ship with cdraw are used: a caption model for --caption, a label model for --label, an "
        "unconditional MNIST model otherwise. Each call writes into a new folder under cdraw-output/ "
        "(index.html shows everything together) unless --out is given.",
        epilog="examples:\n"
        '  cdraw generate --caption "the digit 7 is at the top left of the image ."\n'
        '  cdraw generate --caption "the digit 1 is on the left of the digit 2 ." "the digit 3 is at the top of '
        'the digit 8 ."\n'
        "  cdraw generate --captions-file captions.txt --num 4 --out pictures/\n"
        "  cdraw generate --label 3 --num 16                # the shipped label model\n"
        "  cdraw generate --checkpoint runs/mnist_labels --label 3   # a label model you trained\n"
        "  cdraw generate --num 64 --no-gif                 # the shipped unconditional model\n"
        "  cdraw generate --checkpoint user/cdraw-model     # a Hugging Face Hub id (when online)",
        formatter_class=raw,
    )
    _add_common(
        gen,
        "model folder, a training run folder, a shipped model by name (e.g. mnist_labels) or a Hugging Face Hub"
        " id (default: the shipped model)",
    )
    what = gen.add_mutually_exclusive_group()
    what.add_argument("--caption", nargs="+", metavar="TEXT", help="one or more captions (quote each)")
    what.add_argument("--label", type=non_negative_int, nargs="+", metavar="K", help="one or more class labels")
    gen.add_argument("--captions-file", metavar="F", help="more captions, one per line")
    gen.add_argument("--num", type=positive_int, default=16, help="images per caption or label (default: 16)")
    gen.add_argument(
        "--glimpses", "--steps", type=positive_int, help="glimpses to draw (default: the model's T, its glimpses)"
    )
    gen.add_argument(
        "--out",
        help="output folder; an earlier call's pictures in it are replaced, no other file (default: a new "
        "folder cdraw-output/DATE-TIME for every call)",
    )
    gen.add_argument("--gif", action=argparse.BooleanOptionalAction, default=True, help="write drawing.gif")
    gen.set_defaults(func=cmd_generate)

    rec = sub.add_parser(
        "reconstruct",
        help="encode real images and redraw them: read/write windows, per-step KL",
        description="Run real images of the model's data set through the model and save originals.png, "
        "reconstructions.png, drawing.gif (read windows red, write windows green, as in the DRAW paper's "
        "figures) and kl.png (the mean KL of each step: what each glimpse added).",
        epilog="examples:\n  cdraw reconstruct --num 16\n  cdraw reconstruct --checkpoint runs/mnist --split valid",
        formatter_class=raw,
    )
    _add_common(
        rec, "model folder, run folder, shipped model by name or Hub id (default: the shipped unconditional model)"
    )
    rec.add_argument(
        "--data",
        choices=_DataSetNames(),
        metavar="NAME",
        help="data set: %(choices)s (default: the one the model was trained on)",
    )
    rec.add_argument("--split", help="which split (default: the test split)")
    _add_data_places(rec)
    rec.add_argument("--num", type=positive_int, default=16, help="images to redraw (default: 16)")
    rec.add_argument(
        "--out",
        help="output folder; an earlier call's pictures in it are replaced, no other file (default: a new "
        "folder cdraw-output/DATE-TIME for every call)",
    )
    rec.add_argument("--gif", action=argparse.BooleanOptionalAction, default=True, help="write drawing.gif")
    rec.set_defaults(func=cmd_reconstruct)

    info = sub.add_parser(
        "info",
        help="what a model is: sizes, attention, conditioning, training data and recorded figures",
        description="Describe a model without running it: its sizes, attention and conditioning, what it was "
        "trained on and for how long (every run it continued), and the figures `cdraw eval --json` recorded.",
        epilog="examples:\n  cdraw info\n  cdraw info --checkpoint runs/mnist_captions",
        formatter_class=raw,
    )
    info.add_argument(
        "--checkpoint", help="model folder, run folder, shipped model by name or Hub id (default: the shipped model)"
    )
    info.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    info.set_defaults(func=cmd_info)

    tr = sub.add_parser(
        "train",
        help="run a training recipe (the package's cdraw.recipes.NAME; several processes through accelerate launch)",
        description="Train a model with a recipe: one process on every CPU core (or the GPU), or several "
        "through accelerate launch (--launch-args). `cdraw train RECIPE --help` lists the recipe's settings.",
        epilog="examples:\n  cdraw train mnist --max-steps 200\n  cdraw train mnist_captions --epochs 5\n"
        "  cdraw train --launch-args='--multi_gpu --num_processes 2' mnist   # 2 processes through accelerate",
        formatter_class=raw,
    )
    tr.add_argument("recipe", nargs="?", help="mnist, mnist_labels, mnist_captions or coco")
    tr.add_argument("overrides", nargs=argparse.REMAINDER, help="flags for the recipe (see its --help)")
    tr.add_argument(
        "--launch-args",
        type=str.split,
        default=[],
        help="flags for accelerate launch, quoted (before RECIPE, or after it among its flags)",
    )
    tr.set_defaults(func=cmd_train)

    from cdraw.prepare import DATASETS

    prep = sub.add_parser(
        "prepare",
        help="make a data set ready: fetch binarized MNIST, make MNIST with captions, resize your COCO files",
        description="Make a data set ready before training on it (MNIST data sets are also fetched or made when "
        "a command first needs them; COCO is made only from files you have). `cdraw prepare DATASET --help` "
        "lists its settings.",
        epilog="examples:\n  cdraw prepare binarized-mnist --data-dir data/\n"
        "  cdraw prepare mnist-captions --out data/mnist_captions\n"
        "  cdraw prepare coco --captions ~/coco/annotations/captions_train2014.json --images ~/coco/train2014",
        formatter_class=raw,
    )
    prep.add_argument("dataset", nargs="?", metavar="DATASET", help=", ".join(DATASETS))
    prep.add_argument("flags", nargs=argparse.REMAINDER, help="flags for that data set (see its --help)")
    prep.set_defaults(func=cmd_prepare)

    ev = sub.add_parser(
        "eval",
        help="test-set bound, IWAE estimate, fidelity and retrieval of a model",
        description="Measure a model on its data set: the variational bound in nats (exact mean over the "
        "split) and an importance-weighted (IWAE) estimate with K samples; for conditional models also "
        "--fidelity (do generated images show the label or caption asked for?) and --retrieval "
        "(alignDRAW's caption ranking).",
        epilog="examples:\n"
        "  cdraw eval --checkpoint runs/mnist --split test\n"
        "  cdraw eval --checkpoint runs/mnist/best --iw-samples 1000 --json test.json\n"
        "  cdraw eval --checkpoint runs/mnist_labels --iw-samples 0 --fidelity\n"
        "  cdraw eval --checkpoint runs/mnist_captions --iw-samples 0 --fidelity --retrieval 100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument(
        "--checkpoint",
        help="model folder, run folder, shipped model by name or Hub id (default: the shipped unconditional model)",
    )
    ev.add_argument(
        "--data",
        choices=_DataSetNames(),
        metavar="NAME",
        help="data set: %(choices)s (default: the one the model was trained on; see --split)",
    )
    ev.add_argument(
        "--split", help="which split (default: test; test_seen for mnist-captions, val for coco); see --data"
    )
    ev.add_argument(
        "--iw-samples",
        type=non_negative_int,
        default=10,
        help="K for the IWAE estimate; 0 skips it; use 1000+ for paper-grade figures, slow on a CPU (default: 10)",
    )
    ev.add_argument(
        "--fidelity",
        action="store_true",
        help="labels: share of images generated per class that a shipped classifier reads as that class; "
        "MNIST captions: share whose digits and positions fit the caption, on seen, held-out and paraphrased captions",
    )
    ev.add_argument(
        "--fidelity-samples",
        type=positive_int,
        default=100,
        help="images per class (labels) or captions per test split (captions) for --fidelity (default: 100)",
    )
    ev.add_argument(
        "--retrieval",
        type=positive_int,
        metavar="N",
        help="score N images under N distinct captions by the bound, then rank each caption's image among "
        "the N images and each image's caption among the N captions: R@1, R@5, median rank (N^2 passes)",
    )
    ev.add_argument("--json", help="also write the figures to this JSON file")
    _add_data_places(ev)
    ev.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass (default: 1000)")
    ev.add_argument(
        "--limit",
        type=positive_int,
        help="only the first N images of the split, in file order (a quick look; they need not be typical: "
        "the first 1,000 MNIST test digits are harder than the rest)",
    )
    ev.add_argument(
        "--iw-limit",
        type=positive_int,
        metavar="N",
        help="the IWAE estimate on the first N of those images only (it costs --iw-samples forward passes each)",
    )
    ev.add_argument("--seed", type=seed_int, default=0, help="seed of the latent samples (default: 0)")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cdraw`` console script."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    words = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, word in enumerate(words) if word in commands), 0)
    if early := [word for word in words[:at] if word not in ("-h", "--help", "--version")]:  # cdraw --num 4 generate
        commands[words[at]].unrecognized(early, f"; flags go after the command: cdraw {words[at]} --flag")
    args, unknown = parser.parse_known_args(words)
    if unknown:  # as parse_args says it, with the flags it may mean; a recipe's (data set's) flag before its name
        after = words[words.index(args.command) + 1 :] if args.command in words else []
        goes = {"train": "a recipe's flags go after its name: cdraw train RECIPE --flag",
                "prepare": "a data set's flags go after its name: cdraw prepare DATASET --flag"}  # fmt: skip
        where = f"; {goes[args.command]}" if args.command in goes and set(unknown) <= set(after) else ""
        commands[args.command].unrecognized(unknown, where)  # `cdraw COMMAND --help`
    run_main(lambda: args.func(args), training=args.func is cmd_train)


if __name__ == "__main__":
    main()
