"""The shipped model's region of interest buys quality inside the box at the same file size.

Issue 17, point 2, on a few Kodak images (``benchmarks/roi_kodak.py`` runs all 24 and writes
``results/kodak/roi.csv``): each image is coded at ratios 0.6 without a region, then with the central
box forced fine and rate-controlled to the same size; inside the box PSNR must rise and LPIPS fall.
The images are the first three of the set, not a selection.
"""

from __future__ import annotations

import pytest

from hvq.data import kodak_images, load_image
from hvq.evaluate import central_box, roi_comparison
from hvq.metrics import shared_lpips
from hvq.pretrained import load_pretrained

IMAGES = ("kodim01", "kodim02", "kodim03")


@pytest.fixture(scope="module")
def model():
    return load_pretrained("reduced")


@pytest.mark.parametrize("name", IMAGES)
def test_a_fine_box_is_sharper_inside_at_the_same_size(model, name):
    x = load_image(next(p for p in kodak_images() if p.stem == name))
    row = roi_comparison(model, x, central_box(*x.shape[1:]), 0.6, shared_lpips())
    assert abs(row["bpp_roi"] / row["bpp_plain"] - 1) <= 0.02, row
    assert row["psnr_roi"] > row["psnr_plain"], row
    assert row["lpips_roi"] < row["lpips_plain"], row
