"""DRAW's selective attention (Gregor et al. 2015, section 3).

A grid of N x N Gaussian filters, placed by a centre (gX, gY), a stride delta between filter
centres, an isotropic variance sigma^2 and an intensity gamma, all computed from the decoder state.
Everything here is a pure function except :class:`WindowParams`, the one linear layer that maps a
hidden state to the five window parameters.

Conventions (the paper's):
- pixels are numbered a = 1..size, so the image centre is (size + 1) / 2;
- filter i = 1..N sits at mu^i = g + (i - N/2 - 0.5) * delta (eq. 19, 20), a grid centred on g;
- x is the image's width axis (A columns), y its height axis (B rows); images are (B, C, H, W)
  tensors with H = B_paper and W = A.

Shapes: B batch, C channels, H/W image height/width, N patch size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

#: Added to each filter's row sum before normalising, so a window far outside the image (all
#: weights underflowing to 0) gives a zero filter instead of 0/0.
FILTER_EPS = 1e-8

#: Outputs of :class:`WindowParams`' linear layer: g~X, g~Y, log sigma^2, log delta~, log gamma.
WINDOW_PARAMS = 5


class Window(NamedTuple):
    """An attention window in pixel units; every field is a (B,) tensor (or (T, B) when stacked)."""

    gx: Tensor  # centre on the x (width) axis, pixels 1..W
    gy: Tensor  # centre on the y (height) axis, pixels 1..H
    delta: Tensor  # stride between neighbouring filter centres
    sigma2: Tensor  # variance of each Gaussian filter
    gamma: Tensor  # intensity: scales a read, divides a write

    @staticmethod
    def stack(windows: list[Window]) -> Window:
        """Stack per-step windows into one with (T, B) fields."""
        return Window(*(torch.stack(field) for field in zip(*windows, strict=True)))


def filterbank(center: Tensor, stride: Tensor, sigma2: Tensor, n: int, size: int) -> Tensor:
    """One axis of the filterbank, eq. (19)-(20) and (25)-(26).

    Args:
        center: (B,) window centre g, in pixels (1..size).
        stride: (B,) distance delta between filter centres, in pixels.
        sigma2: (B,) variance sigma^2 of every filter, in pixels^2.
        n: number of filters N.
        size: number of pixels along the axis (A for x, B for y).

    Returns:
        (B, n, size): F[b, i, a] proportional to exp(-(a - mu^i)^2 / (2 sigma^2)), rows summing to 1.
    """
    i = torch.arange(1, n + 1, dtype=center.dtype, device=center.device)  # (N,)
    a = torch.arange(1, size + 1, dtype=center.dtype, device=center.device)  # (size,)
    mu = center[:, None] + (i - n / 2 - 0.5) * stride[:, None]  # (B, N), eq. (19)-(20)
    d2 = (a[None, None, :] - mu[:, :, None]) ** 2  # (B, N, size)
    f = torch.exp(-d2 / (2 * sigma2[:, None, None]))  # (B, N, size), eq. (25)-(26)
    return f / (f.sum(-1, keepdim=True) + FILTER_EPS)


def filterbanks(window: Window, n: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Both axes of the filterbank: F_Y (B, N, H) and F_X (B, N, W)."""
    fy = filterbank(window.gy, window.delta, window.sigma2, n, height)
    fx = filterbank(window.gx, window.delta, window.sigma2, n, width)
    return fy, fx


def read_patch(x: Tensor, fy: Tensor, fx: Tensor) -> Tensor:
    """F_Y x F_X^T for every channel, eq. (27) without gamma: (B, C, H, W) -> (B, C, N, N).

    Eagerly this is one ``einsum`` (batched matrix products). Under ``torch.compile`` it is written
    as products and sums, which the compiler fuses, forward and backward, into a few loops; its
    batched products of tiny matrices (N = 2..5) would cost more than their arithmetic. The two
    forms are the same sum (tested against each other).
    """
    if torch.compiler.is_compiling():
        rows = (fy[:, None, :, :, None] * x[:, :, None]).sum(3)  # (B, C, N, W): F_Y x
        return (rows[:, :, :, None, :] * fx[:, None, None]).sum(-1)  # (B, C, N, N): (F_Y x) F_X^T
    return torch.einsum("bnh,bchw,bmw->bcnm", fy, x, fx)


