"""hvq.viz: the numbers behind the notebooks' pictures agree with the coder and the container."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pytest
import torch
from helpers import assert_tables_vary, vary_hyper_tables

from hvq import viz
from hvq.config import load_config
from hvq.container import Container
from hvq.model import HVQCodec


@pytest.fixture(scope="module")
def coded():
    torch.manual_seed(0)
    # Varied per-position tables (the zero-initialised h_s gives one table per granularity, under which
    # a map that priced every position with row 0, or rows in the wrong order, would look right).
    model = vary_hyper_tables(HVQCodec(load_config("smoke").model).eval())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 40, 56, generator=g)  # not a multiple of 16: exercises padding
    sym = model.analyze(x, lam=1.0, coarse_ratio=0.4, medium_ratio=0.5)
    return model, x, sym, model.encode(sym)


def _bits_by_hand(freqs: np.ndarray, mask: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``24 - log2(f[chosen])`` at every coded position, walking the mask in raster order (the n-th coded
    position uses row n of a per-position table), NaN elsewhere; written without ``hvq.tables``."""
    out = np.full(mask.shape, np.nan)
    n = 0
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j]:
                row = freqs if freqs.ndim == 1 else freqs[n]
                out[i, j] = 24.0 - math.log2(int(row[indices[i, j]]))
                n += 1
    assert freqs.ndim == 1 or n == freqs.shape[0]
    return out


def test_bits_map_is_the_ideal_information(coded):
    model, _, sym, data = coded
    assert_tables_vary(sym.freqs)  # otherwise a wrong row would give the same bits
    streams = Container.from_bytes(data).streams
    static = model.static_freqs.numpy()
    for g in range(3):
        mask = sym.masks[g][0, 0].numpy() > 0
        idx = sym.indices[g][0].numpy()
        b = viz.bits_map(sym, g)
        assert b.shape == mask.shape
        np.testing.assert_array_equal(np.isnan(b), ~mask)
        np.testing.assert_allclose(b, _bits_by_hand(sym.freqs[g], mask, idx), rtol=0, atol=1e-9)
        # The range coder really spends about that: the coded index stream of granularity g (whole
        # 32-bit words) is the information content rounded up to words, plus at most one flush word
        # and a fraction of a percent of coder overhead.
        ideal, real = np.nansum(b), 8 * len(streams[4 + g])
        assert ideal - 2 <= real <= 1.005 * ideal + 64, (g, ideal, real)
        # Priced under one shared table instead (the static-histogram ablation).
        np.testing.assert_allclose(
            viz.bits_map(sym, g, static), _bits_by_hand(static, mask, idx), rtol=0, atol=1e-9
        )


def test_granularity_and_bits_per_pixel_maps(coded):
    _, x, sym, _ = coded
    gm = viz.granularity_map(sym)
    assert gm.shape == x.shape[1:] and set(np.unique(gm)) <= {0, 1, 2}
    bpp_map = viz.bits_per_pixel_map(sym)
    assert bpp_map.shape == x.shape[1:] and (bpp_map >= 0).all()
    padded_total = sum(np.nansum(viz.bits_map(sym, g)) for g in range(3))
    assert 0 < bpp_map.sum() <= padded_total + 1e-6


def test_stream_sizes_add_up_to_the_file(coded):
    _, _, _, data = coded
    sizes = viz.stream_sizes(data)
    assert list(sizes)[:7] == list(viz.STREAM_NAMES)
    assert sum(sizes.values()) == len(data)
    assert [sizes[n] for n in viz.STREAM_NAMES] == [len(s) for s in Container.from_bytes(data).streams]


def test_box_mask():
    roi = viz.box_mask(10, 20, (2, 3, 7, 9))
    assert roi.shape == (10, 20) and roi.sum() == 5 * 6 and roi[3, 2] == 1 and roi[9, 7] == 0
    with pytest.raises(ValueError):
        viz.box_mask(10, 20, (5, 3, 5, 9))


def test_plot_helpers_draw(coded):
    import matplotlib.pyplot as plt

    _, x, sym, _ = coded
    viz.plot_bits_maps(sym)
    viz.plot_granularity_map(sym, image=x)
    viz.show_images([x, x], ["a", "b"])
    shown = []
    live = viz.LivePlot(["loss"], display=shown.append)
    live({"step": 1, "loss": 2.0})
    live({"step": 2, "loss": 1.0})
    assert len(shown) == 2 and len(live.rows) == 2
    plt.close("all")
