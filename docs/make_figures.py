"""Draw the documentation's figures with cdraw's own code and write them into docs/figures/.

- ``filterbank.png``: rows of F_X from :func:`cdraw.attention.filterbank` for three windows.
- ``attention-window.png``: read windows on a real binarized MNIST test digit
  (:func:`cdraw.pictures.canvas_frames`), the N x N glimpse each one reads
  (:func:`cdraw.attention.read_patch`) and that glimpse written back (:func:`cdraw.attention.write_patch`).
- ``drawing.gif``: the canvas being drawn, step by step, with each step's write window
  (:func:`cdraw.generate.generate`): by the unconditional model that ships in
  ``cdraw/assets/models/mnist/`` when there is one, else by a small randomly initialised DRAW.
- ``figures.json``: each figure's caption (the GIF's says which model drew it); the site's build
  hook puts it under the picture.

The figures are committed, so the site builds without running this. Run it again when the code
behind a figure changes or a model ships; tests/test_docs_site.py checks that a fresh run makes the
same files. Needs binarized MNIST: ``--data-dir``, else ``$CDRAW_DATA_DIR``, else ``~/.cache/cdraw/data``.

Examples:
  python docs/make_figures.py
  python docs/make_figures.py --data-dir ../shared/data --out /tmp/figures
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from cdraw.attention import Window, filterbank, filterbanks, read_patch, write_patch
from cdraw.cli import run_main
from cdraw.data import load_binarized_mnist
from cdraw.generate import DEFAULT_MODELS, generate
from cdraw.model import DRAW, DRAWConfig
from cdraw.pictures import READ_COLOUR, canvas_frames, to_uint8_rgb

FIGURES = Path(__file__).resolve().parent / "figures"
SIZE = 28  # MNIST's side, pixels
FONT_SIZE = 14  # Pillow's own font, the same on every machine; it has no Greek letters, so labels spell them
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
#: One colour per filter in the filterbank plot (N = 5).
FILTER_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
#: The filterbank figure's windows on a 28-pixel axis: (title, centre g, stride delta, variance sigma^2).
FILTERBANK_N = 5
WHOLE_STRIDE = (SIZE - 1) / (FILTERBANK_N - 1)  # delta~ = 1: the grid spans the image (eq. 24)
FILTERBANK_WINDOWS = [
    ("initial: g = 14.5, delta = 6.75, sigma = delta / 2", 14.5, WHOLE_STRIDE, (WHOLE_STRIDE / 2) ** 2),
    ("zoomed in: g = 10, delta = 2, sigma^2 = 1", 10.0, 2.0, 1.0),
    ("narrow: g = 16, delta = 4, sigma^2 = 0.25", 16.0, 4.0, 0.25),
]
#: The read window of the attention figure, and the test digit it looks at.
READ_N = 12
DIGIT_INDEX = 3500  # a 3 (the test split is sorted by class)
GLIMPSE_SCALE = 8  # each image pixel becomes 8 x 8 screen pixels
#: The stand-in model when no trained one ships: small, seeded, untrained.
RANDOM_MODEL = DRAWConfig(glimpses=16, enc_size=64, dec_size=64, z_size=10)
RANDOM_SEED = 0
SAMPLES = 16


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


PLOT_W, PLOT_H, MARGIN, TITLE_H = 330, 150, 30, 28  # the filterbank figure's panels, in screen pixels
STRIP_CELL = (PLOT_W // SIZE, 12)  # one matrix entry of F_X, (width, height)


def filterbank_figure(path: Path) -> None:
    """Three windows' filters F_X[i, a] (eq. 25) over the pixels a = 1..28: curves and the matrix."""
    panel_w = PLOT_W + 2 * MARGIN
    height = TITLE_H + PLOT_H + 30 + FILTERBANK_N * STRIP_CELL[1] + 30
    img = Image.new("RGB", (panel_w * len(FILTERBANK_WINDOWS), height), WHITE)
    for k, (title, g, delta, sigma2) in enumerate(FILTERBANK_WINDOWS):
        t = torch.tensor
        f = filterbank(t([g]), t([delta]), t([sigma2]), FILTERBANK_N, SIZE)[0]  # (N, 28), rows sum to 1
        _filterbank_panel(img, k * panel_w + MARGIN, title, f, g, delta)
    img.save(path)


