"""Tests for hvq.tables (float model -> deterministic integer tables) and hvq.coder (range coding)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hvq import tables
from hvq.coder import decode_symbols, encode_symbols
from hvq.errors import BitstreamError
from hvq.probability import SCALE_MAX, SCALE_MIN, index_log_probs
from hvq.tables import (
    EXP_TABLE,
    INV_SCALE_TABLE,
    LOG2_SCALE_MIN,
    LOG2_SCALE_STEPS,
    MU_FRAC_BITS,
    PRECISION,
    TOTAL,
    freqs_from_weights,
    gaussian_index_freqs,
    ideal_bits,
    quantize_log_scale,
    quantize_mu,
)

EXPECTED = Path(__file__).parent / "expected"

# Regenerate only when deliberately changing the table format; this breaks old files.
INV_SCALE_TABLE_SHA256 = "d5fd720ef4e467e8c261e151cc36b14ea95a9698acae101789a3f94c156b2f73"
EXP_TABLE_SHA256 = "88e0a42b925d87e5e83e53956f3a5e7fe98e351421a1fbeb8e46abef8ed8741f"


# ---------------------------------------------------------------------------------------------------
# helpers


def _random_freqs(rng: np.random.Generator, n: int, k: int, spread: float = 3.0) -> np.ndarray:
    """Skewed random tables: log-normal weights (many entries tiny, a few dominant), some zeros."""
    w = np.round(np.exp(rng.normal(0.0, spread, size=(n, k))) * 1000.0).astype(np.int64)
    w[:, rng.integers(0, k)] += 1  # every row has a positive total
    return freqs_from_weights(w)


def _sample(rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    """Draw one symbol per row from the table's own distribution (inverse CDF)."""
    u = rng.integers(0, TOTAL, size=freqs.shape[0])
    return (np.cumsum(freqs, axis=1) <= u[:, None]).sum(axis=1)


