"""Image quality and rate metrics on ``(3, H, W)`` or ``(B, 3, H, W)`` tensors in [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bits_per_pixel(num_bytes: int, height: int, width: int) -> float:
    """Real file size in bits divided by the number of pixels."""
    return 8.0 * num_bytes / (height * width)


def _batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def psnr(x: Tensor, y: Tensor) -> float:
    """PSNR in dB of 8-bit-rounded images (as files would store them)."""
    xq = torch.round(_batch(x).clamp(0, 1) * 255)
    yq = torch.round(_batch(y).clamp(0, 1) * 255)
    mse = (xq - yq).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim(x: Tensor, y: Tensor) -> float:
    """MS-SSIM (pytorch-msssim, data range 1). Images need a short side >= 161 pixels."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    return float(_ms_ssim(_batch(x).float(), _batch(y).float(), data_range=1.0, size_average=True))


def colour_bias(x: Tensor, y: Tensor) -> float:
    """Global colour error in 8-bit levels: the largest per-channel difference of the image means,
    ``max_c |mean(x_c) - mean(y_c)| * 255`` for ``(3, H, W)`` (or batched) images in [0, 1]."""
    diff = _batch(x).double().mean((0, 2, 3)) - _batch(y).double().mean((0, 2, 3))
    return float(diff.abs().max()) * 255.0
