"""The latent variables of DRAW: diagonal Gaussians, the posterior and prior layers, and the KL of eq. (10).

Shapes: B batch, Z latent, I input size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Gaussian(NamedTuple):
    """A diagonal Gaussian, mean and log standard deviation, each (B, Z)."""

    mu: Tensor
    log_sigma: Tensor

    def sample(self, eps: Tensor) -> Tensor:
        """The reparameterised draw mu + sigma * eps of eq. (6), for standard normal noise ``eps``
        (B, Z), or (1, Z) to give the whole batch the same noise."""
        return self.mu + torch.exp(self.log_sigma) * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; mu, sigma^2) summed over Z: (B, Z) -> (B,)."""
        u = (z - self.mu) * torch.exp(-self.log_sigma)
        return (-0.5 * u**2 - self.log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over Z: (B, Z) -> (B,)."""
    return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def kl_standard_normal(q: Gaussian) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over Z, eq. (10): 0.5 sum(mu^2 + sigma^2 - log sigma^2 - 1).

    The -1 is per latent dimension (inside the sum), not once per step.
    """
    return 0.5 * (q.mu**2 + torch.exp(2 * q.log_sigma) - 2 * q.log_sigma - 1).sum(-1)  # (B,)


def kl_gaussians(q: Gaussian, p: Gaussian) -> Tensor:
    """KL(q || p) between diagonal Gaussians, summed over Z: (B,).

    log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2, per dimension.
    """
    var_ratio = torch.exp(2 * (q.log_sigma - p.log_sigma))
    mean_term = ((q.mu - p.mu) * torch.exp(-p.log_sigma)) ** 2
    return (p.log_sigma - q.log_sigma + 0.5 * (var_ratio + mean_term - 1)).sum(-1)


def kl_divergence(q: Gaussian, p: Gaussian | None) -> Tensor:
    """KL(q || p) summed over Z, (B,); ``p`` None is the standard normal prior N(0, I)."""
    return kl_standard_normal(q) if p is None else kl_gaussians(q, p)


def log_ratio(q: Gaussian, p: Gaussian | None, z: Tensor) -> Tensor:
    """log q(z) - log p(z) at a sample ``z`` (B, Z) -> (B,), for importance weights; ``p`` None is N(0, I)."""
    return q.log_prob(z) - (standard_normal_log_prob(z) if p is None else p.log_prob(z))


class GaussianLayer(nn.Module):
    """h (B, I) -> a diagonal Gaussian over Z: mu = W h + b, log sigma = W' h + b', eq. (1)-(2).

    ``bounded``: alignDRAW's form of a learned prior, mu = tanh(W h + b), log sigma = tanh(W' h + b'),
    so sigma stays within [1/e, e] and the KL cannot blow up through a collapsing prior.
    """

    def __init__(self, in_size: int, z_size: int, bounded: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_size, 2 * z_size)  # [W; W'] and [b; b']
        self.bounded = bounded

    def forward(self, h: Tensor) -> Gaussian:
        return self.from_raw(self.linear(h))

    def from_raw(self, raw: Tensor) -> Gaussian:
        """The Gaussian from the linear layer's output (B, 2Z)."""
        mu, log_sigma = raw.chunk(2, dim=-1)  # (B, Z) each
        if self.bounded:
            return Gaussian(torch.tanh(mu), torch.tanh(log_sigma))
        return Gaussian(mu, log_sigma)
