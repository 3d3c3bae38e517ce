"""Benchmark of the index coding path: table building, range encoding/decoding, and coding overhead.

For each codebook size K it draws a random codebook, per-position Gaussians (mu, scale) in the D = 4
embedding space, snaps them to the grid, builds the integer tables with
``hvq.tables.gaussian_index_freqs``, samples one index per position from its own table, and codes
them with ``hvq.coder``. Prints a markdown table.

    .venv/bin/python benchmarks/bench_coder.py           # K = 1024 (N = 20000), K = 16384 (N = 3000)
    .venv/bin/python benchmarks/bench_coder.py --quick   # a few seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from hvq.coder import decode_symbols, encode_symbols
from hvq.tables import TOTAL, gaussian_index_freqs, ideal_bits, quantize_log_scale, quantize_mu

T = TypeVar("T")


def _timed(fn: Callable[[], T], repeats: int) -> tuple[T, float]:
    """Result of ``fn()`` and its best wall time over ``repeats`` runs (seconds)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best  # type: ignore[return-value]


def _sample(rng: np.random.Generator, freqs: np.ndarray, block: int = 256) -> np.ndarray:
    """One symbol per row, drawn from the row's own table (inverse CDF, in blocks to bound memory)."""
    out = np.empty(freqs.shape[0], dtype=np.int64)
    for start in range(0, len(out), block):
        f = freqs[start : start + block]
        u = rng.integers(0, TOTAL, size=len(f))
        out[start : start + block] = (np.cumsum(f, axis=1) <= u[:, None]).sum(axis=1)
    return out


def bench(k: int, n: int, d: int, seed: int, repeats: int) -> dict[str, float]:
    """Time one configuration; returns the row of the table."""
    rng = np.random.default_rng(seed)
    codebook = rng.normal(size=(k, d))
    # Means near a code (as a trained hyperprior predicts) and scales spread over the useful range.
    mu = codebook[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))
    scale = np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=(n, d)))
    mu_q, s_idx, cb_q = quantize_mu(mu), quantize_log_scale(scale), quantize_mu(codebook)

    freqs, t_tables = _timed(lambda: gaussian_index_freqs(mu_q, s_idx, cb_q), repeats)
    symbols = _sample(rng, freqs)
    data, t_enc = _timed(lambda: encode_symbols(symbols, freqs), repeats)
    decoded, t_dec = _timed(lambda: decode_symbols(data, freqs), repeats)
    if not np.array_equal(decoded, symbols):
        raise RuntimeError(f"round trip failed for K={k}")
    ideal = ideal_bits(freqs, symbols)
    real = 8 * len(data)
    return {
        "K": k,
        "N": n,
        "tables_s": t_tables,
        "enc_sym_s": n / t_enc,
        "dec_sym_s": n / t_dec,
        "ideal_bits": ideal,
        "real_bits": real,
        "bits_per_sym": real / n,
        "overhead_pct": 100.0 * (real - ideal) / ideal,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, one repeat (a few seconds)")
    parser.add_argument("--dim", type=int, default=4, help="embedding dimension D (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configs = [(1024, 2000), (16384, 300)] if args.quick else [(1024, 20000), (16384, 3000)]
    repeats = 1 if args.quick else 3

    print(f"D = {args.dim}, best of {repeats} run(s); symbols drawn from each position's own table\n")
    print("| K | N | build tables (s) | encode (sym/s) | decode (sym/s) | bits/symbol | overhead vs ideal |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k, n in configs:
        r = bench(k, n, args.dim, args.seed, repeats)
        print(
            f"| {r['K']} | {r['N']} | {r['tables_s']:.3f} | {r['enc_sym_s']:,.0f} | {r['dec_sym_s']:,.0f} "
            f"| {r['bits_per_sym']:.3f} | {r['overhead_pct']:.3f} % "
            f"({r['real_bits'] - r['ideal_bits']:.1f} bits) |"
        )


if __name__ == "__main__":
    main()
