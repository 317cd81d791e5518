"""Observation models p(x | c_T): the canvas c_T holds logits of each pixel's mean, sigmoid(c_T).

Two likelihoods, each reported in nats per image (summed over pixels and channels):

- ``bernoulli``: binary pixels (binarized MNIST), eq. (9) of the DRAW paper, computed from the
  logits so that it never takes log(0).
- ``logistic``: a discretised logistic over 256 levels for 8-bit colour (or grey) images
  (Salimans et al. 2017, one component). We chose it over alignDRAW's Bernoulli on [0, 1] because
  it is a normalised distribution over the 8-bit values actually stored, so its bound is a real
  likelihood in nats (comparable across models, convertible to bits/dim); a Bernoulli on
  non-binary targets is not a density on anything. Mean sigmoid(c_T) (so DRAW's error image
  x - sigmoid(c_{t-1}) keeps its meaning) and one learned log-scale per channel.

Shapes: B batch, C channels, H/W image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cdraw.errors import CDrawError

#: Number of intensity levels of 8-bit images, for the discretised logistic.
LEVELS = 256
#: Initial log-scale of the logistic: a scale of about 0.1 in [0, 1] units.
LOGISTIC_INIT_LOG_SCALE = -2.0


class Bernoulli(nn.Module):
    """Independent Bernoulli pixels with probabilities sigmoid(c_T)."""

    def mean(self, canvas: Tensor) -> Tensor:
        return torch.sigmoid(canvas)

    def nll(self, canvas: Tensor, x: Tensor) -> Tensor:
        """-log p(x | c): (B, C, H, W) logits and targets in {0, 1} (or [0, 1]) -> (B,) nats."""
        return F.binary_cross_entropy_with_logits(canvas, x, reduction="none").flatten(1).sum(1)


class DiscretizedLogistic(nn.Module):
    """Discretised logistic over 256 levels of [0, 1], mean sigmoid(c_T), a log-scale per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((channels,), LOGISTIC_INIT_LOG_SCALE))

    def mean(self, canvas: Tensor) -> Tensor:
        return torch.sigmoid(canvas)

    def nll(self, canvas: Tensor, x: Tensor) -> Tensor:
        """-log P(x | c) for x on the grid k / 255: (B, C, H, W) -> (B,) nats."""
        half_bin = 0.5 / (LEVELS - 1)
        inv_s = torch.exp(-self.log_scale)[None, :, None, None]  # (1, C, 1, 1)
        centred = x - torch.sigmoid(canvas)  # (B, C, H, W)
        hi = (centred + half_bin) * inv_s  # upper edge of x's bin, standardised
        lo = (centred - half_bin) * inv_s  # lower edge
        # log(sigmoid(hi) - sigmoid(lo)) = hi + log(1 - e^(lo - hi)) - softplus(hi) - softplus(lo)
        log_mass = hi + torch.log(-torch.expm1(lo - hi)) - F.softplus(hi) - F.softplus(lo)
        log_p = torch.where(
            x <= half_bin,
            F.logsigmoid(hi),  # the lowest level takes all mass below it
            torch.where(x >= 1 - half_bin, -F.softplus(lo), log_mass),  # the highest, all above
        )
        return -log_p.flatten(1).sum(1)


LIKELIHOODS = ("bernoulli", "logistic")


def make_likelihood(name: str, channels: int) -> nn.Module:
    """The likelihood called ``name`` (one of :data:`LIKELIHOODS`)."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "logistic":
        return DiscretizedLogistic(channels)
    raise CDrawError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}")
