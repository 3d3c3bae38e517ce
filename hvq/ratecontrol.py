"""Rate control: ask for bits per pixel, get a file of that size (within a tolerance), on every image.

The knobs. ``lambda`` (an input of the networks) and the two granularity ratios. For a search we use
one scalar ``p`` in [0, 1] that moves both ratios together (``coarse = medium = 1 - p``): ``p = 0`` codes
everything coarse (the fewest symbols), ``p = 1`` everything fine (the most); in between, the router
gives the flattest 16x16 cells the coarse grain and, among the rest, the flattest 8x8 cells the
medium grain, so detail always gets the fine grain first. The number of coded symbols grows
monotonically with ``p``; the file size does too, up to a few bits of noise.

The search, per candidate lambda:

1. run the encoder once (features and nearest codes do not depend on the ratios);
2. solve for ``p`` on the *estimated* size (the float entropy model, exact to ~0.2% of the real file,
   and much cheaper than building integer tables) by regula falsi, to a quarter of the tolerance;
3. code for real at the estimate's answer, then correct with secant steps on the *real* size until
   it lies within ``tolerance`` of the target (side information and mask included: it is the file).

With several candidate lambdas, the one whose reconstruction has the lowest distortion (MSE by
default, or any ``quality`` callable, lower is better) wins. The chosen knobs are in the file header,
so the decoder needs nothing else. A target outside what the model can reach on that image raises
:class:`RateTargetError` naming the reachable range. A large image (:mod:`hvq.tiles`) gets one search
for all its tiles: one lambda and one ``p``, estimated and real sizes summed over the tiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hvq import tiles
from hvq.model import HVQCodec, Symbols


class RateTargetError(ValueError):
    """The requested bit rate lies outside what the model can reach on this image."""

    def __init__(self, target_bpp: float, low: float, high: float) -> None:
        super().__init__(
            f"target {target_bpp:.4f} bpp is outside the reachable range [{low:.4f}, {high:.4f}] bpp "
            "for this image"
        )
        self.target_bpp, self.reachable = target_bpp, (low, high)


@dataclass
class RateControlResult:
    """The file and how it was found."""

    data: bytes
    bpp: float
    target_bpp: float
    lam: float
    coarse_ratio: float
    medium_ratio: float
    real_encodes: int
    estimates: int
    seconds: float
    candidates: list[dict] = field(default_factory=list)


#: The estimate search stops within this fraction of the real-size tolerance (the estimate is ~0.2% off).
ESTIMATE_TOLERANCE = 0.25
#: At most this many estimates per search (beyond the two ends).
MAX_ESTIMATES = 14


def ratios_for(p: float) -> tuple[float, float]:
    """The one-parameter path through the ratio knobs: ``p`` in [0, 1] -> (coarse, medium)."""
    p = min(max(float(p), 0.0), 1.0)
    return 1.0 - p, 1.0 - p


class _Parts:
    """What the search codes: the ratio-independent features of the image, or of each of its tiles
    (:mod:`hvq.tiles`; an image above ``TILE_PIXELS``). Sizes, estimated and real, are sums over the
    parts plus the tiled file's own overhead; a tile's symbols are dropped once coded, so the memory
    stays one tile's tables plus the features (about 14 bytes per pixel)."""

    def __init__(self, model: HVQCodec, x: Tensor, lam: float, roi: Tensor | None) -> None:
        self.model = model
        self.grid: tiles.TileGrid | None = None
        if not tiles.needs_tiles(*x.shape[1:]):
            self.feats = [model.encode_features(x, lam, roi)]
            return
        self.grid, parts = tiles.split(x, None if roi is None else torch.as_tensor(roi))
        self.feats = [model.encode_features(x_tile, lam, roi_tile) for x_tile, roi_tile in parts]

    def estimate_bits(self, p: float) -> float:
        """Estimated file size in bits at ``p`` (:meth:`HVQCodec.estimate_bits` of every part)."""
        bits = sum(self.model.estimate_bits(f, *ratios_for(p)) for f in self.feats)
        return bits + (8 * tiles.overhead_bytes(self.grid) if self.grid is not None else 0)

    def code(self, p: float, fit_colour: bool = False) -> tuple[bytes, Symbols | None]:
        """The file at ``p``, and the symbols of a single image (to fit its colour offset later
        without analysing it again; ``None`` for tiles, whose tables are not kept)."""
        rc, rm = ratios_for(p)
        if self.grid is None:
            sym = self.model.analyze(self.feats[0], coarse_ratio=rc, medium_ratio=rm, fit_colour=fit_colour)
            return self.model.encode(sym), sym
        files = [
            self.model.encode(self.model.analyze(f, coarse_ratio=rc, medium_ratio=rm, fit_colour=fit_colour))
            for f in self.feats
        ]
        return tiles.pack(self.grid, files, self.model.model_tag()), None

    def final(self, p: float, sym: Symbols | None) -> bytes:
        """The file at the chosen ``p`` with its colour offsets fitted (they never change the size)."""
        if sym is not None:
            return self.model.encode(self.model.fit_colour(sym, self.feats[0]))
        return self.code(p, fit_colour=True)[0]


