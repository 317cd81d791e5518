"""Copy a trained model into the package as a shipped model, with a model card made from its records.

The card is written from the files beside the model, never by hand: ``training.json`` (data set,
steps, time, validation bound, written by training), ``eval.json`` (written by
``cdraw eval --json``). The commands that made them are given on the command line and printed in
the card.

Example:
  cdraw eval --checkpoint runs/mnist_captions/best --fidelity --retrieval 100 --json runs/mnist_captions/best/eval.json
  python tools/ship_model.py runs/mnist_captions/best --name mnist_captions \\
      --train-command "accelerate launch recipes/train_mnist_captions.py ..." --eval-command "cdraw eval ..."
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cdraw import hub
from cdraw.cli import run_main
from cdraw.conditioning.encoders import TEXT_ENCODER_DIR
from cdraw.errors import CDrawError
from cdraw.generate import SHIPPED_MODELS
from cdraw.io import (
    EVAL_RECORD,
    TRAINING_RECORD,
    data_source,
    earlier_runs,
    read_record,
    run_length,
    training_seconds,
)
from cdraw.model import DRAW

KEEP = ("config.json", "model.safetensors", TRAINING_RECORD, EVAL_RECORD, "tokenizer.model", "tokenizer_words.txt")


def with_metadata(folder: Path, name: str, body: str, model: DRAW | None = None) -> str:
    """The card: the Hub's YAML metadata (from the folder's training.json and eval.json), then ``body``.
    ``model`` is the folder's model when the caller has it loaded already."""
    model = model if model is not None else DRAW.from_pretrained(folder)
    kind = model.config.condition.kind if model.config.condition else None
    data = hub.card_data(read_record(folder), read_record(folder, EVAL_RECORD), kind, name=f"cdraw {name}")
    return hub.card_text(data, body)


def started_from(training: dict) -> list[str]:
    """The card's lines for the runs a model continued (``--init-weights``), latest first, and the
    training time of all of them; none for a model trained from scratch. "On record": a run whose
    own start predates ``started_from`` (or lost its record) ends the chain."""
    runs = earlier_runs(training)
    lines = [f"- started from `{name}`, itself trained for {run_length(record)}" for name, record in runs]
    total = f"- training time of all the runs on record: {training_seconds(training) / 60:.1f} min"
    return [*lines, total] if lines else []


def card(folder: Path, name: str, train_command: str, eval_command: str) -> str:
    model = DRAW.from_pretrained(folder)
    cfg, n = model.config, sum(p.numel() for p in model.parameters())
    training, figures = read_record(folder), read_record(folder, EVAL_RECORD)
    lines = [
        f"# cdraw shipped model: {name}",
        "",
        hub.describe(cfg, n),
        "",
        "## Training",
        "",
        f"- data: {training.get('dataset', 'not recorded')}"
        + (f" (from {source})" if (source := data_source(training)) else ""),
        f"- length: {run_length(training)}",
        f"- validation bound at the end: {training.get('valid', {}).get('bound', float('nan')):.2f} nats",
        *started_from(training),
        "- command:",
        "",
        f"```bash\n{train_command}\n```",
        "",
        "## Evaluation (`eval.json`)",
        "",
        f"```bash\n{eval_command}\n```",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {figure(v)} |" for k, v in figures.items()]
    if training.get("source") == "t10k" and figures.get("split") == "test":
        lines += ["", "The bound above is on the test file this model was trained on (most of it): not a test figure."]
    return with_metadata(folder, name, "\n".join(lines) + "\n", model)


def figure(v: object) -> str:
    """A table cell: nats to two decimals (100.02, not 100), fractions to four figures."""
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}"
    return str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="model folder with eval.json beside it")
    parser.add_argument("--name", required=True, choices=[p.name for p in SHIPPED_MODELS])
    parser.add_argument("--train-command", help="the command that trained it")
    parser.add_argument("--eval-command", help="the command that wrote eval.json")
    parser.add_argument(
        "--metadata-only", action="store_true", help="only (re)write the YAML metadata of the shipped NAME's card"
    )
    args = parser.parse_args()
    if args.metadata_only:
        dst = next(p for p in SHIPPED_MODELS if p.name == args.name)
        text = (dst / "README.md").read_text()
        body = text.split("---\n", 2)[2] if text.startswith("---\n") else text  # without its old metadata
        (dst / "README.md").write_text(with_metadata(dst, args.name, body))
        print(f"wrote the metadata of {dst / 'README.md'}")
        return
    if not (args.checkpoint and args.train_command and args.eval_command):
        parser.error("give CHECKPOINT, --train-command and --eval-command (or --metadata-only)")
    src = hub.resolve_checkpoint(args.checkpoint)
    if not (src / EVAL_RECORD).is_file():
        raise CDrawError(f"{src} has no eval.json: run `cdraw eval --checkpoint {src} --json {src}/eval.json` first")
    dst = next(p for p in SHIPPED_MODELS if p.name == args.name)
    text = card(src, args.name, args.train_command, args.eval_command)
    stage = dst.with_name(f".{dst.name}.tmp")  # built and checked beside, then swapped in
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name in KEEP:
        if (src / name).is_file():
            shutil.copy2(src / name, stage / name)
    if (src / TEXT_ENCODER_DIR).is_dir():
        shutil.copytree(src / TEXT_ENCODER_DIR, stage / TEXT_ENCODER_DIR)
    (stage / "README.md").write_text(text)
    for f in stage.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)  # readable by everyone once installed
    DRAW.from_pretrained(stage)  # it loads from the package folder alone
    shutil.rmtree(dst, ignore_errors=True)
    stage.rename(dst)
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"shipped {src} as {dst} ({size / 1e6:.1f} MB)")
    print(
        "then: python docs/make_figures.py (the docs draw with the shipped models) and re-pin the sample "
        "sums in tests/test_model.py; tests/test_docs_site.py and tests/test_model.py say if either is stale"
    )


if __name__ == "__main__":
    run_main(main)
