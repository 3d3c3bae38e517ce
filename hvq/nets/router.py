"""Granularity router: which regions are coded coarse (1/16), medium (1/8) or fine (1/4).

Following Control-GIC, the router is not learned: it ranks the *information density* of image
patches, measured as the Shannon entropy of the luma histogram of each patch, and gives the flattest
regions the coarsest grain. Our reading, made explicit because the HVQ-CGIC method text is not public:

* The layout is a two-level quadtree. Each 16x16 cell is either coarse (one code) or split into four
  8x8 cells; each of those is either medium (one code) or fine (four codes, 2x2 at 1/4).
* ``coarse_ratio`` is the fraction of 16x16 cells made coarse (those with the lowest 16x16 entropy).
  ``medium_ratio`` is the fraction of the *remaining* 8x8 cells made medium (lowest 8x8 entropy); the
  rest are fine. Both are knobs at inference; the header stores them and the mask is coded.
* A region of interest (``roi``, pixel mask) forces the 8x8 cells it touches to fine.
* Ties are broken by position (a stable sort), so the mask is a deterministic function of the image.

Shapes: ``route(x (B, 3, H, W), coarse_ratio, medium_ratio, roi (B, 1, H, W) | None)`` with H, W
multiples of 16 -> ``(coarse (B, 1, H/16, W/16), medium (B, 1, H/8, W/8), fine (B, 1, H/4, W/4))``
float 0/1 masks; every pixel is covered by exactly one granularity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)
BINS = 16


def luma_histograms(x: Tensor, patch: int, bins: int = BINS) -> Tensor:
    """Counts of the quantised luma of every ``patch x patch`` cell: ``(B, bins, H/p, W/p)`` float.

    One ``bincount`` over ``cell * bins + bin`` (no one-hot of the whole image)."""
    b, hc, wc = x.shape[0], x.shape[2] // patch, x.shape[3] // patch
    x = x[:, :, : hc * patch, : wc * patch]  # whole cells only, as a pooling would
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    luma = (x * weights).sum(1).clamp(0, 1)
    q = (luma * bins).long().clamp_max(bins - 1)  # (B, H, W)
    rows = torch.arange(hc * patch, device=x.device).view(1, -1, 1) // patch
    cols = torch.arange(wc * patch, device=x.device).view(1, 1, -1) // patch
    cell = (torch.arange(b, device=x.device).view(b, 1, 1) * hc + rows) * wc + cols
    counts = torch.bincount((cell * bins + q).flatten(), minlength=b * hc * wc * bins)
    return counts.view(b, hc, wc, bins).permute(0, 3, 1, 2).to(x.dtype)


def entropy_of_counts(counts: Tensor, total: int) -> Tensor:
    """Entropy (bits) of histograms ``counts (B, bins, h, w)`` of ``total`` samples: ``(B, 1, h, w)``."""
    hist = counts / total  # exact: counts and total are small integers
    return (-(hist * torch.log2(hist.clamp_min(1e-12))).sum(1, keepdim=True)).clamp_min(0.0)


def _lowest(score: Tensor, count: Tensor) -> Tensor:
    """Per image, a 0/1 mask of the ``count[b]`` lowest scores (stable: earlier positions first)."""
    b = score.shape[0]
    flat = score.reshape(b, -1)
    order = torch.sort(flat, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=score.device).expand(b, -1).contiguous())
    return (rank < count.view(b, 1)).float().view_as(score)


def cell_entropies(x: Tensor) -> tuple[Tensor, Tensor]:
    """The router's ranking scores of ``x (B, 3, H, W)``: the entropy (bits) of the luma histogram of
    every 16x16 and every 8x8 cell, ``(B, 1, H/16, W/16)`` and ``(B, 1, H/8, W/8)`` (compute once per
    image and pass to :func:`route` when trying many ratios)."""
    counts8 = luma_histograms(x.float(), 8)
    counts16 = F.avg_pool2d(counts8, 2, divisor_override=1)  # four 8x8 cells make a 16x16 one
    return entropy_of_counts(counts16, 256), entropy_of_counts(counts8, 64)


def route(
    x: Tensor,
    coarse_ratio: Tensor | float,
    medium_ratio: Tensor | float,
    roi: Tensor | None = None,
    entropies: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Granularity masks from the image content and the two ratio knobs (see module docstring).

    ``coarse_ratio`` and ``medium_ratio`` are floats in [0, 1] or ``(B,)`` tensors; ``entropies``:
    :func:`cell_entropies` of ``x`` if already computed.
    """
    b, _, h, w = x.shape
    if h % 16 or w % 16:
        raise ValueError(f"route needs H and W multiples of 16, got {h}x{w}")
    rc = torch.as_tensor(coarse_ratio, dtype=torch.float64, device=x.device).expand(b)
    rm = torch.as_tensor(medium_ratio, dtype=torch.float64, device=x.device).expand(b)
    if ((rc < 0) | (rc > 1) | (rm < 0) | (rm > 1)).any():
        raise ValueError("ratios must lie in [0, 1]")
    with torch.no_grad():
        e16, e8 = entropies if entropies is not None else cell_entropies(x)
        forced8 = torch.zeros_like(e8, dtype=torch.bool)
        if roi is not None:
            forced8 = F.max_pool2d(roi.float(), 8) > 0
        forced16 = F.max_pool2d(forced8.float(), 2) > 0
        inf = torch.tensor(float("inf"), device=x.device)
        n16 = e16[0].numel()
        allowed16 = (~forced16).reshape(b, -1).sum(1)
        n_coarse = torch.minimum(torch.round(rc * n16).long(), allowed16)
        coarse = _lowest(torch.where(forced16, inf, e16), n_coarse)
        avail8 = medium_cells(coarse)
        eligible8 = avail8 & ~forced8
        n_avail = avail8.reshape(b, -1).sum(1)
        n_medium = torch.minimum(torch.round(rm * n_avail).long(), eligible8.reshape(b, -1).sum(1))
        medium = _lowest(torch.where(eligible8, e8, inf), n_medium) * avail8
        fine8 = avail8.float() - medium
        fine = F.interpolate(fine8, scale_factor=2.0, mode="nearest")
    return coarse, medium, fine


def medium_cells(coarse: Tensor) -> Tensor:
    """The 1/8 cells that no coarse cell covers (where medium or fine codes go): ``(B, 1, h/16, w/16)``
    0/1 coarse mask -> ``(B, 1, h/8, w/8)`` bool. Router, rate model and bitstream all use this one."""
    return F.interpolate(coarse.float(), scale_factor=2.0, mode="nearest") == 0


def check_partition(coarse: Tensor, medium: Tensor, fine: Tensor) -> bool:
    """True when every 1/4-resolution position is covered by exactly one granularity."""
    up = (
        F.interpolate(coarse, scale_factor=4.0, mode="nearest")
        + F.interpolate(medium, scale_factor=2.0, mode="nearest")
        + fine
    )
    return bool((up == 1).all())


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> Tensor:
    """Region-of-interest mask ``(H, W)`` float 0/1 from a box ``(x0, y0, x1, y1)`` in pixels (the same
    convention as ``hvq compress --roi x0,y0,x1,y1``)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box} outside the {width}x{height} image")
    roi = torch.zeros(height, width)
    roi[y0:y1, x0:x1] = 1
    return roi
