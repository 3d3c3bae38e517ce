"""Small building blocks: rate conditioning (FiLM), residual blocks, up/down sampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (batch-size independent, as in VQGAN)."""
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class RateEmbedding(nn.Module):
    """Embeds the rate knob ``t`` in [0, 1] (normalised log lambda) into a conditioning vector.

    ``t: (B,) -> (B, dim)`` through Fourier features and a two-layer MLP.
    """

    def __init__(self, dim: int = 64, n_freqs: int = 4) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs + 1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        t = t.to(self.freqs.dtype).view(-1, 1)
        ang = t * self.freqs
        return self.mlp(torch.cat([t, ang.sin(), ang.cos()], dim=1))


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + gamma(c)) + beta(c)``; identity at initialisation."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            return x
        gamma, beta = self.proj(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class ResBlock(nn.Module):
    """``x + conv(act(film(norm(conv(act(film(norm(x)))))))`` with a 1x1 skip when channels change."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm1, self.norm2 = group_norm(c_in), group_norm(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film1 = FiLM(cond_dim, c_in) if cond_dim else None
        self.film2 = FiLM(cond_dim, c_out) if cond_dim else None
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(modulated_norm(self.norm1, self.film1, x, cond), inplace=True))
        h = self.conv2(F.silu(modulated_norm(self.norm2, self.film2, h, cond), inplace=True))
        return self.skip(x) + h


def modulated_norm(norm: nn.GroupNorm, film: FiLM | None, x: Tensor, cond: Tensor | None) -> Tensor:
    """``film(norm(x), cond)``; for one conditioning vector (a single image, as in coding) the FiLM
    affine is folded into the norm's own (``weight (1 + gamma)``, ``bias (1 + gamma) + beta``), which
    saves two passes over ``x`` (equal up to float rounding: ``tests/test_model.py``)."""
    if film is None or cond is None:
        return norm(x)
    if cond.shape[0] != 1:
        return film(norm(x), cond)
    gamma, beta = film.proj(cond)[0].chunk(2)
    weight, bias = norm.weight * (1 + gamma), norm.bias * (1 + gamma) + beta
    return F.group_norm(x, norm.num_groups, weight.to(x.dtype), bias.to(x.dtype), norm.eps)


class Downsample(nn.Module):
    """Strided 3x3 convolution, halves H and W (ceil for odd sizes)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 convolution (no checkerboard artefacts), computed at the low resolution.

    Nearest upsampling repeats each input pixel in a 2x2 block, so each of the four output phases
    ``(a, b)`` (row and column parity) sees only a 2x2 window of the input, with the 3x3 kernel's rows
    and columns summed in pairs: rows ``(w0, w1 + w2)`` for even output rows, ``(w0 + w1, w2)`` for odd
    ones, and the same for columns. One 2x2 convolution with the four phase kernels stacked as output
    channels, over the input padded by one, gives every phase; phase ``(a, b)`` is its block of channels
    shifted by ``(a, b)``. The same sums as ``conv(interpolate(x))`` in 4/9 of the multiply-adds, without
    the 4x larger upsampled tensor (equal up to float rounding: ``tests/test_model.py``).
    Parameter names are those of the plain form (``conv.weight``, ``conv.bias``).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``, in the memory format of ``x``."""
        b, _, h, w = x.shape
        c = self.conv.out_channels
        phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.phase_kernels(), self.conv.bias.repeat(4))
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = phases.new_empty(b, h, 2, w, 2, c).permute(0, 5, 1, 2, 3, 4)  # channels last in memory
        else:
            out = phases.new_empty(b, c, h, 2, w, 2)
        for a in range(2):  # out[..., i, a, j, col] = phase (a, col) at (i, j)
            for col in range(2):
                k = 2 * a + col
                out[:, :, :, a, :, col] = phases[:, k * c : (k + 1) * c, a : a + h, col : col + w]
        return out.view(b, c, 2 * h, 2 * w)

    def phase_kernels(self) -> Tensor:
        """The four 2x2 kernels ``(4 C_out, C_in, 2, 2)``, phase ``(a, b)`` at block ``2a + b``."""
        rows = _pair_sums(self.conv.weight, 2)  # even and odd output rows
        return torch.cat([kernel for r in rows for kernel in _pair_sums(r, 3)], 0)


def _pair_sums(kernel: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """A 3-tap axis ``(w0, w1, w2)`` of ``kernel`` summed in pairs for the even and the odd output
    phase of nearest x2 upsampling: ``(w0, w1 + w2)`` and ``(w0 + w1, w2)``, 2 taps each."""
    w0, w1, w2 = kernel.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def run_blocks(blocks: nn.ModuleList, x: Tensor, cond: Tensor | None) -> Tensor:
    for block in blocks:
        x = block(x, cond)
    return x
