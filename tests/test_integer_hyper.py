"""The integer hyper-synthesis (``hvq.nets.integer``): exact by construction, and as good as float.

* Exactness: the integers do not change with the thread count, the order of the sums (the channels
  permuted, a float64 convolution against an int64 im2col matmul) or the default dtype, while the
  float64 path they replace *does* change its last bits under the same permutation.
* The bound: every partial sum stays below 2**53 for any input within the clamps; the computed bound
  is attained exactly by an adversarial input, and a network that would break it is refused.
* Quality: on the shipped model and real Kodak crops the snapped means and scales differ from the
  float64 path's at few positions (by one grid step at most) and the index bits by less than 0.5 %.
"""

from __future__ import annotations

import copy
import doctest
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_hyper_synthesis

import hvq
from hvq import tables
from hvq.data import load_image
from hvq.model import HVQCodec
from hvq.nets import integer
from hvq.nets.blocks import RateEmbedding
from hvq.nets.hyperprior import HyperSynthesis
from hvq.nets.integer import IntegerConv, IntegerHyperSynthesis, film_tables, float_params

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
#: (image, top, left) of the 256x256 crops of the quality test, and its knobs (as the benchmark).
CROPS = [("kodim01.png", 128, 256), ("kodim07.png", 0, 0), ("kodim19.png", 300, 100)]
LAM, RATIO = 1.41, 0.45
Z_SUPPORT = 24


