"""The one metrics path (``hvq.metrics.image_quality``) that evaluation, figures and notebooks share."""

from __future__ import annotations

import math

import pytest
import torch

from hvq.metrics import image_quality, lpips_distance, shared_lpips


def test_image_quality_of_a_shifted_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 48, generator=g) * 0.8 + 0.1
    y = x.clone()
    y[1] += 8 / 255  # green up 8 levels everywhere
    q = image_quality(x, y)
    assert q["colour_bias"] == pytest.approx(8.0, abs=0.51)  # rounding of the float shift aside
    assert q["psnr"] == pytest.approx(10 * math.log10(255**2 * 3 / 8**2), abs=0.3)
    assert math.isnan(q["ms_ssim"])  # 32 px: below MS-SSIM's smallest side
    assert q["lpips"] > 0
    same = image_quality(x, x)
    assert same["psnr"] == math.inf and same["colour_bias"] == 0.0 and same["lpips"] < 1e-6


def test_lpips_distance_uses_the_shared_network_and_orders_damage() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 64, 64, generator=g)
    noise = torch.randn(3, 64, 64, generator=g)
    slightly, badly = (x + 0.02 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)
    assert shared_lpips() is shared_lpips()
    assert 0 < lpips_distance(x, slightly) < lpips_distance(x, badly)
