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

:func:`compress_to_bpp` runs one search. A slider asks for target after target on one image:
:class:`RateController` keeps the encoder's features and every estimate between targets, and its
results carry the symbols and the decoded image, so a move costs a few estimates, one or two real
encodes and one decoder pass (notebook 05, ``benchmarks/bench_slider.py``).
"""

from __future__ import annotations

import copy
import dataclasses
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
    symbols: Symbols | None = None  # what the file carries (a single image; None for tiles)
    reconstruction: Tensor | None = None  # (3, H, W): what the file decodes to (None for tiles)


#: The estimate search stops within this fraction of the real-size tolerance (the estimate is ~0.2% off).
ESTIMATE_TOLERANCE = 0.25
#: At most this many estimates per search (beyond the two ends).
MAX_ESTIMATES = 14


def ratios_for(p: float) -> tuple[float, float]:
    """The one-parameter path through the ratio knobs: ``p`` in [0, 1] -> (coarse, medium)."""
    p = min(max(float(p), 0.0), 1.0)
    return 1.0 - p, 1.0 - p


class _LambdaSearch:
    """One lambda's share of a search: the ratio-independent features of the image, or of each of
    its tiles (:mod:`hvq.tiles`; an image above ``TILE_PIXELS``), and every size estimated so far, by
    ``p``. Sizes, estimated and real, are sums over the parts plus the tiled file's own overhead; a
    tile's symbols are dropped once coded, so the memory stays one tile's tables plus the features
    (about 14 bytes per pixel)."""

    def __init__(self, model: HVQCodec, x: Tensor, lam: float, roi: Tensor | None) -> None:
        self.model, self.x, self.lam = model, x, lam
        self.grid: tiles.TileGrid | None = None
        self.estimates: dict[float, float] = {}  # p -> estimated bits
        if not tiles.needs_tiles(*x.shape[1:]):
            self.feats = [model.encode_features(x, lam, roi)]
            return
        self.grid, parts = tiles.split(x, None if roi is None else torch.as_tensor(roi))
        self.feats = [model.encode_features(x_tile, lam, roi_tile) for x_tile, roi_tile in parts]

    def with_roi(self, roi: Tensor | None) -> _LambdaSearch:
        """The same image and lambda with another region of interest: the encoder does not run again
        (the features do not depend on the region); the estimates start afresh, but for ``p = 1``:
        every cell is fine there, with or without a region, so its estimate carries over."""
        other = copy.copy(self)
        other.estimates = {1.0: self.estimates[1.0]} if 1.0 in self.estimates else {}
        if self.grid is None:
            other.feats = [self.model.with_roi(self.feats[0], roi)]
        else:
            _, parts = tiles.split(self.x, None if roi is None else torch.as_tensor(roi))
            rois = [roi_tile for _, roi_tile in parts]
            other.feats = [self.model.with_roi(f, r) for f, r in zip(self.feats, rois, strict=True)]
        return other

    def estimate_bits(self, p: float) -> float:
        """Estimated file size in bits at ``p`` (:meth:`HVQCodec.estimate_bits` of every part),
        computed once per ``p``."""
        if p not in self.estimates:
            bits = sum(self.model.estimate_bits(f, *ratios_for(p)) for f in self.feats)
            self.estimates[p] = bits + (8 * tiles.overhead_bytes(self.grid) if self.grid is not None else 0)
        return self.estimates[p]

    def band(self) -> tuple[float, float]:
        """(lowest, highest) estimated bits: at ``p = 0`` and ``p = 1``."""
        ends = self.estimate_bits(0.0), self.estimate_bits(1.0)
        return min(ends), max(ends)

    def p_resolution(self) -> float:
        """A width of ``p`` below which a bracket holds at most one change of the masks: half a step
        of the medium cells' count (8x8 cells, the most numerous the ratios move). A size jump there
        (one cell, and the z of a 4x4 block it may occupy) is a step no ``p`` in between can split."""
        cells = sum(f.x_padded.shape[-2] * f.x_padded.shape[-1] // 64 for f in self.feats)
        return 0.5 / cells

    def bracket(self, target: float) -> tuple[float, float, float, float]:
        """The tightest ``(lo, hi, f_lo, f_hi)`` around ``target`` among the sizes estimated so far
        (``f = estimate - target``); the ends ``p = 0`` and ``p = 1`` are always among them."""
        self.band()
        below = [(p, b - target) for p, b in self.estimates.items() if b <= target]
        above = [(p, b - target) for p, b in self.estimates.items() if b > target]
        (lo, f_lo), (hi, f_hi) = max(below), min(above)
        return lo, hi, f_lo, f_hi

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

    def final(self, p: float, sym: Symbols | None) -> tuple[bytes, Symbols | None, Tensor | None]:
        """The file at the chosen ``p`` with its colour offsets fitted (they never change the size);
        for a single image also its symbols and the image the file decodes to, from the same decoder
        pass (``None`` for tiles)."""
        if sym is None:
            return self.code(p, fit_colour=True)[0], None, None
        sym, image = self.model.fit_colour_and_synthesize(sym, self.feats[0])
        return self.model.encode(sym), sym, image

    def search(self, target_bits: float, tol: float, max_real: int) -> dict | None:
        """The file closest to ``target_bits`` at this lambda (see the module docstring), as a dict of
        ``p``, ``bits``, ``data``, ``symbols``, ``reconstruction``, ``real_encodes``; ``None`` when
        the target lies outside :meth:`band`."""
        low, high = self.band()
        if not low <= target_bits <= high:
            return None
        # A region of interest that forces every cell fine leaves only the mask bits to the knob, and
        # they need not grow with p: then any p gives the same image, and p = 1 is taken.
        p = 1.0
        if self.estimate_bits(0.0) < self.estimate_bits(1.0):
            p = _solve_on_estimate(
                self.estimate_bits, target_bits, self.bracket(target_bits), ESTIMATE_TOLERANCE * tol,
                self.p_resolution(),
            )  # fmt: skip
        tried, (p, bits, sym) = self._correct_on_real_size(p, target_bits, tol, max_real)
        data, sym, image = self.final(p, sym)
        return {
            "p": p,
            "bits": bits,
            "data": data,
            "symbols": sym,
            "reconstruction": image,
            "real_encodes": tried,
        }

    def _correct_on_real_size(
        self, p: float, target_bits: float, tol: float, max_real: int
    ) -> tuple[int, tuple[float, int, Symbols | None]]:
        """Secant steps on ``(p, real bits)`` from the estimate's answer ``p``, bracketed by the real
        sizes seen; returns the number of real encodes and the closest ``(p, bits, symbols)``."""
        tried: list[tuple[float, int]] = []
        best = None  # (distance to the target, p, bits, symbols) of the closest real file so far
        lo_p, hi_p = 0.0, 1.0
        for _ in range(max_real):
            data, sym = self.code(p)
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
                slope = (
                    self.estimate_bits(min(1.0, p + 0.01)) - self.estimate_bits(max(0.0, p - 0.01))
                ) / 0.02
                p_new = p + (target_bits - bits) / max(slope, 1.0)
            p = min(max(p_new, lo_p), hi_p) if lo_p < hi_p else p_new
            p = min(max(p, 0.0), 1.0)
        return len(tried), best[1:]


def _solve_on_estimate(
    est: Callable[[float], float],
    target: float,
    bracket: tuple[float, float, float, float],
    tol: float,
    resolution: float = 0.0,
) -> float:
    """``p`` whose estimated size is within ``tol`` (relative) of ``target``: regula falsi with the
    Illinois step on the increasing estimate, inside ``bracket = (lo, hi, f_lo, f_hi)`` with
    ``f = estimate - target`` (at most ``MAX_ESTIMATES`` evaluations; a plain bisection of [0, 1]
    needs 14 for the same precision). A bracket narrower than ``resolution`` straddles a jump of the
    size that no ``p`` splits: its end nearer the target is the answer."""
    lo, hi, f_lo, f_hi = bracket
    for p, f in ((lo, f_lo), (hi, f_hi)):
        if abs(f) <= tol * target:
            return p
    p, side = 0.5 * (lo + hi), 0
    for _ in range(MAX_ESTIMATES):
        if hi - lo < resolution:
            return lo if target - est(lo) <= est(hi) - target else hi  # est caches: no new estimate
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


class RateController:
    """Rate control for one image, target after target (a slider): the encoder runs once per
    lambda, here, and every size estimate is kept, so a new target costs a few estimates at most, one
    or two real encodes and one decoder pass (which also gives the reconstruction); a target asked
    for before returns its file at once.

    ``lams``: candidate lambdas (default: the geometric middle of the trained range only). With more
    than one, each is searched and the best ``quality(x, x_hat)`` (lower is better; default MSE) wins.
    ``roi``: an optional ``(H, W)`` 0/1 mask of pixels coded at the fine granularity.

    Example (a slider's callback would call ``compress`` with each new value)::

        control = RateController(model, x)
        low, high = control.reachable()
        for target in (0.15, 0.2, 0.25):
            result = control.compress(target)    # result.data: the file, result.reconstruction: its image
    """

    def __init__(
        self,
        model: HVQCodec,
        x: Tensor,
        lams: Sequence[float] | None = None,
        roi: Tensor | None = None,
        quality: Callable[[Tensor, Tensor], float] | None = None,
    ) -> None:
        cfg = model.cfg
        self.model, self.x = model, x
        self.lams = list(lams) if lams else [(cfg.lambda_min * cfg.lambda_max) ** 0.5]
        self.pixels = x.shape[1] * x.shape[2]
        self.quality = quality or (lambda a, b: float((a - b).pow(2).mean()))
        self._searches = [_LambdaSearch(model, x, lam, roi) for lam in self.lams]
        self._found: dict[tuple[float, float, int], RateControlResult] = {}  # results by request

    def with_roi(self, roi: Tensor | None) -> RateController:
        """The same image with another region of interest, without running the encoder again."""
        other = copy.copy(self)
        other._searches = [s.with_roi(roi) for s in self._searches]
        other._found = {}
        return other

    def reachable(self) -> tuple[float, float]:
        """Estimated (lowest, highest) bits per pixel over the candidate lambdas."""
        bands = [s.band() for s in self._searches]
        return min(b[0] for b in bands) / self.pixels, max(b[1] for b in bands) / self.pixels

    def compress(
        self, target_bpp: float, tolerance: float = 0.02, max_real_encodes: int = 6
    ) -> RateControlResult:
        """The file of ``target_bpp`` within ``tolerance`` (relative), see the module docstring.

        Raises:
            RateTargetError: the target is outside the reachable range for every candidate lambda.
        """
        if target_bpp <= 0:
            raise ValueError("target_bpp must be positive")
        t0 = time.perf_counter()
        request = (float(target_bpp), float(tolerance), int(max_real_encodes))
        if request in self._found:  # a slider moved back: the same file, nothing to compute
            return dataclasses.replace(self._found[request], real_encodes=0, estimates=0, seconds=0.0)
        estimates_before = sum(len(s.estimates) for s in self._searches)
        candidates, n_real = [], 0
        for search in self._searches:
            found = search.search(target_bpp * self.pixels, tolerance, max_real_encodes)
            if found is None:
                continue
            n_real += found["real_encodes"]
            if len(self._searches) > 1:
                x_hat = found["reconstruction"]
                x_hat = self.model.decompress(found["data"]) if x_hat is None else x_hat
                found["quality"] = self.quality(self.x, x_hat)
            candidates.append(
                {"lam": search.lam, "bpp": found["bits"] / self.pixels, "quality": 0.0, **found}
            )
        if not candidates:
            raise RateTargetError(target_bpp, *self.reachable())
        within = [c for c in candidates if abs(c["bpp"] - target_bpp) <= tolerance * target_bpp] or candidates
        best = min(within, key=lambda c: (c["quality"], abs(c["bpp"] - target_bpp)))
        rc, rm = ratios_for(best["p"])
        kept = ("lam", "p", "bpp", "quality")
        self._found[request] = RateControlResult(
            data=best["data"],
            bpp=best["bpp"],
            target_bpp=target_bpp,
            lam=best["lam"],
            coarse_ratio=rc,
            medium_ratio=rm,
            real_encodes=n_real,
            estimates=sum(len(s.estimates) for s in self._searches) - estimates_before,
            seconds=time.perf_counter() - t0,
            candidates=[{k: c[k] for k in kept} for c in candidates],
            symbols=best["symbols"],
            reconstruction=best["reconstruction"],
        )
        return self._found[request]


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
    """Compress ``x (3, H, W)`` to ``target_bpp`` within ``tolerance`` (relative): one
    :class:`RateController` and one target (see there for the arguments).

    Raises:
        RateTargetError: the target is outside the reachable range for every candidate lambda.
    """
    if target_bpp <= 0:
        raise ValueError("target_bpp must be positive")
    return RateController(model, x, lams, roi, quality).compress(target_bpp, tolerance, max_real_encodes)


@torch.no_grad()
def reachable_bpp(model: HVQCodec, x: Tensor, lam: float | None = None) -> tuple[float, float]:
    """Estimated (lowest, highest) bits per pixel the model reaches on ``x`` at one lambda."""
    return RateController(model, x, None if lam is None else [lam]).reachable()