def write_patch(w: Tensor, fy: Tensor, fx: Tensor) -> Tensor:
    """F_Y^T w F_X for every channel, eq. (29) without 1/gamma: (B, C, N, N) -> (B, C, H, W).

    The adjoint of :func:`read_patch`: <read_patch(x), w> == <x, write_patch(w)>. Two forms, eager
    and compiled, as in :func:`read_patch`.
    """
    if torch.compiler.is_compiling():
        cols = (w[..., None] * fx[:, None, None]).sum(3)  # (B, C, N, W): w F_X
        return (fy[:, None, :, :, None] * cols[:, :, :, None, :]).sum(2)  # (B, C, H, W): F_Y^T (w F_X)
    return torch.einsum("bnh,bcnm,bmw->bchw", fy, w, fx)


def read(x: Tensor, x_hat: Tensor, window: Window, n: int) -> Tensor:
    """read(x, x_hat, h_dec) = gamma [F_Y x F_X^T, F_Y x_hat F_X^T], eq. (27).

    Args:
        x, x_hat: (B, C, H, W) image and error image.
        window: the read window, computed from h_dec_{t-1}.
        n: patch size N.

    Returns:
        (B, 2 * C * N * N): the two glimpses, flattened for the encoder.
    """
    height, width = x.shape[-2:]
    fy, fx = filterbanks(window, n, height, width)
    both = torch.cat([x, x_hat], dim=1)  # (B, 2C, H, W): one einsum for both glimpses
    patches = read_patch(both, fy, fx)  # (B, 2C, N, N)
    return (window.gamma[:, None, None, None] * patches).flatten(1)


def write(w: Tensor, window: Window, size: tuple[int, int]) -> Tensor:
    """write(h_dec) = (1 / gamma) F_Y^T w F_X, eq. (29).

    Args:
        w: (B, C, N, N) writing patch (eq. 28, a linear function of h_dec_t).
        window: the write window, computed from h_dec_t.
        size: (H, W) of the image.

    Returns:
        (B, C, H, W) the update to the canvas.
    """
    n = w.shape[-1]
    fy, fx = filterbanks(window, n, *size)
    return write_patch(w, fy, fx) / window.gamma[:, None, None, None]


class WindowParams(nn.Module):
    """h -> (g~X, g~Y, log sigma^2, log delta~, log gamma) -> a :class:`Window`, eq. (21)-(24)."""

    def __init__(self, hidden_size: int, n: int, size: tuple[int, int]):
        super().__init__()
        self.linear = nn.Linear(hidden_size, WINDOW_PARAMS)
        self.n = n
        self.height, self.width = size
        # Initialisation (the paper gives none; the maths is unchanged): each filter starts as wide as
        # half the stride of a window spanning the whole image (delta~ = 1), so the first glimpses
        # and writes cover all of the image smoothly. With sigma^2 = 1 a 2x2 read starts on the
        # four corner pixels, blank in MNIST, and the posterior collapses: on the paper's config,
        # after 250 steps the KL was 0.03 nats with sigma^2 = 1 and 2.2 nats with this start.
        stride = (max(size) - 1) / max(n - 1, 1)
        with torch.no_grad():
            self.linear.bias[2] = 2 * math.log(stride / 2)

    def forward(self, h: Tensor) -> Window:
        return self.from_raw(self.linear(h))

    def from_raw(self, raw: Tensor) -> Window:
        """The window from the linear layer's output (B, WINDOW_PARAMS), eq. (22)-(24); the model computes that
        output together with its other maps of h_dec (:class:`cdraw.fused.FusedLinear`)."""
        gx_, gy_, log_sigma2, log_delta_, log_gamma = raw.unbind(-1)  # each (B,)
        a, b = self.width, self.height
        gx = (a + 1) / 2 * (gx_ + 1)  # eq. (22)
        gy = (b + 1) / 2 * (gy_ + 1)  # eq. (23)
        # eq. (24); for N = 1 the stride is irrelevant (a single filter sits at g).
        delta = (max(a, b) - 1) / max(self.n - 1, 1) * torch.exp(log_delta_)
        return Window(gx, gy, delta, torch.exp(log_sigma2), torch.exp(log_gamma))
