"""Training curves, bound against wall-clock, from training runs' ``log.csv`` files, as one PNG.

Each curve is ``LABEL=PATH`` (a log.csv), or ``LABEL=PATH,PATH2,...`` for runs that continued one
another (``--init-weights``), drawn end to end: each after the last point of the one before;
``--split valid`` plots the validation bound (default), ``--split train`` the training loss (the
mean over each log interval). The x axis is the run's ``elapsed_s`` in minutes (training time,
resumes included), or with ``--x steps`` its optimiser steps; the y axis runs from ``--ymin`` to
``--ymax`` nats. Drawn with Pillow alone.

Example:
  python tools/plot_curves.py --out docs/figures/mnist-long-run.png --title "DRAW, binarized MNIST" \\
      long=docs/figures/curves/mnist-long-run.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (255, 200, 0),
]  # fmt: skip
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 420, 60, 20, 40, 50


def read_curve(path: Path, split: str, x: str = "minutes") -> list[tuple[float, float]]:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and r["elapsed_s"]]
    key = (lambda r: float(r["elapsed_s"]) / 60) if x == "minutes" else (lambda r: float(r["step"]))  # noqa: E731
    return sorted((key(r), float(r["loss"])) for r in rows)


def plot(
    curves: dict[str, list[tuple[float, float]]], out: Path, title: str, ymin: float, ymax: float, x: str = "minutes"
) -> None:
    font = ImageFont.load_default()
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xmax = max(x for c in curves.values() for x, _ in c)
    step = next(s for s in (1, 2, 5, 10, 15, 20, 30, 60, 100, 200, 500, 1000, 2000, 5000) if xmax / s <= 12)
    xmax = math.ceil(xmax / step) * step
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, ymin), ymax)
        return LEFT + x / xmax * pw, TOP + (ymax - y) / (ymax - ymin) * ph

    d.rectangle((LEFT, TOP, LEFT + pw, TOP + ph), outline="black")
    ystep = next(s for s in (1, 2, 5, 10, 20, 25, 50) if (ymax - ymin) / s <= 10)
    y = math.ceil(ymin / ystep) * ystep
    while y <= ymax:
        _, yy = px(0, y)
        d.line((LEFT, yy, LEFT + pw, yy), fill=(225, 225, 225))
        d.text((LEFT - 6, yy), f"{y:g}", fill="black", font=font, anchor="rm")
        y += ystep
    for k in range(0, int(xmax / step) + 1):
        xx, _ = px(k * step, ymin)
        d.line((xx, TOP + ph, xx, TOP + ph + 4), fill="black")
        d.text((xx, TOP + ph + 8), f"{k * step:g}", fill="black", font=font, anchor="mt")
    xlabel = "training time (minutes)" if x == "minutes" else "optimiser steps"
    d.text((LEFT + pw / 2, H - 14), xlabel, fill="black", font=font, anchor="mm")
    d.text((14, TOP - 14), "nats", fill="black", font=font, anchor="lm")
    d.text((W / 2, 14), title, fill="black", font=font, anchor="mm")
    for i, (label, points) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        d.line([px(x, y) for x, y in points], fill=colour, width=2)
        for x, y in points if len(points) < 60 else points[-1:]:
            cx, cy = px(x, y)
            d.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        lx, ly = LEFT + pw - 230, TOP + 12 + 16 * i
        d.line((lx, ly, lx + 20, ly), fill=colour, width=3)
        last = points[-1][1]
        d.text((lx + 26, ly), f"{label} ({last:.2f})", fill="black", font=font, anchor="lm")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("curves", nargs="+", metavar="LABEL=LOG_CSV")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--split", default="valid", choices=["valid", "train"])
    parser.add_argument("--x", default="minutes", choices=["minutes", "steps"], help="the x axis (default: minutes)")
    parser.add_argument("--ymin", type=float, default=80)
    parser.add_argument("--ymax", type=float, default=200)
    args = parser.parse_args()
    curves = {}
    for item in args.curves:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"expected LABEL=PATH, got {item!r}")
        points = []
        for part in path.split(","):
            more = read_curve(Path(part), args.split, args.x)
            if not more:
                parser.error(f"{part} has no {args.split} rows")
            start = points[-1][0] if points else 0.0  # a continued run starts where the one before ended
            points += [(x + start, y) for x, y in more]
        curves[label] = points
    plot(curves, Path(args.out), args.title, args.ymin, args.ymax, args.x)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
