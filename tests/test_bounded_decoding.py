"""A few forged bytes must not buy minutes of decoding: streams that run out are refused early."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from hvq import coder, tables
from hvq.container import FORMAT_VERSION
from hvq.errors import BitstreamError


def _forged(height: int, width: int, mask_bytes: bytes, other: bytes = b"\0" * 4) -> bytes:
    """A file with a valid magic, version and file CRC, the shipped model's tag, a huge image size and
    tiny streams (the classic 95-byte bomb: every stream four zero bytes)."""
    import hvq

    tag = hvq.load_pretrained("reduced").model_tag()
    knobs = (127.0, 0.45, 0.45, 0.0, 0.0, 0.0)  # lambda index 127 (about 1.41), ratios, colour offset
    streams = [mask_bytes] + [other] * 6
    head = struct.pack("<4sBHH8sB", b"\x89HVQ", FORMAT_VERSION, height, width, tag, len(knobs))
    head += struct.pack(f"<{len(knobs)}f", *knobs)
    head += struct.pack(f"<B{len(streams)}I", len(streams), *map(len, streams))
    body = head + b"".join(streams) + struct.pack("<I", 0)
    return body + struct.pack("<I", zlib.crc32(body))


MEASURE = """
import resource, sys, time
import hvq
from hvq.errors import BitstreamError
model = hvq.load_pretrained("reduced")
data = open(sys.argv[1], "rb").read()
t = time.perf_counter()
try:
    model.decompress(data)
    outcome = "decoded"
except BitstreamError as exc:
    outcome = "refused: " + str(exc)
seconds = time.perf_counter() - t
print(outcome)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize(
    "mask",
    [b"\0" * 4, struct.pack("<I", 4) + b"\0" * 8],  # every stream 4 zero bytes / mask sub-streams 4 each
    ids=["all-streams-4-bytes", "mask-substreams-4-bytes"],
)
def test_forged_tiny_file_for_a_huge_image_is_refused_fast_and_small(tmp_path, mask):
    data = _forged(4096, 4096, mask)
    assert len(data) < 120
    path = tmp_path / "bomb.hvq"
    path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120
    )
    outcome, numbers = proc.stdout.strip().splitlines()[-2:]
    seconds, max_rss_kb = float(numbers.split()[0]), int(numbers.split()[1])
    assert outcome.startswith("refused"), proc.stdout + proc.stderr
    assert seconds < 2.0 and max_rss_kb < 1024 * 1024  # under 2 s and 1 GB (the model included)


def test_truncated_stream_is_refused():
    rng = np.random.default_rng(0)
    table = tables.freqs_from_weights(rng.integers(1, 1000, size=(1, 16)))[0]
    symbols = rng.integers(0, 16, size=20000)
    data = coder.encode_symbols(symbols, table)
    assert np.array_equal(coder.decode_symbols(data, table, count=20000), symbols)
    with pytest.raises(BitstreamError):  # by the exhaustion check or by constriction itself
        coder.decode_symbols(data[: len(data) // 8 * 4], table, count=20000)


def test_forged_mask_stops_at_the_exhaustion_check():
    """Without the check this file decodes its masks from zeros and builds tables for a million
    positions (seconds and gigabytes); with it, the mask stream is refused at once."""
    import hvq

    data = _forged(1024, 1024, struct.pack("<I", 4) + b"\0" * 8)
    with pytest.raises(BitstreamError, match="exhausted"):
        hvq.load_pretrained("reduced").decompress(data)


def test_confident_streams_that_end_early_still_decode():
    """Many symbols with almost no information each: the data runs out almost at once, legitimately."""
    freqs = np.full((50000, 8), 1, dtype=np.int64)
    freqs[:, 3] = tables.TOTAL - 7
    symbols = np.full(50000, 3)
    data = coder.encode_symbols(symbols, freqs)
    assert len(data) <= 8
    assert np.array_equal(coder.decode_symbols(data, freqs), symbols)
    shared = freqs[0]
    assert np.array_equal(
        coder.decode_symbols(coder.encode_symbols(symbols, shared), shared, count=50000), symbols
    )
