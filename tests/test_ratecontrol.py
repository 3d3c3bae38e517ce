"""Rate control: hit a requested bit rate on the real file; clear errors outside the reachable range."""

from __future__ import annotations

import pytest
import torch

from hvq.config import load_config
from hvq.container import Container
from hvq.model import HVQCodec
from hvq.ratecontrol import RateTargetError, compress_to_bpp, ratios_for, reachable_bpp


@pytest.fixture(scope="module")
def model() -> HVQCodec:
    torch.manual_seed(0)
    m = HVQCodec(load_config("smoke").model).eval()
    m.update()
    return m


def photo_like(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    texture = torch.rand(3, h // 4, w // 4, generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    return (0.6 * torch.stack([xx, yy, xx * yy]) + 0.4 * texture * (xx > 0.4)).clamp(0, 1)


def test_ratio_path_is_monotone_in_symbols():
    assert ratios_for(0.0) == (1.0, 1.0) and ratios_for(1.0) == (0.0, 0.0)
    assert ratios_for(-1) == ratios_for(0) and ratios_for(2) == ratios_for(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_hits_targets_within_two_percent(model, seed):
    x = photo_like(96, 128, seed)
    low, high = reachable_bpp(model, x)
    assert low < high
    for frac in (0.2, 0.5, 0.8):
        target = low + frac * (high - low)
        res = compress_to_bpp(model, x, target)
        real_bpp = 8 * len(res.data) / (96 * 128)
        assert real_bpp == pytest.approx(res.bpp)
        assert abs(real_bpp - target) <= 0.02 * target, (target, real_bpp, res)


def test_decoder_needs_only_the_container(model):
    x = photo_like(64, 80, 3)
    low, high = reachable_bpp(model, x)
    res = compress_to_bpp(model, x, 0.5 * (low + high))
    knobs = Container.from_bytes(res.data).knobs
    assert knobs[1] == pytest.approx(res.coarse_ratio, abs=1e-6)
    assert knobs[2] == pytest.approx(res.medium_ratio, abs=1e-6)
    x_hat = model.decompress(res.data)
    assert torch.equal(x_hat, model.reconstruct(x, res.lam, res.coarse_ratio, res.medium_ratio))


def test_unreachable_target_names_the_range(model):
    x = photo_like(64, 64, 4)
    low, high = reachable_bpp(model, x)
    with pytest.raises(RateTargetError, match="reachable range") as info:
        model.compress(x, target_bpp=10 * high)
    lo_r, hi_r = info.value.reachable
    assert lo_r == pytest.approx(low, rel=1e-3) and hi_r == pytest.approx(high, rel=1e-3)
    with pytest.raises(RateTargetError):
        model.compress(x, target_bpp=low / 10)


def test_several_lambdas_pick_the_best_quality(model):
    x = photo_like(64, 64, 5)
    low, high = reachable_bpp(model, x, lam=1.0)
    res = compress_to_bpp(model, x, 0.5 * (low + high), lams=[0.5, 1.0, 4.0])
    assert len(res.candidates) >= 1
    assert res.lam in (0.5, 1.0, 4.0)
    assert min(c["quality"] for c in res.candidates) == pytest.approx(
        next(c["quality"] for c in res.candidates if c["lam"] == res.lam)
    )


def test_roi_with_target_keeps_the_region_fine(model):
    x = photo_like(64, 64, 6)
    roi = torch.zeros(64, 64)
    roi[0:16, 0:16] = 1
    low, high = reachable_bpp(model, x)
    res = compress_to_bpp(model, x, low + 0.3 * (high - low), roi=roi)
    sym = model.analyze(x, res.lam, res.coarse_ratio, res.medium_ratio, roi)
    assert sym.masks[0][0, 0, :4, :4].all()
    assert torch.equal(model.decompress(res.data), model.synthesize(sym))