@pytest.fixture()
def restore_torch_state() -> Iterator[None]:
    """Restore torch's thread count and default dtype after the test."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


def random_inputs(z_limit: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_hat (1, 8, 6, 8)`` integers in ``[-z_limit, z_limit]`` and a 0/1 mask ``(1, 1, 22, 30)``
    (smaller than ``4 z``, so the crop runs)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(-z_limit, z_limit + 1, (1, 8, 6, 8), generator=g).float()
    mask = (torch.rand(1, 1, 22, 30, generator=g) < 0.6).float()
    return z, mask


def integer_net(h_s: HyperSynthesis, embed: RateEmbedding | None) -> IntegerHyperSynthesis:
    return IntegerHyperSynthesis.from_float(h_s, *film_tables(h_s, embed), z_support=Z_SUPPORT)


def permuted_copy(h_s: HyperSynthesis, hidden_perm: torch.Tensor, z_perm: torch.Tensor) -> HyperSynthesis:
    """The same function with its hidden channels and its z input channels stored in another order:
    every convolution then adds its terms in another order."""
    p = copy.deepcopy(h_s)
    n = hidden_perm.numel()
    with torch.no_grad():
        p.up1.weight.copy_(h_s.up1.weight[hidden_perm][:, z_perm])
        p.up1.bias.copy_(h_s.up1.bias[hidden_perm])
        p.up2.weight.copy_(h_s.up2.weight[hidden_perm][:, hidden_perm])
        p.up2.bias.copy_(h_s.up2.bias[hidden_perm])
        p.mix.weight.copy_(h_s.mix.weight[hidden_perm][:, torch.cat([hidden_perm, torch.tensor([n])])])
        p.mix.bias.copy_(h_s.mix.bias[hidden_perm])
        rows = torch.cat([hidden_perm, n + hidden_perm])
        p.film.proj.weight.copy_(h_s.film.proj.weight[rows])
        p.film.proj.bias.copy_(h_s.film.proj.bias[rows])
        p.out.weight.copy_(h_s.out.weight[:, hidden_perm])
    return p


# ------------------------------------------------------------------------------------- the format
def test_docstring_example_runs() -> None:
    assert doctest.testmod(integer).failed == 0


def test_lambda_grid_round_trips_and_rejects_out_of_range() -> None:
    indices = range(integer.LAMBDA_STEPS)
    assert [integer.lambda_index(integer.lambda_grid_t(i)) for i in indices] == list(indices)
    assert integer.lambda_index(0.0) == 0 and integer.lambda_index(1.0) == integer.LAMBDA_STEPS - 1
    for bad_t in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="outside"):
            integer.lambda_index(bad_t)
    with pytest.raises(ValueError, match="outside"):
        integer.lambda_grid_t(integer.LAMBDA_STEPS)


def test_outputs_are_integers_on_the_table_grids_and_follow_the_float_path() -> None:
    h_s, embed = random_hyper_synthesis()
    z, mask = random_inputs(3)
    for index in (0, 77, integer.LAMBDA_STEPS - 1):
        mu_q, scale_idx = integer_net(h_s, embed)(z, mask, index)
        assert mu_q.dtype == scale_idx.dtype == torch.int64
        assert mu_q.shape == scale_idx.shape == (1, 4, 22, 30)
        assert 0 <= int(scale_idx.min()) and int(scale_idx.max()) < integer.N_SCALES
        mu_f, scale_f = float_params(
            copy.deepcopy(h_s).double(), copy.deepcopy(embed).double(), z, mask, index
        )
        assert (mu_q - mu_f).abs().max() <= 1 and (scale_idx - scale_f).abs().max() <= 1
        assert (mu_q != mu_f).float().mean() < 0.05
        assert len(torch.unique(mu_q)) > 30  # the means really vary, so the comparison means something
    a, _ = integer_net(h_s, embed)(z, mask, 0)
    b, _ = integer_net(h_s, embed)(z, mask, integer.LAMBDA_STEPS - 1)
    assert not torch.equal(a, b)  # the lambda index reaches the output through the FiLM tables


def test_without_film_the_tables_are_the_identity() -> None:
    torch.manual_seed(0)
    h_s = HyperSynthesis(4, 16, 8, 0, isotropic=True)
    with torch.no_grad():
        h_s.out.weight.normal_(0.0, 0.05)
    gamma_q, beta_q = film_tables(h_s, None)
    assert bool((gamma_q == 2**integer.FILM_FRAC_BITS).all()) and not beta_q.any()
    z, mask = random_inputs(3)
    mu_q, scale_idx = integer_net(h_s, None)(z, mask, 5)
    mu_f, scale_f = float_params(copy.deepcopy(h_s).double(), None, z, mask, 5)
    assert scale_idx.shape == (1, 1, 22, 30)
    assert (mu_q - mu_f).abs().max() <= 1 and (scale_idx - scale_f).abs().max() <= 1


# ------------------------------------------------------------------------------------- exactness
def test_identical_for_any_thread_count(restore_torch_state) -> None:
    h_s, embed = random_hyper_synthesis(hidden=64)
    net = integer_net(h_s, embed)
    z, mask = random_inputs(Z_SUPPORT)
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(net(z, mask, 100))
    for mu_q, scale_idx in results[1:]:
        assert torch.equal(mu_q, results[0][0]) and torch.equal(scale_idx, results[0][1])


def test_identical_when_the_sums_run_in_another_order() -> None:
    """Permuting the channels changes the summation order of every convolution: the float64 path's
    outputs move in their last bits (the failure), the integer path's do not move at all."""
    h_s, embed = random_hyper_synthesis(hidden=64)
    g = torch.Generator().manual_seed(3)
    hidden_perm, z_perm = torch.randperm(64, generator=g), torch.randperm(8, generator=g)
    permuted = permuted_copy(h_s, hidden_perm, z_perm)
    z, mask = random_inputs(3)
    cond = copy.deepcopy(embed).double()(torch.tensor([0.4], dtype=torch.float64))
    mu, _ = copy.deepcopy(h_s).double()(z.double(), mask.double(), cond)
    mu_perm, _ = copy.deepcopy(permuted).double()(z[:, z_perm].double(), mask.double(), cond)
    assert torch.allclose(mu, mu_perm, rtol=0, atol=1e-12) and not torch.equal(mu, mu_perm)
    for backend in ("float64", "int64"):
        expected = integer_net(h_s, embed)(z, mask, 100, backend=backend)
        got = integer_net(permuted, embed)(z[:, z_perm], mask, 100, backend=backend)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_float64_convolution_equals_int64_matmul_at_the_clamps() -> None:
    """The full z range drives activations into the clamps; float64 BLAS convolutions and an int64
    im2col matmul (no floating point at all) must still give the same integers."""
    h_s, embed = random_hyper_synthesis(hidden=64)
    net = integer_net(h_s, embed)
    z, mask = random_inputs(Z_SUPPORT, seed=5)
    z = torch.where(z >= 0, Z_SUPPORT, -Z_SUPPORT).float()  # every z at the support's edge
    with torch.no_grad():
        h_s.up1.weight.mul_(8.0)  # a hot first layer: its outputs exceed the clamp
    hot = integer_net(h_s, embed)
    g = torch.Generator().manual_seed(7)
    for conv in net.convs.values():  # the raw sums, for inputs anywhere in the clamp range
        x = torch.randint(
            -(2**integer.ACT_BITS), 2**integer.ACT_BITS + 1, (1, conv.weight.shape[1], 9, 9), generator=g
        )
        assert torch.equal(conv.accumulate(x.double(), "float64").long(), conv.accumulate(x, "int64"))
    for model in (net, hot):
        as_float = model(z, mask, 200, backend="float64")
        as_int = model(z, mask, 200, backend="int64")
        assert torch.equal(as_float[0], as_int[0]) and torch.equal(as_float[1], as_int[1])
    pre = hot.convs["up1"].accumulate(z * 2 ** integer.frac_bits("z"), "int64")
    clamp = 2 ** (
        integer.ACT_BITS + integer.frac_bits("z") + integer.WEIGHT_FRAC_BITS - integer.frac_bits("up1")
    )
    assert int(pre.abs().max()) > clamp  # the hot layer's sums really go past the clamp