def _filterbank_panel(img: Image.Image, x0: int, title: str, f: torch.Tensor, g: float, delta: float) -> None:
    """One window's filters (N, 28) drawn with their left edge at x0: a curve per filter, then the matrix."""
    draw, font = ImageDraw.Draw(img), _font()
    y0, top = TITLE_H, float(f.max())
    axis = y0 + PLOT_H

    def px(a: float) -> float:  # pixel a's centre (a = 1..28) on screen
        return x0 + (a - 0.5) / SIZE * PLOT_W

    draw.text((x0 + PLOT_W / 2, 6), title, fill=BLACK, font=font, anchor="mt")
    draw.line((x0, axis, x0 + PLOT_W, axis), fill=BLACK)  # the image's x axis
    for i, colour in enumerate(FILTER_COLOURS[:FILTERBANK_N]):
        points = [(px(a + 1), axis - float(f[i, a]) / top * (PLOT_H - 6)) for a in range(SIZE)]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        mu = g + (i + 1 - FILTERBANK_N / 2 - 0.5) * delta  # eq. (19): where filter i is centred
        if 0.5 <= mu <= SIZE + 0.5:
            draw.polygon([(px(mu), axis + 2), (px(mu) - 4, axis + 9), (px(mu) + 4, axis + 9)], fill=colour)
    for a in (1, 14, 28):
        draw.text((px(a), axis + 12), str(a), fill=GREY, font=font, anchor="mt")
    sy = axis + 32
    strip_w, strip_h = SIZE * STRIP_CELL[0], FILTERBANK_N * STRIP_CELL[1]
    shade = (255 * (1 - f / top)).round().to(torch.uint8)  # (N, 28): darker = more weight
    strip = Image.fromarray(shade.numpy(), "L").resize((strip_w, strip_h), Image.Resampling.NEAREST)
    img.paste(strip.convert("RGB"), (int(x0 + (PLOT_W - strip_w) / 2), sy))
    caption = "F_X as a matrix: a row per filter, a column per pixel"
    draw.text((x0 + PLOT_W / 2, sy + strip_h + 6), caption, fill=GREY, font=font, anchor="mt")


def _digit(data_dir: str | None) -> torch.Tensor:
    """Test digit DIGIT_INDEX of binarized MNIST as a (1, 1, 28, 28) float tensor of 0/1."""
    return load_binarized_mnist("test", data_dir)[DIGIT_INDEX : DIGIT_INDEX + 1].float()


def attention_figure(digit: torch.Tensor, path: Path) -> None:
    """Three read windows on a digit (top), the glimpse each reads (middle), the glimpse written back (bottom)."""
    ys, xs = torch.nonzero(digit[0, 0], as_tuple=True)
    cy, cx = ys.float().mean().item() + 1, xs.float().mean().item() + 1  # the ink's centre, 1-based pixels
    whole = (SIZE - 1) / (READ_N - 1)
    columns = [  # (title, gx, gy, delta, sigma2)
        ("the whole image (delta = 2.45)", (SIZE + 1) / 2, (SIZE + 1) / 2, whole, (whole / 2) ** 2),
        ("on the digit (delta = 1)", cx, cy, 1.0, 0.5),
        ("zoomed on its top (delta = 0.5)", cx, cy - 6, 0.5, 0.25),
    ]
    t = lambda values: torch.tensor(values, dtype=torch.float32)
    window = Window(  # (T, B) = (3, 1) fields: one "step" per column
        gx=t([[c[1]] for c in columns]),
        gy=t([[c[2]] for c in columns]),
        delta=t([[c[3]] for c in columns]),
        sigma2=t([[c[4]] for c in columns]),
        gamma=torch.ones(3, 1),
    )
    boxes = canvas_frames(digit.expand(3, 1, 1, SIZE, SIZE), read_windows=window, read_size=READ_N, scale=GLIMPSE_SCALE)
    side = boxes[0].width
    flat = Window(*(field[:, 0] for field in window))  # (3,) fields: the three windows as a batch
    fy, fx = filterbanks(flat, READ_N, SIZE, SIZE)  # (3, N, 28) each
    glimpses = read_patch(digit.expand(3, 1, SIZE, SIZE), fy, fx)  # (3, 1, N, N), eq. (27) without gamma
    written = write_patch(glimpses, fy, fx)  # (3, 1, 28, 28), eq. (29) without 1/gamma
    written = written / written.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)

    def tile(images: torch.Tensor, k: int) -> Image.Image:
        pixels = to_uint8_rgb(images[k : k + 1])[0].numpy()  # (h, w, 3)
        return Image.fromarray(pixels, "RGB").resize((side, side), Image.Resampling.NEAREST)

    font = _font()
    label_w, title_h, gap = 150, 26, 12
    rows = [
        ("the read window\n(red: the first and\nlast filter centres)", lambda k: boxes[k]),
        (f"the {READ_N} x {READ_N} glimpse\nF_Y x F_X^T", lambda k: tile(glimpses, k)),
        ("the glimpse written\nback, F_Y^T w F_X", lambda k: tile(written, k)),
    ]
    img = Image.new("RGB", (label_w + 3 * (side + gap), title_h + 3 * (side + gap)), WHITE)
    draw = ImageDraw.Draw(img)
    for k, column in enumerate(columns):
        draw.text((label_w + k * (side + gap) + side / 2, 6), column[0], fill=BLACK, font=font, anchor="mt")
    for r, (label, picture) in enumerate(rows):
        y = title_h + r * (side + gap)
        draw.multiline_text((6, y + side / 2), label, fill=READ_COLOUR if r == 0 else BLACK, font=font, anchor="lm")
        for k in range(len(columns)):
            img.paste(picture(k), (label_w + k * (side + gap), y))
    img.save(path)


