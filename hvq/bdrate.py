"""Bjontegaard delta rate and delta quality between two rate-quality curves.

Given an anchor curve and a test curve, each a few ``(rate, quality)`` points:

* **BD-rate** (%): fit ``log(rate)`` as a function of quality for each curve, integrate both over the
  quality interval where the curves overlap, and turn the mean difference back into a rate ratio:
  ``100 * (exp(mean(log R_test - log R_anchor)) - 1)``. Negative means the test codec needs fewer bits
  for the same quality.
* **BD-quality** (BD-PSNR for PSNR): fit quality as a function of ``log(rate)``, integrate over the
  overlapping log-rate interval: the mean quality difference ``test - anchor`` at equal rate.

Two interpolations:

* ``"pchip"`` (default): piecewise cubic Hermite interpolation through the points (Fritsch-Carlson
  slopes, as ``scipy.interpolate.PchipInterpolator``; scipy is used when installed, else the numpy
  implementation here, which gives the same curve). It is monotone between monotone points and never
  overshoots, which is why the JCT-VC/JVET common-test-condition spreadsheets replaced the single
  cubic of VCEG-M33 with it: a global cubic through unevenly spaced points can swing between them and
  give misleading numbers, and it only takes exactly 4 points.
* ``"cubic"``: the original VCEG-M33 method (G. Bjontegaard, "Calculation of average PSNR differences
  between RD-curves", 2001): one least-squares polynomial of degree 3 per curve (exact through 4
  points; with fewer than 4 points the degree drops to ``n - 1``).

Lower-is-better metrics (LPIPS, DISTS, ...) pass ``higher_is_better=False``: the curves are then fitted
on ``-metric`` so that quality increases with rate as the method assumes. BD-rate keeps its meaning
(negative: the test codec is cheaper at equal LPIPS). BD-quality is returned in the metric's own units
and direction, ``mean(metric_test - metric_anchor)`` at equal rate: for LPIPS a negative value means
the test codec is better.

Undefined cases return ``NaN`` with a reason (:class:`BDResult`): fewer than 2 points, repeated
values of the interpolation variable, or no overlap between the two curves. The points of each curve
are sorted by the interpolation variable; a curve whose quality does not increase with rate gives a
number but no meaningful one (``reason`` says so).

    >>> rate = [0.1, 0.2, 0.4, 0.8]
    >>> psnr = [28.0, 30.0, 32.0, 34.0]
    >>> round(bd_rate(rate, psnr, [1.2 * r for r in rate], psnr).value, 6)
    20.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("pchip", "cubic")
#: Metrics where lower is better; :func:`bd_rate` / :func:`bd_quality` callers pass
#: ``higher_is_better=metric not in LOWER_IS_BETTER``.
LOWER_IS_BETTER = frozenset({"lpips", "dists"})


@dataclass(frozen=True)
class BDResult:
    """A Bjontegaard delta: ``value`` (NaN when undefined) and ``reason`` (why, or a caveat; else "")."""

    value: float
    reason: str = ""


# ------------------------------------------------------------------------------------ interpolation


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots (scipy's ``PchipInterpolator`` rule): ``(n,)``."""
    h = np.diff(x)
    m = np.diff(y) / h
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros_like(y)
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    flat_or_turn = (np.sign(m[1:]) != np.sign(m[:-1])) | (m[1:] == 0) | (m[:-1] == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
    d[1:-1] = np.where(flat_or_turn, 0.0, harmonic)
    d[0] = _pchip_end_slope(h[0], h[1], m[0], m[1])
    d[-1] = _pchip_end_slope(h[-1], h[-2], m[-1], m[-2])
    return d


def _pchip_end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """One-sided three-point slope at an end, limited to keep the curve shape-preserving."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > 3 * abs(m0):
        return 3 * m0
    return d


def _pchip_integral_numpy(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral over ``[lo, hi]`` (inside ``[x0, xn]``) of the PCHIP interpolant of sorted points."""
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        m = (y[k + 1] - y[k]) / h
        c2 = (3 * m - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * m) / h**2

        def antiderivative(t: float, k: int = k, c2: float = c2, c3: float = c3) -> float:
            return y[k] * t + d[k] * t**2 / 2 + c2 * t**3 / 3 + c3 * t**4 / 4

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Integral of the interpolant of sorted ``(x, y)`` over ``[lo, hi]``."""
    if method == "cubic":
        poly = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    try:
        from scipy.interpolate import PchipInterpolator
    except ImportError:
        return _pchip_integral_numpy(x, y, lo, hi)
    return float(PchipInterpolator(x, y).integrate(lo, hi))


# ------------------------------------------------------------------------------------------- deltas


def _curve(rate: Sequence[float], quality: Sequence[float], higher_is_better: bool):
    """``(log rate, oriented quality)`` float arrays, or a reason string if the curve is unusable."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"rate and quality must be 1-D and of equal length, got {r.shape} and {q.shape}")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    if keep.sum() < 2:
        return f"fewer than 2 finite points with positive rate ({int(keep.sum())})"
    return np.log(r[keep]), (q[keep] if higher_is_better else -q[keep])


def _sorted_by(x: np.ndarray, y: np.ndarray, name: str):
    """Points sorted by ``x``; a reason string if two share an ``x``."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if (np.diff(x) == 0).any():
        return f"repeated {name} values: cannot interpolate"
    return x, y


def _delta(
    x_a: np.ndarray, y_a: np.ndarray, x_t: np.ndarray, y_t: np.ndarray, name: str, method: str
) -> tuple[float, str]:
    """Mean of ``y_t - y_a`` over the overlap of the ``x`` ranges, or ``(nan, reason)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    anchor, test = _sorted_by(x_a, y_a, name), _sorted_by(x_t, y_t, name)
    for curve in (anchor, test):
        if isinstance(curve, str):
            return float("nan"), curve
    (x_a, y_a), (x_t, y_t) = anchor, test
    lo, hi = max(x_a[0], x_t[0]), min(x_a[-1], x_t[-1])
    if hi <= lo:
        return float("nan"), f"the curves do not overlap in {name}"
    diff = _integral(x_t, y_t, lo, hi, method) - _integral(x_a, y_a, lo, hi, method)
    return diff / (hi - lo), ""


def _monotone_note(*curves: tuple[np.ndarray, np.ndarray]) -> str:
    for log_r, q in curves:
        order = np.argsort(log_r, kind="stable")
        if (np.diff(q[order]) <= 0).any():
            return "quality does not increase with rate on every curve: the delta is not meaningful"
    return ""


def _curves(rate_anchor, quality_anchor, rate_test, quality_test, higher_is_better: bool):
    """Both curves as ``(log rate, quality)`` arrays, or the reason why one cannot be used."""
    anchor = _curve(rate_anchor, quality_anchor, higher_is_better)
    test = _curve(rate_test, quality_test, higher_is_better)
    for curve in (anchor, test):
        if isinstance(curve, str):
            return curve
    return anchor, test


def bd_rate(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    method: str = "pchip",
    higher_is_better: bool = True,
) -> BDResult:
    """Bjontegaard delta rate in percent of the anchor's rate (negative: the test codec saves bits).

    Args:
        rate_anchor, quality_anchor: the anchor curve, ``(n,)`` rates (bpp, > 0) and qualities.
        rate_test, quality_test: the test curve, ``(m,)``.
        method: ``"pchip"`` (default) or ``"cubic"`` (VCEG-M33); see the module docstring.
        higher_is_better: ``False`` for LPIPS-like metrics (fitted on ``-quality``).
    """
    curves = _curves(rate_anchor, quality_anchor, rate_test, quality_test, higher_is_better)
    if isinstance(curves, str):
        return BDResult(float("nan"), curves)
    anchor, test = curves
    (log_ra, qa), (log_rt, qt) = anchor, test
    mean_log_ratio, reason = _delta(qa, log_ra, qt, log_rt, "quality", method)
    if reason:
        return BDResult(float("nan"), reason)
    return BDResult(100.0 * float(np.expm1(mean_log_ratio)), _monotone_note(anchor, test))


def bd_quality(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    method: str = "pchip",
    higher_is_better: bool = True,
) -> BDResult:
    """Bjontegaard delta quality: mean ``quality_test - quality_anchor`` at equal rate, in the
    metric's own units (BD-PSNR in dB for PSNR; for LPIPS negative means the test codec is better).

    Arguments as :func:`bd_rate`.
    """
    curves = _curves(rate_anchor, quality_anchor, rate_test, quality_test, higher_is_better)
    if isinstance(curves, str):
        return BDResult(float("nan"), curves)
    anchor, test = curves
    (log_ra, qa), (log_rt, qt) = anchor, test
    mean_diff, reason = _delta(log_ra, qa, log_rt, qt, "log rate", method)
    if reason:
        return BDResult(float("nan"), reason)
    sign = 1.0 if higher_is_better else -1.0
    return BDResult(float(sign * mean_diff), _monotone_note(anchor, test))
