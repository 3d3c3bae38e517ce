"""A deterministic fuzz corpus for the ``.hvq`` decoder and a time-bounded single decode.

Shared by ``tests/test_fuzz.py`` (a CI slice of a few hundred inputs) and
``benchmarks/fuzz_decoder.py`` (the long run in rlimited worker processes).

The corpus starts from a few *valid* files (:data:`SEED_SPECS`: small images of different sizes,
ratios and lambdas, coded by the model under test) and derives every input from them with a named
mutation (:data:`MUTATIONS`). Input ``i`` of kind ``k`` depends only on ``(seed, k, i)``, so any input
in a report can be rebuilt with :func:`make_case`. Three families:

* **raw** mutations (truncation, byte and bit flips, splices, random bytes with or without the magic)
  leave the trailing file CRC32 as it falls, so almost all of them stop at the first checks;
* **header** mutations change one header field (version, size, tag, knob count or value, stream count,
  stream lengths, symbols CRC) and then *recompute* the file CRC, so the deeper checks are reached;
* **payload** mutations change the coded streams (bytes, whole streams, lengths moved between
  streams, the mask split, streams taken from another file) and recompute the file CRC, so the range
  decoder and the decoded-symbols CRC32 are exercised.

:func:`run_one` decodes one input under a wall-clock bound and classifies the outcome.
"""

from __future__ import annotations

import hashlib
import math
import random
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from hvq.container import MAGIC
from hvq.errors import BitstreamError

#: Outcomes that count as correct behaviour of the decoder.
OK_STATUSES = ("decoded", "BitstreamError")
#: Every outcome :func:`run_one` can return (``memory``: MemoryError or an allocator failure).
STATUSES = ("decoded", "BitstreamError", "error", "timeout", "memory")
#: Header offsets (see the layout in ``hvq/container.py``).
VERSION_AT, HEIGHT_AT, WIDTH_AT, TAG_AT, NKNOBS_AT, KNOBS_AT = 4, 5, 7, 9, 17, 18


@dataclass(frozen=True)
class SeedSpec:
    """One valid seed file: image size, rate knobs and the seed of its synthetic picture."""

    name: str
    height: int
    width: int
    lam: float
    coarse: float
    medium: float
    seed: int


#: The valid files every mutation starts from (sizes, ratios and lambdas chosen to differ).
SEED_SPECS: tuple[SeedSpec, ...] = (
    SeedSpec("1x1", 1, 1, lam=2.0, coarse=0.5, medium=0.5, seed=1),
    SeedSpec("7x13", 7, 13, lam=0.25, coarse=0.0, medium=1.0, seed=2),
    SeedSpec("24x40", 24, 40, lam=8.0, coarse=1.0, medium=0.0, seed=3),
    SeedSpec("33x17", 33, 17, lam=1.0, coarse=0.3, medium=0.6, seed=4),
    SeedSpec("48x64", 48, 64, lam=4.0, coarse=0.2, medium=0.3, seed=5),
)


def build_smoke_model(vary_means: bool = False):
    """The small test model: ``HVQCodec(load_config("smoke").model)`` with seed 0, eval mode, tables filled.

    The untrained model's hyper-synthesis output layer is zero-initialised, so every predicted mean is
    exactly 0 (on the mean grid). ``vary_means=True`` gives that layer seeded random weights, so the
    means vary across positions as a trained model's do (used where a test needs tables that react
    to small weight changes).
    """
    from hvq.config import load_config
    from hvq.model import HVQCodec

    torch.manual_seed(0)
    model = HVQCodec(load_config("smoke").model).eval()
    if vary_means:
        from helpers import vary_hyper_tables  # tests/helpers.py (tests/ is on sys.path here too)

        return vary_hyper_tables(model, seed=1, std=0.3)  # calls model.update()
    model.update()
    return model


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A deterministic ``(3, height, width)`` picture in [0, 1]: gradients plus a noisy region."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([xx, yy, 0.5 * (xx + yy)])
    noise = torch.rand(3, height, width, generator=g) * (xx > 0.5).float()
    return (0.7 * base + 0.3 * noise).clamp(0, 1)


def make_seed_files(model, specs: Sequence[SeedSpec] = SEED_SPECS) -> list[bytes]:
    """Compress each spec's synthetic image with ``model``: the valid files of the corpus."""
    return [
        model.compress(synthetic_image(s.height, s.width, s.seed), s.lam, s.coarse, s.medium) for s in specs
    ]


