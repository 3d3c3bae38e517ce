"""Float probabilities -> deterministic integer frequency tables (numpy only).

A range coder decodes correctly only if the decoder rebuilds *exactly* the table the encoder used; a
difference of one unit in one entry breaks the rest of the stream. Network outputs are floats whose
last bits depend on the device, the thread count and the library version (``torch.softmax`` differs
between CPU, CUDA and MPS), so they never reach the coder directly. This module defines the only
path from (mu, scale) to a table, built so that both sides compute it bit for bit:

1. **Snap the parameters to a grid.** ``mu`` and the codebook are rounded to multiples of
   ``2**-MU_FRAC_BITS``; ``log2(scale)`` to multiples of ``1/LOG2_SCALE_STEPS`` inside
   ``[log2 SCALE_MIN, log2 SCALE_MAX]``. The model computes mu and scale in float64 from the integer
   z (see ``hvq.model``), so a device difference (~1e-16) moves a value across a grid boundary with
   negligible probability; if it ever does, the CRC32 of the indices in the container reports it.
2. **Distances in exact-order float64.** ``d_k = sum_d (diff_kd * inv_scale_d)^2`` with
   ``diff`` an exact multiple of the grid step and ``inv_scale`` from a fixed table; each product is
   exact and the four (D) squares are added left to right in a Python loop, so IEEE-754 rounding
   gives the same bits on every machine (no BLAS, no reduction whose order depends on threads).
3. **An integer exponential.** ``u_k = d_k / 2 - min_j d_j / 2`` is floored onto a grid of
   ``1/EXP_STEPS`` nats and looked up in ``EXP_TABLE`` (integers ``round(2**31 exp(-t/EXP_STEPS))``);
   ``tests/test_tables_coder.py`` pins a hash of both lookup tables.
4. **Fixed-precision frequencies.** :func:`freqs_from_weights` maps non-negative integer weights to
   frequencies that are all >= 1 and sum to exactly ``2**PRECISION`` using integer arithmetic only.

Speed without other integers: :func:`gaussian_index_freqs` works on blocks of positions that stay in
the CPU cache, in place, with as few passes as the fixed order allows (the grid step folded into the
scale, the cut of step 3 done by the table lookup), threads the blocks, and returns int32 (half the
bytes of int64). ``tests/test_table_speed_equivalence.py`` keeps the builder this one replaced and
checks that both give the same integers on random and adversarial inputs.

The coder (``hvq.coder``) hands constriction ``freqs - 1`` as float32: integers below ``2**24`` and
every partial sum of a row (at most ``2**24 - K``) are exact in float32, so constriction's fast
quantiser reproduces the table exactly (its scale factor is exactly 1).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Total of every frequency table: 2**24, the precision of constriction's range coder models.
PRECISION = 24
TOTAL = 1 << PRECISION
#: mu and codebook grid: multiples of 2**-8.
MU_FRAC_BITS = 8
#: log2(scale) grid: multiples of 1/8 octave between 2**-6 and 2**5 (see hvq.probability).
LOG2_SCALE_STEPS = 8
LOG2_SCALE_MIN = -6
LOG2_SCALE_MAX = 5
#: exp(-u) lookup: u on a grid of 1/64 nat, cut at 24 nats (relative mass 4e-11, below 1/TOTAL).
EXP_STEPS = 64
EXP_MAX_NATS = 24
WEIGHT_BITS = 31
#: Threads for the table build (each block of positions is computed independently, so the integers
#: do not depend on this number).
TABLE_THREADS = min(4, os.cpu_count() or 1)

_N_SCALES = (LOG2_SCALE_MAX - LOG2_SCALE_MIN) * LOG2_SCALE_STEPS + 1
#: 1/scale for every grid scale, rounded to 20 fractional bits (exact dyadic numbers).
INV_SCALE_TABLE = np.array(
    [round(2.0 ** (-(LOG2_SCALE_MIN + j / LOG2_SCALE_STEPS)) * 2**20) / 2**20 for j in range(_N_SCALES)],
    dtype=np.float64,
)
EXP_TABLE = np.array(
    [round(2**WEIGHT_BITS * math.exp(-t / EXP_STEPS)) for t in range(EXP_MAX_NATS * EXP_STEPS + 1)],
    dtype=np.int64,
)


def freqs_from_weights(weights: np.ndarray) -> np.ndarray:
    """Integer weights ``(N, K)`` (>= 0, each row with a positive sum) -> frequencies ``(N, K)``.

    ``f = 1 + floor(w (TOTAL - K) / sum w)``, then the rounding remainder goes to the first largest
    entry, so every row sums to exactly ``TOTAL`` and every symbol stays codable. Integer-only.
    """
    w = np.asarray(weights)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer):
        raise ValueError("weights must be a 2-D integer array")
    k = w.shape[1]
    if k < 2 or k > TOTAL // 4:
        raise ValueError(f"alphabet size {k} outside 2..{TOTAL // 4}")
    w = w.astype(np.int64)  # a copy: the caller's weights stay as they are
    if (w < 0).any() or (w.max(initial=0) >= 1 << 38):
        raise ValueError("weights must lie in [0, 2**38)")
    if (w.sum(axis=1) <= 0).any():
        raise ValueError("every row needs a positive total weight")
    return _freqs_in_place(w)


def _freqs_in_place(w: np.ndarray) -> np.ndarray:
    """:func:`freqs_from_weights` of checked int64 weights ``(N, K)``, overwriting and returning them."""
    n, k = w.shape
    total = w.sum(axis=1, keepdims=True)
    w *= TOTAL - k  # w * (TOTAL - K) < 2**38 * 2**24 = 2**62 fits int64
    w //= total
    w += 1
    w[np.arange(n), w.argmax(axis=1)] += TOTAL - w.sum(axis=1)
    return w


def quantize_mu(x: np.ndarray) -> np.ndarray:
    """Round float values to the integer grid ``round(x * 2**MU_FRAC_BITS)`` (int64)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("non-finite mean or codebook value")
    return np.round(np.clip(x, -(2.0**14), 2.0**14) * (1 << MU_FRAC_BITS)).astype(np.int64)


