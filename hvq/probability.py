r"""Probability models for VQ indices and for the hyper-latent z (torch only, no networks, no files).

The heart of HVQ-CGIC (arXiv 2512.07192): a hyper-decoder predicts, at every position, a Gaussian
``N(mu, diag(scale^2))`` in the *embedding space* of the VQ codebook. The probability of index ``k`` is
that Gaussian's density evaluated at codebook vector ``e_k`` and renormalised over the ``K`` anchors:

.. math::

    p(k \mid \mu, \sigma) = \frac{\exp(-\tfrac12 \lVert (e_k-\mu)/\sigma \rVert^2)}
                                 {\sum_{j=1}^{K} \exp(-\tfrac12 \lVert (e_j-\mu)/\sigma \rVert^2)}
                          = \operatorname{softmax}_k\bigl(-\tfrac12 d_M(e_k, \mu)^2\bigr).

Why this is a distribution: every term is positive and the denominator is their sum, so the ``K``
values are positive and add up to one, whatever mu and sigma are (the Gaussian's own normaliser
``(2\pi)^{-D/2}\prod_d \sigma_d^{-1}`` does not depend on ``k`` and cancels).

The two limits (``tests/test_probability.py`` checks both):

* ``sigma -> 0``: the distance differences are divided by ``sigma^2 -> 0``, so the softmax becomes an
  argmax: all mass goes to the codebook vector nearest to ``mu`` (in the sigma-weighted metric).
* ``sigma -> inf``: every exponent goes to 0, so ``p(k) -> 1/K``: the uniform code, ``log2 K`` bits.

Why the rate is differentiable: the bits of the chosen index ``k*`` are
``-log2 p(k*) = (1/ln 2) [ 1/2 d_M(e_{k*}, mu)^2 + logsumexp_j(-1/2 d_M(e_j, mu)^2) ]``, a smooth
function of mu, sigma and the codebook. Gradients flow through the hyper-decoder into the
hyper-encoder and (through the features the hyper-encoder reads) into the image encoder, so the codec
trains end to end on rate + lambda * distortion. A static histogram has no such path.

Reading of the paper (its method text is not public): we read "Gaussian in embedding space" as a
diagonal covariance predicted per position; an isotropic variant (one scale per position) is
supported for the ablation. Both are tested against a brute-force reference.

Also here: :class:`StaticHistogram`, the single global index histogram that existing VQ codecs use
(the "static" baseline), and :class:`FactorizedPrior`, the learned non-parametric density of Ballé et
al. 2018 for the hyper-latent z.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG2 = math.log(2.0)

#: Scales are clamped to this range before use; the same bounds define the integer-table grid
#: (``hvq.tables``), so training and coding see the same family of models.
SCALE_MIN = 2.0**-6
SCALE_MAX = 2.0**5


def _check_gaussian_args(mu: Tensor, scale: Tensor, codebook: Tensor) -> None:
    if mu.dim() != 4:
        raise ValueError(f"mu must be B x D x H x W, got shape {tuple(mu.shape)}")
    if codebook.dim() != 2 or codebook.shape[1] != mu.shape[1]:
        raise ValueError(
            f"codebook must be K x D with D = mu.shape[1] = {mu.shape[1]}, got {tuple(codebook.shape)}"
        )
    if scale.dim() != 4 or scale.shape[1] not in (1, mu.shape[1]) or scale.shape[2:] != mu.shape[2:]:
        raise ValueError(
            "scale must be B x D x H x W (diagonal) or B x 1 x H x W (isotropic), "
            f"got {tuple(scale.shape)} for mu {tuple(mu.shape)}"
        )


def half_mahalanobis(mu: Tensor, scale: Tensor, codebook: Tensor) -> Tensor:
    """Half squared Mahalanobis distance ``1/2 sum_d ((e_kd - mu_d) / scale_d)^2`` for every code.

    Args:
        mu: ``(B, D, H, W)`` predicted means in embedding space.
        scale: ``(B, D, H, W)`` (diagonal) or ``(B, 1, H, W)`` (isotropic) standard deviations > 0.
        codebook: ``(K, D)`` codebook vectors.

    Returns:
        ``(B, K, H, W)`` distances. Computed as the expanded quadratic
        ``1/2 [w.e^2 - 2 (w mu).e + w.mu^2]`` with ``w = 1/scale^2`` through two einsums, which needs
        ``O(B K H W)`` memory instead of the ``O(B K D H W)`` of the direct difference.
    """
    _check_gaussian_args(mu, scale, codebook)
    w = scale.clamp(SCALE_MIN, SCALE_MAX).pow(-2).expand_as(mu)  # (B, D, H, W)
    e = codebook.to(mu.dtype)
    quad = torch.einsum("kd,bdhw->bkhw", e * e, w)  # sum_d w_d e_kd^2
    cross = torch.einsum("kd,bdhw->bkhw", e, w * mu)  # sum_d w_d mu_d e_kd
    const = (w * mu * mu).sum(dim=1, keepdim=True)  # sum_d w_d mu_d^2
    return 0.5 * (quad - 2.0 * cross + const).clamp_min(0.0)


def index_log_probs(mu: Tensor, scale: Tensor, codebook: Tensor, chunk_size: int = 4096) -> Tensor:
    """Log-probability of every codebook index under a Gaussian in embedding space.

    ``log p(k) = -1/2 d_M(e_k, mu)^2 - logsumexp_j(-1/2 d_M(e_j, mu)^2)`` (a log-softmax over K).

    Args:
        mu: ``(B, D, H, W)`` means.
        scale: ``(B, D, H, W)`` diagonal or ``(B, 1, H, W)`` isotropic standard deviations.
        codebook: ``(K, D)``.
        chunk_size: codes per chunk. Memory is ``O(B * chunk * H * W)`` per chunk; for K above it the
            normaliser is accumulated with a running logsumexp, so K = 16384 fits on a laptop.

    Returns:
        ``(B, K, H, W)`` natural-log probabilities; ``exp`` sums to 1 over dim 1.

    Example:
        >>> import torch
        >>> from hvq.probability import index_log_probs
        >>> mu, scale, codebook = torch.zeros(1, 4, 2, 3), torch.ones(1, 4, 2, 3), torch.randn(16, 4)
        >>> logp = index_log_probs(mu, scale, codebook)
        >>> logp.shape, bool(torch.allclose(logp.exp().sum(1), torch.ones(1, 2, 3)))
        (torch.Size([1, 16, 2, 3]), True)
    """
    _check_gaussian_args(mu, scale, codebook)
    K = codebook.shape[0]
    if K <= chunk_size:
        return torch.log_softmax(-half_mahalanobis(mu, scale, codebook), dim=1)
    logits = [-half_mahalanobis(mu, scale, codebook[i : i + chunk_size]) for i in range(0, K, chunk_size)]
    norm = torch.logsumexp(torch.stack([lg.logsumexp(dim=1) for lg in logits]), dim=0)  # (B, H, W)
    return torch.cat([lg - norm.unsqueeze(1) for lg in logits], dim=1)


def index_bits(
    mu: Tensor, scale: Tensor, codebook: Tensor, indices: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Bits ``-log2 p(indices)`` at every position, differentiable w.r.t. mu, scale and codebook.

    Builds the ``(B, K, H, W)`` log-probabilities (chunked over K) and gathers the chosen entries; the
    backward pass keeps that tensor, which is fine for training crops (K=1024, 32x32: 4 MB per image).

    Args:
        mu, scale, codebook: as in :func:`index_log_probs`.
        indices: ``(B, H, W)`` int64 chosen codes.
        mask: optional ``(B, H, W)`` 0/1 weights (positions coded at this granularity).

    Returns:
        ``(B, H, W)`` bits per position (zero where ``mask`` is 0).
    """
    logp = index_log_probs(mu, scale, codebook)
    if indices.shape != (mu.shape[0],) + mu.shape[2:]:
        raise ValueError(f"indices must be B x H x W = {(mu.shape[0],) + tuple(mu.shape[2:])}")
    bits = -logp.gather(1, indices.unsqueeze(1)).squeeze(1) / LOG2
    return bits if mask is None else bits * mask


