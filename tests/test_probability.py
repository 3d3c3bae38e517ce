"""Tests for hvq.probability: the Gaussian-in-embedding-space index model, the static histogram and
the factorised prior for the hyper-latent."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hvq.probability import (
    SCALE_MAX,
    SCALE_MIN,
    FactorizedPrior,
    StaticHistogram,
    coded_index_bits,
    half_mahalanobis,
    index_bits,
    index_log_probs,
)

# ---------------------------------------------------------------------------------------------------
# helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(
    seed: int,
    b: int = 2,
    d: int = 4,
    h: int = 3,
    w: int = 5,
    k: int = 12,
    isotropic: bool = False,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random mu, scale (well inside [SCALE_MIN, SCALE_MAX]) and codebook."""
    g = _gen(seed)
    mu = torch.randn(b, d, h, w, generator=g, dtype=dtype)
    scale = 0.3 + 1.5 * torch.rand(b, 1 if isotropic else d, h, w, generator=g, dtype=dtype)
    codebook = torch.randn(k, d, generator=g, dtype=dtype)
    return mu, scale, codebook


def _reference_log_probs(mu: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Brute force: one loop over k of -1/2 sum_d ((e_kd - mu_d) / s_d)^2, then a log-softmax."""
    s = scale.expand_as(mu)
    logits = torch.stack(
        [-0.5 * (((codebook[k].view(1, -1, 1, 1) - mu) / s) ** 2).sum(dim=1) for k in range(len(codebook))],
        dim=1,
    )
    return torch.log_softmax(logits, dim=1)


# ---------------------------------------------------------------------------------------------------
# index_log_probs / half_mahalanobis against the brute-force reference


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_probs_match_bruteforce(isotropic: bool, seed: int) -> None:
    mu, scale, codebook = _inputs(seed, isotropic=isotropic)
    got = index_log_probs(mu, scale, codebook)
    assert got.shape == (2, 12, 3, 5)
    torch.testing.assert_close(got, _reference_log_probs(mu, scale, codebook), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
def test_half_mahalanobis_matches_direct_difference(isotropic: bool) -> None:
    mu, scale, codebook = _inputs(3, isotropic=isotropic)
    got = half_mahalanobis(mu, scale, codebook)
    s = scale.expand_as(mu)
    want = torch.stack([0.5 * (((e.view(1, -1, 1, 1) - mu) / s) ** 2).sum(dim=1) for e in codebook], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert (got >= 0).all()


def test_log_probs_float32_close_to_float64() -> None:
    mu, scale, codebook = _inputs(4)
    got = index_log_probs(mu.float(), scale.float(), codebook.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _reference_log_probs(mu, scale, codebook), rtol=1e-4, atol=1e-4)


def test_isotropic_equals_diagonal_with_equal_scales() -> None:
    mu, scale, codebook = _inputs(5, isotropic=True)
    iso = index_log_probs(mu, scale, codebook)
    diag = index_log_probs(mu, scale.expand_as(mu).contiguous(), codebook)
    torch.testing.assert_close(iso, diag, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
@pytest.mark.parametrize("chunk_size", [16, 7, 49])
def test_chunked_equals_unchunked(isotropic: bool, chunk_size: int) -> None:
    """K = 50 > chunk_size exercises the running-logsumexp path, including a ragged last chunk."""
    mu, scale, codebook = _inputs(6, k=50, isotropic=isotropic)
    full = index_log_probs(mu, scale, codebook, chunk_size=4096)
    chunked = index_log_probs(mu, scale, codebook, chunk_size=chunk_size)
    assert chunked.shape == full.shape == (2, 50, 3, 5)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, _reference_log_probs(mu, scale, codebook), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [4096, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalised_over_codes(chunk_size: int, dtype: torch.dtype) -> None:
    # Wide spread of mu / scale, including scales clamped at both ends.
    g = _gen(7)
    mu = 3.0 * torch.randn(3, 4, 4, 4, generator=g, dtype=dtype)
    scale = torch.exp(4.0 * torch.randn(3, 4, 4, 4, generator=g, dtype=dtype))
    codebook = 2.0 * torch.randn(40, 4, generator=g, dtype=dtype)
    logp = index_log_probs(mu, scale, codebook, chunk_size=chunk_size)
    assert torch.isfinite(logp).all()
    assert (logp <= 1e-6).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(logp.exp().sum(dim=1), torch.ones(3, 4, 4, dtype=dtype), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------------
# limits


def _grid_codebook(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """27 vectors of {-2, 0, 2}^3: pairwise distance >= 2."""
    return 2.0 * torch.tensor(list(itertools.product([-1.0, 0.0, 1.0], repeat=3)), dtype=dtype)


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
def test_small_scale_limit_is_nearest_neighbour(isotropic: bool) -> None:
    codebook = _grid_codebook()
    g = _gen(8)
    target = torch.randint(0, len(codebook), (2, 4, 5), generator=g)
    # mu within 0.4 (per coordinate) of its target: the target is the unique nearest vector.
    mu = codebook[target].permute(0, 3, 1, 2) + 0.8 * (torch.rand(2, 3, 4, 5, generator=g) - 0.5)
    scale = torch.full((2, 1 if isotropic else 3, 4, 5), SCALE_MIN)
    logp = index_log_probs(mu, scale, codebook)
    nearest = torch.cdist(mu.permute(0, 2, 3, 1).reshape(-1, 3), codebook).argmin(dim=1).view(2, 4, 5)
    assert torch.equal(nearest, target)
    assert torch.equal(logp.argmax(dim=1), nearest)
    assert (logp.max(dim=1).values.exp() > 0.99).all()


def test_small_scale_limit_uses_weighted_metric() -> None:
    """With unequal diagonal scales the winner is the nearest code in the scale-weighted metric."""
    codebook = torch.tensor([[1.0, 0.0], [0.0, 0.6]])
    mu = torch.zeros(1, 2, 1, 1)
    # Euclidean: code 1 is nearer. Dimension 1 is 8x sharper, so code 0 wins in the Mahalanobis metric.
    scale = torch.tensor([8 * SCALE_MIN, SCALE_MIN]).view(1, 2, 1, 1)
    p = index_log_probs(mu, scale, codebook).exp().flatten()
    assert p[0] > 0.99


def test_large_scale_limit_is_uniform() -> None:
    g = _gen(9)
    k = 64
    codebook = 0.1 * torch.randn(k, 4, generator=g, dtype=torch.float64)
    mu = 0.1 * torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    p = index_log_probs(mu, torch.full((2, 4, 3, 3), SCALE_MAX, dtype=torch.float64), codebook).exp()
    torch.testing.assert_close(p, torch.full_like(p, 1.0 / k), rtol=2e-3, atol=0.0)
    bits = index_bits(
        mu,
        torch.full((2, 1, 3, 3), SCALE_MAX, dtype=torch.float64),
        codebook,
        torch.zeros(2, 3, 3, dtype=torch.long),
    )
    torch.testing.assert_close(bits, torch.full_like(bits, math.log2(k)), rtol=1e-3, atol=0.0)


def test_scale_is_clamped_to_the_model_range() -> None:
    mu, _, codebook = _inputs(10)
    tiny, huge = torch.full_like(mu, 1e-9), torch.full_like(mu, 1e9)
    torch.testing.assert_close(
        index_log_probs(mu, tiny, codebook), index_log_probs(mu, torch.full_like(mu, SCALE_MIN), codebook)
    )
    torch.testing.assert_close(
        index_log_probs(mu, huge, codebook), index_log_probs(mu, torch.full_like(mu, SCALE_MAX), codebook)
    )


# ---------------------------------------------------------------------------------------------------
# index_bits and gradients


def test_index_bits_equals_gathered_log_probs_and_mask() -> None:
    mu, scale, codebook = _inputs(11)
    g = _gen(11)
    idx = torch.randint(0, len(codebook), (2, 3, 5), generator=g)
    ref = -_reference_log_probs(mu, scale, codebook).gather(1, idx.unsqueeze(1)).squeeze(1) / math.log(2)
    bits = index_bits(mu, scale, codebook, idx)
    torch.testing.assert_close(bits, ref, rtol=1e-10, atol=1e-10)
    assert (bits > 0).all()
    mask = (torch.rand(2, 3, 5, generator=g) > 0.5).double()
    torch.testing.assert_close(index_bits(mu, scale, codebook, idx, mask), ref * mask)


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
def test_index_bits_gradcheck(isotropic: bool) -> None:
    mu, scale, codebook = _inputs(12, b=1, d=3, h=2, w=2, k=5, isotropic=isotropic)
    idx = torch.randint(0, 5, (1, 2, 2), generator=_gen(12))
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    args = tuple(t.clone().requires_grad_(True) for t in (mu, scale, codebook))
    assert torch.autograd.gradcheck(lambda m, s, e: index_bits(m, s, e, idx).sum(), args)
    assert torch.autograd.gradcheck(lambda m, s, e: index_bits(m, s, e, idx, mask).sum(), args)


def test_chunked_log_probs_gradcheck() -> None:
    mu, scale, codebook = _inputs(13, b=1, d=2, h=2, w=1, k=7)
    args = tuple(t.clone().requires_grad_(True) for t in (mu, scale, codebook))
    weights = torch.randn(1, 7, 2, 1, generator=_gen(13), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda m, s, e: (index_log_probs(m, s, e, chunk_size=3) * weights).sum(), args
    )


def test_index_bits_gradients_reach_every_input() -> None:
    mu, scale, codebook = _inputs(14, dtype=torch.float32)
    for t in (mu, scale, codebook):
        t.requires_grad_(True)
    idx = torch.randint(0, len(codebook), (2, 3, 5), generator=_gen(14))
    index_bits(mu, scale, codebook, idx).sum().backward()
    for t in (mu, scale, codebook):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# large codebooks


def test_k16384_chunked_normalises_and_matches_unchunked() -> None:
    g = _gen(15)
    k = 16384
    codebook = torch.randn(k, 4, generator=g)
    mu = torch.randn(1, 4, 3, 4, generator=g)
    scale = 0.2 + torch.rand(1, 4, 3, 4, generator=g)
    logp = index_log_probs(mu, scale, codebook)  # default chunk_size 4096 < K: four chunks
    assert logp.shape == (1, k, 3, 4)
    torch.testing.assert_close(logp.exp().sum(dim=1), torch.ones(1, 3, 4), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logp, index_log_probs(mu, scale, codebook, chunk_size=k), rtol=1e-4, atol=1e-4)
    idx = logp.argmax(dim=1)
    bits = index_bits(mu, scale, codebook, idx)
    torch.testing.assert_close(bits, -logp.max(dim=1).values / math.log(2))


# ---------------------------------------------------------------------------------------------------
# argument checking


@pytest.mark.parametrize(
    "mu_shape, scale_shape, codebook_shape",
    [
        ((4, 3, 5), (4, 3, 5), (12, 4)),  # mu not 4-D
        ((1, 4, 3, 5), (1, 4, 3, 5), (12, 3)),  # codebook D != mu D
        ((1, 4, 3, 5), (1, 4, 3, 5), (48,)),  # codebook not 2-D
        ((1, 4, 3, 5), (1, 2, 3, 5), (12, 4)),  # scale channels neither 1 nor D
        ((1, 4, 3, 5), (1, 4, 3, 4), (12, 4)),  # scale spatial size differs
        ((1, 4, 3, 5), (4, 3, 5), (12, 4)),  # scale not 4-D
    ],
)
def test_bad_shapes_raise_value_error(mu_shape, scale_shape, codebook_shape) -> None:
    mu, scale, codebook = torch.zeros(mu_shape), torch.ones(scale_shape), torch.zeros(codebook_shape)
    for fn in (half_mahalanobis, index_log_probs):
        with pytest.raises(ValueError):
            fn(mu, scale, codebook)
    if len(mu_shape) == 4:
        with pytest.raises(ValueError):
            index_bits(mu, scale, codebook, torch.zeros(1, 3, 5, dtype=torch.long))


def test_index_bits_bad_indices_shape() -> None:
    mu, scale, codebook = _inputs(16)
    with pytest.raises(ValueError, match="indices"):
        index_bits(mu, scale, codebook, torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="indices"):
        index_bits(mu, scale, codebook, torch.zeros(2, 1, 3, 5, dtype=torch.long))


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 4096])
def test_coded_index_bits_equals_summed_reference(isotropic: bool, chunk_rows: int) -> None:
    """The rate estimate's row layout sums to the brute-force bits of the chosen codes."""
    mu, scale, codebook = _inputs(21, b=1, h=4, w=9, k=40, isotropic=isotropic)
    indices = torch.randint(0, 40, (1, 4, 9), generator=_gen(22))
    reference = -_reference_log_probs(mu, scale, codebook).gather(1, indices.unsqueeze(1)).sum() / math.log(2)
    rows = [v[0].flatten(1).T for v in (mu, scale)]  # (N, D) and (N, 1 or D)
    total = coded_index_bits(*rows, codebook, indices.flatten(), chunk_rows=chunk_rows)
    assert total.dtype == torch.float64
    assert float(total) == pytest.approx(float(reference), rel=1e-9)


def test_coded_index_bits_float32_close_to_index_bits() -> None:
    mu, scale, codebook = _inputs(23, b=1, h=16, w=16, k=1024, dtype=torch.float32)
    indices = torch.randint(0, 1024, (1, 16, 16), generator=_gen(24))
    rows = [v[0].flatten(1).T for v in (mu, scale)]
    total = coded_index_bits(*rows, codebook, indices.flatten())
    assert float(total) == pytest.approx(float(index_bits(mu, scale, codebook, indices).sum()), rel=1e-4)


def test_coded_index_bits_gradient_matches_index_bits() -> None:
    """The refit (hvq.refit) trains on it: its gradient in mu and scale is that of index_bits."""
    mu, scale, codebook = _inputs(25, b=1, h=3, w=5, k=32, dtype=torch.float64)
    indices = torch.randint(0, 32, (1, 3, 5), generator=_gen(26))
    grads = []
    for rows_layout in (True, False):
        m, s = mu.clone().requires_grad_(True), scale.clone().requires_grad_(True)
        if rows_layout:
            total = coded_index_bits(m[0].flatten(1).T, s[0].flatten(1).T, codebook, indices.flatten())
        else:
            total = index_bits(m, s, codebook, indices).sum()
        total.backward()
        grads.append((m.grad, s.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0].abs().sum() > 0


def test_coded_index_bits_stays_on_the_inputs_device() -> None:
    """Every partial sum lives where ``mu`` does (the refit runs on GPUs): on the ``meta`` device a
    CPU-made term would fail to stack, as a CPU term once did on CUDA."""
    mu, scale, codebook = torch.zeros(6, 4), torch.ones(6, 4), torch.randn(8, 4, generator=_gen(27))
    indices = torch.randint(0, 8, (6,), generator=_gen(28))
    total = coded_index_bits(*(v.to("meta") for v in (mu, scale, codebook, indices)), chunk_rows=4)
    assert total.device.type == "meta" and total.dtype == torch.float64


def test_coded_index_bits_bad_shapes() -> None:
    mu, scale, codebook = torch.zeros(5, 4), torch.ones(5, 4), torch.zeros(8, 4)
    with pytest.raises(ValueError, match="indices"):
        coded_index_bits(mu, scale, codebook, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="codebook"):
        coded_index_bits(mu, scale, torch.zeros(8, 3), torch.zeros(5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------
# StaticHistogram


def test_static_histogram_counts_accumulate() -> None:
    rng = np.random.default_rng(17)
    hist = StaticHistogram(10)
    a = rng.integers(0, 10, size=(3, 7))
    b = rng.integers(0, 4, size=50)  # codes 4..9 only seen in the first batch
    hist.update(torch.from_numpy(a))
    np.testing.assert_array_equal(hist.counts.numpy(), np.bincount(a.ravel(), minlength=10))
    hist.update(torch.from_numpy(b))
    want = np.bincount(a.ravel(), minlength=10) + np.bincount(b, minlength=10)
    np.testing.assert_array_equal(hist.counts.numpy(), want)
    assert hist.counts.dtype == torch.float64


def test_static_histogram_smoothing_and_bits() -> None:
    rng = np.random.default_rng(18)
    k, alpha = 16, 0.25
    hist = StaticHistogram(k, alpha=alpha)
    data = rng.integers(0, 5, size=200)  # codes 5..15 never seen
    hist.update(torch.from_numpy(data))
    logp = hist.log_probs()
    assert logp.shape == (k,)
    assert torch.isfinite(logp).all() and (logp.exp() > 0).all()
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    counts = np.bincount(data, minlength=k).astype(np.float64)
    p = (counts + alpha) / (counts + alpha).sum()
    query = torch.from_numpy(rng.integers(0, k, size=(4, 6)))
    bits = hist.bits(query)
    assert bits.shape == query.shape
    np.testing.assert_allclose(bits.numpy(), -np.log2(p[query.numpy()]), rtol=1e-12)


def test_static_histogram_uniform_when_empty() -> None:
    hist = StaticHistogram(8)
    np.testing.assert_allclose(hist.bits(torch.arange(8)).numpy(), np.full(8, 3.0), rtol=1e-12)


@pytest.mark.parametrize("num_codes, alpha", [(1, 0.5), (0, 0.5), (8, 0.0), (8, -1.0)])
def test_static_histogram_rejects_bad_arguments(num_codes: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        StaticHistogram(num_codes, alpha=alpha)


# ---------------------------------------------------------------------------------------------------
# FactorizedPrior


def _prior(seed: int, channels: int = 3) -> FactorizedPrior:
    torch.manual_seed(seed)  # the biases are initialised from torch's global generator
    return FactorizedPrior(channels)


def test_factorized_likelihoods_in_unit_interval() -> None:
    prior = _prior(19).eval()
    z = torch.cat([20.0 * torch.randn(2, 3, 4, 4, generator=_gen(19)), torch.full((2, 3, 1, 4), 1e4)], dim=2)
    z_hat, lik = prior(z)
    assert lik.shape == z.shape
    assert (lik > 0).all() and (lik <= 1).all()
    assert (lik >= prior.likelihood_bound).all()


def test_factorized_likelihood_sums_to_one_over_integers() -> None:
    prior = _prior(20, channels=4).eval()
    r = 400
    z = torch.arange(-r, r + 1, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 4, 1, -1).contiguous()
    lik = prior.likelihood(z)
    sums = lik.double().sum(dim=(0, 2, 3))
    torch.testing.assert_close(sums, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-4)


def test_factorized_train_adds_bounded_noise_eval_rounds() -> None:
    prior = _prior(21)
    z = 5.0 * torch.randn(4, 3, 16, 16, generator=_gen(21))
    prior.train()
    torch.manual_seed(21)
    z_tilde, lik = prior(z)
    noise = z_tilde - z
    assert (noise.abs() <= 0.5 + 1e-6).all()
    assert noise.abs().max() > 0.4  # really noisy, spread over the interval
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1 / math.sqrt(12)) < 0.02
    torch.testing.assert_close(lik, prior.likelihood(z_tilde))
    prior.eval()
    z_hat, lik_eval = prior(z)
    assert torch.equal(z_hat, torch.round(z))
    torch.testing.assert_close(lik_eval, prior.likelihood(torch.round(z)))
    torch.testing.assert_close(prior.bits(z_hat), -lik_eval.log2().sum())


@pytest.mark.parametrize("support", [1, 5, 40])
def test_factorized_pmf_rows_sum_to_one(support: int) -> None:
    prior = _prior(22, channels=5)
    pmf = prior.pmf(support)
    assert pmf.shape == (5, 2 * support + 1) and pmf.dtype == torch.float64
    assert (pmf >= 0).all()
    torch.testing.assert_close(pmf.sum(dim=1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-9)
    if support > 1:  # interior masses equal the likelihood of the integers
        x = torch.arange(-support + 1, support, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 5, 1, -1)
        lik = prior.likelihood(x.contiguous()).double().squeeze(2).squeeze(0)
        torch.testing.assert_close(pmf[:, 1:-1], lik, rtol=1e-5, atol=1e-6)


def test_factorized_gradients_reach_every_parameter() -> None:
    prior = _prior(23).train()
    z = (3.0 * torch.randn(2, 3, 4, 4, generator=_gen(23))).requires_grad_(True)
    torch.manual_seed(23)
    z_tilde, lik = prior(z)
    (-lik.log2().sum()).backward()
    params = list(prior.named_parameters())
    assert len(params) == 4 + 4 + 3
    for name, p in params:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_factorized_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="channels"):
        _prior(24, channels=3).likelihood(torch.zeros(1, 2, 2, 2))
