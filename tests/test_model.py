"""The codec: shapes, gradients, overfitting, real coding equals the network, router, checkpoints."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_tables_vary, distinct_tables, vary_hyper_tables

from hvq.checkpoint import CHECKPOINT_VERSION, load_checkpoint, model_from_checkpoint, save_checkpoint
from hvq.config import Config, load_config
from hvq.errors import BitstreamError, CheckpointError
from hvq.model import HVQCodec
from hvq.nets.blocks import ResBlock, Upsample, modulated_norm
from hvq.nets.router import check_partition, route


@pytest.fixture(scope="module")
def smoke_cfg() -> Config:
    return load_config("smoke")


@pytest.fixture(scope="module")
def model(smoke_cfg) -> HVQCodec:
    torch.manual_seed(0)
    m = HVQCodec(smoke_cfg.model).eval()
    m.update()
    return m


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A natural-ish test image: smooth gradients plus a textured patch, (3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 0.5 * (xx + yy)])
    noise = torch.rand(3, h, w, generator=g) * (xx > 0.6).float()
    return (0.7 * base + 0.3 * noise).clamp(0, 1)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (16, 16), (40, 56), (61, 90)])
def test_any_size_round_trip_equals_network(model, size):
    x = smooth_image(*size)
    data = model.compress(x, lam=2.0, coarse_ratio=0.4, medium_ratio=0.5)
    x_hat = model.decompress(data)
    assert x_hat.shape == x.shape
    assert torch.equal(x_hat, model.reconstruct(x, 2.0, 0.4, 0.5))


@pytest.fixture(scope="module")
def varied_model(smoke_cfg) -> HVQCodec:
    """The smoke model with seeded random ``h_s.out`` weights: index tables that vary by position."""
    torch.manual_seed(0)
    return vary_hyper_tables(HVQCodec(smoke_cfg.model).eval())


@pytest.mark.parametrize("size", [(7, 13), (40, 56), (61, 90)])
def test_round_trip_with_varied_tables(model, varied_model, size):
    """The round trip above, with a different table at (almost) every position: the decoder must
    rebuild each position's table and use them in the encoder's order."""
    x = smooth_image(*size)
    sym = varied_model.analyze(x, 2.0, 0.4, 0.5)
    assert_tables_vary(sym.freqs)
    assert all(distinct_tables(f) == 1 for f in model.analyze(x, 2.0, 0.4, 0.5).freqs if len(f))
    data = varied_model.compress(x, lam=2.0, coarse_ratio=0.4, medium_ratio=0.5)
    assert data == varied_model.encode(sym)
    x_hat = varied_model.decompress(data)
    assert x_hat.shape == x.shape
    assert torch.equal(x_hat, varied_model.reconstruct(x, 2.0, 0.4, 0.5))
    assert not torch.equal(x_hat, model.reconstruct(x, 2.0, 0.4, 0.5))  # not the unvaried model


def test_forward_shapes_and_rate_terms(model):
    x = torch.rand(2, 3, 64, 48)
    out = model(x, lam=torch.tensor([0.5, 4.0]), coarse_ratio=0.3, medium_ratio=0.5)
    assert out["x_hat"].shape == x.shape
    for key in ("bpp", "bpp_index", "bpp_z", "bpp_mask"):
        assert out[key].shape == (2,) and (out[key] >= 0).all()
    assert torch.allclose(out["bpp"], out["bpp_index"] + out["bpp_z"] + out["bpp_mask"])
    for g, stride in enumerate((4, 8, 16)):
        assert out["indices"][g].shape == (2, 64 // stride, 48 // stride)


def test_rate_gradients_reach_hyperprior_and_encoder(smoke_cfg):
    torch.manual_seed(1)
    m = HVQCodec(smoke_cfg.model).train()
    out = m(torch.rand(2, 3, 64, 64), lam=1.0, coarse_ratio=0.2, medium_ratio=0.3)
    out["bpp"].mean().backward()
    hp = m.hyperpriors[0]
    for name, p in [
        ("encoder", m.encoder.stem.weight),
        ("h_a", hp.h_a.net[0].weight),
        ("h_s", hp.h_s.out.weight),
        ("prior", hp.prior.matrices[0]),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no rate gradient reaches {name}"
    assert m.decoder.conv_out.weight.grad is None  # the rate does not depend on the decoder
    assert m.quantizer.codebook.grad is None  # rate_grad_to_codebook is off by default


def test_rate_gradient_reaches_codebook_when_enabled(smoke_cfg):
    import dataclasses

    m = HVQCodec(dataclasses.replace(smoke_cfg.model, rate_grad_to_codebook=True)).train()
    m(torch.rand(1, 3, 32, 32), lam=1.0, coarse_ratio=0.2, medium_ratio=0.3)["bpp"].sum().backward()
    assert m.quantizer.codebook.grad is not None and m.quantizer.codebook.grad.abs().sum() > 0


def test_tiny_model_overfits_a_fixed_batch(smoke_cfg):
    torch.manual_seed(0)
    m = HVQCodec(smoke_cfg.model).train()
    x = torch.stack([smooth_image(32, 32, s) for s in range(2)])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def loss_fn():
        out = m(x, lam=8.0, coarse_ratio=0.0, medium_ratio=0.0)
        mse = (out["x_hat"] - x).pow(2).mean()
        return out["bpp"].mean() + 8.0 * 50 * mse + out["codebook_loss"] + 0.25 * out["commit_loss"], mse

    first, first_mse = loss_fn()
    for _ in range(80):
        loss, _ = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, last_mse = loss_fn()
    assert last.item() < first.item() / 3, (first.item(), last.item())
    assert last_mse.item() < first_mse.item() / 3


def test_file_size_matches_estimated_rate(model):
    x = smooth_image(96, 128)
    lam, rc, rm = 2.0, 0.3, 0.4
    data = model.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm)
    out = model(x.unsqueeze(0), lam=lam, coarse_ratio=rc, medium_ratio=rm)
    est_bits = out["bpp"].item() * x.shape[1] * x.shape[2]
    real_bits = 8 * len(data)
    overhead = 8 * (30 + 7 * 4) + 7 * 64  # header, stream lengths, one flush per stream
    assert abs(real_bits - est_bits) < 0.05 * est_bits + overhead, (real_bits, est_bits)


def test_larger_ratios_spend_fewer_bits(model):
    x = smooth_image(64, 64)
    sizes = [len(model.compress(x, lam=2.0, coarse_ratio=r, medium_ratio=r)) for r in (0.0, 0.5, 1.0)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_lambda_outside_trained_range_is_refused(model):
    with pytest.raises(ValueError, match="trained range"):
        model.compress(smooth_image(16, 16), lam=1e4)


def test_router_partition_ratios_and_roi():
    x = torch.rand(2, 3, 64, 96)
    x[:, :, :32] = 0.5  # a flat top half
    coarse, medium, fine = route(x, torch.tensor([0.5, 0.25]), 0.5)
    assert check_partition(coarse, medium, fine)
    n16 = coarse[0].numel()
    assert coarse[0].sum() == round(0.5 * n16) and coarse[1].sum() == round(0.25 * n16)
    assert coarse[0, 0, :2].all()  # the flattest cells become coarse
    roi = torch.zeros(2, 1, 64, 96)
    roi[:, :, :16, :16] = 1
    coarse, medium, fine = route(x, 1.0, 1.0, roi)
    assert check_partition(coarse, medium, fine)
    assert fine[:, :, :4, :4].all() and coarse[:, :, 0, 0].sum() == 0
    with pytest.raises(ValueError):
        route(torch.rand(1, 3, 20, 32), 0.5, 0.5)


def test_roi_is_coded_fine_in_the_decoded_stream(model):
    x = smooth_image(64, 64)
    roi = torch.zeros(64, 64)
    roi[8:24, 40:56] = 1
    data = model.compress(x, lam=2.0, coarse_ratio=1.0, medium_ratio=1.0, roi=roi)
    sym = model.analyze(x, 2.0, 1.0, 1.0, roi)
    fine = sym.masks[0][0, 0]
    assert fine[2:6, 10:14].all() and fine.sum() == fine[2:6, 10:14].sum()
    assert torch.equal(model.decompress(data), model.reconstruct(x, 2.0, 1.0, 1.0, roi))


def test_decoding_with_another_model_is_refused(model, smoke_cfg):
    data = model.compress(smooth_image(32, 32), lam=1.0)
    torch.manual_seed(5)
    other = HVQCodec(smoke_cfg.model).eval()
    other.update()
    with pytest.raises(BitstreamError, match="another model"):
        other.decompress(data)


def test_compress_requires_update(smoke_cfg):
    m = HVQCodec(smoke_cfg.model).eval()
    with pytest.raises(RuntimeError, match="update"):
        m.compress(smooth_image(16, 16))


def test_checkpoint_round_trip_and_bad_files(tmp_path, model, smoke_cfg):
    path = tmp_path / "m.pt"
    save_checkpoint(path, smoke_cfg, model, step=3)
    loaded, cfg, state = model_from_checkpoint(path)
    assert state["step"] == 3 and cfg.model == smoke_cfg.model
    x = smooth_image(32, 40)
    assert loaded.decompress(model.compress(x, lam=1.0)).shape == x.shape  # same tag, same tables

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"kind": "hvq-checkpoint", "version": CHECKPOINT_VERSION + 1}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(tmp_path / "v.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an hvq checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    other = Config.from_dict({"model": {**smoke_cfg.to_dict()["model"], "codebook_size": 32}})
    with pytest.raises(CheckpointError, match="another model config"):
        load_checkpoint(path, expect_config=other)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        model_from_checkpoint(truncated)


def test_quantizer_restarts_dead_codes(smoke_cfg):
    m = HVQCodec(smoke_cfg.model)
    q = m.quantizer
    q.usage.zero_()
    q.usage[:10] = 1
    before = q.codebook.detach().clone()
    feats = torch.randn(100, smoke_cfg.model.embed_dim) + 10.0
    n = q.restart_dead_codes_(feats)
    assert n == q.num_codes - 10
    assert torch.equal(q.codebook[:10], before[:10])
    assert (q.codebook[10:] > 5).all()  # moved onto the data
    assert q.usage.sum() == 0


def test_quantizer_nearest_matches_brute_force():
    from hvq.nets.quantizer import VectorQuantizer

    q = VectorQuantizer(300, 4, chunk=64)
    y = torch.randn(2, 4, 5, 7)
    flat = y.permute(0, 2, 3, 1).reshape(-1, 4)
    ref = ((flat[:, None] - q.codebook[None]) ** 2).sum(-1).argmin(1).view(2, 5, 7)
    assert torch.equal(q.nearest(y), ref)
    assert math.isclose(q.perplexity(torch.zeros(10, dtype=torch.long)), 1.0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_equals_nearest_upsampling_then_convolution(channels_last):
    """The low-resolution form of ``Upsample`` gives the plain form's values and weight gradients."""
    torch.manual_seed(0)
    up = Upsample(6, 5)
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        up, x = up.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fast = up(x)
    plain = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert fast.shape == plain.shape == (2, 5, 10, 14)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), up.conv.weight)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), up.conv.weight)
    torch.testing.assert_close(grad_fast, grad_plain, atol=1e-4, rtol=1e-4)


