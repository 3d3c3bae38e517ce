r"""Integer hyper-synthesis: entropy parameters that are exact by construction (torch and numpy).

The range decoder works only if it rebuilds the encoder's probability tables bit for bit. The tables
come from the hyper-synthesis ``h_s`` (``hvq.nets.hyperprior.HyperSynthesis``), whose float outputs
depend in their last bits on the summation order of every convolution: the BLAS, its blocking, the
thread count, the device. Snapping ``mu`` and ``log2 scale`` to a grid (``hvq.tables``) makes a
mismatch rare, not impossible: a value that lies within one rounding error of a grid boundary snaps
to different sides on two machines, and the decoder reads garbage from there on (CompressAI issues
279 and 309). Following Ballé, Johnston and Minnen 2019, "Integer networks for data compression with
latent-variable models" (ICLR), this module computes the same network with integers only.

Fixed-point layout. Each activation is an integer ``a`` standing for ``a 2^-f`` with
``f = frac_bits(layer) = ACT_BITS - LIMIT_BITS[layer]``, clamped to ``|a| <= 2^ACT_BITS``; weights are
``Wq = round(W 2^F_w)``, biases are rounded at their accumulator's scale (``F_w = WEIGHT_FRAC_BITS``,
``F_g = FILM_FRAC_BITS``)::

    z      z_hat clamped to [-S, S], times 2^f_z                          (S = z_support)
    up1    conv3x3(W1q, up2x(z)) + b1q          at 2^(f_z + F_w)   -> rescale to f_up1, clamp, leak
    up2    conv3x3(W2q, up2x(a)) + b2q          at 2^(f_up1 + F_w) -> rescale to f_up2, clamp, leak, crop
    mix    conv3x3(Wmq, [a, mask 2^f_up2]) + bmq at 2^(f_up2 + F_w) -> rescale to f_mix, clamp
    FiLM   a G[lambda] + B[lambda]               at 2^(f_mix + F_g) -> rescale to f_film, clamp, leak
    out    conv1x1(Woq, a) + boq                 at 2^(f_film + F_w)
           mu_q      = rescale of the mu rows to 2^MU_FRAC_BITS            (quantize_mu's units)
           scale_idx = clip(rescale of the scale rows to 2^0, 0, N_SCALES - 1)

"Rescale" from ``2^p`` to ``2^q`` is ``floor((acc + 2^(p-q-1)) / 2^(p-q))`` (round half up); "leak" is
``leaky_relu`` with slope ``1/LEAK_DIVISOR`` as ``a if a >= 0 else floor(a / LEAK_DIVISOR)``. The
scale rows of ``out`` fold ``log scale -> (log2 scale - LOG2_SCALE_MIN) LOG2_SCALE_STEPS`` into their
weights and bias, so they give :func:`hvq.tables.quantize_log_scale`'s index directly. ``G`` and ``B``
are the FiLM modulation ``x (1 + gamma) + beta`` for each of ``LAMBDA_STEPS`` lambda indices,
``G = round((1 + gamma) 2^F_g)``, ``B = round(beta 2^(f_mix + F_g))``: :func:`film_tables` computes
them once (``update()``) and the checkpoint stores them, because sin, cos and SiLU are not exact on
every machine.

Why every machine gets the same integers. Every value above is an integer held in float64 (or int64).
Each product ``w x`` is an integer below ``2^53``, so float64 represents it exactly. A convolution
output is ``b + sum_i w_i x_i``; *any* partial sum over *any* subset of the terms, in any order, is
bounded by ``|b| + sum_i |w_i| L_i`` where ``L_i`` bounds ``|x_i|`` (``2^ACT_BITS``, or ``S 2^f_z`` for
z). :meth:`IntegerHyperSynthesis.worst_case_sums` computes that bound per layer from the integer
weights, and the constructor refuses a network whose bound reaches ``2^53``. Below ``2^53`` every
float64 addition of integers is exact, so the result does not depend on the order: not on the BLAS
(blocking, vectorisation), the thread count, or the default dtype. This holds for every algorithm that
sums products (direct, im2col + GEMM, any tiling), which is what float64 convolution does on the CPU; a
transform algorithm (FFT, Winograd) does not sum exact products, and ``backend="int64"`` (im2col +
integer matmul) needs no assumption at all. The rescalings are floor divisions by powers of two (and by
``LEAK_DIVISOR``) of exact integers, hence exact as well. The integers depend only on the float32
weights through IEEE operations that every machine rounds alike (scaling by powers of two, one
multiplication by the literal :data:`LOG2_E_TIMES_GRID`, rounding to an integer), and on the stored FiLM
tables.

What the codec runs. ``__call__`` computes every position of the map with torch convolutions (the
reference); :meth:`IntegerHyperSynthesis.at_positions`, which encoder and decoder call, computes only
the coded positions and what they read, as gathered patches times integer weights (numpy's matmul: an
im2col + GEMM on some pixels), with the two upsampled layers as 2x2 convolutions of the small maps. The
same argument makes its integers those of ``__call__``; its cost follows the coded positions, about a
tenth of the whole map's at the middle granularity setting.

Shapes: ``IntegerHyperSynthesis(z_hat (B, Cz, hz, wz), mask (B, 1, h, w), lambda_index) ->
mu_q (B, D, h, w), scale_idx (B, D or 1, h, w)``, both int64; ``at_positions(z_hat (1, ...), mask,
lambda_index, positions (n,)) -> mu_q (n, D), scale_idx (n, D or 1)``, int64 numpy.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hvq.nets.blocks import RateEmbedding
from hvq.nets.hyperprior import HyperSynthesis
from hvq.tables import LOG2_SCALE_MAX, LOG2_SCALE_MIN, LOG2_SCALE_STEPS, MU_FRAC_BITS

#: Number of lambda values a file can name: ``t = index / (LAMBDA_STEPS - 1)`` on the normalised
#: log-lambda axis, so neighbours differ by 1.4 % in lambda for the reduced model's range 0.25..8.
LAMBDA_STEPS = 256
#: Every activation is held as an integer of magnitude at most ``2**ACT_BITS``: a fixed-point number
#: with ``ACT_BITS - LIMIT_BITS[layer]`` fractional bits, clamped to ``|a| <= 2**LIMIT_BITS[layer]``.
ACT_BITS = 27
#: The clamps (log2, real units): at least 8x the largest ``|value|`` the shipped model reaches on
#: Kodak (up1 2, up2 5, mix 31, film 100); ``"z"`` holds ``z_hat`` (``z_support <= 2**5``).
LIMIT_BITS = {"z": 5, "up1": 5, "up2": 6, "mix": 9, "film": 10}
#: Fractional bits of the weights and of the FiLM factor ``1 + gamma``.
WEIGHT_FRAC_BITS = 20
FILM_FRAC_BITS = 20
#: ``leaky_relu`` slope 0.1 as an exact floor division.
LEAK_DIVISOR = 10
#: Integers of magnitude below ``2**EXACT_BITS`` are exact in float64.
EXACT_BITS = 53
#: ``log2(e) * LOG2_SCALE_STEPS`` as a literal (Python parses it to the same float64 everywhere).
LOG2_E_TIMES_GRID = 1.4426950408889634 * LOG2_SCALE_STEPS
#: Clip of :func:`hvq.tables.quantize_mu`, in grid units.
MU_Q_LIMIT = 2**14 * 2**MU_FRAC_BITS
N_SCALES = (LOG2_SCALE_MAX - LOG2_SCALE_MIN) * LOG2_SCALE_STEPS + 1

_ACT_MAX = 2**ACT_BITS
#: Bytes of one gathered patch block of :meth:`IntegerHyperSynthesis.at_positions`: large enough that
#: the BLAS threads of its matrix products seldom wait on each other, small enough for the L3 cache.
_PATCH_BLOCK_BYTES = 1 << 23
#: The pixels ``(dy, dx)`` of a 2x2 and a 3x3 patch, from its top-left pixel, in the weights' order.
_PATCH_2X2 = ((0, 0), (0, 1), (1, 0), (1, 1))
_PATCH_3X3 = tuple((dy, dx) for dy in range(3) for dx in range(3))


def frac_bits(layer: str) -> int:
    """Fractional bits of the activation after ``layer`` (``"z"`` for the input)."""
    return ACT_BITS - LIMIT_BITS[layer]


Backend = Literal["float64", "int64"]


def lambda_index(t: float) -> int:
    """The grid index of the normalised log-lambda ``t`` in [0, 1] (the nearest of ``LAMBDA_STEPS``).

    Only the encoder calls this (the file stores the index), so a last-bit difference in ``t`` can
    change which lambda is chosen, never what the decoder computes.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"normalised lambda t={t} outside [0, 1]")
    return round(t * (LAMBDA_STEPS - 1))