# ---------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Byte offsets of the fields of a *valid* ``.hvq`` file."""

    n_knobs: int
    n_streams_at: int
    lengths_at: int
    lengths: tuple[int, ...]
    payload_at: int
    symbols_crc_at: int

    def stream_span(self, i: int) -> tuple[int, int]:
        """``(start, end)`` byte offsets of stream ``i``."""
        start = self.payload_at + sum(self.lengths[:i])
        return start, start + self.lengths[i]


def parse_layout(data: bytes) -> Layout:
    """Field offsets of a valid file (no checks beyond what the offsets need)."""
    n_knobs = data[NKNOBS_AT]
    n_streams_at = KNOBS_AT + 4 * n_knobs
    n_streams = data[n_streams_at]
    lengths = struct.unpack_from(f"<{n_streams}I", data, n_streams_at + 1)
    payload_at = n_streams_at + 1 + 4 * n_streams
    return Layout(n_knobs, n_streams_at, n_streams_at + 1, lengths, payload_at, len(data) - 8)


def reseal(data: bytes | bytearray) -> bytes:
    """Recompute the trailing file CRC32 so that an edited file passes the first check."""
    body = bytes(data[:-4]) if len(data) >= 4 else b""
    return body + struct.pack("<I", zlib.crc32(body))


def rebuild(data: bytes, streams: Sequence[bytes], symbols_crc: bytes | None = None) -> bytes:
    """Same header as ``data`` (knobs included) with new ``streams`` (lengths updated), resealed."""
    lay = parse_layout(data)
    head = bytearray(data[: lay.n_streams_at])
    head += struct.pack(f"<B{len(streams)}I", len(streams), *(len(s) for s in streams))
    crc = symbols_crc if symbols_crc is not None else data[lay.symbols_crc_at : lay.symbols_crc_at + 4]
    return reseal(bytes(head) + b"".join(streams) + crc + b"\0\0\0\0")


def streams_of(data: bytes) -> list[bytes]:
    """The streams of a valid file."""
    lay = parse_layout(data)
    return [data[slice(*lay.stream_span(i))] for i in range(len(lay.lengths))]


# ------------------------------------------------------------------------------------- mutations

Mutator = Callable[[random.Random, Sequence[bytes]], bytes]

#: Interesting float32 values for the knobs (lambda, coarse ratio, medium ratio).
SPECIAL_FLOATS: tuple[float, ...] = (
    math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1.0, 0.5, 1.0000001, -1e-7, 1e-45, 1e-38,
    3.4e38, 0.25, 8.0, 0.2499, 8.0001, 0.125, 16.0, 2.0, 1e9,
)  # fmt: skip
#: Interesting uint32 values for stream lengths, the mask split and CRCs.
SPECIAL_U32: tuple[int, ...] = (0, 1, 3, 4, 5, 8, 255, 256, 65535, 1 << 16, 1 << 24, (1 << 31) - 1, 1 << 31,
                                (1 << 32) - 4, (1 << 32) - 1)  # fmt: skip
#: Interesting image sides, and sizes of millions of pixels around ``hvq.container.MAX_PIXELS`` (2**26).
SMALL_SIDES: tuple[int, ...] = (0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 64, 100, 255, 256, 1000, 1024)
HUGE_SIZES: tuple[tuple[int, int], ...] = (
    (8192, 8192), (65535, 1024), (1024, 65535), (65535, 1025), (65535, 65535), (4096, 4096), (2048, 1024),
    (1 << 15, 1 << 11), (5000, 4000),
)  # fmt: skip


