"""The fast paths of the coding tables compute the same integers as the plain ones they replaced.

* ``hvq.tables.gaussian_index_freqs`` (cache-sized blocks, fewer passes, int32 output) against the
  builder it replaced, kept here verbatim as the reference: random and adversarial inputs (means and
  codebook at the grid's clip, every scale, duplicated codes whose largest entries tie), any block
  size, threaded or not.
* ``IntegerHyperSynthesis.at_positions`` (only the coded positions, 2x2 phase convolutions for the
  upsampled layers, gathered patches times weights) against the whole-map ``__call__`` with both of
  its backends: random networks, hot layers that drive the activations into the clamps, odd map
  sizes, any subset of positions (none, the borders, all); and the shipped model on a Kodak crop.
* ``hvq.coder`` hands constriction float32 tables: the same bytes as float64 tables, also for rows
  with a single dominant entry (the largest partial sums).
* ``VectorQuantizer.nearest`` (expanded distances in blocks) against a brute-force search across
  several blocks of vectors and of codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch
from helpers import random_hyper_synthesis

import hvq
from hvq import tables
from hvq.coder import encode_symbols
from hvq.data import load_image
from hvq.nets.integer import IntegerHyperSynthesis, film_tables
from hvq.nets.quantizer import VectorQuantizer
from hvq.symbols import coded_positions

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


# ------------------------------------------------------------------------- the reference table builder
def reference_gaussian_index_freqs(
    mu_q: np.ndarray, scale_idx: np.ndarray, codebook_q: np.ndarray, chunk: int | None = None
) -> np.ndarray:
    """``gaussian_index_freqs`` as it was before the fast path (one pass per operation over
    ``(chunk, K)`` blocks), int64; no code of ``hvq.tables`` but its constants."""
    mu_q, scale_idx, codebook_q = (np.asarray(a, dtype=np.int64) for a in (mu_q, scale_idx, codebook_q))
    n, k = mu_q.shape[0], codebook_q.shape[0]
    codebook_t = codebook_q.astype(np.float64).T.copy()
    mu_f = mu_q.astype(np.float64)
    chunk = chunk or max(1, (1 << 18) // k)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        u = _reference_half_distances(
            mu_f[start:stop], tables.INV_SCALE_TABLE[scale_idx[start:stop]], codebook_t
        )
        u *= tables.EXP_STEPS
        np.floor(u, out=u)
        np.minimum(u, tables.EXP_MAX_NATS * tables.EXP_STEPS, out=u)
        out[start:stop] = _reference_freqs_from_weights(tables.EXP_TABLE[u.astype(np.int64)])
    return out


def _reference_freqs_from_weights(w: np.ndarray) -> np.ndarray:
    """``freqs_from_weights`` as it was (valid weights only)."""
    n, k = w.shape
    total = w.sum(axis=1, keepdims=True)
    freqs = 1 + (w * (tables.TOTAL - k)) // total
    remainder = tables.TOTAL - freqs.sum(axis=1)
    freqs[np.arange(n), freqs.argmax(axis=1)] += remainder
    return freqs


def _reference_half_distances(mu: np.ndarray, inv_scale: np.ndarray, codebook_t: np.ndarray) -> np.ndarray:
    step = 2.0**-tables.MU_FRAC_BITS
    dist = np.empty((mu.shape[0], codebook_t.shape[1]))
    term = np.empty_like(dist)
    for j in range(mu.shape[1]):
        np.subtract(codebook_t[j][None, :], mu[:, j, None], out=term)
        term *= step
        term *= inv_scale[:, min(j, inv_scale.shape[1] - 1), None]
        term *= term
        if j == 0:
            dist, term = term, dist
        else:
            dist += term
    dist -= dist.min(axis=1, keepdims=True)
    dist *= 0.5
    return dist


def random_case(
    rng: np.random.Generator, n: int, k: int, d: int, isotropic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantised (mu, scale index, codebook): codebook spread 0.01 to 50, means near codes, every
    scale of the grid's range."""
    codebook = rng.normal(size=(k, d)) * rng.choice([0.01, 1.0, 50.0])
    mu = codebook[rng.integers(0, k, n)] + rng.choice([0.02, 0.3, 3.0]) * rng.normal(size=(n, d))
    log2_scale = rng.uniform(tables.LOG2_SCALE_MIN, tables.LOG2_SCALE_MAX, size=(n, 1 if isotropic else d))
    return tables.quantize_mu(mu), tables.quantize_log_scale(2.0**log2_scale), tables.quantize_mu(codebook)


