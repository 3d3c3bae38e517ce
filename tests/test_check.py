"""hvq.check: a claim that holds prints its values, one that does not raises ClaimError with them."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from hvq import check as check_module
from hvq.check import ClaimError, check, check_close, check_decreasing, check_increasing


def test_a_true_claim_prints_its_values(capsys):
    check(3 > 2, "three beats two", a=3, b=np.float64(2.0), ok=np.bool_(True))
    assert capsys.readouterr().out == "✓ three beats two (a=3, b=2, ok=True)\n"


def test_a_false_claim_raises_with_its_values(capsys):
    with pytest.raises(ClaimError, match=r"✗ PSNR rises \(before=25.12, after=24.5\)"):
        check(24.5 > 25.123, "PSNR rises", before=25.123, after=24.5)
    assert capsys.readouterr().out == ""  # no tick for a claim that failed
    assert issubclass(ClaimError, AssertionError)  # pytest and nbmake report it as a failed check


def test_a_long_sequence_is_shown_by_its_ends(capsys):
    check_increasing(list(range(20)), "rises")
    assert capsys.readouterr().out == "✓ rises (values=[0, 1, 2, ..., 18, 19] (20 values))\n"


def test_check_close_uses_both_tolerances():
    check_close(1.009, 1.0, "within 1%", rtol=0.01)
    check_close(0.05, 0.0, "near zero", atol=0.1)
    with pytest.raises(ClaimError, match="rtol=0.01"):
        check_close(1.02, 1.0, "within 1%", rtol=0.01)
    with pytest.raises(ClaimError):
        check_close(float("nan"), 1.0, "a NaN is close to nothing", rtol=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        check_close(1.0, 1.0, "no tolerance given")


def test_trends_strict_tolerant_and_their_mirror():
    check_increasing([1, 2, 3], "rises")
    check_decreasing(np.array([3.0, 2.0, 1.0]), "falls")
    with pytest.raises(ClaimError):
        check_increasing([1, 2, 2], "rises strictly")
    check_increasing([1, 2, 2], "never falls", strict=False)
    check_increasing([1.0, 2.0, 1.95], "never falls by more than 0.1", strict=False, tol=0.1)
    with pytest.raises(ClaimError, match="values=\\[1, 2, 1.5\\] dB"):
        check_increasing([1.0, 2.0, 1.5], "never falls by more than 0.1", strict=False, tol=0.1, unit="dB")
    with pytest.raises(ClaimError):
        check_increasing([1.0, 1.05, 2.0], "every step rises by more than 0.1", tol=0.1)
    with pytest.raises(ClaimError):
        check_decreasing([3, 1, 2], "falls")
    with pytest.raises(ClaimError):
        check_increasing([1.0, float("nan"), 3.0], "NaN is no trend", strict=False)
    with pytest.raises(ValueError):
        check_increasing([1.0], "one value is no trend")


def test_docstring_examples():
    assert doctest.testmod(check_module).failed == 0
