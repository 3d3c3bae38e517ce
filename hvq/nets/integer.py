r"""Integer hyper-synthesis: entropy parameters that are exact by construction (torch only).

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

Shapes: ``IntegerHyperSynthesis(z_hat (B, Cz, hz, wz), mask (B, 1, h, w), lambda_index) ->
mu_q (B, D, h, w), scale_idx (B, D or 1, h, w)``, both int64.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

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
