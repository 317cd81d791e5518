"""Pictures of the drawing process: canvases step by step with their attention windows, alignments, KL per step.

Drawn with Pillow alone. Every file is written under a temporary name in its folder and renamed into
place, so a reader never sees half a picture; a path that cannot be written raises :class:`CDrawError`.

Conventions shared by the pictures:
- a window's box (:func:`window_boxes`) is the square spanned by its first and last filter centres,
  mu^1 and mu^N (eq. 19-20), as the paper's figures draw the attention patch;
- in a frame the box is outlined around the pixels those centres fall on (half a pixel beyond each
  extreme centre), so a window over the whole image is outlined along the image's border and an
  N = 1 window is the square of its one pixel; the parts of a box outside the image are not drawn;
- the read window is red (:data:`READ_COLOUR`), the write window green (:data:`WRITE_COLOUR`),
  drawn over the read where they cross.

Shapes: T steps, B batch, C channels, H/W image height/width, L caption length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from cdraw.attention import Window
from cdraw.errors import CDrawError
from cdraw.images import make_grid
from cdraw.io import atomic_write

READ_COLOUR = (255, 0, 0)
WRITE_COLOUR = (0, 255, 0)
#: Width of a window's outline, in pixels of the upscaled frame.
BOX_LINE = 1
#: A GIF holds at most 256 colours per frame; one palette entry is kept free for :func:`save_animation`.
GIF_COLOURS = 255
#: Caption tokens longer than this are cut (and end in "..") in the alignment heat map.
MAX_LABEL_CHARS = 16
#: sentencepiece marks the start of a word with this character; it is left out of the labels.
WORD_START = "\u2581"
TEXT = 0  # black, in "L" pictures
GRID_LINE = 128  # grey outline around the heat map
MARGIN = 4  # pixels between a picture's parts
#: The KL plot's drawing area: height, and least width (it widens to one pixel per step).
PLOT_HEIGHT = 160
PLOT_MIN_WIDTH = 320
BAR_COLOUR = (70, 130, 180)
TICK = 3


def window_boxes(window: Window, n: int) -> Tensor:
    """The square spanned by the first and last filter centres of each window, as (x0, y0, x1, y1).

    Filter i = 1..N sits at mu^i = g + (i - N/2 - 0.5) delta (eq. 19-20) in 1-based pixels; the box
    runs from mu^1 to mu^N on each axis and is returned in 0-based pixel coordinates of the image
    (pixel centres at 0..W-1), so it can be compared with array indices. For N = 1 the box is a point
    at g.

    Args:
        window: fields of any shape (...,), e.g. (B,) or (T, B).
        n: the window's number of filters per axis N.

    Returns:
        (..., 4) floats, x0 <= x1 and y0 <= y1.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CDrawError(f"the window size N must be a positive integer, got {n!r}")
    first, last = 1 - n / 2 - 0.5, n - n / 2 - 0.5  # (i - N/2 - 0.5) for i = 1 and i = N
    a = first * window.delta  # (...,) offsets of mu^1 and mu^N from g
    b = last * window.delta
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)  # a negative stride would mirror the grid
    return torch.stack([window.gx + lo, window.gy + lo, window.gx + hi, window.gy + hi], dim=-1) - 1


