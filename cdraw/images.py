"""Turning image tensors into files people can look at."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

#: Pixels of background between images in a grid.
GRID_PADDING = 2


def make_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> one (rows*H', cols*W', C) uint8 array, images row by row."""
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    p = GRID_PADDING
    grid = np.zeros((rows * (h + p) + p, nrow * (w + p) + p, c), dtype=np.uint8)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for k in range(b):
        r, col = divmod(k, nrow)
        grid[p + r * (h + p) : p + r * (h + p) + h, p + col * (w + p) : p + col * (w + p) + w] = pixels[k]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save a grid of ``images`` as a PNG (written to a temporary name, then renamed)."""
    from PIL import Image

    grid = make_grid(images, nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