def test_independent_of_the_default_dtype(restore_torch_state) -> None:
    h_s, embed = random_hyper_synthesis()
    z, mask = random_inputs(4)
    expected = integer_net(h_s, embed)(z, mask, 31)
    torch.set_default_dtype(torch.float64)
    got = integer_net(h_s, embed)(z.double(), mask.double(), 31)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


# ------------------------------------------------------------------------------------- the bound
def attained_worst_case(conv: IntegerConv, input_limits: torch.Tensor, backend: str) -> int:
    """Largest ``|b_c + sum w x|`` reached by the adversarial inputs ``x_i = +-L_i sign(w_ci)`` of
    every output channel ``c``, computed with ``conv.accumulate`` at the centre of a k x k patch."""
    k = conv.weight.shape[-1]
    best = 0
    for c in range(conv.weight.shape[0]):
        for sign in (1, -1):
            x = sign * torch.sign(conv.weight[c]) * input_limits.view(-1, 1, 1)  # (C_in, k, k)
            acc = conv.accumulate(x[None].long() if backend == "int64" else x[None].double(), backend)
            best = max(best, abs(int(acc[0, c, k // 2, k // 2])))
    return best


def test_shipped_model_bound_holds_and_is_attained() -> None:
    """For each granularity of the shipped model: the stated worst case of every convolution is
    reached exactly by an adversarial input (float64 BLAS and int64 agree with Python's exact
    integers), and the bound of every layer is below 2**53."""
    model = hvq.load_pretrained("reduced")
    act = 2**integer.ACT_BITS
    for hp in model.hyperpriors:
        net = integer_net(hp.h_s, model.embed_hyper)
        bounds = net.worst_case_sums()
        assert set(bounds) == {"up1", "up2", "mix", "film", "out"}
        assert max(bounds.values()) < 2**integer.EXACT_BITS
        hidden = hp.h_s.up2.in_channels
        limits = {
            "up1": torch.full((hp.h_s.up1.in_channels,), Z_SUPPORT * 2 ** integer.frac_bits("z")),
            "up2": torch.full((hidden,), act),
            "mix": torch.cat([torch.full((hidden,), act), torch.tensor([2 ** integer.frac_bits("up2")])]),
            "out": torch.full((hidden,), act),
        }
        for name, lim in limits.items():
            conv = net.convs[name]
            exact = max(
                abs(int(conv.bias[c]) + sign * int((conv.weight[c].abs() * lim.view(-1, 1, 1)).sum()))
                for c in range(conv.weight.shape[0])
                for sign in (1, -1)
            )
            assert conv.worst_case(lim) == exact < bounds[name] < 2**integer.EXACT_BITS
            assert attained_worst_case(conv, lim, "float64") == exact
            assert attained_worst_case(conv, lim, "int64") == exact


def test_refuses_a_network_whose_sums_could_reach_2_53() -> None:
    h_s, embed = random_hyper_synthesis(hidden=64)
    with torch.no_grad():
        h_s.mix.weight.mul_(1000.0)
    with pytest.raises(ValueError, match=r"2\^53.*mix"):
        integer_net(h_s, embed)
    with pytest.raises(ValueError, match="z_support"):
        IntegerHyperSynthesis.from_float(h_s, *film_tables(h_s, embed), z_support=1000)


# ------------------------------------------------------------------------------------- quality
def at_positions(maps: tuple[torch.Tensor, torch.Tensor], sel: torch.Tensor) -> list[np.ndarray]:
    """``(1, C, h, w)`` maps -> ``(n, C)`` arrays of the positions where ``sel (h w,)`` is true."""
    return [m[0].flatten(1).T[sel].numpy() for m in maps]


@pytest.fixture(scope="module")
def shipped_crops() -> tuple[HVQCodec, list[torch.Tensor]]:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found in {KODAK}")
    model = hvq.load_pretrained("reduced")
    crops = [load_image(KODAK / name)[:, top : top + 256, left : left + 256] for name, top, left in CROPS]
    return model, crops


def test_shipped_model_integer_tables_cost_the_same_bits(shipped_crops) -> None:
    """Symbols from the model's own analysis; index bits under the integer path's tables against the
    model's float tables (``Symbols.freqs``), all granularities of three Kodak crops."""
    model, crops = shipped_crops
    cfg = model.cfg
    index = integer.lambda_index(float(model.lambda_to_t(LAM)))
    lam = cfg.lambda_min * (cfg.lambda_max / cfg.lambda_min) ** integer.lambda_grid_t(index)
    codebook_q = tables.quantize_mu(model.quantizer.codebook.detach().double().numpy())
    embed64 = copy.deepcopy(model.embed_hyper).double()
    nets = [
        (integer_net(hp.h_s, model.embed_hyper), copy.deepcopy(hp.h_s).double()) for hp in model.hyperpriors
    ]
    bits_float = bits_int = 0.0
    positions = mu_differ = scale_differ = 0
    for crop in crops:
        sym = model.analyze(crop, lam, RATIO, RATIO, fit_colour=False)
        for g in range(3):
            sel = sym.masks[g][0, 0].flatten() > 0
            if not sel.any():
                continue
            net, h_s64 = nets[g]
            mu_q, scale_idx = at_positions(net(sym.z_hat[g], sym.masks[g], index), sel)
            mu_f, scale_f = at_positions(float_params(h_s64, embed64, sym.z_hat[g], sym.masks[g], index), sel)
            assert np.abs(mu_q - mu_f).max() <= 1 and np.abs(scale_idx - scale_f).max() <= 1
            positions += int(sel.sum())
            mu_differ += int((mu_q != mu_f).any(1).sum())
            scale_differ += int((scale_idx != scale_f).any(1).sum())
            symbols = sym.indices[g][0].flatten()[sel].numpy()
            bits_float += tables.ideal_bits(sym.freqs[g], symbols)
            bits_int += tables.ideal_bits(tables.gaussian_index_freqs(mu_q, scale_idx, codebook_q), symbols)
    assert positions > 3000
    assert mu_differ / positions < 0.05 and scale_differ / positions < 0.01
    assert abs(bits_int - bits_float) / bits_float < 0.005