def lambda_grid_t(index: int) -> float:
    """``t`` of a lambda index: ``index / (LAMBDA_STEPS - 1)``."""
    if not 0 <= index < LAMBDA_STEPS:
        raise ValueError(f"lambda index {index} outside 0..{LAMBDA_STEPS - 1}")
    return index / (LAMBDA_STEPS - 1)


@torch.no_grad()
def film_tables(h_s: HyperSynthesis, embed: RateEmbedding | None) -> tuple[Tensor, Tensor]:
    """FiLM factors of every lambda index, as integers: ``(gamma_q, beta_q)``, each
    ``(LAMBDA_STEPS, hidden)`` int64 with ``gamma_q = round((1 + gamma) 2^F_g)`` and
    ``beta_q = round(beta 2^(f_mix + F_g))``.

    Computed once in float64 (``update()``) and stored with the model: the sin, cos and SiLU of the
    rate embedding are not bit-exact across machines, the stored integers are. Without FiLM
    (``embed`` or ``h_s.film`` is None) the tables are the identity.
    """
    hidden = h_s.mix.out_channels
    if h_s.film is None or embed is None:
        gamma_q = torch.full((LAMBDA_STEPS, hidden), 2**FILM_FRAC_BITS, dtype=torch.int64)
        return gamma_q, torch.zeros(LAMBDA_STEPS, hidden, dtype=torch.int64)
    t = torch.arange(LAMBDA_STEPS, dtype=torch.float64) / (LAMBDA_STEPS - 1)
    proj = copy.deepcopy(h_s.film.proj).double().cpu()
    cond = copy.deepcopy(embed).double().cpu()(t)
    gamma, beta = proj(cond).chunk(2, dim=1)
    gamma_q = torch.round((1 + gamma) * 2.0**FILM_FRAC_BITS).long()
    beta_q = torch.round(beta * 2.0 ** (frac_bits("mix") + FILM_FRAC_BITS)).long()
    return gamma_q, beta_q


