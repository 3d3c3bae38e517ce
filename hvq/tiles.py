"""Large photos in bounded memory: a grid of overlapping tiles, each coded as an ordinary ``.hvq`` file.

The codec's networks use GroupNorm, whose statistics span the whole feature map, so they cannot run
in stripes with a halo and give the whole-image result; and the integer index tables are ``(n, K)``
per granularity, in proportion to the pixels. So an image whose padded size exceeds ``TILE_PIXELS``
is cut into a grid of tiles of at most ``TILE_SIDE x TILE_SIDE`` pixels that overlap by at least
``TILE_OVERLAP`` pixels, and each tile is coded independently (its own masks, z, indices and colour
offset; the same lambda, ratios and, cropped, region of interest). The decoder decodes one tile at a
time and blends the overlaps with linear ramps into one preallocated image, so the peak memory is
one tile's coding plus the image itself, whatever its size. Along one axis, two neighbours::

    tile A  [0, 1024)      weight 1 ... 1, then linear from 1 down to 0 across [992, 1024)
    tile B  [992, 2016)    weight linear from 0 up to 1 across [992, 1024), then 1 ... 1

A tiled file is a :class:`hvq.container.Container` whose knobs are ``(TILED_KNOB, side, overlap,
rows, columns)`` (a single file's first knob is its lambda index, never negative) and whose streams
are the tiles' own ``.hvq`` files, row by row; its symbols CRC is unused (0): every tile carries its
own. The grid depends only on ``(H, W, side, overlap)``; the decoder recomputes it from the header and
checks it against the tile count and every tile's size before decoding anything.

Images up to ``TILE_PIXELS`` (Kodak's 768x512 and anything up to a megapixel) stay single files, byte
for byte what the codec wrote before tiles existed. This module knows no network: the codec
(:meth:`hvq.model.HVQCodec.compress` / ``decompress``) hands it the function that codes one tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hvq.container import Container
from hvq.errors import BitstreamError
from hvq.symbols import MAX_CODEC_PIXELS, PAD_MULTIPLE, padded_size

#: Images whose padded size is above this many pixels are tiled (a megapixel: 1024x1024).
TILE_PIXELS = 1 << 20
#: Largest tile side (a multiple of ``PAD_MULTIPLE``, so tiles need no padding but at the image edge).
TILE_SIDE = 1024
#: Least overlap of neighbouring tiles, in pixels: the width of the blending ramp.
TILE_OVERLAP = 32
#: First knob of a tiled file (a single file's first knob is its lambda index, 0 or more).
TILED_KNOB = -1.0
#: Knobs of a tiled file: the marker, the tile side, the overlap, rows, columns.
N_TILED_KNOBS = 5
#: Tile sides a decoder accepts (a file names its own, so a later default still reads older files).
SIDE_RANGE = (64, 4096)

Span = tuple[int, int]  # [start, stop) along one axis


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an ``height x width`` image lie: ``row_spans`` and ``col_spans`` are the
    ``[start, stop)`` intervals along each axis; tile ``(r, c)`` is rows ``row_spans[r]`` by columns
    ``col_spans[c]``, and tiles are stored row by row."""

    height: int
    width: int
    side: int
    overlap: int
    row_spans: tuple[Span, ...]
    col_spans: tuple[Span, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the grid."""
        return len(self.row_spans), len(self.col_spans)

    def boxes(self) -> list[tuple[Span, Span]]:
        """``(row span, column span)`` of every tile, in storage order (row by row)."""
        return [(rows, cols) for rows in self.row_spans for cols in self.col_spans]


def needs_tiles(height: int, width: int) -> bool:
    """Whether an image is coded as tiles: its padded size is above ``TILE_PIXELS``."""
    hp, wp = padded_size(height, width)
    return hp * wp > TILE_PIXELS


def axis_spans(length: int, side: int, overlap: int) -> tuple[Span, ...]:
    """Tile intervals along one axis of ``length`` pixels: as few tiles as sides of at most ``side``
    allow with ``overlap`` between neighbours, all of one size (a multiple of ``PAD_MULTIPLE`` when
    there are several), spread evenly from one end to the other. Neighbours overlap by at least
    ``overlap`` pixels; a pixel lies in at most two tiles."""
    if length <= side:
        return ((0, length),)
    n = -(-(length - overlap) // (side - overlap))
    size = min(side, -(-(length + (n - 1) * overlap) // (n * PAD_MULTIPLE)) * PAD_MULTIPLE)
    starts = [i * (length - size) // (n - 1) for i in range(n)]
    return tuple((s, s + size) for s in starts)


def tile_grid(height: int, width: int, side: int | None = None, overlap: int | None = None) -> TileGrid:
    """The grid of an ``height x width`` image (``side`` and ``overlap`` default to ``TILE_SIDE`` and
    ``TILE_OVERLAP``); it depends on nothing else, so encoder and decoder agree."""
    side = TILE_SIDE if side is None else side
    overlap = TILE_OVERLAP if overlap is None else overlap
    if side % PAD_MULTIPLE or not 0 <= overlap <= side // 8:
        raise ValueError(f"tile side {side} must be a multiple of {PAD_MULTIPLE}, overlap in 0..side/8")
    rows, cols = axis_spans(height, side, overlap), axis_spans(width, side, overlap)
    return TileGrid(height, width, side, overlap, rows, cols)


def axis_weights(spans: tuple[Span, ...]) -> list[Tensor]:
    """Blending weights ``(stop - start,)`` float32 of each tile along one axis: 1 where the tile is
    alone, a linear ramp across each overlap (pixel centres, so neither end reaches 0 or 1), divided
    by the sum over tiles so that the weights at every pixel add up to 1."""
    length = spans[-1][1]
    ramps = []
    for i, (start, stop) in enumerate(spans):
        pos = torch.arange(start, stop, dtype=torch.float64) + 0.5
        w = torch.ones(stop - start, dtype=torch.float64)
        if i > 0:  # rising across the overlap with the previous tile: [start, previous stop)
            w = torch.minimum(w, (pos - start) / (spans[i - 1][1] - start))
        if i < len(spans) - 1:  # falling across the overlap with the next tile: [next start, stop)
            w = torch.minimum(w, (stop - pos) / (stop - spans[i + 1][0]))
        ramps.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, stop), w in zip(spans, ramps, strict=True):
        total[start:stop] += w
    return [(w / total[start:stop]).float() for (start, stop), w in zip(spans, ramps, strict=True)]


def check_image_size(height: int, width: int) -> None:
    """``ValueError`` (one line) above ``MAX_CODEC_PIXELS``: checked before any pixel is touched."""
    if height * width > MAX_CODEC_PIXELS:
        raise ValueError(
            f"image of {width}x{height} pixels exceeds the codec limit of {MAX_CODEC_PIXELS} pixels "
            "(about 16 megapixels); downscale it"
        )


def split(x: Tensor, roi: Tensor | None) -> tuple[TileGrid, list[tuple[Tensor, Tensor | None]]]:
    """The grid of an image ``(3, H, W)`` and its tiles with their crops of the region-of-interest
    mask ``roi (H, W)`` (``None`` stays ``None``), in storage order; views, no pixel is copied.

    Raises ``ValueError`` above ``MAX_CODEC_PIXELS`` or for a mask of another size."""
    height, width = x.shape[-2:]
    check_image_size(height, width)
    if roi is not None and tuple(roi.shape[-2:]) != (height, width):
        raise ValueError(f"roi mask must be {height}x{width}, got {tuple(roi.shape[-2:])}")
    grid = tile_grid(height, width)
    parts = []
    for (top, bottom), (left, right) in grid.boxes():
        roi_tile = None if roi is None else roi[..., top:bottom, left:right]
        parts.append((x[:, top:bottom, left:right], roi_tile))
    return grid, parts


def overhead_bytes(grid: TileGrid) -> int:
    """Bytes of a tiled file besides its tiles: header, five knobs, stream count and lengths, CRCs."""
    return 18 + 4 * N_TILED_KNOBS + 1 + 4 * len(grid.boxes()) + 8


def pack(grid: TileGrid, tiles: list[bytes], model_tag: bytes) -> bytes:
    """The tiled file of ``tiles`` (each a complete ``.hvq`` file, in :meth:`TileGrid.boxes` order)."""
    rows, cols = grid.shape
    if len(tiles) != rows * cols:
        raise ValueError(f"{len(tiles)} tiles for a {rows}x{cols} grid")
    knobs = (TILED_KNOB, float(grid.side), float(grid.overlap), float(rows), float(cols))
    return Container(grid.height, grid.width, model_tag, knobs, list(tiles), 0).to_bytes()


def encode_tiles(
    x: Tensor, roi: Tensor | None, code_tile: Callable[[Tensor, Tensor | None], bytes], model_tag: bytes
) -> bytes:
    """Code ``x (3, H, W)`` tile by tile: ``code_tile(x_tile, roi_tile)`` gives one tile's ``.hvq``
    bytes (``roi``: ``(H, W)`` or ``None``, cropped per tile). Only one tile is coded at a time."""
    grid, parts = split(x, roi)
    return pack(grid, [code_tile(x_tile, roi_tile) for x_tile, roi_tile in parts], model_tag)


def is_tiled_file(data: bytes) -> bool:
    """Whether ``data`` is a well-formed container of tiles (anything else goes to the single-file
    decoder, which says what is wrong with it)."""
    try:
        knobs = Container.from_bytes(data).knobs
    except BitstreamError:
        return False
    return knobs[:1] == (TILED_KNOB,)


def read_tiles(data: bytes, model_tag: bytes) -> tuple[TileGrid, list[bytes]]:
    """The grid and the tiles' files of a tiled file, every header checked before any decoding.

    Raises:
        BitstreamError: corrupt, truncated or forged data; another model; a grid or a tile size that
            does not follow from the image size.
    """
    c = Container.from_bytes(data)
    if len(c.knobs) != N_TILED_KNOBS or c.knobs[0] != TILED_KNOB:
        raise BitstreamError("not a tiled .hvq file (unexpected knobs)")
    if c.model_tag != model_tag:
        raise BitstreamError(
            f"file was written by another model (tag {c.model_tag.hex()}, this model {model_tag.hex()})"
        )
    if c.height * c.width > MAX_CODEC_PIXELS:
        raise BitstreamError(
            f"header declares a {c.width}x{c.height} image, above the codec limit of "
            f"{MAX_CODEC_PIXELS} pixels"
        )
    side, overlap, rows, cols = c.knobs[1:]
    if not all(math.isfinite(v) and v == round(v) for v in c.knobs[1:]) or c.symbols_crc != 0:
        raise BitstreamError("invalid tile knobs in header")
    side, overlap = int(side), int(overlap)
    if not SIDE_RANGE[0] <= side <= SIDE_RANGE[1] or side % PAD_MULTIPLE or not 0 <= overlap <= side // 8:
        raise BitstreamError(f"invalid tile side {side} or overlap {overlap} in header")
    grid = tile_grid(c.height, c.width, side, overlap)
    if grid.shape != (rows, cols) or len(c.streams) != rows * cols:
        raise BitstreamError(
            f"{len(c.streams)} tiles in a {int(rows)}x{int(cols)} grid; a {c.width}x{c.height} image has "
            f"{grid.shape[0]}x{grid.shape[1]}"
        )
    for i, (tile, ((top, bottom), (left, right))) in enumerate(zip(c.streams, grid.boxes(), strict=True)):
        inner = _tile_container(tile, i, len(c.streams))
        if (inner.height, inner.width) != (bottom - top, right - left):
            raise BitstreamError(
                f"tile {i + 1} of {len(c.streams)} is {inner.width}x{inner.height}, the grid says "
                f"{right - left}x{bottom - top}"
            )
    return grid, c.streams


def _tile_container(tile: bytes, i: int, n: int) -> Container:
    """The parsed header of tile ``i`` (of ``n``), with the tile's number in any error."""
    try:
        return Container.from_bytes(tile)
    except BitstreamError as error:
        raise BitstreamError(f"tile {i + 1} of {n}: {error}") from None


def decode_tiles(data: bytes, model_tag: bytes, decode_tile: Callable[[bytes], Tensor]) -> Tensor:
    """Decode a tiled file to ``(3, H, W)`` float32 in [0, 1]: ``decode_tile(tile_bytes)`` gives one
    tile's image; tiles are decoded one at a time and blended (:func:`axis_weights`) into one
    preallocated image. Raises :class:`BitstreamError` (with the tile's number) on any problem."""
    grid, tiles = read_tiles(data, model_tag)
    row_w, col_w = axis_weights(grid.row_spans), axis_weights(grid.col_spans)
    out = torch.zeros(3, grid.height, grid.width, dtype=torch.float32)
    n_cols = grid.shape[1]
    for i, (tile, ((top, bottom), (left, right))) in enumerate(zip(tiles, grid.boxes(), strict=True)):
        try:
            image = decode_tile(tile)
        except BitstreamError as error:
            raise BitstreamError(f"tile {i + 1} of {len(tiles)}: {error}") from None
        weight = row_w[i // n_cols][:, None] * col_w[i % n_cols][None, :]
        out[:, top:bottom, left:right] += image * weight
    return out.clamp_(0, 1)