def coded_index_bits(
    mu: Tensor, scale: Tensor, codebook: Tensor, indices: Tensor, chunk_rows: int = 4096
) -> Tensor:
    """Total bits ``sum_n -log2 p(indices_n)`` of N coded positions: the value of :func:`index_bits`
    summed, for rate estimates and for refitting the hyperpriors (differentiable in ``mu``, ``scale``
    and ``codebook``; :mod:`hvq.refit`).

    The positions are rows, so the half distances of a chunk are one ``(n, 2D+1) x (K, 2D+1)^T``
    product (``F.linear``) of the expanded quadratic, and the log-softmax runs along contiguous
    memory; chunks of ``chunk_rows`` positions keep the memory at ``chunk_rows * K`` floats.

    Args:
        mu, scale: ``(N, D)`` means and diagonal standard deviations (or ``(N, 1)`` isotropic).
        codebook: ``(K, D)``.
        indices: ``(N,)`` int64 chosen codes.

    Returns:
        A 0-dim float64 tensor: the total bits.
    """
    shapes_ok = mu.dim() == 2 and codebook.dim() == 2 and mu.shape[1] == codebook.shape[1]
    if not shapes_ok or indices.shape != mu.shape[:1]:
        raise ValueError(
            f"need mu (N, D), codebook (K, D), indices (N,); got {tuple(mu.shape)}, "
            f"{tuple(codebook.shape)}, {tuple(indices.shape)}"
        )
    e = codebook.to(mu.dtype)
    # half distance = 1/2 sum_d w_d e_kd^2 - sum_d w_d mu_d e_kd + 1/2 sum_d w_d mu_d^2
    code_terms = torch.cat([0.5 * e * e, -e, torch.ones_like(e[:, :1])], dim=1)  # (K, 2D+1)
    parts = [mu.new_zeros((), dtype=torch.float64)]
    for start in range(0, mu.shape[0], chunk_rows):
        m = mu[start : start + chunk_rows]
        w = scale[start : start + chunk_rows].clamp(SCALE_MIN, SCALE_MAX).pow(-2).expand_as(m)
        rows = torch.cat([w, w * m, 0.5 * (w * m * m).sum(1, keepdim=True)], dim=1)  # (n, 2D+1)
        log_p = torch.log_softmax(-F.linear(rows, code_terms), dim=1)  # (n, K)
        parts.append(-log_p.gather(1, indices[start : start + chunk_rows, None]).double().sum())
    return torch.stack(parts).sum() / LOG2