def _search_one_lambda(model, x, lam, target_bits, tol, roi, max_real):
    parts = _Parts(model, x, lam, roi)
    n_est = 0

    def est(p: float) -> float:
        nonlocal n_est
        n_est += 1
        return parts.estimate_bits(p)

    lo_bits, hi_bits = est(0.0), est(1.0)
    band = (min(lo_bits, hi_bits), max(lo_bits, hi_bits))
    if not band[0] <= target_bits <= band[1]:
        return None, band, n_est, 0
    # A region of interest that forces every cell fine leaves only the mask bits to the knob, and
    # they need not grow with p: then any p gives the same image, and p = 1 is taken.
    p = 1.0
    if lo_bits < hi_bits:
        p = _solve_on_estimate(est, target_bits, lo_bits, hi_bits, ESTIMATE_TOLERANCE * tol)
    # Real sizes, corrected by secant steps on (p, real bits) bracketed by the estimate's ends.
    tried: list[tuple[float, int]] = []
    best = None  # (distance to the target, p, bits, symbols) of the closest real file so far
    lo_p, hi_p = 0.0, 1.0
    for _ in range(max_real):
        data, sym = parts.code(p)
        bits = 8 * len(data)
        tried.append((p, bits))
        if best is None or abs(bits - target_bits) < best[0]:
            best = (abs(bits - target_bits), p, bits, sym)
        if abs(bits - target_bits) <= tol * target_bits:
            break
        if bits < target_bits:
            lo_p = max(lo_p, p)
        else:
            hi_p = min(hi_p, p)
        below = [t for t in tried if t[1] < target_bits]
        above = [t for t in tried if t[1] > target_bits]
        if below and above:
            (p0, b0), (p1, b1) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
            p_new = p0 + (target_bits - b0) * (p1 - p0) / max(1, b1 - b0)
        else:  # step by the local slope of the estimate
            slope = (est(min(1.0, p + 0.01)) - est(max(0.0, p - 0.01))) / 0.02
            p_new = p + (target_bits - bits) / max(slope, 1.0)
        p = min(max(p_new, lo_p), hi_p) if lo_p < hi_p else p_new
        p = min(max(p, 0.0), 1.0)
    _, p, bits, sym = best
    # The colour offset is fitted once, on the chosen symbols (it never changes the file size).
    return (p, bits, parts.final(p, sym)), band, n_est, len(tried)


