"""Tests for hvq.container: the .hvq file format and its error handling."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvq.container import FORMAT_VERSION, MAGIC, MAX_KNOBS, MAX_PIXELS, MAX_STREAMS, Container, symbols_crc32
from hvq.errors import BitstreamError

# Offsets of the fixed header fields (see the layout in hvq/container.py).
VERSION_AT, HEIGHT_AT, WIDTH_AT, NKNOBS_AT = 4, 5, 7, 17


def _sample_container() -> Container:
    """A small valid container; knobs are exact float32 values so they round-trip unchanged."""
    rng = np.random.default_rng(0)
    streams = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (12, 0, 33)]
    return Container(
        height=37,
        width=61,
        model_tag=b"tag-0001",
        knobs=(0.5, -2.25, 1024.0),
        streams=streams,
        symbols_crc=symbols_crc32(np.arange(10), np.array([3, 1, 4])),
    )


def _reseal(body_and_crc: bytes | bytearray) -> bytes:
    """Replace the trailing file CRC32 so that a deliberately edited file passes the CRC check."""
    body = bytes(body_and_crc[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def _streams_offset(c: Container) -> int:
    """Offset of the stream-length table: fixed header + knobs + the n_streams byte."""
    return 18 + 4 * len(c.knobs) + 1


# ---------------------------------------------------------------------------------------------------
# round trip


def test_round_trip() -> None:
    c = _sample_container()
    data = c.to_bytes()
    assert data[:4] == MAGIC and data[VERSION_AT] == FORMAT_VERSION
    assert len(data) == 18 + 4 * 3 + 1 + 4 * 3 + 45 + 8
    back = Container.from_bytes(data)
    assert back == c
    assert isinstance(back.model_tag, bytes) and all(isinstance(s, bytes) for s in back.streams)
    assert back.to_bytes() == data
    assert Container.from_bytes(bytearray(data)) == c
    assert Container.from_bytes(memoryview(data)) == c


@pytest.mark.parametrize(
    "height, width, knobs, streams",
    [
        (1, 1, (), [b""]),
        (65535, 1, (), [b"x"]),
        (8192, 8192, tuple(float(i) for i in range(MAX_KNOBS)), [b"ab"] * MAX_STREAMS),
    ],
)
def test_round_trip_edge_sizes(
    height: int, width: int, knobs: tuple[float, ...], streams: list[bytes]
) -> None:
    c = Container(height, width, b"\x00" * 8, knobs, streams, symbols_crc=0xFFFFFFFF)
    assert Container.from_bytes(c.to_bytes()) == c


def test_knobs_are_stored_as_float32() -> None:
    c = Container(4, 4, b"abcdefgh", knobs=(0.1,), streams=[b""])
    (knob,) = Container.from_bytes(c.to_bytes()).knobs
    assert knob == float(np.float32(0.1)) and knob != 0.1


# ---------------------------------------------------------------------------------------------------
# corrupt and foreign files


def test_every_truncation_raises_bitstream_error() -> None:
    data = _sample_container().to_bytes()
    for n in range(len(data)):
        with pytest.raises(BitstreamError) as info:
            Container.from_bytes(data[:n])
        assert info.type is BitstreamError
        assert any(w in str(info.value) for w in ("magic", "truncated", "CRC")), (n, str(info.value))


@pytest.mark.parametrize("xor", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_raises_bitstream_error(xor: int) -> None:
    data = _sample_container().to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= xor
        with pytest.raises(BitstreamError) as info:
            Container.from_bytes(bytes(bad))
        msg = str(info.value)
        if i < 4:
            assert "magic" in msg
        elif i == VERSION_AT:
            assert "version" in msg
        else:
            assert "CRC" in msg, (i, msg)


def test_appended_bytes_raise_bitstream_error() -> None:
    data = _sample_container().to_bytes()
    with pytest.raises(BitstreamError, match="CRC"):
        Container.from_bytes(data + b"\x00")


@pytest.mark.parametrize("magic", [b"\x89PNG", b"HVQ\x89", b"\x00\x00\x00\x00", b"\x89hvq"])
def test_wrong_magic(magic: bytes) -> None:
    data = _sample_container().to_bytes()
    with pytest.raises(BitstreamError, match="magic"):
        Container.from_bytes(_reseal(magic + data[4:]))


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 255])
def test_wrong_version(version: int) -> None:
    bad = bytearray(_sample_container().to_bytes())
    bad[VERSION_AT] = version
    with pytest.raises(BitstreamError, match=f"version {version}"):
        Container.from_bytes(_reseal(bad))


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("delta", [1, 1000, 2**32 - 1 - 33])
def test_stream_lengths_past_the_end(which: int, delta: int) -> None:
    c = _sample_container()
    bad = bytearray(c.to_bytes())
    at = _streams_offset(c) + 4 * which
    (old,) = struct.unpack_from("<I", bad, at)
    struct.pack_into("<I", bad, at, old + delta)
    with pytest.raises(BitstreamError, match="stream lengths"):
        Container.from_bytes(_reseal(bad))


def test_stream_lengths_short_of_the_end() -> None:
    c = _sample_container()
    bad = bytearray(c.to_bytes())
    struct.pack_into("<I", bad, _streams_offset(c), 0)
    with pytest.raises(BitstreamError, match="stream lengths"):
        Container.from_bytes(_reseal(bad))


@pytest.mark.parametrize("n_streams", [0, MAX_STREAMS + 1, 255, 4])
def test_bad_stream_count(n_streams: int) -> None:
    c = _sample_container()
    bad = bytearray(c.to_bytes())
    bad[_streams_offset(c) - 1] = n_streams
    with pytest.raises(BitstreamError):
        Container.from_bytes(_reseal(bad))


@pytest.mark.parametrize("n_knobs", [4, MAX_KNOBS, MAX_KNOBS + 1, 255])
def test_bad_knob_count(n_knobs: int) -> None:
    bad = bytearray(_sample_container().to_bytes())
    bad[NKNOBS_AT] = n_knobs
    with pytest.raises(BitstreamError):
        Container.from_bytes(_reseal(bad))


@pytest.mark.parametrize("height, width", [(65535, 65535), (0, 10), (10, 0), (8193, 8192), (65535, 1025)])
def test_header_with_invalid_image_size(height: int, width: int) -> None:
    assert height * width > MAX_PIXELS or height * width == 0
    bad = bytearray(_sample_container().to_bytes())
    struct.pack_into("<HH", bad, HEIGHT_AT, height, width)
    with pytest.raises(BitstreamError, match="image size"):
        Container.from_bytes(_reseal(bad))


def test_random_bytes_with_magic_prefix() -> None:
    rng = np.random.default_rng(1)
    for n in list(range(0, 80)) + [200, 1000, 5000]:
        for _ in range(3):
            data = MAGIC + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            with pytest.raises(BitstreamError):
                Container.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_sealed_random_files_parse_or_raise_bitstream_error(tail: bytes) -> None:
    """Past the CRC check (a valid magic, version and file CRC), any content must either parse or raise
    BitstreamError, never another exception (IndexError, struct.error, MemoryError, ...)."""
    data = _reseal(MAGIC + bytes([FORMAT_VERSION]) + tail + b"\x00" * 4)
    try:
        c = Container.from_bytes(data)
    except BitstreamError:
        return
    header = _streams_offset(c) + 4 * len(c.streams)
    assert sum(map(len, c.streams)) == len(data) - 8 - header


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(0, 65535),
    width=st.integers(0, 65535),
    knobs=st.lists(st.floats(width=32, allow_nan=False), max_size=MAX_KNOBS + 2),
    lengths=st.lists(st.integers(0, 40), max_size=MAX_STREAMS + 2),
    payload_delta=st.sampled_from([0, 0, 0, -1, 1, 7]),
    crc=st.integers(0, 2**32 - 1),
)
def test_hand_built_headers_against_an_oracle(
    height: int, width: int, knobs: list[float], lengths: list[int], payload_delta: int, crc: int
) -> None:
    """Write headers field by field (bypassing to_bytes); from_bytes must accept exactly the valid ones
    and return their fields."""
    payload = bytes(i % 251 for i in range(max(0, sum(lengths) + payload_delta)))
    body = struct.pack("<4sBHH8sB", MAGIC, FORMAT_VERSION, height, width, b"oracle!!", len(knobs))
    body += struct.pack(f"<{len(knobs)}f", *knobs)
    body += struct.pack(f"<B{len(lengths)}I", len(lengths), *lengths) + payload + struct.pack("<I", crc)
    data = body + struct.pack("<I", zlib.crc32(body))
    valid = (
        0 < height * width <= MAX_PIXELS
        and len(knobs) <= MAX_KNOBS
        and 1 <= len(lengths) <= MAX_STREAMS
        and len(payload) == sum(lengths)
    )
    if not valid:
        with pytest.raises(BitstreamError):
            Container.from_bytes(data)
        return
    c = Container.from_bytes(data)
    assert (c.height, c.width, c.model_tag, c.symbols_crc) == (height, width, b"oracle!!", crc)
    assert c.knobs == tuple(knobs)
    assert [len(s) for s in c.streams] == lengths and b"".join(c.streams) == payload
    assert c.to_bytes() == data


def test_non_bytes_input() -> None:
    with pytest.raises(BitstreamError, match="bytes"):
        Container.from_bytes("\x89HVQ not bytes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# writer-side validation


@pytest.mark.parametrize("height, width", [(0, 5), (5, 0), (65536, 5), (5, 65536), (-1, 5)])
def test_to_bytes_refuses_out_of_range_sizes(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="size"):
        Container(height, width, b"abcdefgh", streams=[b""]).to_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_tag": b"short"},
        {"model_tag": b"nine byte"},
        {"knobs": (0.0,) * (MAX_KNOBS + 1)},
        {"streams": []},
        {"streams": [b""] * (MAX_STREAMS + 1)},
    ],
)
def test_to_bytes_refuses_unrepresentable_fields(kwargs: dict) -> None:
    args = {"height": 4, "width": 4, "model_tag": b"abcdefgh", "streams": [b""]} | kwargs
    with pytest.raises(ValueError):
        Container(**args).to_bytes()


def test_to_bytes_refuses_what_from_bytes_rejects() -> None:
    with pytest.raises(ValueError):
        Container(65535, 65535, b"abcdefgh", streams=[b""]).to_bytes()


# ---------------------------------------------------------------------------------------------------
# symbols_crc32


def test_symbols_crc32_definition() -> None:
    a, b = np.array([1, -2, 70000]), np.array([[5, 6], [7, 8]])
    want = zlib.crc32(struct.pack("<7i", 1, -2, 70000, 5, 6, 7, 8))
    assert symbols_crc32(a, b) == want
    assert symbols_crc32(a.astype(np.int32), np.asfortranarray(b)) == want  # dtype, memory order
    assert symbols_crc32() == 0


def test_symbols_crc32_detects_one_changed_symbol() -> None:
    rng = np.random.default_rng(2)
    s = rng.integers(0, 16384, size=(4, 32, 32))
    base = symbols_crc32(s)
    for _ in range(50):
        t = s.copy()
        idx = tuple(int(rng.integers(0, n)) for n in s.shape)
        t[idx] = (t[idx] + int(rng.integers(1, 16384))) % 16384
        assert symbols_crc32(t) != base
    assert symbols_crc32(s[:2], s[2:]) == base  # concatenation order is all that matters
    assert symbols_crc32(s[2:], s[:2]) != base
