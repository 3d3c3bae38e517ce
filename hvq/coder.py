"""Range coding of integer symbols with integer frequency tables (constriction's queue/range coder).

A coder here is a short explicit loop: one ``RangeEncoder`` per stream, whole arrays of symbols with
their per-position tables encoded in one call per block (no Python loop per symbol), the same blocks
decoded in the same order (a range coder is first-in-first-out).

Tables come from ``hvq.tables`` (every entry >= 1, rows summing to ``2**24``). constriction receives
``freqs - 1`` as float32: constriction's fast quantiser adds one to every entry and rescales the rest
by ``(2**24 - K) / sum``, which is exactly 1 here, and it sums a row's entries in the float type it is
given; integers below ``2**24`` and every such partial sum (at most ``2**24 - K``) are exact in
float32, so the coder uses our integer table unchanged (half the bytes of float64) and the coded size
matches ``hvq.tables.ideal_bits`` up to the final flush.
"""

from __future__ import annotations

import constriction
import numpy as np

from hvq.errors import BitstreamError
from hvq.tables import TOTAL, symbol_bits

#: Positions per constriction call; bounds the float32 copy of the tables to ~16 MB.
_BLOCK_ENTRIES = 1 << 22
#: Symbols per decoding block with a shared table (the exhaustion check runs between blocks).
_SHARED_BLOCK = 4096
#: Information (bits) a decoder may still produce after its data ran out: the range decoder holds one
#: 64-bit state, so a genuine stream has at most that much left once every word has been read; the rest
#: is margin. Beyond it the stream is truncated or forged, and decoding stops (cost bounded by the file).
OVERRUN_BITS = 128


def _as_model_probs(freqs: np.ndarray) -> np.ndarray:
    """Checked integer tables ``(..., K)`` -> ``freqs - 1`` as float32 (exact, see the module docstring)."""
    f = np.asarray(freqs)
    if f.min() < 1 or (f.sum(axis=-1) != TOTAL).any():
        raise ValueError("frequency tables must be >= 1 and sum to 2**24 (use hvq.tables)")
    return np.subtract(f, 1, out=np.empty(f.shape, dtype=np.float32), casting="unsafe")


def _blocks(n: int, k: int):
    step = max(1, _BLOCK_ENTRIES // k)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def encode_symbols(symbols: np.ndarray, freqs: np.ndarray) -> bytes:
    """Encode ``symbols`` ``(N,)`` in ``[0, K)`` with per-position tables ``(N, K)`` or one table ``(K,)``.

    Returns the compressed bytes (a whole number of 32-bit little-endian words).
    """
    s = np.asarray(symbols).ravel()
    f = np.asarray(freqs)
    k = f.shape[-1]
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
    if s.size and (s.min() < 0 or s.max() >= k):  # checked before the cast: int32 would wrap
        raise ValueError(f"symbols must lie in [0, {k})")
    s = s.astype(np.int32)
    if f.ndim == 2 and f.shape[0] != s.size:
        raise ValueError(f"{s.size} symbols but {f.shape[0]} tables")
    encoder = constriction.stream.queue.RangeEncoder()
    if s.size == 0:
        return b""
    if f.ndim == 1:
        encoder.encode(s, constriction.stream.model.Categorical(_as_model_probs(f), perfect=False))
    else:
        family = constriction.stream.model.Categorical(perfect=False)
        for sl in _blocks(s.size, k):
            encoder.encode(s[sl], family, _as_model_probs(f[sl]))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, freqs: np.ndarray, count: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_symbols`; ``count`` is required with a single shared table ``(K,)``.

    Raises:
        BitstreamError: the bytes are not a whole number of words, or constriction rejects them.
    """
    f = np.asarray(freqs)
    n = f.shape[0] if f.ndim == 2 else int(count if count is not None else -1)
    if n < 0:
        raise ValueError("count is required with a shared table")
    if n == 0:
        if data:
            raise BitstreamError("stream has data but no symbols to decode")
        return np.zeros(0, dtype=np.int64)
    if len(data) % 4 or not data:
        raise BitstreamError(f"stream of {len(data)} bytes is not a positive whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    parts, overrun = [], 0.0
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        if f.ndim == 1:
            model = constriction.stream.model.Categorical(_as_model_probs(f), perfect=False)
            blocks = ((slice(i, min(n, i + _SHARED_BLOCK)), None) for i in range(0, n, _SHARED_BLOCK))
        else:
            model = constriction.stream.model.Categorical(perfect=False)
            blocks = ((sl, f[sl]) for sl in _blocks(n, f.shape[1]))
        for sl, table in blocks:
            exhausted = decoder.maybe_exhausted()  # every word read before this block
            if table is None:
                part = decoder.decode(model, sl.stop - sl.start)
            else:
                part = decoder.decode(model, _as_model_probs(table))
            parts.append(part)
            if exhausted:
                overrun += float(symbol_bits(f if table is None else table, part).sum())
                if overrun > OVERRUN_BITS:
                    raise BitstreamError(
                        f"stream exhausted: {overrun:.0f} bits decoded past the end of its "
                        f"{len(data)} bytes (truncated or forged)"
                    )
    except BitstreamError:
        raise
    except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:  # constriction's errors
        raise BitstreamError(f"range decoder rejected the stream: {exc}") from exc
    return np.concatenate(parts).astype(np.int64)
