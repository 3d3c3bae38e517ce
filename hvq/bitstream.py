"""Symbols <-> bytes: the ``.hvq`` bitstream of one image.

A file is a :class:`hvq.container.Container` with six knobs (the lambda index, the two ratios, the
colour offset; all but the ratios integers) and seven range-coded streams, written and read in this
order::

    mask     coarse cells at coarse_ratio, then the medium cells among the rest (one slot, split)
    z g      for g in fine, medium, coarse: the side latent in the 4x4 blocks that hold a coded
             position (elsewhere it is 0 and not coded), one factorised table per channel
    index g  for g in fine, medium, coarse: the codebook indices at the coded positions, with the
             integer tables that the entropy model computes from z_hat (decoded first)

The decoder re-derives every table from what it has already decoded, so the tables are a function of
the file and the model only. The model is passed in as an :class:`EntropyModel` (the few things this
module asks of it), so this module imports no network.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from hvq import coder
from hvq.config import ModelConfig
from hvq.container import Container, symbols_crc32
from hvq.entropy import mask_table, occupied_blocks
from hvq.errors import BitstreamError
from hvq.nets.integer import LAMBDA_STEPS
from hvq.nets.router import medium_cells
from hvq.symbols import COLOUR_MAX, MAX_CODEC_PIXELS, STRIDES, Symbols, coded_positions, padded_size, z_side

#: Container bytes besides the payloads: header, 6 knobs (lambda, 2 ratios, 3 colour offsets),
#: 7 stream lengths, mask split, 2 CRCs, and about one 32-bit flush word per range-coded stream.
CONTAINER_OVERHEAD_BYTES = 18 + 24 + 1 + 28 + 4 + 8 + 8 * 4
#: Knobs and streams of every file.
N_KNOBS, N_STREAMS = 6, 7


class EntropyModel(Protocol):
    """What coding needs from a model (:class:`hvq.model.HVQCodec` is one)."""

    cfg: ModelConfig

    def model_tag(self) -> bytes: ...

    def lambda_index(self, lam: float) -> int: ...

    def grid_lambda(self, index: int) -> float: ...

    def z_tables(self, g: int, shape: tuple[int, ...]) -> np.ndarray: ...

    def index_tables(self, g: int, z_hat: Tensor, mask: Tensor, lambda_index: int): ...


def mask_symbols(masks: list[Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The two mask streams' symbols: every coarse cell, then the medium flag of each uncovered cell."""
    coarse = masks[2][0, 0].flatten().numpy().astype(np.int64)
    avail = medium_cells(masks[2])[0, 0].flatten().numpy()
    return coarse, masks[1][0, 0].flatten().numpy().astype(np.int64)[avail]


def occupied_z(mask: Tensor) -> np.ndarray:
    """``(h/4 * w/4,)`` bool: the z elements of a granularity that are coded (its occupied blocks)."""
    return occupied_blocks(mask)[0, 0].flatten().numpy() > 0


def encode(model: EntropyModel, sym: Symbols) -> bytes:
    """Range-code ``sym`` (whose ``freqs`` the entropy model filled) into ``.hvq`` bytes."""
    coarse_sym, medium_sym = mask_symbols(sym.masks)
    coarse_bytes = coder.encode_symbols(coarse_sym, mask_table(sym.coarse_ratio))
    medium_bytes = coder.encode_symbols(medium_sym, mask_table(sym.medium_ratio))
    # The two mask sub-streams share one slot: a 4-byte length of the first, then both.
    streams = [len(coarse_bytes).to_bytes(4, "little") + coarse_bytes + medium_bytes]
    z_syms, idx_syms = [], []
    s = model.cfg.z_support
    for g in range(3):
        zs = (sym.z_hat[g][0].long() + s).flatten(1).numpy()[:, occupied_z(sym.masks[g])]  # (C, n)
        z_syms.append(zs.flatten())
        streams.append(coder.encode_symbols(zs.flatten(), model.z_tables(g, zs.shape)))
    for g in range(3):
        ks = sym.indices[g][0].flatten().numpy()[coded_positions(sym.masks[g])]
        idx_syms.append(ks)
        streams.append(coder.encode_symbols(ks, sym.freqs[g]))
    crc = symbols_crc32(coarse_sym, medium_sym, *z_syms, *idx_syms)
    knobs = (
        float(model.lambda_index(sym.lam)),
        sym.coarse_ratio,
        sym.medium_ratio,
        *map(float, sym.colour_offset),
    )
    return Container(sym.height, sym.width, model.model_tag(), knobs, streams, crc).to_bytes()


def static_index_streams(sym: Symbols, table: np.ndarray) -> list[bytes]:
    """The ablation baseline: the same indices coded with one static ``(K,)`` table, as three real
    range-coded streams (fine, medium, coarse); no z is needed for a static model."""
    return [
        coder.encode_symbols(sym.indices[g][0].flatten().numpy()[coded_positions(sym.masks[g])], table)
        for g in range(3)
    ]