@dataclass(frozen=True)
class IntegerConv:
    """One convolution with integer weights ``(C_out, C_in, k, k)`` and bias ``(C_out,)`` (int64),
    'same' zero padding; ``accumulate`` returns the exact integer sums ``b + sum w x``."""

    weight: Tensor
    bias: Tensor

    @classmethod
    def from_float(cls, conv: torch.nn.Conv2d, in_frac_bits: int) -> IntegerConv:
        """Round ``conv``'s weights at ``2^F_w`` and its bias at the accumulator scale
        ``2^(in_frac_bits + F_w)``."""
        w = conv.weight.detach().cpu().double()
        b = conv.bias.detach().cpu().double()
        return cls(
            torch.round(w * 2.0**WEIGHT_FRAC_BITS).long(),
            torch.round(b * 2.0 ** (in_frac_bits + WEIGHT_FRAC_BITS)).long(),
        )

    def accumulate(self, x: Tensor, backend: Backend) -> Tensor:
        """``x (B, C_in, H, W)`` integer-valued -> ``(B, C_out, H, W)`` exact sums, float64 or int64."""
        pad = self.weight.shape[-1] // 2
        if backend == "float64":
            return F.conv2d(x.double(), self.weight.double(), self.bias.double(), padding=pad)
        b, _, h, w = x.shape
        cols = F.unfold(x.double(), self.weight.shape[-1], padding=pad).long()  # (B, C_in k k, H W)
        acc = torch.einsum("ok,bkl->bol", self.weight.flatten(1), cols) + self.bias[None, :, None]
        return acc.view(b, -1, h, w)

    def worst_case(self, input_limits: Tensor) -> int:
        """``max_c |b_c| + sum_i |w_ci| L_i``: bound of every partial sum for inputs ``|x_i| <= L_i``
        (``input_limits`` ``(C_in,)`` int64), as a Python integer."""
        per_out = (self.weight.abs() * input_limits.view(1, -1, 1, 1)).sum((1, 2, 3)) + self.bias.abs()
        return int(per_out.max())


def _rescale(acc: Tensor, from_bits: int, to_bits: int) -> Tensor:
    """``acc`` at scale ``2^from_bits`` -> the nearest integer at ``2^to_bits`` (half rounds up):
    ``floor((acc + 2^(s-1)) / 2^s)`` with ``s = from_bits - to_bits >= 1``."""
    shift = from_bits - to_bits
    return torch.div(acc + 2 ** (shift - 1), 2**shift, rounding_mode="floor")