def _solve_on_estimate(
    est: Callable[[float], float], target: float, lo_bits: float, hi_bits: float, tol: float
) -> float:
    """``p`` whose estimated size is within ``tol`` (relative) of ``target``: regula falsi with the
    Illinois step on the increasing estimate, bracketed by ``p = 0`` and ``p = 1`` (at most
    ``MAX_ESTIMATES`` evaluations; a plain bisection needs 14 for the same bracket)."""
    lo, hi, f_lo, f_hi = 0.0, 1.0, lo_bits - target, hi_bits - target
    p, side = 0.5, 0
    for _ in range(MAX_ESTIMATES):
        p = lo + (hi - lo) * (-f_lo) / (f_hi - f_lo) if f_hi != f_lo else 0.5 * (lo + hi)
        f = est(p) - target
        if abs(f) <= tol * target:
            break
        if f < 0:
            lo, f_lo = p, f
            f_hi = f_hi / 2 if side == -1 else f_hi  # Illinois: halve the end that stays twice
            side = -1
        else:
            hi, f_hi = p, f
            f_lo = f_lo / 2 if side == 1 else f_lo
            side = 1
    return p


def compress_to_bpp(
    model: HVQCodec,
    x: Tensor,
    target_bpp: float,
    lams: Sequence[float] | None = None,
    tolerance: float = 0.02,
    roi: Tensor | None = None,
    quality: Callable[[Tensor, Tensor], float] | None = None,
    max_real_encodes: int = 6,
) -> RateControlResult:
    """Compress ``x (3, H, W)`` to ``target_bpp`` within ``tolerance`` (relative), see module docstring.

    ``lams``: candidate lambdas (default: the geometric middle of the trained range only). With more
    than one, each is searched and the best ``quality(x, x_hat)`` (lower is better; default MSE) wins.

    Raises:
        RateTargetError: the target is outside the reachable range for every candidate lambda.
    """
    if target_bpp <= 0:
        raise ValueError("target_bpp must be positive")
    t0 = time.perf_counter()
    cfg = model.cfg
    lams = list(lams) if lams else [(cfg.lambda_min * cfg.lambda_max) ** 0.5]
    pixels = x.shape[1] * x.shape[2]
    target_bits = target_bpp * pixels
    quality = quality or (lambda a, b: float((a - b).pow(2).mean()))
    candidates, reach, n_est, n_real = [], [], 0, 0
    for lam in lams:
        found, (lo_b, hi_b), ne, nr = _search_one_lambda(
            model, x, lam, target_bits, tolerance, roi, max_real_encodes
        )
        n_est, n_real = n_est + ne, n_real + nr
        reach.append((lo_b / pixels, hi_b / pixels))
        if found is None:
            continue
        p, bits, data = found
        x_hat = model.decompress(data) if len(lams) > 1 else None
        q = quality(x, x_hat) if x_hat is not None else 0.0
        candidates.append({"lam": lam, "p": p, "bpp": bits / pixels, "quality": q, "data": data})
    if not candidates:
        raise RateTargetError(target_bpp, min(r[0] for r in reach), max(r[1] for r in reach))
    within = [c for c in candidates if abs(c["bpp"] - target_bpp) <= tolerance * target_bpp] or candidates
    best = min(within, key=lambda c: (c["quality"], abs(c["bpp"] - target_bpp)))
    rc, rm = ratios_for(best["p"])
    return RateControlResult(
        data=best["data"],
        bpp=best["bpp"],
        target_bpp=target_bpp,
        lam=best["lam"],
        coarse_ratio=rc,
        medium_ratio=rm,
        real_encodes=n_real,
        estimates=n_est,
        seconds=time.perf_counter() - t0,
        candidates=[{k: v for k, v in c.items() if k != "data"} for c in candidates],
    )


@torch.no_grad()
def reachable_bpp(model: HVQCodec, x: Tensor, lam: float | None = None) -> tuple[float, float]:
    """Estimated (lowest, highest) bits per pixel the model reaches on ``x`` at one lambda."""
    cfg = model.cfg
    lam = lam if lam is not None else (cfg.lambda_min * cfg.lambda_max) ** 0.5
    parts = _Parts(model, x, lam, None)
    pixels = x.shape[1] * x.shape[2]
    return parts.estimate_bits(0.0) / pixels, parts.estimate_bits(1.0) / pixels