def embedding_bits(mu: Tensor, scale: Tensor, codebook: Tensor, y_hat: Tensor) -> Tensor:
    """Bits of the codes whose vectors are ``y_hat`` (the straight-through quantised features).

    Value: exactly ``index_bits`` of the chosen indices (``y_hat`` equals the code vector in the
    forward pass). Gradient: besides mu, scale and the codebook (through the normaliser), it also
    reaches the *encoder* through the straight-through ``y_hat``: the term
    ``1/2 ||(y_hat - mu) / scale||^2`` pulls the features toward what the hyperprior predicts, which
    is how the rate shapes which codes the encoder picks (the index choice itself has no gradient).

    Args:
        mu, scale, codebook: as in :func:`index_log_probs`.
        y_hat: ``(B, D, H, W)`` quantised features.

    Returns:
        ``(B, H, W)`` bits.
    """
    _check_gaussian_args(mu, scale, codebook)
    s = scale.clamp(SCALE_MIN, SCALE_MAX)
    own = 0.5 * ((y_hat - mu) / s).pow(2).sum(1)
    log_norm = torch.logsumexp(-half_mahalanobis(mu, scale, codebook), dim=1)
    return (own + log_norm) / LOG2


class StaticHistogram(nn.Module):
    """The static index model of existing VQ codecs: one global histogram of index counts.

    ``p(k) = (count_k + alpha) / (sum_j count_j + K alpha)`` with additive (Laplace) smoothing
    ``alpha > 0`` so that no index has probability zero. Fit it on the training set with
    :meth:`update` (counts accumulate), then use :meth:`log_probs` or the integer table from
    ``hvq.tables.static_table``.
    """

    def __init__(self, num_codes: int, alpha: float = 0.5) -> None:
        super().__init__()
        if num_codes < 2 or alpha <= 0:
            raise ValueError("need num_codes >= 2 and alpha > 0")
        self.alpha = float(alpha)
        self.register_buffer("counts", torch.zeros(num_codes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, indices: Tensor) -> None:
        """Add the codes in ``indices`` (any shape, int) to the counts."""
        self.counts += torch.bincount(indices.flatten().cpu(), minlength=self.counts.numel()).to(self.counts)

    def log_probs(self) -> Tensor:
        """``(K,)`` natural-log probabilities."""
        p = self.counts + self.alpha
        return (p / p.sum()).log()

    def bits(self, indices: Tensor) -> Tensor:
        """Bits of each index under the histogram, same shape as ``indices``."""
        return -self.log_probs().to(indices.device)[indices] / LOG2


class FactorizedPrior(nn.Module):
    """Learned factorised (non-parametric) density for the hyper-latent z (Ballé et al. 2018, App. 6.1).

    Each of the ``C`` channels has its own monotone CDF ``c(x)``, a composition of small
    element-wise affine maps with ``softplus`` weights and ``tanh`` gates (filters ``(3, 3, 3)``). The
    likelihood of an integer ``z`` is ``c(z + 1/2) - c(z - 1/2)``, bounded below by
    ``likelihood_bound``. Training adds uniform noise in ``[-1/2, 1/2)`` (a differentiable proxy for
    rounding); evaluation and coding round.

    Shapes: ``forward(z: (B, C, h, w)) -> (z_tilde: (B, C, h, w), likelihoods: (B, C, h, w))``.
    ``hvq.tables.factorized_tables`` turns the CDF into integer tables for the coder.
    """

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.likelihood_bound = likelihood_bound
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cdf(self, x: Tensor) -> Tensor:
        """x: ``(C, 1, N)`` -> logits of the CDF, ``(C, 1, N)``."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: Tensor) -> Tensor:
        """Probability mass of the unit bin around each value of ``z`` ``(B, C, h, w)``."""
        B, C, h, w = z.shape
        if C != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {C}")
        x = z.permute(1, 0, 2, 3).reshape(C, 1, -1)
        lower = self._logits_cdf(x - 0.5)
        upper = self._logits_cdf(x + 0.5)
        # Difference of sigmoids computed on the side where it is not 1 - 1 (numerically stable).
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        lik = lik.reshape(C, B, h, w).permute(1, 0, 2, 3)
        return lik.clamp_min(self.likelihood_bound)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Noisy (training) or rounded (eval) z and its likelihood; both ``(B, C, h, w)``."""
        if self.training:
            z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        else:
            z_tilde = torch.round(z)
        return z_tilde, self.likelihood(z_tilde)

    @torch.no_grad()
    def pmf(self, support: int) -> Tensor:
        """``(C, 2*support+1)`` float64 masses of the integers ``-support..support``; the two ends
        absorb the tails (clamped values are coded as the end symbols)."""
        x = torch.arange(-support, support + 1, dtype=torch.float32, device=self.matrices[0].device)
        x = x.view(1, 1, -1).expand(self.channels, 1, -1)
        lower = torch.sigmoid(self._logits_cdf(x - 0.5)).double().squeeze(1)
        upper = torch.sigmoid(self._logits_cdf(x + 0.5)).double().squeeze(1)
        lower[:, 0] = 0.0
        upper[:, -1] = 1.0
        return (upper - lower).clamp_min(0.0)

    def bits(self, z_hat: Tensor) -> Tensor:
        """Total bits of ``z_hat`` (scalar)."""
        return -self.likelihood(z_hat).log2().sum()