def _clamp(a: Tensor) -> Tensor:
    return a.clamp(-_ACT_MAX, _ACT_MAX)


def _leak(a: Tensor) -> Tensor:
    """Integer leaky ReLU: ``a`` where ``a >= 0``, else ``floor(a / LEAK_DIVISOR)``."""
    return torch.where(a >= 0, a, torch.div(a, LEAK_DIVISOR, rounding_mode="floor"))


def _up2(a: Tensor) -> Tensor:
    """Nearest-neighbour x2 upsampling (a copy, exact for every dtype)."""
    return a.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


class IntegerHyperSynthesis:
    """``HyperSynthesis`` in integer arithmetic: ``(z_hat, mask, lambda_index) -> (mu_q, scale_idx)``.

    Build it with :meth:`from_float` from a trained ``HyperSynthesis`` and the FiLM tables of
    :func:`film_tables`; see the module docstring for the layout and the exactness argument.

    Example:
        >>> from hvq.nets.hyperprior import HyperSynthesis
        >>> from hvq.nets.blocks import RateEmbedding
        >>> h_s, emb = HyperSynthesis(4, 16, 8, 32, False), RateEmbedding(32)
        >>> ihs = IntegerHyperSynthesis.from_float(h_s, *film_tables(h_s, emb), z_support=24)
        >>> mu_q, scale_idx = ihs(torch.zeros(1, 8, 2, 3), torch.ones(1, 1, 8, 12), lambda_index=100)
        >>> mu_q.shape, scale_idx.shape, mu_q.dtype
        (torch.Size([1, 4, 8, 12]), torch.Size([1, 4, 8, 12]), torch.int64)
    """

    def __init__(
        self,
        convs: dict[str, IntegerConv],
        film_gamma_q: Tensor,
        film_beta_q: Tensor,
        dim: int,
        z_support: int,
    ) -> None:
        """``convs``: the integer layers ``"up1"``, ``"up2"``, ``"mix"``, ``"out"`` (rows ``dim:`` of
        ``out`` are the scale rows, in grid units). Raises ``ValueError`` if ``z_support`` exceeds the
        z clamp or a worst-case sum reaches ``2^53``."""
        if not 0 < z_support <= 2 ** LIMIT_BITS["z"]:
            raise ValueError(f"z_support {z_support} outside 1..{2 ** LIMIT_BITS['z']}")
        self.convs = convs
        self.film_gamma_q, self.film_beta_q = film_gamma_q.cpu().long(), film_beta_q.cpu().long()
        self.dim, self.z_support = dim, z_support
        bounds = self.worst_case_sums()
        too_big = {name: bound for name, bound in bounds.items() if bound >= 2**EXACT_BITS}
        if too_big:
            raise ValueError(f"integer sums could reach 2^53 (not exact in float64): {too_big}")

    @classmethod
    def from_float(
        cls, h_s: HyperSynthesis, film_gamma_q: Tensor, film_beta_q: Tensor, z_support: int
    ) -> IntegerHyperSynthesis:
        """Round a trained ``HyperSynthesis`` (any dtype or device) to integers.

        ``film_gamma_q``, ``film_beta_q``: ``(LAMBDA_STEPS, hidden)`` from :func:`film_tables`
        (or the model's stored buffers); ``z_support``: the largest ``|z_hat|``.
        """
        hidden = h_s.mix.out_channels
        if film_gamma_q.shape != (LAMBDA_STEPS, hidden) or film_beta_q.shape != (LAMBDA_STEPS, hidden):
            raise ValueError(f"FiLM tables must be ({LAMBDA_STEPS}, {hidden}) each")
        out_w = h_s.out.weight.detach().cpu().double().clone()
        out_b = h_s.out.bias.detach().cpu().double().clone()
        # Scale rows: log scale -> grid index (log scale log2(e) - LOG2_SCALE_MIN) LOG2_SCALE_STEPS,
        # one IEEE multiplication by a literal; the offset is added exactly as an integer.
        out_w[h_s.dim :] *= LOG2_E_TIMES_GRID
        out_b[h_s.dim :] *= LOG2_E_TIMES_GRID
        acc_bits = frac_bits("film") + WEIGHT_FRAC_BITS
        out = IntegerConv(
            torch.round(out_w * 2.0**WEIGHT_FRAC_BITS).long(), torch.round(out_b * 2.0**acc_bits).long()
        )
        out.bias[h_s.dim :] += -LOG2_SCALE_MIN * LOG2_SCALE_STEPS * 2**acc_bits
        convs = {
            "up1": IntegerConv.from_float(h_s.up1, frac_bits("z")),
            "up2": IntegerConv.from_float(h_s.up2, frac_bits("up1")),
            "mix": IntegerConv.from_float(h_s.mix, frac_bits("up2")),
            "out": out,
        }
        return cls(convs, film_gamma_q, film_beta_q, h_s.dim, z_support)

    def worst_case_sums(self) -> dict[str, int]:
        """Largest magnitude any partial sum can take in each layer (the products, the bias and the
        rounding half of the rescale), for *any* input within the clamps: ``{"up1", "up2", "mix",
        "film", "out"}`` -> Python int. The constructor checks that each is below ``2^53``."""
        c = self.convs
        hidden = c["up2"].weight.shape[1]
        act = torch.full((hidden,), _ACT_MAX, dtype=torch.int64)
        z = torch.full((c["up1"].weight.shape[1],), self.z_support * 2 ** frac_bits("z"))
        mix_in = torch.cat([act, torch.tensor([2 ** frac_bits("up2")])])
        film = _ACT_MAX * int(self.film_gamma_q.abs().max()) + int(self.film_beta_q.abs().max())
        w = WEIGHT_FRAC_BITS
        return {
            "up1": c["up1"].worst_case(z) + 2 ** (frac_bits("z") + w - frac_bits("up1") - 1),
            "up2": c["up2"].worst_case(act) + 2 ** (frac_bits("up1") + w - frac_bits("up2") - 1),
            "mix": c["mix"].worst_case(mix_in) + 2 ** (frac_bits("up2") + w - frac_bits("mix") - 1),
            "film": film + 2 ** (frac_bits("mix") + FILM_FRAC_BITS - frac_bits("film") - 1),
            "out": c["out"].worst_case(act) + 2 ** (frac_bits("film") + w - 1),
        }

    def __call__(
        self, z_hat: Tensor, mask: Tensor, lambda_index: int, backend: Backend = "float64"
    ) -> tuple[Tensor, Tensor]:
        """Integer entropy parameters of every position.

        Args:
            z_hat: ``(B, Cz, hz, wz)`` integer-valued hyper-latent (any dtype; clamped to ``[-S, S]``).
            mask: ``(B, 1, h, w)`` 0/1 mask of the granularity, ``h <= 4 hz``, ``w <= 4 wz``.
            lambda_index: the file's lambda index in ``0 .. LAMBDA_STEPS - 1``.
            backend: ``"float64"`` (integer-valued float64, BLAS convolutions) or ``"int64"``
                (im2col and an integer matmul); both give the same integers.

        Returns:
            ``mu_q (B, D, h, w)``: means in units of ``2^-MU_FRAC_BITS`` (as ``quantize_mu``);
            ``scale_idx (B, D or 1, h, w)``: indices into ``hvq.tables.INV_SCALE_TABLE`` (as
            ``quantize_log_scale``); both int64.
        """
        if not 0 <= lambda_index < LAMBDA_STEPS:
            raise ValueError(f"lambda index {lambda_index} outside 0..{LAMBDA_STEPS - 1}")
        c, w, f = self.convs, WEIGHT_FRAC_BITS, frac_bits
        dtype = torch.float64 if backend == "float64" else torch.int64
        h, wd = mask.shape[-2:]
        z = torch.round(z_hat.detach().cpu().double()).clamp(-self.z_support, self.z_support)
        a = _up2(z.to(dtype) * 2 ** f("z"))
        a = _leak(_clamp(_rescale(c["up1"].accumulate(a, backend), f("z") + w, f("up1"))))
        a = _up2(a)
        a = _leak(_clamp(_rescale(c["up2"].accumulate(a, backend), f("up1") + w, f("up2"))))
        m = (mask.detach().cpu() > 0).to(dtype) * 2 ** f("up2")
        a = torch.cat([a[..., :h, :wd], m], dim=1)
        a = _clamp(_rescale(c["mix"].accumulate(a, backend), f("up2") + w, f("mix")))
        gamma = self.film_gamma_q[lambda_index].to(dtype).view(1, -1, 1, 1)
        beta = self.film_beta_q[lambda_index].to(dtype).view(1, -1, 1, 1)
        a = _leak(_clamp(_rescale(a * gamma + beta, f("mix") + FILM_FRAC_BITS, f("film"))))
        acc = c["out"].accumulate(a, backend)
        mu_q = _rescale(acc[:, : self.dim], f("film") + w, MU_FRAC_BITS).clamp(-MU_Q_LIMIT, MU_Q_LIMIT)
        scale_idx = _rescale(acc[:, self.dim :], f("film") + w, 0).clamp(0, N_SCALES - 1)
        return mu_q.long(), scale_idx.long()

    @torch.no_grad()
    def at_positions(
        self, z_hat: Tensor, mask: Tensor, lambda_index: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The integers of :meth:`__call__` at some positions only: what the codec needs.

        ``out``, FiLM and ``mix`` run at ``positions``, ``up2`` at their 3x3 neighbourhood, ``up1`` on
        its whole (small) map. A 3x3 convolution after the nearest x2 upsampling reads only 2x2 pixels
        of the small map, so ``up1`` and ``up2`` run as 2x2 convolutions whose integer weights are
        sums of the 3x3 kernel's (:func:`_phase_weights`). Every convolution is a block of gathered
        patches times the integer weights in float64 (numpy's matmul): sums of exact products, the
        same integers as ``__call__`` by the module docstring's argument (the bounds hold because
        ``|w_a + w_b| <= |w_a| + |w_b|``), at a cost proportional to the positions coded.

        Args:
            z_hat: ``(1, Cz, hz, wz)`` integer-valued hyper-latent (clamped to ``[-S, S]``).
            mask: ``(1, 1, h, w)`` 0/1 mask of the granularity, ``h <= 4 hz``, ``w <= 4 wz``.
            lambda_index: the file's lambda index in ``0 .. LAMBDA_STEPS - 1``.
            positions: ``(n,)`` flat positions in ``h w`` (row-major), e.g. the coded ones.

        Returns:
            ``mu_q (n, D)`` and ``scale_idx (n, D or 1)``, int64 numpy, row ``i`` for ``positions[i]``.
        """
        if not 0 <= lambda_index < LAMBDA_STEPS:
            raise ValueError(f"lambda index {lambda_index} outside 0..{LAMBDA_STEPS - 1}")
        if z_hat.shape[0] != 1 or mask.shape[0] != 1:
            raise ValueError("at_positions takes one image (batch size 1)")
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            n_out = self.convs["out"].weight.shape[0]
            return np.zeros((0, self.dim), np.int64), np.zeros((0, n_out - self.dim), np.int64)
        w, f, layers = WEIGHT_FRAC_BITS, frac_bits, self._gathered_layers
        a = _clamp_np(_rescale_np(self._mix_at(z_hat, mask, positions), f("up2") + w, f("mix")))
        a *= self.film_gamma_q[lambda_index].double().numpy()
        a += self.film_beta_q[lambda_index].double().numpy()
        a = _leak_np(_clamp_np(_rescale_np(a, f("mix") + FILM_FRAC_BITS, f("film"))))
        acc = a @ layers["out"][0] + layers["out"][1]
        mu_q = np.clip(_rescale_np(acc[:, : self.dim], f("film") + w, MU_FRAC_BITS), -MU_Q_LIMIT, MU_Q_LIMIT)
        scale_idx = np.clip(_rescale_np(acc[:, self.dim :], f("film") + w, 0), 0, N_SCALES - 1)
        return mu_q.astype(np.int64), scale_idx.astype(np.int64)

    def _mix_at(self, z_hat: Tensor, mask: Tensor, positions: np.ndarray) -> np.ndarray:
        """The exact sums of ``mix`` at ``positions`` ``(n,)`` of the ``(h, w)`` map: ``(n, hidden)``
        float64 at the scale ``2^(f_up2 + F_w)``; ``up1`` and ``up2`` run where these read."""
        w, f, layers = WEIGHT_FRAC_BITS, frac_bits, self._gathered_layers
        h, wd = mask.shape[-2:]
        z = torch.round(z_hat[0].detach().cpu().double()).clamp(-self.z_support, self.z_support)
        z = z.permute(1, 2, 0).numpy() * 2.0 ** f("z")  # (hz, wz, Cz), channels last
        rows, cols = np.divmod(np.arange(4 * z.shape[0] * z.shape[1]), 2 * z.shape[1])
        a = _conv_up2x_at(z, *layers["up1"], rows, cols)
        a = _leak_np(_clamp_np(_rescale_np(a, f("z") + w, f("up1"))))
        near = _neighbourhood(positions, h, wd)  # the pixels that mix reads, sorted
        rows, cols = np.divmod(near, wd)
        a = _conv_up2x_at(a.reshape(2 * z.shape[0], 2 * z.shape[1], -1), *layers["up2"], rows, cols)
        a = _leak_np(_clamp_np(_rescale_np(a, f("up1") + w, f("up2"))))
        mix_in = np.zeros((h + 2, wd + 2, a.shape[1] + 1))  # zero padded, the mask as the last channel
        mix_in[rows + 1, cols + 1, :-1] = a
        coded = mask[0, 0].detach().cpu().numpy().ravel()[near] > 0
        mix_in[rows + 1, cols + 1, -1] = coded * 2.0 ** f("up2")
        rows, cols = np.divmod(positions, wd)
        return _gathered_matmul(mix_in, rows, cols, _PATCH_3X3, *layers["mix"])

    @cached_property
    def _gathered_layers(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Float64 ``(weights, bias)`` of :meth:`at_positions`: ``"up1"``, ``"up2"`` as
        :func:`_phase_weights`, ``"mix"`` as ``(9 C_in, C_out)`` (taps ``_PATCH_3X3``, channels inner),
        ``"out"`` as ``(C_in, C_out)``; the same integers as ``convs``."""
        c = self.convs
        mix = c["mix"].weight.permute(2, 3, 1, 0).reshape(-1, c["mix"].weight.shape[0])
        weights = {
            "up1": _phase_weights(c["up1"].weight),
            "up2": _phase_weights(c["up2"].weight),
            "mix": mix.double().numpy(),
            "out": c["out"].weight[:, :, 0, 0].T.double().numpy(),
        }
        return {name: (weights[name], c[name].bias.double().numpy()) for name in weights}


def _neighbourhood(positions: np.ndarray, h: int, w: int) -> np.ndarray:
    """Flat positions ``(m,)`` (sorted) of every pixel within one step (3x3) of ``positions`` in an
    ``(h, w)`` map."""
    hit = np.zeros((h + 2, w + 2), dtype=bool)
    rows, cols = np.divmod(positions, w)
    for dy in range(3):
        for dx in range(3):
            hit[rows + dy, cols + dx] = True
    return np.flatnonzero(hit[1:-1, 1:-1])


def _phase_weights(weight: Tensor) -> np.ndarray:
    """A 3x3 convolution of a nearest-x2-upsampled map as four 2x2 convolutions of the small map.

    Output pixel ``(2i + py, 2j + px)`` reads the small map's rows ``i - 1 + py, i + py`` and columns
    ``j - 1 + px, j + px``; two of the kernel's three rows (columns) read the same pixel, so their
    integer weights are added. ``weight (C_out, C_in, 3, 3)`` int64 -> ``(2, 2, 4 C_in, C_out)``
    float64: for each phase ``(py, px)``, the weights of the patch ``_PATCH_2X2`` (channels inner).
    """
    kernel_rows = {0: ([0], [1, 2]), 1: ([0, 1], [2])}  # phase -> kernel rows read by patch row 0, 1
    out = torch.zeros(2, 2, 4, weight.shape[1], weight.shape[0], dtype=torch.int64)
    for py in (0, 1):
        for px in (0, 1):
            for t, (ty, tx) in enumerate(_PATCH_2X2):
                picked = weight[:, :, kernel_rows[py][ty]][:, :, :, kernel_rows[px][tx]]
                out[py, px, t] = picked.sum((2, 3)).T
    return out.reshape(2, 2, 4 * weight.shape[1], weight.shape[0]).double().numpy()


def _conv_up2x_at(
    a: np.ndarray, weights: np.ndarray, bias: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """A 3x3 convolution (zero padding) of ``up2x(a)`` at the pixels ``(rows, cols)`` of the upsampled
    map: ``a (h, w, C_in)`` integer-valued float64, ``weights`` from :func:`_phase_weights`, ``bias
    (C_out,)`` -> ``(n, C_out)`` exact sums."""
    padded = np.pad(a, ((1, 1), (1, 1), (0, 0)))
    out = np.empty((len(rows), weights.shape[-1]))
    for py in (0, 1):
        for px in (0, 1):
            sel = np.flatnonzero((rows % 2 == py) & (cols % 2 == px))
            top, left = rows[sel] // 2 + py, cols[sel] // 2 + px  # patch corner in the padded map
            out[sel] = _gathered_matmul(padded, top, left, _PATCH_2X2, weights[py, px], bias)
    return out


def _gathered_matmul(
    padded: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    taps: Sequence[tuple[int, int]],
    weight: np.ndarray,
    bias: np.ndarray,
) -> np.ndarray:
    """``bias + patches @ weight`` for the patches whose top-left pixels are ``(rows, cols)`` of
    ``padded (H, W, C)``: ``taps`` are the patch's ``(dy, dx)`` offsets, ``weight`` its
    ``(len(taps) C, C_out)`` weights (channels inner). Returns ``(n, C_out)`` float64, gathered and
    multiplied in blocks of ``_PATCH_BLOCK_BYTES``."""
    flat = padded.reshape(-1, padded.shape[2])
    offsets = np.array([dy * padded.shape[1] + dx for dy, dx in taps])
    top_left = rows * padded.shape[1] + cols
    out = np.empty((len(rows), weight.shape[1]))
    step = max(1, _PATCH_BLOCK_BYTES // (8 * weight.shape[0]))
    for start in range(0, len(rows), step):
        index = (top_left[start : start + step, None] + offsets).ravel()
        patches = np.take(flat, index, axis=0).reshape(-1, weight.shape[0])
        np.matmul(patches, weight, out=out[start : start + step])
    out += bias
    return out


def _rescale_np(acc: np.ndarray, from_bits: int, to_bits: int) -> np.ndarray:
    """:func:`_rescale` in place on float64 integers: ``floor((acc + 2^(s-1)) 2^-s)``; the sum is an
    integer below ``2^53`` and the scaling a power of two, so each step is exact."""
    shift = from_bits - to_bits
    acc += 2.0 ** (shift - 1)
    acc *= 2.0**-shift
    return np.floor(acc, out=acc)


def _clamp_np(a: np.ndarray) -> np.ndarray:
    return np.clip(a, -_ACT_MAX, _ACT_MAX, out=a)


def _leak_np(a: np.ndarray) -> np.ndarray:
    """:func:`_leak` in place on float64 integers ``|a| <= 2^ACT_BITS`` (it follows a clamp):
    ``a / LEAK_DIVISOR`` is then within ``2^-25`` of the exact quotient, which is an integer or at
    least ``1 / LEAK_DIVISOR`` away from one, so its floor is the exact floor division."""
    quotient = a / LEAK_DIVISOR
    np.floor(quotient, out=quotient)
    return np.maximum(a, quotient, out=a)  # floor(a / 10) is >= a for a < 0 and <= a for a >= 0


@torch.no_grad()
def float_params(
    h_s64: HyperSynthesis, embed64: RateEmbedding | None, z_hat: Tensor, mask: Tensor, lambda_index: int
) -> tuple[Tensor, Tensor]:
    """The float64 path that the integer network replaces, snapped to the same grids: ``h_s`` and the
    rate embedding in float64 on the CPU, then ``round(mu 2^MU_FRAC_BITS)`` and the nearest
    log2-scale grid index (what ``hvq.tables.quantize_mu`` / ``quantize_log_scale`` compute).

    ``h_s64``, ``embed64``: float64 CPU copies (``copy.deepcopy(h_s).double()``). Its last bits
    depend on the machine; it is the reference in the tests, the benchmark and notebook 02. Shapes
    as :class:`IntegerHyperSynthesis` (``mu_q (B, D, h, w)``, ``scale_idx (B, D or 1, h, w)``, int64).
    """
    if h_s64.up1.weight.dtype != torch.float64 or h_s64.up1.weight.device.type != "cpu":
        raise ValueError("float_params needs a float64 CPU copy of the hyper-synthesis")
    t = torch.tensor([lambda_grid_t(lambda_index)], dtype=torch.float64)
    cond = embed64(t) if embed64 is not None else None
    mu, scale = h_s64(z_hat.detach().cpu().double(), mask.detach().cpu().double(), cond)
    mu_q = torch.round(mu.clamp(-(2.0**14), 2.0**14) * 2**MU_FRAC_BITS).long()
    log2_scale = torch.log2(scale.clamp(2.0**LOG2_SCALE_MIN, 2.0**LOG2_SCALE_MAX))
    scale_idx = torch.round((log2_scale - LOG2_SCALE_MIN) * LOG2_SCALE_STEPS).clamp(0, N_SCALES - 1)
    return mu_q, scale_idx.long()