@pytest.fixture()
def table_threads() -> Iterator[None]:
    before = tables.TABLE_THREADS
    try:
        yield
    finally:
        tables.TABLE_THREADS = before


@pytest.mark.parametrize("k", [2, 3, 16, 1024])
@pytest.mark.parametrize("d, isotropic", [(1, False), (4, False), (4, True)])
def test_table_builder_matches_the_reference(k: int, d: int, isotropic: bool) -> None:
    rng = np.random.default_rng(1000 * k + 10 * d + isotropic)
    for _ in range(4):
        case = random_case(rng, int(rng.integers(1, 300)), k, d, isotropic)
        got = tables.gaussian_index_freqs(*case)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, reference_gaussian_index_freqs(*case))


def test_table_builder_matches_the_reference_at_the_extremes() -> None:
    """Means and codebook anywhere on the clipped grid, at the smallest, a middle and the largest
    scale (distances from 0 to about 2**44); and codes repeated 16 times, so the largest entries of
    a row tie and the remainder must go to the first of them."""
    rng = np.random.default_rng(7)
    limit = 2**14 * 2**tables.MU_FRAC_BITS
    codebook_q = rng.integers(-limit, limit + 1, (512, 4))
    mu_q = rng.integers(-limit, limit + 1, (300, 4))
    for scale_idx in (0, 40, tables.INV_SCALE_TABLE.size - 1):
        s = np.full((300, 4), scale_idx)
        np.testing.assert_array_equal(
            tables.gaussian_index_freqs(mu_q, s, codebook_q),
            reference_gaussian_index_freqs(mu_q, s, codebook_q),
        )
    repeated = np.repeat(rng.integers(-300, 300, (8, 4)), 16, axis=0)
    mu_q, s = rng.integers(-300, 300, (200, 4)), rng.integers(0, tables.INV_SCALE_TABLE.size, (200, 4))
    np.testing.assert_array_equal(
        tables.gaussian_index_freqs(mu_q, s, repeated), reference_gaussian_index_freqs(mu_q, s, repeated)
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_table_builder_is_the_same_for_any_block_size_and_thread_count(threads: int, table_threads) -> None:
    tables.TABLE_THREADS = threads
    case = random_case(np.random.default_rng(3), 333, 64, 4, False)
    expected = reference_gaussian_index_freqs(*case)
    for chunk in (None, 1, 7, 50, 1000):  # 1 and 7: many blocks, so the threaded path runs
        np.testing.assert_array_equal(tables.gaussian_index_freqs(*case, chunk=chunk), expected)


# ------------------------------------------------------------------- the integer hyper-synthesis
def random_network(seed: int, hidden: int = 32, hot: bool = False) -> IntegerHyperSynthesis:
    """A seeded integer hyper-synthesis (D=4, Cz=8, diagonal, FiLM) whose zero-initialised layers get
    random weights; ``hot`` multiplies the first layer by 8, so its outputs pass the clamp."""
    h_s, embed = random_hyper_synthesis(hidden, seed)
    if hot:
        with torch.no_grad():
            h_s.up1.weight.mul_(8.0)
    return IntegerHyperSynthesis.from_float(h_s, *film_tables(h_s, embed), z_support=24)


def assert_matches_whole_map(net, z, mask, lambda_index: int, positions: np.ndarray) -> None:
    mu_q, scale_idx = net.at_positions(z, mask, lambda_index, positions)
    assert mu_q.dtype == scale_idx.dtype == np.int64
    for backend in ("float64", "int64"):
        mu_map, scale_map = net(z, mask, lambda_index, backend=backend)
        np.testing.assert_array_equal(mu_q, mu_map[0].flatten(1).T.numpy()[positions])
        np.testing.assert_array_equal(scale_idx, scale_map[0].flatten(1).T.numpy()[positions])


@pytest.mark.parametrize("hot", [False, True], ids=["plain", "hot"])
@pytest.mark.parametrize("size", [(24, 32), (22, 30), (21, 17)], ids=["full", "cropped", "odd"])
def test_at_positions_equals_the_whole_map(hot: bool, size: tuple[int, int]) -> None:
    """Masks smaller than ``4 z`` (the crop), odd sizes, and these position sets: the mask's, none,
    the border pixels, every pixel."""
    net = random_network(seed=11, hot=hot)
    g = torch.Generator().manual_seed(5)
    h, w = size
    z = torch.randint(-24, 25, (1, 8, (h + 3) // 4, (w + 3) // 4), generator=g).float()
    mask = (torch.rand(1, 1, h, w, generator=g) < 0.4).float()
    border = np.flatnonzero(np.pad(np.zeros((h - 2, w - 2), bool), 1, constant_values=True))
    for positions in (coded_positions(mask), np.zeros(0, np.int64), border, np.arange(h * w)):
        assert_matches_whole_map(net, z, mask, 77, positions)


def test_at_positions_checks_its_inputs() -> None:
    net = random_network(seed=2)
    z, mask = torch.zeros(2, 8, 2, 2), torch.ones(2, 1, 8, 8)
    with pytest.raises(ValueError, match="batch"):
        net.at_positions(z, mask, 0, np.arange(3))
    with pytest.raises(ValueError, match="lambda"):
        net.at_positions(z[:1], mask[:1], 256, np.arange(3))


def test_shipped_model_tables_from_positions_equal_the_whole_map() -> None:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found in {KODAK}")
    model = hvq.load_pretrained("reduced")
    x = load_image(KODAK / "kodim23.png")[:, 100:260, 200:392]
    for ratio in (0.8, 0.0):
        sym = model.analyze(x, 1.41, ratio, ratio, fit_colour=False)
        index = model.lambda_index(sym.lam)
        for g, network in enumerate(model._exact_cache.networks):
            positions = coded_positions(sym.masks[g])
            if positions.size:
                assert_matches_whole_map(network, sym.z_hat[g], sym.masks[g], index, positions)


# --------------------------------------------------------------------------------------- the coder
def test_float32_tables_code_the_same_bytes_as_float64() -> None:
    """Rows with one dominant entry reach the largest partial sums (``2**24 - K``)."""
    rng = np.random.default_rng(9)
    k, n = 256, 400
    w = np.round(np.exp(rng.normal(0.0, 3.0, size=(n, k))) * 1000.0).astype(np.int64)
    w[: n // 2] = 0
    w[np.arange(n // 2), rng.integers(0, k, n // 2)] = 1  # single non-zero weight: 2**24 - k + 1
    w[:, 0] += 1
    freqs = tables.freqs_from_weights(w)
    symbols = rng.integers(0, k, n).astype(np.int32)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(
        symbols, constriction.stream.model.Categorical(perfect=False), (freqs - 1).astype(np.float64)
    )
    assert encode_symbols(symbols, freqs) == encoder.get_compressed().astype("<u4").tobytes()


# ------------------------------------------------------------------------------------- the quantiser
def test_nearest_matches_brute_force_across_blocks() -> None:
    """``chunk=64`` of 300 codes and 16,900 vectors: several blocks of codes and of vectors. Every
    vector whose two nearest codes are not tied to float32 rounding gets the nearest one."""
    torch.manual_seed(4)
    q = VectorQuantizer(300, 4, chunk=64)
    y = torch.randn(1, 4, 130, 130)
    dist = torch.cdist(y.permute(0, 2, 3, 1).reshape(-1, 4).double(), q.codebook.double()) ** 2
    two = dist.topk(2, dim=1, largest=False)
    clear = (two.values[:, 1] - two.values[:, 0]) > 1e-4
    assert clear.float().mean() > 0.99
    got = q.nearest(y).flatten()
    assert torch.equal(got[clear], two.indices[clear, 0])