def to_uint8_rgb(images: Tensor) -> Tensor:
    """(B, C, H, W) floats in [0, 1], C = 1 (grey) or 3 (colour) -> (B, H, W, 3) uint8 on the CPU."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CDrawError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (B, C, H, W)
    return pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous()  # grey: the same value in R, G, B


def canvas_frames(
    canvases: Tensor,
    *,
    read_windows: Window | None = None,
    write_windows: Window | None = None,
    read_size: int | None = None,
    write_size: int | None = None,
    scale: int = 4,
    nrow: int | None = None,
) -> list[Image.Image]:
    """One RGB frame per step: the grid of the B canvases at step t, each with its windows outlined.

    Args:
        canvases: (T, B, C, H, W) in [0, 1], C = 1 or 3 (``Trace.canvases``); grey canvases become
            RGB with equal channels, colour stays colour.
        read_windows, write_windows: windows with (T, B) fields (``Trace.read_windows`` ...), drawn
            as red and green boxes; leave one out not to draw it (a sample from the prior reads nothing).
        read_size, write_size: N of each window given (the model's ``read_size``, ``write_size``).
        scale: each pixel becomes a scale x scale square (nearest neighbour), so boxes can be thin.
        nrow: images per grid row, as in :func:`cdraw.images.make_grid`.

    Returns:
        T images of the same size, in step order, ready for :func:`save_animation`.
    """
    if canvases.ndim != 5:
        raise CDrawError(f"expected canvases of shape (T, B, C, H, W), got {tuple(canvases.shape)}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise CDrawError(f"scale must be a positive integer, got {scale!r}")
    t_steps, b = canvases.shape[:2]
    boxes = []  # (colour, (T, B, 4) edges in the upscaled image), drawn in this order
    for name, window, n, colour in (
        ("read", read_windows, read_size, READ_COLOUR),
        ("write", write_windows, write_size, WRITE_COLOUR),
    ):
        if window is None:
            continue
        if n is None:
            raise CDrawError(f"give {name}_size (the N of the {name} window) to draw the {name} windows")
        if tuple(window.gx.shape) != (t_steps, b):
            raise CDrawError(f"{name} windows are {tuple(window.gx.shape)}, expected (T, B) = {(t_steps, b)}")
        boxes.append((colour, _box_edges(window_boxes(Window(*(f.detach().cpu() for f in window)), n), scale)))
    frames = []
    for t in range(t_steps):
        tiles = to_uint8_rgb(canvases[t])  # (B, H, W, 3)
        tiles = tiles.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)  # (B, H s, W s, 3)
        for colour, edges in boxes:
            tiles[_outline(edges[t], *tiles.shape[1:3])] = torch.tensor(colour, dtype=torch.uint8)
        grid = make_grid(tiles.permute(0, 3, 1, 2).float() / 255, nrow)  # (rows, cols, 3) uint8
        frames.append(Image.fromarray(grid, "RGB"))
    return frames


def _box_edges(boxes: Tensor, scale: int) -> Tensor:
    """(..., 4) boxes of pixel centres -> (..., 4) integer (left, top, right, bottom) in the upscaled image.

    Pixel k's centre is at (k + 0.5) scale there, so [x0 - 0.5, x1 + 0.5] becomes [x0 scale, (x1 + 1) scale).
    """
    x0, y0, x1, y1 = boxes.double().unbind(-1)
    edges = [(x0 * scale).round(), (y0 * scale).round(), ((x1 + 1) * scale).round() - 1, ((y1 + 1) * scale).round() - 1]
    return torch.stack(edges, dim=-1).clamp(-1, 2**30).long()  # far-off windows: keep the integers small


def _outline(edges: Tensor, height: int, width: int) -> Tensor:
    """(B, 4) integer (left, top, right, bottom) -> (B, height, width) mask of each box's outline."""
    left, top, right, bottom = (e[:, None] for e in edges.unbind(-1))  # each (B, 1)
    x, y = torch.arange(width), torch.arange(height)
    inside_x, inside_y = (x >= left) & (x <= right), (y >= top) & (y <= bottom)  # (B, W), (B, H)
    on_x = ((x >= left) & (x < left + BOX_LINE)) | ((x <= right) & (x > right - BOX_LINE))  # (B, W)
    on_y = ((y >= top) & (y < top + BOX_LINE)) | ((y <= bottom) & (y > bottom - BOX_LINE))  # (B, H)
    return (on_x[:, None, :] & inside_y[:, :, None]) | (on_y[:, :, None] & inside_x[:, None, :])  # (B, H, W)


def save_animation(
    frames: Sequence[Image.Image], path: str | os.PathLike, *, ms_per_frame: int = 80, hold_last_ms: int = 1500
) -> Path:
    """Save ``frames`` as a looping animated GIF with exactly ``len(frames)`` frames; returns the path.

    Every frame shows for ``ms_per_frame`` milliseconds, the last for ``hold_last_ms`` (a GIF counts in
    hundredths of a second, so durations are rounded down to 10 ms). Each frame is reduced to its own
    palette of at most 255 colours. Pillow merges a frame identical to the one before into it; here
    such a frame differs only in which of two palette entries of the same colour one pixel uses, so
    it is kept, and frame k of the file is frames[k].
    """
    frames = list(frames)
    if not frames:
        raise CDrawError("no frames to save: an animation needs at least one")
    for name, ms in (("ms_per_frame", ms_per_frame), ("hold_last_ms", hold_last_ms)):
        if not isinstance(ms, int) or isinstance(ms, bool) or ms < 10:
            raise CDrawError(f"{name} must be an integer of at least 10 (milliseconds), got {ms!r}")
    if len({f.size for f in frames}) > 1:
        raise CDrawError(f"all frames must have the same size, got {sorted({f.size for f in frames})}")
    gif_frames, previous = [], None
    for frame in frames:
        p = frame.convert("RGB").quantize(colors=GIF_COLOURS)  # "P", its own adaptive palette
        palette = p.getpalette()  # [r, g, b, ...], one entry per colour used
        twin = len(palette) // 3  # one more entry, the colour of pixel (0, 0)
        p.putpalette(palette + palette[3 * p.getpixel((0, 0)) :][:3])
        if previous is not None and p.tobytes() == previous.tobytes() and p.getpalette() == previous.getpalette():
            p.putpixel((0, 0), twin)
        gif_frames.append(p)
        previous = p
    durations = [ms_per_frame] * (len(frames) - 1) + [hold_last_ms]

    def save(tmp: Path) -> None:
        # optimize=False: Pillow would otherwise drop unused palette entries, and with them the twin.
        first, *rest = gif_frames
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False)

    return _save_atomically(save, path)