def quantize_log_scale(scale: np.ndarray) -> np.ndarray:
    """Scale (> 0) -> index into ``INV_SCALE_TABLE`` (int64)."""
    s = np.asarray(scale, dtype=np.float64)
    if not np.isfinite(s).all():
        raise ValueError("non-finite scale")
    lg = np.log2(np.clip(s, 2.0**LOG2_SCALE_MIN, 2.0**LOG2_SCALE_MAX))
    return np.clip(np.round((lg - LOG2_SCALE_MIN) * LOG2_SCALE_STEPS), 0, _N_SCALES - 1).astype(np.int64)


def gaussian_index_freqs(
    mu_q: np.ndarray, scale_idx: np.ndarray, codebook_q: np.ndarray, chunk: int | None = None
) -> np.ndarray:
    """Integer frequency tables of VQ indices under grid-snapped Gaussians.

    Args:
        mu_q: ``(N, D)`` int64 means from :func:`quantize_mu`.
        scale_idx: ``(N, D)`` (diagonal) or ``(N, 1)`` (isotropic) int64 from :func:`quantize_log_scale`.
        codebook_q: ``(K, D)`` int64 codebook from :func:`quantize_mu`.
        chunk: positions per block; the default keeps each ``(chunk, K)`` float64 temporary near
            1 MB, so the passes over it stay in the CPU's cache.

    Returns:
        ``(N, K)`` int32 frequencies, each row >= 1 everywhere and summing to ``2**PRECISION``: the
        integers of ``freqs_from_weights(EXP_TABLE[t])`` with ``t`` the floored exponent (step 3).
    """
    mu_q, scale_idx, codebook_q = (np.asarray(a, dtype=np.int64) for a in (mu_q, scale_idx, codebook_q))
    n, d = mu_q.shape
    k = codebook_q.shape[0]
    if codebook_q.shape[1] != d or scale_idx.shape[0] != n or scale_idx.shape[1] not in (1, d):
        raise ValueError("shape mismatch between mu, scale and codebook")
    if k < 2 or k > TOTAL // 4:
        raise ValueError(f"alphabet size {k} outside 2..{TOTAL // 4}")
    # Grid values are below 2**23 in magnitude, so float64 differences of them are exact.
    codebook_t = codebook_q.astype(np.float64).T.copy()  # (D, K)
    mu_f = mu_q.astype(np.float64)
    # 2**-8 * inv_scale: a power of two times a dyadic number, exact.
    grid_scale = INV_SCALE_TABLE[scale_idx] * 2.0**-MU_FRAC_BITS
    chunk = chunk or max(1, (1 << 17) // k)
    out = np.empty((n, k), dtype=np.int32)

    def block(start: int) -> None:
        stop = min(n, start + chunk)
        excess = _excess_distances(mu_f[start:stop], grid_scale[start:stop], codebook_t)
        out[start:stop] = _freqs_from_excess(excess)

    starts = range(0, n, chunk)
    if len(starts) < 4 or TABLE_THREADS < 2:
        for start in starts:
            block(start)
    else:  # blocks are independent and numpy releases the GIL: the same integers, in parallel
        with ThreadPoolExecutor(TABLE_THREADS) as pool:
            list(pool.map(block, starts))
    return out


def _excess_distances(mu: np.ndarray, grid_scale: np.ndarray, codebook_t: np.ndarray) -> np.ndarray:
    """``d - min d`` ``(n, K)`` with ``d_k = sum_j ((e_kj - mu_j) * 2**-8 * inv_j)**2`` (float64).

    Every operation is one IEEE float64 operation in a fixed order (each product exact, the squares
    rounded and added left to right over D, no BLAS, no reduction but an exact ``min``), so each
    machine gets the same bits; in-place updates keep it to two ``(n, K)`` buffers.
    """
    dist = np.empty((mu.shape[0], codebook_t.shape[1]))
    term = np.empty_like(dist)
    for j in range(mu.shape[1]):  # fixed left-to-right order over D
        buf = term if j else dist
        np.subtract(codebook_t[j][None, :], mu[:, j, None], out=buf)
        buf *= grid_scale[:, min(j, grid_scale.shape[1] - 1), None]
        buf *= buf
        if j:
            dist += term
    dist -= dist.min(axis=1, keepdims=True)
    return dist


def _freqs_from_excess(excess: np.ndarray) -> np.ndarray:
    """Frequencies ``(n, K)`` int64 of one block from ``excess = d - min d`` ``(n, K)`` (overwritten):
    ``t = floor(excess / 2 * EXP_STEPS)`` (exact: scaling by a power of two), cut at
    ``EXP_MAX_NATS``, looked up in ``EXP_TABLE`` and made frequencies (steps 3 and 4)."""
    excess *= EXP_STEPS / 2
    # astype floors the non-negative t (below D 2**47 on the grid, so it fits); mode="clip" reads
    # the last entry for every t beyond the table: the cut at EXP_MAX_NATS.
    return _freqs_in_place(np.take(EXP_TABLE, excess.astype(np.intp), mode="clip"))


def weights_from_probs(probs: np.ndarray) -> np.ndarray:
    """Float probabilities ``(..., K)`` -> integer weights ``round(p * 2**31)`` for storing once.

    Use only where the result is computed once and then stored (static histogram, factorised prior
    tables saved in the model); never on per-image float outputs.
    """
    p = np.asarray(probs, dtype=np.float64)
    if (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("probabilities must be finite and >= 0")
    p = p / p.sum(axis=-1, keepdims=True)
    return np.round(p * 2**WEIGHT_BITS).astype(np.int64)


def symbol_bits(freqs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Bits ``-log2(f[s] / TOTAL)`` of each symbol ``(N,)`` under ``freqs`` ``(N, K)`` (one table per
    symbol) or one shared table ``(K,)``: what the range coder ideally spends on each, ``(N,)`` float64."""
    f = np.asarray(freqs)
    s = np.asarray(symbols, dtype=np.int64)
    chosen = f[s] if f.ndim == 1 else f[np.arange(len(s)), s]
    return PRECISION - np.log2(chosen.astype(np.float64))


def ideal_bits(freqs: np.ndarray, symbols: np.ndarray) -> float:
    """Information content ``-sum log2(f[s] / TOTAL)`` of ``symbols`` (see :func:`symbol_bits`)."""
    return float(symbol_bits(freqs, symbols).sum())


def static_table(counts: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Index counts ``(K,)`` -> the static histogram's integer table ``(K,)`` (sum ``2**24``), with
    Laplace smoothing ``(count + alpha) / (total + K alpha)`` so no index has probability zero."""
    smoothed = np.asarray(counts, dtype=np.float64) + alpha
    return freqs_from_weights(weights_from_probs(smoothed[None] / smoothed.sum()))[0]