def _checked_header(model: EntropyModel, data: bytes) -> Container:
    """The container, refused with one-line ``BitstreamError`` unless this model can decode it."""
    c = Container.from_bytes(data)
    if c.height * c.width > MAX_CODEC_PIXELS:
        raise BitstreamError(
            f"header declares a {c.width}x{c.height} image ({c.height * c.width} pixels), above the "
            f"codec limit of {MAX_CODEC_PIXELS} pixels (no hvq encoder writes such a file)"
        )
    if c.model_tag != model.model_tag():
        raise BitstreamError(
            f"file was written by another model (tag {c.model_tag.hex()}, "
            f"this model {model.model_tag().hex()})"
        )
    if len(c.knobs) != N_KNOBS or len(c.streams) != N_STREAMS:
        raise BitstreamError("unexpected knob or stream count for this model")
    index, rc, rm = c.knobs[:3]
    lambda_ok = math.isfinite(index) and index == round(index) and 0 <= index < LAMBDA_STEPS
    if not (0 <= rc <= 1 and 0 <= rm <= 1 and lambda_ok):
        raise BitstreamError("invalid knob values in header")
    if not all(math.isfinite(v) and v == round(v) and abs(v) <= COLOUR_MAX for v in c.knobs[3:]):
        raise BitstreamError("invalid colour offset in header")
    return c


def _decode_masks(stream: bytes, hp: int, wp: int, rc: float, rm: float):
    """The granularity masks ``[fine, medium, coarse]`` and the two mask symbol arrays."""
    if len(stream) < 4:
        raise BitstreamError("mask stream too short")
    split = int.from_bytes(stream[:4], "little")
    if split > len(stream) - 4:
        raise BitstreamError("mask stream split points past its end")
    coarse_sym = coder.decode_symbols(stream[4 : 4 + split], mask_table(rc), count=(hp // 16) * (wp // 16))
    coarse = torch.from_numpy(coarse_sym.astype(np.float32)).view(1, 1, hp // 16, wp // 16)
    avail = medium_cells(coarse)
    medium_sym = coder.decode_symbols(stream[4 + split :], mask_table(rm), count=int(avail.sum()))
    medium = torch.zeros(avail.shape, dtype=torch.float32)
    medium[avail] = torch.from_numpy(medium_sym.astype(np.float32))
    fine = torch.repeat_interleave(torch.repeat_interleave(avail.float() - medium, 2, 2), 2, 3)
    return [fine, medium, coarse], coarse_sym, medium_sym


def decode(model: EntropyModel, data: bytes) -> Symbols:
    """``.hvq`` bytes -> :class:`Symbols` (with the tables the decoder derived).

    Raises:
        BitstreamError: corrupt, truncated or foreign data, another model, or a decoded-symbol CRC
            mismatch (encoder and decoder disagreed on a probability table).
    """
    c = _checked_header(model, data)
    index, rc, rm = int(c.knobs[0]), c.knobs[1], c.knobs[2]
    lam = model.grid_lambda(index)
    hp, wp = padded_size(c.height, c.width)
    masks, coarse_sym, medium_sym = _decode_masks(c.streams[0], hp, wp, rc, rm)
    s = model.cfg.z_support
    z_hats, z_syms = [], []
    for g in range(3):
        zshape = (model.cfg.z_channels, z_side(hp // STRIDES[g]), z_side(wp // STRIDES[g]))
        occupied = occupied_z(masks[g])
        zs = coder.decode_symbols(c.streams[1 + g], model.z_tables(g, (zshape[0], int(occupied.sum()))))
        z_syms.append(zs)
        z = np.zeros((zshape[0], occupied.size), dtype=np.int64)
        z[:, occupied] = zs.reshape(zshape[0], -1) - s
        z_hats.append(torch.from_numpy(z).float().view(1, *zshape))
    idxs, freqs, log_scales, idx_syms = [], [], [], []
    for g in range(3):
        f, log_s, pos = model.index_tables(g, z_hats[g], masks[g], index)
        ks = coder.decode_symbols(c.streams[4 + g], f)
        flat = np.zeros(masks[g][0, 0].numel(), dtype=np.int64)
        flat[pos] = ks
        idxs.append(torch.from_numpy(flat).view(1, *masks[g].shape[-2:]))
        freqs.append(f)
        log_scales.append(log_s)
        idx_syms.append(ks)
    if symbols_crc32(coarse_sym, medium_sym, *z_syms, *idx_syms) != c.symbols_crc:
        raise BitstreamError(
            "decoded symbols do not match the encoder's CRC32: the probability tables differ "
            "(another model version or device) or the file is damaged"
        )
    offset = tuple(int(v) for v in c.knobs[3:])
    return Symbols(c.height, c.width, lam, rc, rm, masks, z_hats, idxs, freqs, log_scales, offset)
