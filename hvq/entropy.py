"""The entropy model of the three granularities: the one path that training, rate estimation and
coding all share, and the integer tables that coding needs.

For one granularity ``g`` (mask ``m_g``, features ``y_g``, nearest codes ``k_g``)::

    y_g, m_g ──h_a──► z_g ──round (coding) or noise (training)──► z_hat_g
    z_hat_g, m_g, lambda ──h_s──► mu_g, sigma_g            (a Gaussian in the embedding space)
    p(k | mu, sigma) = softmax_k(-1/2 (e_k - mu)^T Sigma^-1 (e_k - mu))      (hvq.probability)

and the masks themselves: the coarse cells, then the medium cells among those no coarse cell covers,
each a Bernoulli stream at its ratio.

* :func:`hyper_parameters` runs ``h_a -> round/noise -> h_s`` once (training and estimation);
* :func:`side_latent` is the coded ``z_hat`` (rounded and clamped to the z tables' support, and 0
  in the 4x4 blocks that hold no coded position: :func:`occupied_blocks`, the only z a file carries);
* :class:`ExactParameters` recomputes ``(mu, sigma)`` from ``z_hat`` with the *integer* hyper-synthesis
  (:mod:`hvq.nets.integer`: exact by construction, so no CPU, BLAS, thread count or GPU can change a
  value) directly on the tables' grids, and builds the integer index tables (``hvq.tables``): what the
  encoder and the decoder both run, so that they code with identical integers;
* :func:`mask_bits`, :func:`mask_table`: the masks' rate in training and their integer tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq import tables
from hvq.nets import Hyperprior
from hvq.nets.integer import IntegerHyperSynthesis
from hvq.nets.router import medium_cells
from hvq.symbols import coded_positions

#: Probability floor of the two mask symbols (keeps a ratio of 0 or 1 codable).
MASK_P_FLOOR = 1.0 / 256


@dataclass
class HyperOutput:
    """One granularity's pass through its hyperprior: ``z_hat (B, Cz, h/4, w/4)``, ``z_bits (B,)``,
    ``mu (B, D, h, w)``, ``scale (B, D or 1, h, w)``."""

    z_hat: Tensor
    z_bits: Tensor
    mu: Tensor
    scale: Tensor


def occupied_blocks(mask: Tensor) -> Tensor:
    """``(B, 1, h/4, w/4)``: 1 where a 4x4 block of ``mask (B, 1, h, w)`` (the area of one z element)
    holds a coded position, else 0; ceil-sized like z (:func:`hvq.symbols.z_side`).

    z is coded in occupied blocks only; elsewhere it is 0 and costs nothing (the decoder knows the
    masks before z). Nothing coded lies under an empty block, so its z would only have informed the
    neighbours that ``h_s`` reads through its kernels: on held-out photos that was worth less than
    the z itself (``benchmarks/saving_by_granularity.py``)."""
    return (F.max_pool2d(mask, 4, ceil_mode=True) > 0).to(mask.dtype)


def side_latent(hp: Hyperprior, y: Tensor, mask: Tensor, z_support: int) -> Tensor:
    """The coded side latent: ``round(h_a(y, m))`` clamped to ``[-z_support, z_support]``, 0 in the
    blocks without a coded position (:func:`occupied_blocks`)."""
    return torch.round(hp.h_a(y, mask)).clamp(-z_support, z_support) * occupied_blocks(mask)


def hyper_parameters(
    hp: Hyperprior, y: Tensor, mask: Tensor, cond: Tensor | None, z_support: int | None = None
) -> HyperOutput:
    """``h_a -> Q -> h_s`` for one granularity. ``z_support=None`` (training): additive uniform noise
    and the prior's differentiable likelihood; an integer (estimation): rounded and clamped, as coded.
    Either way z is 0 and costs no bits in blocks without a coded position (:func:`occupied_blocks`).
    """
    occupied = occupied_blocks(mask)
    if z_support is None:
        z_hat, likelihood = hp.prior(hp.h_a(y, mask))
        z_hat = z_hat * occupied
    else:
        z_hat = side_latent(hp, y, mask, z_support)
        likelihood = hp.prior.likelihood(z_hat)
    mu, scale = hp.h_s(z_hat, mask, cond)
    z_bits = (-torch.log2(likelihood) * occupied).flatten(1).sum(1)
    return HyperOutput(z_hat, z_bits, mu, scale)


class ExactParameters:
    """The integer hyper-synthesis of each granularity (:class:`IntegerHyperSynthesis`, built from the
    float weights and the stored FiLM tables) and the grid-snapped codebook, and the tables they give.

    Built from a trained model once (the model caches it and forgets it when its weights change);
    :meth:`index_tables` is what encoder and decoder both call.
    """

    def __init__(
        self,
        hyperpriors: nn.ModuleList,
        film_gamma_q: Tensor,
        film_beta_q: Tensor,
        codebook: Tensor,
        z_support: int,
    ) -> None:
        """``film_gamma_q``, ``film_beta_q``: ``(n_hyperpriors, LAMBDA_STEPS, hidden)`` int64 (the
        model's buffers, filled by ``update()``); ``codebook``: ``(K, D)``."""
        self.networks = [
            IntegerHyperSynthesis.from_float(hp.h_s, film_gamma_q[i], film_beta_q[i], z_support)
            for i, hp in enumerate(hyperpriors)
        ]
        self.codebook_q = tables.quantize_mu(codebook.detach().cpu().double().numpy())

    @torch.no_grad()
    def index_tables(self, g: int, z_hat: Tensor, mask: Tensor, lambda_index: int):
        """Integer index tables of the coded positions of granularity ``g`` (network ``g``, or 0 when
        shared): ``z_hat (1, Cz, ., .)``, ``mask (1, 1, h, w)``, ``lambda_index`` the file's lambda.

        Returns ``(freqs (n, K) int32, log2 scale map (1, h, w) float32, positions (n,) flat)``; the
        map holds the mean grid log2 scale at the coded positions and 0 elsewhere (the decoder masks
        it). Only the coded positions are computed (:meth:`IntegerHyperSynthesis.at_positions`).
        """
        network = self.networks[min(g, len(self.networks) - 1)]
        pos = coded_positions(mask)
        mu_q, scale_idx = network.at_positions(z_hat, mask, lambda_index, pos)
        freqs = tables.gaussian_index_freqs(mu_q, scale_idx, self.codebook_q)
        # The decoder's confidence input uses the grid's scale, so pixels depend on symbols only.
        grid = torch.from_numpy(scale_idx).double()  # multiples of 1/8: the mean is exact
        log_s = torch.zeros(mask[0, 0].numel(), dtype=torch.float64)
        log_s[pos] = (tables.LOG2_SCALE_MIN + grid / tables.LOG2_SCALE_STEPS).mean(1)
        return freqs, log_s.view(1, *mask.shape[-2:]).float(), pos


# ------------------------------------------------------------------------------------------- masks
def binary_entropy_bits(p: Tensor, n: Tensor, k: Tensor) -> Tensor:
    """Bits of ``k`` ones among ``n`` Bernoulli(p) symbols (p floored at ``MASK_P_FLOOR``)."""
    p = p.clamp(MASK_P_FLOOR, 1 - MASK_P_FLOOR)
    return -(k * torch.log2(p) + (n - k) * torch.log2(1 - p))


def mask_bits(coarse: Tensor, medium: Tensor, coarse_ratio, medium_ratio) -> Tensor:
    """Bits ``(B,)`` of the two mask streams: every coarse cell at ``coarse_ratio``, then every cell
    that no coarse cell covers at ``medium_ratio``. ``coarse (B, 1, h/16, w/16)``, ``medium (B, 1,
    h/8, w/8)``; the ratios are floats or ``(B,)`` tensors."""
    b, dev = coarse.shape[0], coarse.device
    rc = torch.as_tensor(coarse_ratio, dtype=torch.float32, device=dev).expand(b)
    rm = torch.as_tensor(medium_ratio, dtype=torch.float32, device=dev).expand(b)
    n16 = torch.full((b,), float(coarse[0].numel()), device=dev)
    n8 = medium_cells(coarse).flatten(1).sum(1).float()
    return binary_entropy_bits(rc, n16, coarse.flatten(1).sum(1)) + binary_entropy_bits(
        rm, n8, medium.flatten(1).sum(1)
    )


def mask_table(p: float) -> np.ndarray:
    """Integer table ``(2,)`` of a mask symbol at ratio ``p`` (floored at ``MASK_P_FLOOR``)."""
    p = min(max(float(p), MASK_P_FLOOR), 1.0 - MASK_P_FLOOR)
    w = np.array([[round((1.0 - p) * 2**16), round(p * 2**16)]], dtype=np.int64)
    return tables.freqs_from_weights(w)[0]
