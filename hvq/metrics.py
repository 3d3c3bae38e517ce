"""Image quality and rate metrics on ``(3, H, W)`` or ``(B, 3, H, W)`` tensors in [0, 1]: the one
place that evaluation, figures, notebooks and the demo page measure with (:func:`image_quality`)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from hvq.perceptual import LPIPS

#: MS-SSIM's five scales need a short side above this (pytorch-msssim); smaller images get NaN.
MS_SSIM_MIN_SIDE = 160


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


@functools.lru_cache(maxsize=2)
def shared_lpips(device: str = "cpu") -> LPIPS:
    """One frozen LPIPS network per device, loaded on first use (loading takes seconds)."""
    return LPIPS().to(device)


def lpips_distance(x: Tensor, y: Tensor, lpips: LPIPS | None = None) -> float:
    """LPIPS-alex of two ``(3, H, W)`` images in [0, 1] (lower is better), on ``lpips``'s device."""
    lpips = lpips or shared_lpips()
    dev = next(lpips.parameters()).device
    with torch.no_grad():
        return float(lpips(_batch(x).to(dev), _batch(y).to(dev))[0])


def image_quality(x: Tensor, y: Tensor, lpips: LPIPS | None = None) -> dict[str, float]:
    """PSNR (dB), MS-SSIM (NaN below ``MS_SSIM_MIN_SIDE``), LPIPS and colour bias (levels) of a decoded
    ``(3, H, W)`` image ``y`` against ``x``."""
    small = min(x.shape[-2:]) <= MS_SSIM_MIN_SIDE
    return {
        "psnr": psnr(x, y),
        "ms_ssim": math.nan if small else ms_ssim(x, y),
        "lpips": lpips_distance(x, y, lpips),
        "colour_bias": colour_bias(x, y),
    }


def colour_bias(x: Tensor, y: Tensor) -> float:
    """Global colour error in 8-bit levels: the largest per-channel difference of the image means,
    ``max_c |mean(x_c) - mean(y_c)| * 255`` for ``(3, H, W)`` (or batched) images in [0, 1]."""
    diff = _batch(x).double().mean((0, 2, 3)) - _batch(y).double().mean((0, 2, 3))
    return float(diff.abs().max()) * 255.0