def alignment_heatmap(alignments: Tensor, tokens: Sequence[str], path: str | os.PathLike, *, cell: int = 14) -> Path:
    """Save a PNG of one caption's alignment: a row per step t = 1..T, a column per token, darker = more weight.

    Args:
        alignments: (T, L) weights in [0, 1] over the caption's real tokens only (cut the padding
            columns off first: ``trace.alignments[k, :, :len(tokens)]``).
        tokens: the L tokens' text, written above their columns (turned upright when one is wider
            than a cell, cut to 16 characters; sentencepiece's word-start mark is left out).
        path: where to write the PNG.
        cell: side of one cell in pixels.
    """
    alignments = torch.as_tensor(alignments).detach().float().cpu()
    tokens = list(tokens)
    if alignments.ndim != 2 or alignments.shape[1] != len(tokens) or not tokens:
        raise CDrawError(
            f"expected alignments of shape (T, L) with one column per token, got {tuple(alignments.shape)} "
            f"for {len(tokens)} token(s)"
        )
    if not isinstance(cell, int) or isinstance(cell, bool) or cell < 1:
        raise CDrawError(f"cell must be a positive integer (pixels), got {cell!r}")
    t_steps, length = alignments.shape
    font = ImageFont.load_default()
    line = _text_height(font)
    labels = [_label(tok) for tok in tokens]
    upright = any(font.getlength(s) > cell - 2 for s in labels)
    header = (max(math.ceil(font.getlength(s)) for s in labels) if upright else line) + MARGIN
    every = _label_stride(line, cell)
    left = math.ceil(max(font.getlength("step"), font.getlength(str(t_steps)))) + 2 * MARGIN
    width, height = left + length * cell + MARGIN, header + t_steps * cell + MARGIN
    img = Image.new("L", (width, height), 255)
    shade = ((1 - alignments.clamp(0, 1)) * 255).round().to(torch.uint8).numpy()  # (T, L): 1 is black
    img.paste(Image.fromarray(np.kron(shade, np.ones((cell, cell), np.uint8))), (left, header))
    draw = ImageDraw.Draw(img)
    draw.rectangle((left - 1, header - 1, left + length * cell, header + t_steps * cell), outline=GRID_LINE)
    for k, text in enumerate(labels):
        centre = left + k * cell + cell / 2
        if upright:  # reading upwards, its end just above the column
            w = max(1, math.ceil(font.getlength(text)))
            strip = Image.new("L", (w, line), 255)
            ImageDraw.Draw(strip).text((0, 0), text, fill=TEXT, font=font)
            strip = strip.rotate(90, expand=True)  # (line, w)
            img.paste(strip, (round(centre - line / 2), header - MARGIN - w))
        else:
            draw.text((centre, header - MARGIN), text, fill=TEXT, font=font, anchor="ms")
    draw.text((MARGIN, header - MARGIN), "step", fill=TEXT, font=font, anchor="ls")
    for t in range(1, t_steps + 1):
        if t == 1 or t % every == 0:
            draw.text((left - MARGIN, header + (t - 0.5) * cell), str(t), fill=TEXT, font=font, anchor="rm")
    return _save_atomically(lambda tmp: img.save(tmp, format="PNG"), path)