def _pick(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    return seeds[rng.randrange(len(seeds))]


def _pick_two(rng: random.Random, seeds: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Two different seed files (in random order)."""
    i, j = rng.sample(range(len(seeds)), 2)
    return seeds[i], seeds[j]


def _flip(rng: random.Random, buf: bytearray, lo: int, hi: int, count: int) -> None:
    """XOR ``count`` random bytes in ``buf[lo:hi]`` with a nonzero value (no-op if the range is empty)."""
    if hi <= lo:
        return
    for _ in range(count):
        buf[rng.randrange(lo, hi)] ^= rng.randrange(1, 256)


def m_truncate(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A prefix of a valid file (any length, the empty file included)."""
    d = _pick(rng, seeds)
    return d[: rng.randrange(len(d))]


def m_truncate_resealed(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A prefix with a correct file CRC appended: reaches the size and length checks."""
    d = _pick(rng, seeds)
    return reseal(d[: rng.randrange(4, len(d) - 4)] + b"\0\0\0\0")


def m_byte_flip(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One byte changed anywhere."""
    d = bytearray(_pick(rng, seeds))
    _flip(rng, d, 0, len(d), 1)
    return bytes(d)


def m_bit_flip(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One bit changed anywhere."""
    d = bytearray(_pick(rng, seeds))
    d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    return bytes(d)


def m_multi_flip(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """2 to 16 bytes changed anywhere."""
    d = bytearray(_pick(rng, seeds))
    _flip(rng, d, 0, len(d), rng.randint(2, 16))
    return bytes(d)


def m_splice(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A prefix of one valid file followed by a suffix of another."""
    a, b = _pick(rng, seeds), _pick(rng, seeds)
    return a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1) :]


def m_splice_resealed(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A splice at the same offset in two different files, file CRC recomputed."""
    a, b = _pick_two(rng, seeds)
    cut = rng.randrange(4, min(len(a), len(b)) - 4)
    return reseal(a[:cut] + b[cut:])


def m_random(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Random bytes of random length (0 to 400)."""
    return rng.randbytes(rng.randrange(401))


def m_random_magic(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """The magic, then random bytes."""
    return MAGIC + rng.randbytes(rng.randrange(401))


def m_random_magic_resealed(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """The magic and version 1, random bytes, a correct file CRC: random headers past the CRC check."""
    return reseal(MAGIC + b"\x01" + rng.randbytes(rng.randrange(14, 400)) + b"\0\0\0\0")


def m_append(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Garbage after a valid file (resealed or not)."""
    d = _pick(rng, seeds) + rng.randbytes(rng.randint(1, 64))
    return reseal(d) if rng.random() < 0.5 else d


def m_header_version(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Another format version byte, resealed."""
    d = bytearray(_pick(rng, seeds))
    d[VERSION_AT] = rng.choice((0, 2, 3, 127, 128, 255))
    return reseal(d)


def m_header_size_small(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Height and/or width changed to another value of at most 1024 x 1024 pixels, resealed."""
    d = bytearray(_pick(rng, seeds))
    h, w = struct.unpack_from("<HH", d, HEIGHT_AT)
    choice = rng.randrange(3)
    if choice in (0, 2):
        h = rng.choice(SMALL_SIDES) if rng.random() < 0.7 else max(0, h + rng.choice((-1, 1)))
    if choice in (1, 2):
        w = rng.choice(SMALL_SIDES) if rng.random() < 0.7 else max(0, w + rng.choice((-1, 1)))
    struct.pack_into("<HH", d, HEIGHT_AT, h, w)
    return reseal(d)


def m_header_size_huge(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A size of millions of pixels (at, below or above ``hvq.container.MAX_PIXELS``) with the tiny
    streams of a small file, resealed: the decoder must not allocate what the header asks for."""
    d = bytearray(_pick(rng, seeds))
    struct.pack_into("<HH", d, HEIGHT_AT, *rng.choice(HUGE_SIZES))
    return reseal(d)


def m_header_tag(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """A model tag byte changed (another model), resealed."""
    d = bytearray(_pick(rng, seeds))
    _flip(rng, d, TAG_AT, TAG_AT + 8, 1)
    return reseal(d)


def m_header_n_knobs(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Another knob count (the rest of the header then misparses), resealed."""
    d = bytearray(_pick(rng, seeds))
    d[NKNOBS_AT] = rng.choice((0, 1, 2, 4, 5, 15, 16, 17, 255))
    return reseal(d)


def m_header_knob_value(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One knob set to a special float (NaN, inf, out of range, edge of range...) or random bits."""
    d = bytearray(_pick(rng, seeds))
    j = rng.randrange(parse_layout(bytes(d)).n_knobs)
    if rng.random() < 0.8:
        struct.pack_into("<f", d, KNOBS_AT + 4 * j, rng.choice(SPECIAL_FLOATS))
    else:
        struct.pack_into("<I", d, KNOBS_AT + 4 * j, rng.getrandbits(32))
    return reseal(d)


def m_header_n_streams(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Another stream count (the length table then misparses), resealed."""
    d = bytearray(_pick(rng, seeds))
    d[parse_layout(bytes(d)).n_streams_at] = rng.choice((0, 1, 2, 6, 8, 31, 32, 33, 255))
    return reseal(d)


def m_header_stream_length(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One stream length set to a special or off-by-one value (the sum then disagrees), resealed."""
    d = bytearray(_pick(rng, seeds))
    lay = parse_layout(bytes(d))
    i = rng.randrange(len(lay.lengths))
    nearby = max(0, lay.lengths[i] + rng.choice((-4, -1, 1, 4)))
    value = rng.choice(SPECIAL_U32) if rng.random() < 0.6 else nearby
    struct.pack_into("<I", d, lay.lengths_at + 4 * i, value)
    return reseal(d)


def m_header_symbols_crc(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Another decoded-symbols CRC32 (streams intact), resealed: only the final check can see it."""
    d = bytearray(_pick(rng, seeds))
    lay = parse_layout(bytes(d))
    old = struct.unpack_from("<I", d, lay.symbols_crc_at)[0]
    struct.pack_into("<I", d, lay.symbols_crc_at, old ^ (1 << rng.randrange(32)))
    return reseal(d)


def m_payload_flip(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """1 to 4 bytes changed inside the coded streams, resealed: reaches the range decoder."""
    d = bytearray(_pick(rng, seeds))
    lay = parse_layout(bytes(d))
    _flip(rng, d, lay.payload_at, lay.symbols_crc_at, rng.randint(1, 4))
    return reseal(d)


def m_payload_stream_fill(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One non-empty stream replaced by zeros, 0xFF or random bytes of the same length, resealed."""
    d = _pick(rng, seeds)
    streams = streams_of(d)
    i = rng.choice([k for k, s in enumerate(streams) if s])
    n = len(streams[i])
    streams[i] = rng.choice((bytes(n), b"\xff" * n, rng.randbytes(n)))
    return rebuild(d, streams)


def m_payload_stream_resize(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One stream shortened, emptied or extended (lengths updated), resealed."""
    d = _pick(rng, seeds)
    streams = streams_of(d)
    i = rng.randrange(len(streams))
    s = streams[i]
    op = rng.randrange(4)
    if op == 0:
        streams[i] = s[: rng.randrange(len(s) + 1)]
    elif op == 1:
        streams[i] = s[: max(0, len(s) - 4 * rng.randint(1, 3))]
    elif op == 2:
        streams[i] = b""
    else:
        streams[i] = s + rng.randbytes(4 * rng.randint(1, 8))
    return rebuild(d, streams)


def m_payload_move_boundary(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """Bytes moved from one stream to the next (the sum of lengths still matches), resealed."""
    d = bytearray(_pick(rng, seeds))
    lay = parse_layout(bytes(d))
    i = rng.randrange(len(lay.lengths) - 1)
    delta = rng.choice((-8, -4, -1, 1, 4, 8))
    a, b = lay.lengths[i] + delta, lay.lengths[i + 1] - delta
    if a < 0 or b < 0:
        a, b = lay.lengths[i + 1], lay.lengths[i]  # swap the two lengths instead
    struct.pack_into("<II", d, lay.lengths_at + 4 * i, a, b)
    return reseal(d)


def m_payload_mask_split(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """The 4-byte split of the mask stream changed (special or nearby value), resealed."""
    d = _pick(rng, seeds)
    streams = streams_of(d)
    m = bytearray(streams[0])
    split = int.from_bytes(m[:4], "little")
    value = rng.choice(SPECIAL_U32) if rng.random() < 0.5 else max(0, split + rng.choice((-4, -1, 1, 4)))
    m[:4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    streams[0] = bytes(m)
    return rebuild(d, streams)


def m_payload_stream_swap(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One stream taken from another valid file (or two streams exchanged), resealed."""
    d, other = _pick_two(rng, seeds)
    streams = streams_of(d)
    i = rng.randrange(len(streams))
    if rng.random() < 0.5:
        streams[i] = streams_of(other)[i]
    else:
        j = rng.choice([k for k in range(len(streams)) if k != i])
        streams[i], streams[j] = streams[j], streams[i]
    return rebuild(d, streams)


def m_payload_cross_header(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """The header (size and knobs) of one file with all the streams and symbols CRC of another."""
    a, b = _pick_two(rng, seeds)
    lay_b = parse_layout(b)
    return rebuild(a, streams_of(b), b[lay_b.symbols_crc_at : lay_b.symbols_crc_at + 4])


#: Every mutation kind, by name, in a fixed order.
MUTATIONS: dict[str, Mutator] = {
    "truncate": m_truncate,
    "truncate_resealed": m_truncate_resealed,
    "byte_flip": m_byte_flip,
    "bit_flip": m_bit_flip,
    "multi_flip": m_multi_flip,
    "splice": m_splice,
    "splice_resealed": m_splice_resealed,
    "random": m_random,
    "random_magic": m_random_magic,
    "random_magic_resealed": m_random_magic_resealed,
    "append": m_append,
    "header_version": m_header_version,
    "header_size_small": m_header_size_small,
    "header_size_huge": m_header_size_huge,
    "header_tag": m_header_tag,
    "header_n_knobs": m_header_n_knobs,
    "header_knob_value": m_header_knob_value,
    "header_n_streams": m_header_n_streams,
    "header_stream_length": m_header_stream_length,
    "header_symbols_crc": m_header_symbols_crc,
    "payload_flip": m_payload_flip,
    "payload_stream_fill": m_payload_stream_fill,
    "payload_stream_resize": m_payload_stream_resize,
    "payload_move_boundary": m_payload_move_boundary,
    "payload_mask_split": m_payload_mask_split,
    "payload_stream_swap": m_payload_stream_swap,
    "payload_cross_header": m_payload_cross_header,
}


@dataclass(frozen=True)
class Case:
    """One fuzz input: its index, mutation kind and bytes."""

    index: int
    kind: str
    data: bytes


def make_case(seeds: Sequence[bytes], kind: str, index: int, seed: int = 0) -> Case:
    """Input ``index`` of ``kind``: a pure function of ``(seeds, kind, index, seed)``."""
    rng = random.Random(f"hvq-fuzz:{seed}:{kind}:{index}")
    return Case(index, kind, MUTATIONS[kind](rng, seeds))


def corpus(
    seeds: Sequence[bytes], n: int, seed: int = 0, kinds: Sequence[str] | None = None, start: int = 0
) -> Iterator[Case]:
    """``n`` inputs, the kinds taken round-robin (so each gets an equal share), deterministic."""
    kinds = list(kinds or MUTATIONS)
    for i in range(start, start + n):
        yield make_case(seeds, kinds[i % len(kinds)], i, seed)


def craft_flat_file(model, height: int, width: int, lam: float = 2.0) -> bytes:
    """A *valid* file for a ``height x width`` image that costs almost nothing to store.

    Every 16x16 cell is coded coarse (coarse ratio 1, so the mask is ~0.006 bit per cell), every z
    element takes its most probable value and every index the most probable one under its table. The
    result is a few hundred kilobytes for 64 megapixels: the decoder has to run the whole network at
    the header's size, so this measures what a tiny file can make the decoder allocate.
    """
    from hvq.symbols import STRIDES, Symbols, padded_size, z_side

    hp_, wp_ = padded_size(height, width)
    masks = [torch.zeros(1, 1, hp_ // 4, wp_ // 4), torch.zeros(1, 1, hp_ // 8, wp_ // 8),
             torch.ones(1, 1, hp_ // 16, wp_ // 16)]  # fmt: skip
    index = model.lambda_index(lam)
    cfg = model.cfg
    z_hats, idxs, freqs, log_scales = [], [], [], []
    for g in range(3):
        hg, wg = hp_ // STRIDES[g], wp_ // STRIDES[g]
        zf = model.z_freqs[0 if cfg.shared_hyperprior else g]
        best = (zf.argmax(1) - cfg.z_support).float().view(1, -1, 1, 1)
        z = best.expand(1, cfg.z_channels, z_side(hg), z_side(wg)).contiguous()
        f, log_s, pos = model.index_tables(g, z, masks[g], index)
        idx = torch.zeros(1, hg, wg, dtype=torch.int64)
        idx.view(-1)[torch.from_numpy(pos)] = torch.from_numpy(f.argmax(1))
        z_hats.append(z)
        idxs.append(idx)
        freqs.append(f)
        log_scales.append(log_s)
    sym = Symbols(height, width, model.grid_lambda(index), 1.0, 0.0, masks, z_hats, idxs, freqs, log_scales)
    return model.encode(sym)


def header_pixels(data: bytes) -> int:
    """``height * width`` as a header states it (0 if the data is too short to hold one)."""
    if len(data) < WIDTH_AT + 2:
        return 0
    h, w = struct.unpack_from("<HH", data, HEIGHT_AT)
    return h * w


# -------------------------------------------------------------------------------------- decoding


class DecodeTimeout(BaseException):
    """Raised by the alarm inside a decode that runs past its bound (a ``BaseException``, so no
    ``except Exception`` in the code under test can swallow it)."""


@dataclass(frozen=True)
class Outcome:
    """How one decode ended.

    ``status``: one of :data:`STATUSES`; ``detail``: the exception type and message (or the output
    shape); ``seconds``: wall time of the decode; ``digest``: sha1 of a decoded image's bytes.
    """

    status: str
    detail: str
    seconds: float
    digest: str = ""

    @property
    def ok(self) -> bool:
        """True for an image or a :class:`BitstreamError`, the only acceptable results."""
        return self.status in OK_STATUSES


def _is_memory_error(exc: BaseException) -> bool:
    msg = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in msg or "DefaultCPUAllocator" in msg)
    )


def _check_image(x: object, data: bytes) -> str | None:
    """Why a decoded value is not a valid image for ``data``'s header (None if it is)."""
    if not isinstance(x, torch.Tensor):
        return f"decompress returned {type(x).__name__}, not a tensor"
    h, w = struct.unpack_from("<HH", data, HEIGHT_AT)
    if tuple(x.shape) != (3, h, w) or x.dtype != torch.float32:
        return f"decoded {tuple(x.shape)} {x.dtype}, header says (3, {h}, {w}) float32"
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        return "decoded image has values outside [0, 1]"
    return None


def run_one(model, data: bytes, time_limit_s: float) -> Outcome:
    """Decode ``data`` with ``model.decompress`` within ``time_limit_s`` seconds and classify it.

    The bound is a ``SIGALRM`` interval timer, so this must run on the main thread; an alarm that
    fires inside a long C call takes effect when the call returns, so a decode that *returns* after the
    bound also counts as a timeout. A decoded value must be a float32 ``(3, H, W)`` tensor of the
    header's size with values in [0, 1], or the outcome is an ``error``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_one needs the main thread (it uses SIGALRM)")

    def on_alarm(signum, frame):
        raise DecodeTimeout(f"decode ran past {time_limit_s} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    t0 = time.perf_counter()
    try:
        try:
            x = model.decompress(data)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t0
        if dt > time_limit_s:
            return Outcome("timeout", f"decode returned after {dt:.2f} s", dt)
        problem = _check_image(x, data)
        if problem:
            return Outcome("error", problem, dt)
        digest = hashlib.sha1(x.numpy().tobytes()).hexdigest()[:16]
        return Outcome("decoded", f"{tuple(x.shape)}", dt, digest)
    except DecodeTimeout as exc:
        return Outcome("timeout", str(exc), time.perf_counter() - t0)
    except BitstreamError as exc:
        dt = time.perf_counter() - t0
        return Outcome("timeout" if dt > time_limit_s else "BitstreamError", str(exc), dt)
    except Exception as exc:  # everything else is a finding
        status = "memory" if _is_memory_error(exc) else "error"
        return Outcome(status, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def describe(case: Case, outcome: Outcome) -> str:
    """One line for a failure report: how to rebuild the input and what happened."""
    return (
        f"make_case(seeds, {case.kind!r}, {case.index}) [{len(case.data)} bytes, header "
        f"{header_pixels(case.data)} px]: {outcome.status} after {outcome.seconds:.2f} s: {outcome.detail}"
    )


__all__ = [
    "MUTATIONS", "OK_STATUSES", "SEED_SPECS", "STATUSES", "Case", "DecodeTimeout", "Layout",
    "Outcome", "SeedSpec", "build_smoke_model", "corpus", "craft_flat_file", "describe", "header_pixels",
    "make_case", "make_seed_files", "parse_layout", "rebuild", "reseal", "run_one", "streams_of",
    "synthetic_image",
]  # fmt: skip