def test_folded_film_norm_equals_norm_then_film():
    """One image's FiLM folded into the GroupNorm affine gives ``film(norm(x))``, as a batch does."""
    torch.manual_seed(0)
    block = ResBlock(8, 8, cond_dim=5)
    for film, norm in ((block.film1, block.norm1), (block.film2, block.norm2)):
        for param in (film.proj.weight, film.proj.bias, norm.weight, norm.bias):
            torch.nn.init.normal_(param, std=0.3)
    x, cond = torch.randn(3, 8, 6, 7), torch.randn(3, 5)
    batched = block(x, cond)  # three conditioning vectors: the unfolded path
    singles = torch.cat([block(x[i : i + 1], cond[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(singles, batched, atol=1e-5, rtol=1e-5)
    unfolded = block.film1(block.norm1(x[:1]), cond[:1])
    torch.testing.assert_close(modulated_norm(block.norm1, block.film1, x[:1], cond[:1]), unfolded)


def test_configs_construct(smoke_cfg):
    for name in ("reduced", "paper", "smoke"):
        cfg = load_config(name)
        assert cfg.name == name
    with pytest.raises(ValueError, match="unknown"):
        Config.from_dict({"model": {"no_such_setting": 1}})


def test_paper_config_forward_on_cpu_at_64px():
    cfg = load_config("paper")
    torch.manual_seed(0)
    m = HVQCodec(cfg.model).eval()
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64), lam=1.0, coarse_ratio=0.5, medium_ratio=0.5)
    assert out["x_hat"].shape == (1, 3, 64, 64) and np.isfinite(out["bpp"].item())


def test_colour_offset_removes_the_global_colour_error(model):
    """The file carries a per-channel offset that makes the decoded means match the original's
    (to a quarter level plus 8-bit rounding), whatever colour cast the network has."""
    from hvq.metrics import colour_bias

    x = smooth_image(48, 64) * 0.6 + 0.2
    sym = model.analyze(x, 2.0, 0.4, 0.5)
    raw = model._decode(sym)
    assert colour_bias(x, raw.clamp(0, 1)) > 2.0  # an untrained network has a large cast
    decoded = model.decompress(model.encode(sym))
    assert colour_bias(x, decoded) <= 0.25
    assert any(sym.colour_offset)
    no_fit = model.analyze(x, 2.0, 0.4, 0.5, fit_colour=False)
    assert no_fit.colour_offset == (0, 0, 0)
    assert len(model.encode(no_fit)) == len(model.encode(sym))  # the offset never changes the size


def test_colour_offset_fit_absorbs_clipping():
    decoded = torch.full((3, 8, 8), 0.9)
    decoded[:, :4] = 1.2  # half of the image will clip at 1
    original = torch.full((3, 8, 8), 0.8)
    offset = HVQCodec.fit_colour_offset(decoded, original)
    shifted = (decoded + torch.tensor(offset).view(3, 1, 1) / (255 * 4)).clamp(0, 1)
    assert abs(float(shifted.mean() - original.mean())) * 255 < 0.25
    assert offset[0] < -(0.1 * 255 * 4)  # more than the naive mean shift would give


def test_invalid_colour_offset_is_refused(model):
    from hvq.container import Container

    c = Container.from_bytes(model.compress(smooth_image(32, 32), lam=1.0))
    for bad in (0.5, 1e6, -2000.0, float("nan")):
        c.knobs = (*c.knobs[:3], bad, 0.0, 0.0)
        with pytest.raises(BitstreamError, match="colour offset"):
            model.decompress(c.to_bytes())


def test_side_latent_of_blocks_without_coded_positions_is_zero_and_not_coded(varied_model):
    """z lives on 4x4 blocks of each granularity; a block with no coded position carries z = 0, costs
    no bits (training and estimation) and is absent from the file, and the decoder restores the 0s."""
    from hvq.bitstream import decode, occupied_z
    from hvq.entropy import hyper_parameters, occupied_blocks

    x = smooth_image(128, 192)
    sym = varied_model.analyze(x, 2.0, 0.5, 0.5)
    empty_somewhere = False
    for g in range(3):
        occupied = torch.from_numpy(occupied_z(sym.masks[g])).view(sym.z_hat[g].shape[-2:])
        assert (sym.z_hat[g][0][:, ~occupied] == 0).all()
        empty_somewhere |= bool((~occupied).any()) and bool(occupied.any())
    assert empty_somewhere  # the case under test occurs
    decoded = decode(varied_model, varied_model.encode(sym))
    assert all(torch.equal(a, b) for a, b in zip(decoded.z_hat, sym.z_hat, strict=True))
    # Training pass: noisy z is zeroed and unpriced outside the occupied blocks.
    mask = sym.masks[0]
    y = torch.randn(1, varied_model.cfg.embed_dim, *mask.shape[-2:])
    hp = copy.deepcopy(varied_model.hyperprior(0)).train()  # training: additive noise
    occupied = occupied_blocks(mask)
    assert 0 < occupied.mean() < 1
    full = hyper_parameters(hp, y, torch.ones_like(mask), None)
    part = hyper_parameters(hp, y, mask, None)
    assert (part.z_hat * (1 - occupied) == 0).all() and (part.z_hat * occupied != 0).any()
    coded = hyper_parameters(hp, y, mask, None, varied_model.cfg.z_support)
    z_lik = hp.prior.likelihood(coded.z_hat)
    assert torch.allclose(coded.z_bits, (-torch.log2(z_lik) * occupied).flatten(1).sum(1))
    assert part.z_bits.item() < full.z_bits.item()


def test_cell_entropies_match_a_direct_histogram_per_cell():
    """The router's scores (one bincount of 8x8 cells, 16x16 cells summed from them) equal the entropy
    of each cell's luma histogram counted directly."""
    from hvq.nets.router import BINS, LUMA, cell_entropies

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 48, 64, generator=g)
    x[0, :, :16] = 0.5  # a flat band: zero entropy there
    e16, e8 = cell_entropies(x)
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1).clamp(0, 1)
    q = (luma * BINS).long().clamp_max(BINS - 1).numpy()
    for scores, patch in ((e16, 16), (e8, 8)):
        assert scores.shape == (2, 1, 48 // patch, 64 // patch)
        for b, i, j in np.ndindex(2, 48 // patch, 64 // patch):
            cell = q[b, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            p = np.bincount(cell.ravel(), minlength=BINS) / cell.size
            expected = -(p[p > 0] * np.log2(p[p > 0])).sum()
            assert scores[b, 0, i, j].item() == pytest.approx(expected, abs=1e-5)
    assert (e16[0, 0, 0] == 0).all() and (e16[1] > 1).all()