def drawing_figure(path: Path) -> str:
    """The canvas being drawn: a GIF of 16 samples, step by step; returns its caption."""
    shipped = DEFAULT_MODELS["none"]
    if (shipped / "config.json").is_file():
        model = DRAW.from_pretrained(shipped).eval()
        cfg = model.config
        caption = (
            "The unconditional model that ships with cdraw (cdraw/assets/models/mnist/, "
            f"T = {cfg.glimpses}, write window {cfg.write_size} x {cfg.write_size}) drawing {SAMPLES} samples "
            "from the prior. Each frame is one step: the canvas sigmoid(c_t) so far, and in green where "
            "that step wrote."
        )
    else:
        with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's random state is left alone
            torch.manual_seed(RANDOM_SEED)
            model = DRAW(RANDOM_MODEL).eval()
        cfg = model.config
        caption = (
            f"A randomly initialised, untrained DRAW (T = {cfg.glimpses}, LSTMs of {cfg.enc_size}, z of {cfg.z_size}) "
            f"drawing {SAMPLES} samples: no trained unconditional model ships in cdraw/assets/models/mnist/ "
            "in this version, so this shows the mechanics, not digits. Each frame is one step: the canvas "
            "sigmoid(c_t) so far, and in green the window that step wrote through. Rerun python "
            "docs/make_figures.py once a model ships to see it draw digits."
        )
    with tempfile.TemporaryDirectory() as tmp:
        generate(model, tmp, num=SAMPLES, seed=RANDOM_SEED)
        shutil.move(Path(tmp) / "drawing.gif", path)
    return caption


def make_figures(out: Path, data_dir: str | None = None) -> dict[str, dict[str, str]]:
    """Write every figure and ``figures.json`` into ``out``; returns the captions."""
    out.mkdir(parents=True, exist_ok=True)
    filterbank_figure(out / "filterbank.png")
    attention_figure(_digit(data_dir), out / "attention-window.png")
    captions = {
        "filterbank.png": {"caption": "Rows of the filterbank F_X (N = 5) on a 28-pixel axis for three windows."},
        "attention-window.png": {
            "caption": f"Read windows (N = {READ_N}) on binarized MNIST test digit {DIGIT_INDEX}."
        },
        "drawing.gif": {"caption": drawing_figure(out / "drawing.gif")},
    }
    (out / "figures.json").write_text(json.dumps(captions, indent=2, ensure_ascii=False) + "\n")
    return captions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(FIGURES), help=f"output folder (default: {FIGURES})")
    parser.add_argument(
        "--data-dir", help="folder with binarized_mnist/ (default: $CDRAW_DATA_DIR or ~/.cache/cdraw/data)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    for name in make_figures(out, args.data_dir):
        print(out / name)


if __name__ == "__main__":
    run_main(main)
