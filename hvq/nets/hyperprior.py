"""Per-granularity hyperprior (the paper's contribution): features -> side latent z -> Gaussian.

For each granularity ``g`` (fine, medium, coarse):

* ``h_a`` (hyper-analysis) reads the masked features ``y_g * m_g`` and the mask ``m_g`` and gives a
  small side latent ``z_g`` at 1/4 of the granularity's resolution (two stride-2 convolutions);
* ``z_g`` is rounded (noise in training) and coded with a learned factorised prior;
* ``h_s`` (hyper-synthesis) turns ``z_hat_g`` (and the mask, which the decoder knows) into the mean
  ``mu`` and scale ``sigma`` of a Gaussian in the *embedding space* at every position of ``g``;
* ``hvq.probability`` turns ``(mu, sigma)`` and the shared codebook into index probabilities.

Shapes: ``HyperAnalysis(y (B, D, h, w), m (B, 1, h, w)) -> z (B, Cz, ceil(h/4), ceil(w/4))``;
``HyperSynthesis(z_hat, m, cond) -> mu (B, D, h, w), scale (B, D or 1, h, w)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq.nets.blocks import FiLM
from hvq.probability import SCALE_MAX, SCALE_MIN, FactorizedPrior

LOG_SCALE_MIN, LOG_SCALE_MAX = math.log(SCALE_MIN), math.log(SCALE_MAX)


class HyperAnalysis(nn.Module):
    def __init__(self, dim: int, hidden: int, z_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim + 1, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, z_channels, 3, stride=2, padding=1),
        )

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        return self.net(torch.cat([y * mask, mask], dim=1))


class HyperSynthesis(nn.Module):
    def __init__(self, dim: int, hidden: int, z_channels: int, cond_dim: int, isotropic: bool) -> None:
        super().__init__()
        self.dim = dim
        self.up1 = nn.Conv2d(z_channels, hidden, 3, padding=1)
        self.up2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.mix = nn.Conv2d(hidden + 1, hidden, 3, padding=1)
        self.film = FiLM(cond_dim, hidden) if cond_dim else None
        self.out = nn.Conv2d(hidden, dim + (1 if isotropic else dim), 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[dim:] = -1.0  # initial scale e^-1 ~ 0.37

    def forward(self, z_hat: Tensor, mask: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, w = mask.shape[-2:]
        t = F.leaky_relu(self.up1(F.interpolate(z_hat, scale_factor=2.0, mode="nearest")), 0.1)
        t = F.leaky_relu(self.up2(F.interpolate(t, scale_factor=2.0, mode="nearest")), 0.1)
        t = t[..., :h, :w]
        t = self.mix(torch.cat([t, mask.to(t.dtype)], dim=1))
        if self.film is not None:
            t = self.film(t, cond)
        params = self.out(F.leaky_relu(t, 0.1))
        mu, log_scale = params[:, : self.dim], params[:, self.dim :]
        return mu, torch.exp(log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))


class Hyperprior(nn.Module):
    """h_a, h_s and the factorised prior of z for one granularity (or shared by all three)."""

    def __init__(self, dim: int, hidden: int, z_channels: int, cond_dim: int, isotropic: bool) -> None:
        super().__init__()
        self.h_a = HyperAnalysis(dim, hidden, z_channels)
        self.h_s = HyperSynthesis(dim, hidden, z_channels, cond_dim, isotropic)
        self.prior = FactorizedPrior(z_channels)