#: Tiles of a labelled grid are upscaled (nearest neighbour) to at least this many pixels high.
TILE_MIN = 96
TILE_GAP = 6  # pixels of white between tiles


def labelled_grid(
    images: Tensor, path: str | os.PathLike, *, nrow: int | None = None, row_labels: Sequence[str] | None = None
) -> Path:
    """Save a readable grid of ``images`` (B, C, H, W) in [0, 1]: tiles upscaled to at least 96
    pixels, white gaps between them, and each row's text (a caption, a label) written on its left.

    ``nrow``: images per row (default: a square); ``row_labels``: one text per row, or None.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    if row_labels is not None and len(row_labels) != rows:
        raise CDrawError(f"{len(row_labels)} row labels for {rows} rows")
    scale = max(1, math.ceil(TILE_MIN / h))
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    line = _text_height(font) + 2
    fits = max(1, th // line)  # lines beside a row of tiles: a longer text ends in "..." (its start kept)
    texts = [_first_lines(_wrap(str(t), font, 220), fits) for t in row_labels] if row_labels is not None else None
    left = TILE_GAP + (max(math.ceil(font.getlength(ln)) for t in texts for ln in t) + 2 * MARGIN if texts else 0)
    width, height = left + nrow * (tw + TILE_GAP), TILE_GAP + rows * (th + TILE_GAP)
    img = Image.new("RGB", (width, height), "white")
    pixels = (images * 255).round().to(torch.uint8).repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    pixels = pixels.expand(-1, 3, -1, -1) if c == 1 else pixels
    draw = ImageDraw.Draw(img)
    for k in range(b):
        r, col = divmod(k, nrow)
        tile = Image.fromarray(pixels[k].permute(1, 2, 0).numpy())
        img.paste(tile, (left + col * (tw + TILE_GAP), TILE_GAP + r * (th + TILE_GAP)))
    for r, lines in enumerate(texts or []):
        y = TILE_GAP + r * (th + TILE_GAP) + th / 2 - line * len(lines) / 2
        for i, ln in enumerate(lines):
            draw.text((MARGIN + TILE_GAP, y + i * line), ln, fill="black", font=font)
    return _save_atomically(lambda tmp: img.save(tmp, format="PNG"), path)


def _first_lines(lines: list[str], n: int) -> list[str]:
    """The first ``n`` of ``lines``, the last of them ending in "..." when some are left out."""
    return lines if len(lines) <= n else [*lines[: n - 1], f"{lines[n - 1]} ..."]


def _wrap(text: str, font, max_width: int) -> list[str]:
    """``text`` in lines of at most ``max_width`` pixels (words are never split)."""
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current] if current else lines or [""]


def kl_plot(kl: Tensor, path: str | os.PathLike, *, title: str = "KL per step (nats)") -> Path:
    """Save a PNG bar chart of the KL of each step t = 1..T, in nats (e.g. ``out.kl.mean(0)``).

    The y axis runs from 0 to the largest value, which is written at its top; the x axis is labelled
    1 and T. Negative values (a KL rounded below zero) are drawn as empty bars; all zeros draw none.
    """
    kl = torch.as_tensor(kl).detach().double().cpu()
    if kl.ndim != 1 or len(kl) == 0:
        raise CDrawError(f"expected the KL of each step as a (T,) tensor, got shape {tuple(kl.shape)}")
    if not torch.isfinite(kl).all():
        raise CDrawError("the KL per step holds NaN or infinite values: the model diverged, nothing to plot")
    t_steps = len(kl)
    font = ImageFont.load_default()
    line = _text_height(font)
    top_value = max(float(kl.max()), 0.0)
    top_label = f"{top_value:.3g}"
    left = math.ceil(max(font.getlength(top_label), font.getlength("0"))) + 2 * MARGIN + TICK
    top = line + 2 * MARGIN  # the title above the plot
    plot_w = max(PLOT_MIN_WIDTH, t_steps)
    width, height = left + plot_w + 2 * MARGIN, top + PLOT_HEIGHT + TICK + 2 * line + 3 * MARGIN
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    bottom = top + PLOT_HEIGHT  # the x axis' row
    bars = (kl.clamp(min=0) / top_value * PLOT_HEIGHT).round().long() if top_value > 0 else torch.zeros_like(kl).long()
    xs = [left + 1 + round(i * plot_w / t_steps) for i in range(t_steps + 1)]  # bar i spans xs[i] .. xs[i+1]
    gap = 1 if plot_w / t_steps >= 3 else 0  # a white line between bars when there is room
    for i, h in enumerate(bars.tolist()):
        if h > 0:
            draw.rectangle((xs[i], bottom - h, max(xs[i], xs[i + 1] - 1 - gap), bottom - 1), fill=BAR_COLOUR)
    draw.line((left, top, left, bottom), fill="black")  # y axis
    draw.line((left, bottom, left + plot_w, bottom), fill="black")  # x axis
    for y, text in ((top, top_label), (bottom, "0")):
        draw.line((left - TICK, y, left, y), fill="black")
        draw.text((left - TICK - MARGIN, y), text, fill="black", font=font, anchor="rm")
    for t in sorted({1, t_steps}):
        x = (xs[t - 1] + xs[t] - 1) / 2
        draw.line((x, bottom, x, bottom + TICK), fill="black")
        draw.text((x, bottom + TICK + MARGIN), str(t), fill="black", font=font, anchor="mt")
    draw.text((left + plot_w / 2, bottom + TICK + 2 * MARGIN + line), "step", fill="black", font=font, anchor="mt")
    draw.text((width / 2, MARGIN), title, fill="black", font=font, anchor="mt")
    return _save_atomically(lambda tmp: img.save(tmp, format="PNG"), path)


def _label(token: str) -> str:
    """A token as printed above its column: no word-start mark, at most MAX_LABEL_CHARS characters."""
    text = token.replace(WORD_START, "") or "_"
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 2] + ".."


def _text_height(font) -> int:
    """Height of a line of text, ascenders to descenders."""
    _, y0, _, y1 = font.getbbox("Hgy")
    return max(1, y1 - min(y0, 0))


def _label_stride(line: int, cell: int) -> int:
    """Label every row if a line of text fits in a cell, else every 2nd, 5th, 10th, 20th, 50th ... row."""
    k = 0
    while True:
        for m in (1, 2, 5):
            if m * 10**k * cell >= line:
                return m * 10**k
        k += 1


def _save_atomically(save: Callable[[Path], None], path: str | os.PathLike) -> Path:
    """Create ``path``'s folders, ``save`` to a temporary name beside it, rename; OSError -> CDrawError."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save(Path(tmp)))
    except OSError as e:
        raise CDrawError(f"cannot write {path}: {e.strerror or e} (choose a writable file path)") from None
    return path
