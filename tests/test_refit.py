"""Refitting the hyperpriors on the rate alone (hvq.refit): only they move, their bits equal the
training pass's, and the rate of the refitted codec falls while its indices and decoder stay."""

from __future__ import annotations

import pytest
import torch

from hvq.config import load_config
from hvq.model import HVQCodec
from hvq.refit import hyperprior_parameters, rate_bits, refit_hyperpriors, widen_side_latent


def _model(seed: int = 0) -> HVQCodec:
    torch.manual_seed(seed)
    model = HVQCodec(load_config("smoke").model)
    model.eval()
    with torch.no_grad():  # the codebook from data, as a first training step would set it
        model.train()
        model(_images(1), 1.0, 0.3, 0.3)
        model.eval()
    model.update()
    return model


def _images(seed: int, b: int = 2, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    ramp = torch.stack([xx, yy, (xx + yy) / 2])[None]
    return (0.7 * ramp + 0.3 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)


def _knobs(b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.full((b,), 1.0), torch.full((b,), 0.3), torch.full((b,), 0.4)


def test_only_the_hyperpriors_and_their_rate_embedding_train():
    model = _model()
    trained = {id(p) for p in hyperprior_parameters(model)}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(("hyperpriors.", "embed_hyper.")) for n in names)
    assert len(trained) == len(names)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not model.quantizer.codebook.requires_grad


def test_rate_bits_equal_the_training_pass_in_eval_mode():
    model = _model()
    x = _images(1)
    lam, rc, rm = _knobs(2)
    with torch.no_grad():
        index_bits, z_bits = rate_bits(model, x, lam, rc, rm)
        out = model(x, lam, rc, rm)
    pixels = x.shape[2] * x.shape[3]
    for got, want in ((index_bits, out["bpp_index"]), (z_bits, out["bpp_z"])):
        torch.testing.assert_close(float(got), float(want.sum()) * pixels, rtol=1e-4, atol=1e-3)


def test_refit_lowers_the_rate_and_leaves_the_rest():
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = _images(2, b=4)
    knobs = _knobs(4)
    with torch.no_grad():
        start = sum(rate_bits(model, x, *knobs))
        indices = model(x, *knobs)["indices"]
    steps = refit_hyperpriors(model, [x] * 40, _knobs, seconds=1e9, lr=3e-3, lr_min=3e-3)
    assert steps == 40
    with torch.no_grad():
        end = sum(rate_bits(model, x, *knobs))
        after = model(x, *knobs)["indices"]
    assert float(end) < 0.9 * float(start)
    assert all(torch.equal(a, b) for a, b in zip(indices, after, strict=True))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(("hyperpriors.", "embed_hyper.")) for n in moved)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for later training
    assert not model.training


def test_refit_stops_when_its_time_is_spent():
    model = _model()
    ticks = iter(range(1000))
    steps = refit_hyperpriors(model, [_images(3)] * 50, _knobs, seconds=3.0, clock=lambda: float(next(ticks)))
    assert steps == 3  # clock 1, 2 -> fractions 1/3, 2/3; then 3 -> 1, the last step


def test_widened_side_latent_keeps_the_indices_bits_and_image_and_codes():
    model = _model()
    wide = widen_side_latent(model, 2 * model.cfg.z_channels)
    assert wide.cfg.z_channels == 2 * model.cfg.z_channels
    x = _images(4, b=1)
    with torch.no_grad():
        a, b = model(x, 1.0, 0.3, 0.4), wide(x, 1.0, 0.3, 0.4)
    torch.testing.assert_close(b["bpp_index"], a["bpp_index"])
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert float(b["bpp_z"]) < 2 * float(a["bpp_z"]) + 0.05  # the new channels start cheap
    data = wide.compress(x[0], lam=1.0, coarse_ratio=0.3, medium_ratio=0.4)
    torch.testing.assert_close(wide.decompress(data), wide.reconstruct(x[0], 1.0, 0.3, 0.4), atol=0, rtol=0)


def test_a_refit_of_a_widened_model_uses_the_new_channels():
    wide = widen_side_latent(_model(), 8)
    old = _model().cfg.z_channels
    refit_hyperpriors(wide, [_images(5, b=4)] * 10, _knobs, seconds=1e9, lr=3e-3, lr_min=3e-3)
    assert all(float(hp.h_s.up1.weight[:, old:].detach().abs().sum()) > 0 for hp in wide.hyperpriors)


def test_widening_to_fewer_channels_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="must exceed"):
        widen_side_latent(model, model.cfg.z_channels)
