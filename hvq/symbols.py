"""What a ``.hvq`` file carries, decoded: the ``Symbols`` record, the encoder's ``Features``, and the
geometry every other codec module shares (granularities, strides, padding, the side of z).

Three granularities at strides 4, 8 and 16 of the padded image::

    fine   (1/4):  mask m_f, z_f, indices k_f      medium (1/8): m_m, z_m, k_m
    coarse (1/16): m_c, z_c, k_c                   + lambda, two ratios, a colour offset

This module holds records and arithmetic only (no networks, no coder), so every codec module can
import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor

GRANULARITIES = ("fine", "medium", "coarse")
#: The seven streams of a file, in order.
STREAM_NAMES = ("mask", "z fine", "z medium", "z coarse", "index fine", "index medium", "index coarse")
STRIDES = (4, 8, 16)
#: Images are padded (edge replication) to a multiple of this before coding, then cropped back.
PAD_MULTIPLE = 16
#: Largest image the codec accepts (pixels), checked before any network runs.
MAX_CODEC_PIXELS = 1 << 24
#: The colour offset is sent in steps of 1/COLOUR_STEPS of one 8-bit level (at most the full range).
COLOUR_STEPS = 4
COLOUR_MAX = 255 * COLOUR_STEPS
#: One step of the colour offset, in [0, 1] pixel units.
COLOUR_STEP = 1.0 / (255 * COLOUR_STEPS)


@dataclass
class Features:
    """Ratio-independent analysis of one image (see :meth:`hvq.model.HVQCodec.encode_features`)."""

    height: int
    width: int
    lam: float
    t: Tensor
    x_padded: Tensor  # (1, 3, Hp, Wp)
    roi_padded: Tensor | None  # (1, 1, Hp, Wp)
    ys: list[Tensor]  # features per granularity (1, D, h_g, w_g)
    indices: list[Tensor]  # nearest codes per granularity (1, h_g, w_g)
    entropies: tuple[Tensor, Tensor] | None = None  # the router's cell scores (hvq.nets.router)


@dataclass
class Symbols:
    """Everything the bitstream carries, decoded: knobs, masks, z and indices (batch of one).

    ``masks[g]``: ``(1, 1, h_g, w_g)`` 0/1; ``z_hat[g]``: ``(1, Cz, ., .)`` integers;
    ``indices[g]``: ``(1, h_g, w_g)`` int64 (meaningful where the mask is 1);
    ``freqs[g]``: ``(n_g, K)`` integer tables of the coded positions;
    ``log_scale[g]``: ``(1, h_g, w_g)`` the grid-snapped mean log2 scale (decoder side information).
    """

    height: int
    width: int
    lam: float
    coarse_ratio: float
    medium_ratio: float
    masks: list[Tensor]
    z_hat: list[Tensor]
    indices: list[Tensor]
    freqs: list[np.ndarray]
    log_scale: list[Tensor]
    colour_offset: tuple[int, int, int] = (0, 0, 0)  # per channel, in 1/COLOUR_STEPS of a level


def coded_positions(mask: Tensor) -> np.ndarray:
    """Flat positions ``(n,)`` int64 where a granularity mask ``(1, 1, h, w)`` is 1, in coding order."""
    return np.flatnonzero(mask[0, 0].detach().cpu().numpy().ravel() > 0).astype(np.int64)


def z_side(n: int) -> int:
    """Side of z for a granularity side n: two stride-2 convolutions, ceil(ceil(n / 2) / 2)."""
    return ((n + 1) // 2 + 1) // 2


def padded_size(h: int, w: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``PAD_MULTIPLE``."""
    return -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE


def pad(x: Tensor) -> Tensor:
    """Replicate-pad ``(B, C, H, W)`` on the bottom/right to multiples of ``PAD_MULTIPLE``."""
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w)
    if (hp, wp) == (h, w):
        return x
    return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