def _gaussian_case(
    seed: int, n: int, k: int, d: int = 4, isotropic: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantised (mu, scale index, codebook) for a random Gaussian index model."""
    rng = np.random.default_rng(seed)
    codebook = rng.normal(size=(k, d))
    mu = codebook[rng.integers(0, k, n)] + 0.5 * rng.normal(size=(n, d))
    scale = np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=(n, 1 if isotropic else d)))
    return quantize_mu(mu), quantize_log_scale(scale), quantize_mu(codebook)


def _float_log_probs(mu_q: np.ndarray, scale_idx: np.ndarray, codebook_q: np.ndarray) -> np.ndarray:
    """The float model (hvq.probability) evaluated at the grid values the tables use, ``(N, K)``."""
    step = 2.0**-MU_FRAC_BITS
    mu = torch.from_numpy(mu_q * step).T[None, :, :, None]  # (1, D, N, 1)
    scale = torch.from_numpy(2.0 ** (LOG2_SCALE_MIN + scale_idx / LOG2_SCALE_STEPS)).T[None, :, :, None]
    logp = index_log_probs(mu, scale, torch.from_numpy(codebook_q * step))
    return logp[0, :, :, 0].T.numpy()


# ---------------------------------------------------------------------------------------------------
# freqs_from_weights


def _check_table(f: np.ndarray, n: int, k: int) -> None:
    assert f.shape == (n, k)
    assert np.issubdtype(f.dtype, np.integer)
    assert (f >= 1).all()
    assert (f.sum(axis=1) == TOTAL).all()


def test_freqs_from_weights_basic() -> None:
    rng = np.random.default_rng(0)
    w = rng.integers(0, 1 << 20, size=(50, 37))
    w[3] = 0
    w[3, 5] = 7  # a row with a single non-zero weight
    f = freqs_from_weights(w)
    _check_table(f, 50, 37)
    assert f[3, 5] == TOTAL - 36 and (np.delete(f[3], 5) == 1).all()
    # Proportional up to the +1 floor and the rounding remainder (< K per row).
    p = w / w.sum(axis=1, keepdims=True)
    assert np.abs(f / TOTAL - p).max() <= (37 + 1) / TOTAL


def test_freqs_from_weights_is_order_preserving() -> None:
    rng = np.random.default_rng(1)
    w = rng.integers(0, 1000, size=(20, 64))
    f = freqs_from_weights(w)
    for wr, fr in zip(w, f, strict=True):
        order = np.argsort(wr, kind="stable")
        assert (np.diff(fr[order]) >= 0).all()


def test_freqs_from_weights_accepts_other_integer_dtypes() -> None:
    w = np.array([[1, 2, 3, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(freqs_from_weights(w), freqs_from_weights(w.astype(np.int64)))


@pytest.mark.parametrize(
    "weights",
    [
        np.ones(8, dtype=np.int64),  # 1-D
        np.ones((2, 3, 4), dtype=np.int64),  # 3-D
        np.ones((2, 8), dtype=np.float64),  # float
        np.ones((2, 8), dtype=bool),  # bool is not an integer table
        np.ones((2, 1), dtype=np.int64),  # K = 1
        np.array([[1, -1, 3]]),  # negative
        np.array([[1, 1 << 38, 3]]),  # too large
        np.array([[1, 2, 3], [0, 0, 0]]),  # zero row
    ],
    ids=["1d", "3d", "float", "bool", "k1", "negative", "huge", "zero-row"],
)
def test_freqs_from_weights_rejects_bad_input(weights: np.ndarray) -> None:
    with pytest.raises(ValueError):
        freqs_from_weights(weights)


def test_freqs_from_weights_rejects_huge_alphabet() -> None:
    with pytest.raises(ValueError, match="alphabet"):
        freqs_from_weights(np.ones((1, TOTAL // 4 + 1), dtype=np.int64))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 6), st.integers(2, 300)),
        elements=st.integers(0, (1 << 38) - 1),
    )
)
def test_freqs_from_weights_property(weights: np.ndarray) -> None:
    weights[:, 0] |= 1  # positive row totals
    f = freqs_from_weights(weights)
    _check_table(f, *weights.shape)
    p = weights / weights.sum(axis=1, keepdims=True, dtype=np.float64)
    assert np.abs(f / TOTAL - p).max() <= (weights.shape[1] + 1) / TOTAL
    assert (f[weights == weights.max(axis=1, keepdims=True)] >= f.min()).all()


# ---------------------------------------------------------------------------------------------------
# lookup tables and quantisers


def test_lookup_tables_are_pinned() -> None:
    # Regenerate only when deliberately changing the table format; this breaks old files.
    assert hashlib.sha256(INV_SCALE_TABLE.tobytes()).hexdigest() == INV_SCALE_TABLE_SHA256
    assert hashlib.sha256(EXP_TABLE.tobytes()).hexdigest() == EXP_TABLE_SHA256
    assert INV_SCALE_TABLE.dtype == np.float64 and EXP_TABLE.dtype == np.int64


def test_lookup_tables_agree_with_the_float_model() -> None:
    assert INV_SCALE_TABLE[0] == 1.0 / SCALE_MIN and INV_SCALE_TABLE[-1] == 1.0 / SCALE_MAX
    assert (np.diff(INV_SCALE_TABLE) < 0).all()
    assert EXP_TABLE[0] == 1 << 31 and (np.diff(EXP_TABLE) <= 0).all() and EXP_TABLE[-1] >= 0


def test_quantisers() -> None:
    x = np.array([0.0, 1.0, -0.5, 2.0**-9 * 3, 1e9])
    np.testing.assert_array_equal(quantize_mu(x), [0, 256, -128, 2, (1 << 14) * 256])
    np.testing.assert_array_equal(
        quantize_log_scale(np.array([SCALE_MIN, 1e-9, 1.0, SCALE_MAX, 1e9])), [0, 0, 48, 88, 88]
    )
    for bad in (np.array([np.nan]), np.array([np.inf])):
        with pytest.raises(ValueError):
            quantize_mu(bad)
        with pytest.raises(ValueError):
            quantize_log_scale(bad)


# ---------------------------------------------------------------------------------------------------
# gaussian_index_freqs


@pytest.mark.parametrize("isotropic", [False, True], ids=["diagonal", "isotropic"])
def test_gaussian_index_freqs_deterministic_across_calls_and_chunks(isotropic: bool) -> None:
    mu_q, s_idx, cb_q = _gaussian_case(2, n=37, k=200, isotropic=isotropic)
    a = gaussian_index_freqs(mu_q, s_idx, cb_q)
    _check_table(a, 37, 200)
    assert a.dtype == np.int32  # values below 2**24: half the memory of int64
    np.testing.assert_array_equal(a, gaussian_index_freqs(mu_q, s_idx, cb_q))
    for chunk in (1, 5, 36, 1000):
        np.testing.assert_array_equal(a, gaussian_index_freqs(mu_q, s_idx, cb_q, chunk=chunk))
    # Rows are independent of each other: a sub-batch gives the same rows.
    np.testing.assert_array_equal(a[10:20], gaussian_index_freqs(mu_q[10:20], s_idx[10:20], cb_q))


@pytest.mark.parametrize(
    "k, n, isotropic", [(16, 400, False), (1024, 200, False), (1024, 200, True), (16384, 12, False)]
)
def test_gaussian_index_freqs_approximate_float_model(k: int, n: int, isotropic: bool) -> None:
    mu_q, s_idx, cb_q = _gaussian_case(3 + k, n=n, k=k, isotropic=isotropic)
    q = gaussian_index_freqs(mu_q, s_idx, cb_q) / TOTAL
    logp = _float_log_probs(mu_q, s_idx, cb_q)
    p = np.exp(logp)
    kl_bits = (p * (logp - np.log(q))).sum(axis=1) / np.log(2)
    assert kl_bits.min() > -1e-9
    assert kl_bits.mean() < 0.01
    assert kl_bits.max() < 0.05
    # Entry by entry: the 1/64-nat exponent grid bounds the log-ratio of every likely symbol. The row's
    # largest entry is excluded: it absorbs the rounding remainder of freqs_from_weights (up to K / 2**24).
    likely = p > 1e-4
    likely[np.arange(n), q.argmax(axis=1)] = False
    assert np.abs(np.log(q) - logp)[likely].max() < 0.03


def test_gaussian_index_freqs_rejects_shape_mismatch() -> None:
    mu_q, s_idx, cb_q = _gaussian_case(4, n=5, k=8)
    with pytest.raises(ValueError):
        gaussian_index_freqs(mu_q, s_idx, cb_q[:, :3])
    with pytest.raises(ValueError):
        gaussian_index_freqs(mu_q, s_idx[:4], cb_q)
    with pytest.raises(ValueError):
        gaussian_index_freqs(mu_q, s_idx[:, :2], cb_q)


# ---------------------------------------------------------------------------------------------------
# coder: round trips and size


@pytest.mark.parametrize("k, n", [(16, 3000), (1024, 400), (16384, 40)])
def test_round_trip_per_position_tables(k: int, n: int) -> None:
    rng = np.random.default_rng(k)
    f = _random_freqs(rng, n, k)
    # Uniform symbols include many of probability ~1/2**24: the coder must still handle them.
    for s in (rng.integers(0, k, n), _sample(rng, f)):
        data = encode_symbols(s, f)
        assert len(data) % 4 == 0
        out = decode_symbols(data, f)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, s)


@pytest.mark.parametrize("k, n", [(16, 3000), (1024, 1000), (16384, 500)])
def test_round_trip_shared_table(k: int, n: int) -> None:
    rng = np.random.default_rng(k + 1)
    f = _random_freqs(rng, 1, k)[0]
    for s in (rng.integers(0, k, n), _sample(rng, np.broadcast_to(f, (n, k)))):
        data = encode_symbols(s, f)
        np.testing.assert_array_equal(decode_symbols(data, f, count=n), s)


def test_round_trip_gaussian_tables() -> None:
    mu_q, s_idx, cb_q = _gaussian_case(5, n=300, k=1024)
    f = gaussian_index_freqs(mu_q, s_idx, cb_q)
    s = _sample(np.random.default_rng(5), f)
    np.testing.assert_array_equal(decode_symbols(encode_symbols(s, f), f), s)


def test_round_trip_extreme_tables() -> None:
    k = 64
    f = np.ones((4, k), dtype=np.int64)
    f[:, 0] = TOTAL - (k - 1)  # one symbol takes (almost) everything
    s = np.array([0, k - 1, 0, 5])  # two of them at the minimum probability 2**-24
    data = encode_symbols(s, f)
    np.testing.assert_array_equal(decode_symbols(data, f), s)
    assert len(data) * 8 >= ideal_bits(f, s) - 1 >= 2 * (PRECISION - 1)


@pytest.mark.parametrize("k, n", [(16, 2000), (1024, 300), (16384, 30)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coded_size_close_to_ideal(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(100 * seed + k)
    f = _random_freqs(rng, n, k)
    for s in (_sample(rng, f), rng.integers(0, k, n)):
        real = len(encode_symbols(s, f)) * 8
        ideal = ideal_bits(f, s)
        assert real <= ideal * 1.005 + 64
        assert real >= ideal - 1


def test_coder_reproduces_the_integer_table_exactly() -> None:
    """Over many symbols, any difference between our table and constriction's quantised model would
    add a per-symbol cost; the overhead must stay within the flush alone."""
    rng = np.random.default_rng(6)
    n, k = 20000, 64
    f = _random_freqs(rng, n, k, spread=2.0)
    s = _sample(rng, f)
    ideal = ideal_bits(f, s)
    assert ideal > 40000
    assert 0 <= len(encode_symbols(s, f)) * 8 - ideal <= 64
    shared = f[0]
    s1 = _sample(rng, np.broadcast_to(shared, (n, k)))
    assert 0 <= len(encode_symbols(s1, shared)) * 8 - ideal_bits(shared, s1) <= 64


def test_ideal_bits_matches_definition() -> None:
    f = np.array([[TOTAL // 2, TOTAL // 4, TOTAL // 4], [TOTAL - 2, 1, 1]])
    assert ideal_bits(f, np.array([0, 1])) == pytest.approx(1 + PRECISION)
    assert ideal_bits(f[0], np.array([1, 2, 0])) == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------------
# coder: errors and edge cases


@pytest.mark.parametrize("bad", [-1, 16, 1000])
def test_encode_rejects_out_of_range_symbols(bad: int) -> None:
    rng = np.random.default_rng(7)
    f = _random_freqs(rng, 5, 16)
    s = rng.integers(0, 16, 5)
    s[2] = bad
    with pytest.raises(ValueError, match="symbols"):
        encode_symbols(s, f)
    with pytest.raises(ValueError, match="symbols"):
        encode_symbols(s, f[0])


def test_encode_rejects_symbols_beyond_int32() -> None:
    f = _random_freqs(np.random.default_rng(8), 1, 16)
    with pytest.raises(ValueError):
        encode_symbols(np.array([2**32 + 3], dtype=np.int64), f)


def test_encode_rejects_mismatched_or_invalid_tables() -> None:
    rng = np.random.default_rng(9)
    f = _random_freqs(rng, 5, 16)
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(4, dtype=np.int64), f)  # 4 symbols, 5 tables
    bad = f.copy()
    bad[1, 0] += 1  # row no longer sums to 2**24
    with pytest.raises(ValueError, match="2\\*\\*24"):
        encode_symbols(np.zeros(5, dtype=np.int64), bad)
    zero = f.copy()
    zero[0, 1] += zero[0, 0]
    zero[0, 0] = 0  # same total, but an entry of 0
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(5, dtype=np.int64), zero)
    data = encode_symbols(np.zeros(5, dtype=np.int64), f)
    with pytest.raises(ValueError):
        decode_symbols(data, bad)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 7, 13])
def test_decode_rejects_partial_words(length: int) -> None:
    f = _random_freqs(np.random.default_rng(10), 3, 16)
    data = encode_symbols(np.array([1, 2, 3]), f) * 4
    with pytest.raises(BitstreamError, match="32-bit"):
        decode_symbols(data[:length], f)
    with pytest.raises(BitstreamError):
        decode_symbols(data[:length], f[0], count=3)


def test_decode_empty_and_count_errors() -> None:
    f = _random_freqs(np.random.default_rng(11), 3, 16)
    with pytest.raises(BitstreamError):
        decode_symbols(b"", f)  # 3 symbols expected, no data
    with pytest.raises(BitstreamError):
        decode_symbols(b"\x00" * 4, f[0], count=0)  # data but nothing to decode
    with pytest.raises(ValueError, match="count"):
        decode_symbols(b"\x00" * 4, f[0])
    assert issubclass(BitstreamError, ValueError)


def test_empty_symbol_arrays_round_trip() -> None:
    f = _random_freqs(np.random.default_rng(12), 1, 16)
    empty_tables = np.empty((0, 16), dtype=np.int64)
    for table_set, count in ((empty_tables, None), (f[0], 0)):
        data = encode_symbols(np.zeros(0, dtype=np.int64), table_set)
        assert data == b""
        out = decode_symbols(data, table_set, count=count)
        assert out.shape == (0,) and out.dtype == np.int64


def test_decode_of_garbage_returns_symbols_or_raises_bitstream_error() -> None:
    rng = np.random.default_rng(13)
    k = 16
    f = _random_freqs(rng, 40, k)
    for n_words in (1, 2, 5, 40):
        for _ in range(10):
            data = rng.integers(0, 256, 4 * n_words, dtype=np.uint8).tobytes()
            try:
                out = decode_symbols(data, f)
            except BitstreamError:
                continue
            assert out.shape == (40,) and out.min() >= 0 and out.max() < k


# ---------------------------------------------------------------------------------------------------
# golden bitstream


def _golden_case() -> tuple[np.ndarray, np.ndarray]:
    """K = 16, 50 symbols, Gaussian tables from integer inputs. RandomState is numpy's frozen legacy
    generator, whose stream does not change between numpy versions."""
    rs = np.random.RandomState(20240501)
    codebook_q = rs.randint(-512, 512, size=(16, 4)).astype(np.int64)
    mu_q = rs.randint(-512, 512, size=(50, 4)).astype(np.int64)
    scale_idx = rs.randint(48, 72, size=(50, 4)).astype(np.int64)  # scales 1 .. 8: several bits each
    freqs = gaussian_index_freqs(mu_q, scale_idx, codebook_q)
    u = rs.randint(0, TOTAL, size=50)
    symbols = (np.cumsum(freqs, axis=1) <= u[:, None]).sum(axis=1)
    return symbols, freqs


def test_golden_bitstream() -> None:
    symbols, freqs = _golden_case()
    data = encode_symbols(symbols, freqs)
    path = EXPECTED / "coder_k16.bin"
    if os.environ.get("GENERATE_EXPECTED") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        pytest.skip(f"wrote {path} ({len(data)} bytes); rerun without GENERATE_EXPECTED to check it")
    assert path.exists(), f"{path} missing: run GENERATE_EXPECTED=1 pytest {__file__}"
    expected = path.read_bytes()
    assert len(np.unique(symbols)) > 3  # a real mix of symbols, not a degenerate case
    assert data == expected, "bitstream format changed: old .hvq files would no longer decode"
    np.testing.assert_array_equal(decode_symbols(expected, freqs), symbols)


def _reference_gaussian_index_freqs(mu_q, scale_idx, codebook_q):
    """The table build written plainly (one position block, integer differences), to pin the fast one."""
    step = 2.0**-tables.MU_FRAC_BITS
    inv = tables.INV_SCALE_TABLE[scale_idx]
    dist = np.zeros((mu_q.shape[0], codebook_q.shape[0]))
    for j in range(mu_q.shape[1]):
        term = (codebook_q[None, :, j] - mu_q[:, j, None]).astype(np.float64) * step
        term = term * inv[:, min(j, inv.shape[1] - 1), None]
        dist = dist + term * term
    u = 0.5 * (dist - dist.min(axis=1, keepdims=True))
    t = np.minimum(np.floor(u * tables.EXP_STEPS), tables.EXP_MAX_NATS * tables.EXP_STEPS).astype(np.int64)
    return tables.freqs_from_weights(tables.EXP_TABLE[t])


@pytest.mark.parametrize("scale_dims, chunk", [(4, None), (1, None), (4, 7)])
def test_fast_table_build_equals_the_plain_one_bit_for_bit(scale_dims, chunk):
    rng = np.random.default_rng(scale_dims)
    codebook_q = tables.quantize_mu(rng.normal(size=(300, 4)) * 3)
    mu_q = tables.quantize_mu(rng.normal(size=(500, 4)) * 3)
    scale_idx = tables.quantize_log_scale(np.exp(rng.normal(size=(500, scale_dims)) - 1))
    fast = tables.gaussian_index_freqs(mu_q, scale_idx, codebook_q, chunk=chunk)
    assert np.array_equal(fast, _reference_gaussian_index_freqs(mu_q, scale_idx, codebook_q))
