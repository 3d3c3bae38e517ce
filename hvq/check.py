"""Claims, checked: the notebooks back every sentence that states a result with one of these calls.

A notebook's prose says "decoding gives the same symbols" or "PSNR rises with lambda"; the cell below
it computes the numbers and calls :func:`check` (or :func:`check_close`, :func:`check_increasing`).
When the claim holds it prints one line, ``✓ claim (the values it rests on)``; when it does not, it
raises :class:`ClaimError` with the same values, so a notebook run (CI runs every notebook) fails
loudly instead of showing prose that its own outputs refute.

    >>> check(2 < 3, "two is less than three", two=2, three=3)
    ✓ two is less than three (two=2, three=3)
    >>> check_increasing([0.1, 0.2, 0.4], "the rate grows with lambda", unit="bpp")
    ✓ the rate grows with lambda (values=[0.1, 0.2, 0.4] bpp)
    >>> check_close(0.98, 1.0, "the estimate is within 5% of the file", rtol=0.05)
    ✓ the estimate is within 5% of the file (actual=0.98, expected=1, rtol=0.05)
    >>> check(False, "this fails", x=1.23456)
    Traceback (most recent call last):
    ...
    hvq.check.ClaimError: ✗ this fails (x=1.235)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Sequences longer than this are shown by their ends and their length.
LONGEST_SHOWN = 8


class ClaimError(AssertionError):
    """A sentence of a notebook's prose does not hold for the data it was computed on."""


def _fmt(value: Any) -> str:
    """Short text for one value: floats to 4 significant digits, sequences element by element."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    if isinstance(value, np.ndarray):
        return _fmt(value.tolist())
    if isinstance(value, list | tuple):
        if len(value) > LONGEST_SHOWN:  # a long curve: its ends and its length
            ends = [*map(_fmt, value[:3]), "...", *map(_fmt, value[-2:])]
            return "[" + ", ".join(ends) + f"] ({len(value)} values)"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _describe(claim: str, values: dict[str, Any]) -> str:
    shown = ", ".join(f"{name}={_fmt(v)}" for name, v in values.items())
    return f"{claim} ({shown})" if shown else claim


def check(condition: bool, claim: str, **values: Any) -> None:
    """Print ``✓ claim (values)`` if ``condition`` holds, else raise :class:`ClaimError`.

    ``values`` are the numbers the claim rests on (``name=value``); they appear in both messages, so
    a failure says what the data were, not only that something is wrong.
    """
    described = _describe(claim, values)
    if not bool(condition):
        raise ClaimError(f"✗ {described}")
    print(f"✓ {described}")


def check_close(actual: float, expected: float, claim: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` (give ``rtol``, ``atol`` or both)."""
    if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0):
        raise ValueError("check_close needs a tolerance: rtol > 0 or atol > 0 (and neither negative)")
    a, e = float(actual), float(expected)
    ok = math.isfinite(a) and abs(a - e) <= atol + rtol * abs(e)
    tolerances = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v}
    check(ok, claim, actual=a, expected=e, **tolerances)


def _steps(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError("a trend needs a 1-D sequence of at least two values")
    return v


def check_increasing(values: Sequence[float], claim: str, strict: bool = True, tol: float = 0.0,
                     unit: str = "") -> None:  # fmt: skip
    """Check that ``values`` rise from each one to the next.

    ``strict``: every step must be ``> tol`` (default: rise at all); otherwise every step ``>= -tol``
    (never fall by more than ``tol``, the noise the claim allows).
    """
    v = _steps(values)
    steps = np.diff(v)
    ok = bool(np.isfinite(v).all() and ((steps > tol).all() if strict else (steps >= -tol).all()))
    extra = {"tol": tol} if tol else {}
    check(ok, claim, values=f"{_fmt(v)}{' ' + unit if unit else ''}", **extra)


def check_decreasing(values: Sequence[float], claim: str, strict: bool = True, tol: float = 0.0,
                     unit: str = "") -> None:  # fmt: skip
    """Check that ``values`` fall from each one to the next (see :func:`check_increasing`)."""
    v = _steps(values)
    steps = -np.diff(v)
    ok = bool(np.isfinite(v).all() and ((steps > tol).all() if strict else (steps >= -tol).all()))
    extra = {"tol": tol} if tol else {}
    check(ok, claim, values=f"{_fmt(v)}{' ' + unit if unit else ''}", **extra)
