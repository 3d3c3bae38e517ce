"""The ``.hvq`` file format: a small versioned header, named streams, and two CRC32 checks.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"\\x89HVQ"
    4       1     format version (FORMAT_VERSION)
    5       2     height            (1 .. 65535)
    7       2     width             (1 .. 65535)
    9       8     model tag         (identifies the model config + weights that wrote the file)
    17      1     n_knobs           (0 .. MAX_KNOBS)
    18      4*n   knobs             float32 each (rate knobs the decoder needs: lambda, ratios, ...)
    ..      1     n_streams         (1 .. MAX_STREAMS)
    ..      4*m   stream lengths    uint32 each
    ..      ...   stream payloads   concatenated, in order
    end-8   4     CRC32 of the decoded symbols (the decoder recomputes it after decoding)
    end-4   4     CRC32 of every byte before it (corruption and truncation show up here first)

The first CRC catches damaged files before any decoding starts. The second catches the classic
failure of learned codecs, an encoder/decoder probability mismatch (another device, library or
model): the decoder reports it instead of returning a wrong image. Every problem raises
:class:`hvq.errors.BitstreamError` with a message; sizes are checked against the real file length
before anything is allocated, and the pixel count is bounded by ``MAX_PIXELS``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from hvq.errors import BitstreamError

MAGIC = b"\x89HVQ"
FORMAT_VERSION = 3
MAX_KNOBS = 16
#: A single image has 7 streams; a tiled one (:mod:`hvq.tiles`) one per tile, at most 67 below the
#: codec's pixel limit.
MAX_STREAMS = 128
#: Largest image the decoder accepts (about 64 megapixels).
MAX_PIXELS = 1 << 26
_FIXED = struct.Struct("<4sBHH8sB")


@dataclass
class Container:
    """Parsed contents of a ``.hvq`` file.

    Attributes:
        height, width: the original image size in pixels.
        model_tag: 8 bytes naming the model that wrote the file.
        knobs: float32 settings the decoder needs (meaning defined by the model).
        streams: the coded payloads, in order.
        symbols_crc: CRC32 of the decoded symbols, checked after decoding.
    """

    height: int
    width: int
    model_tag: bytes
    knobs: tuple[float, ...] = ()
    streams: list[bytes] = field(default_factory=list)
    symbols_crc: int = 0

    def to_bytes(self) -> bytes:
        """Serialise; raises ``ValueError`` for values the format cannot hold."""
        if not (1 <= self.height <= 0xFFFF and 1 <= self.width <= 0xFFFF):
            raise ValueError(f"image size {self.height}x{self.width} outside 1..65535")
        if self.height * self.width > MAX_PIXELS:
            raise ValueError(f"image size {self.height}x{self.width} above MAX_PIXELS = {MAX_PIXELS}")
        if len(self.model_tag) != 8:
            raise ValueError("model_tag must be 8 bytes")
        if len(self.knobs) > MAX_KNOBS or not 1 <= len(self.streams) <= MAX_STREAMS:
            raise ValueError("too many knobs or streams")
        head = _FIXED.pack(MAGIC, FORMAT_VERSION, self.height, self.width, self.model_tag, len(self.knobs))
        head += struct.pack(f"<{len(self.knobs)}f", *self.knobs)
        head += struct.pack(f"<B{len(self.streams)}I", len(self.streams), *(len(s) for s in self.streams))
        body = head + b"".join(self.streams) + struct.pack("<I", self.symbols_crc & 0xFFFFFFFF)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> Container:
        """Parse and validate; raises :class:`BitstreamError` on any problem."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 4 or data[:4] != MAGIC:
            raise BitstreamError("not an .hvq file (wrong magic bytes)")
        if len(data) < _FIXED.size + 2 + 8:
            raise BitstreamError(f"truncated .hvq file ({len(data)} bytes)")
        _, version, height, width, tag, n_knobs = _FIXED.unpack_from(data, 0)
        if version != FORMAT_VERSION:
            raise BitstreamError(
                f"unsupported .hvq format version {version} (this hvq reads version {FORMAT_VERSION})"
            )
        (stored_crc,) = struct.unpack_from("<I", data, len(data) - 4)
        if zlib.crc32(data[:-4]) != stored_crc:
            raise BitstreamError("corrupt or truncated .hvq file (file CRC32 mismatch)")
        if height == 0 or width == 0 or height * width > MAX_PIXELS:
            raise BitstreamError(f"invalid image size {height}x{width} in header")
        if n_knobs > MAX_KNOBS:
            raise BitstreamError(f"header declares {n_knobs} knobs (at most {MAX_KNOBS})")
        pos = _FIXED.size
        if pos + 4 * n_knobs + 1 > len(data) - 8:
            raise BitstreamError("truncated header")
        knobs = struct.unpack_from(f"<{n_knobs}f", data, pos)
        pos += 4 * n_knobs
        n_streams = data[pos]
        pos += 1
        if not 1 <= n_streams <= MAX_STREAMS or pos + 4 * n_streams > len(data) - 8:
            raise BitstreamError(f"invalid stream count {n_streams}")
        lengths = struct.unpack_from(f"<{n_streams}I", data, pos)
        pos += 4 * n_streams
        if pos + sum(lengths) != len(data) - 8:
            raise BitstreamError(
                f"stream lengths ({sum(lengths)} bytes) do not match the file ({len(data) - 8 - pos} bytes)"
            )
        streams = []
        for n in lengths:
            streams.append(data[pos : pos + n])
            pos += n
        (symbols_crc,) = struct.unpack_from("<I", data, pos)
        return cls(height, width, tag, tuple(knobs), streams, symbols_crc)


def symbols_crc32(*arrays) -> int:
    """CRC32 over int32 little-endian copies of the given symbol arrays, in order."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(a), dtype="<i4").tobytes(), crc)
    return crc
