"""hvq.viz: the numbers behind the notebooks' pictures agree with the coder and the container."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from hvq import viz
from hvq.config import load_config
from hvq.container import Container
from hvq.model import HVQCodec
from hvq.tables import ideal_bits


@pytest.fixture(scope="module")
def coded():
    torch.manual_seed(0)
    model = HVQCodec(load_config("smoke").model).eval()
    model.update()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 40, 56, generator=g)  # not a multiple of 16: exercises padding
    sym = model.analyze(x, lam=1.0, coarse_ratio=0.4, medium_ratio=0.5)
    return model, x, sym, model.encode(sym)


def test_bits_map_is_the_ideal_information(coded):
    model, _, sym, _ = coded
    for g in range(3):
        mask = sym.masks[g][0, 0].numpy() > 0
        ks = sym.indices[g][0].numpy()[mask]
        b = viz.bits_map(sym, g)
        assert b.shape == mask.shape and np.isnan(b[~mask]).all()
        assert np.nansum(b) == pytest.approx(ideal_bits(sym.freqs[g], ks))
        static = model.static_freqs.numpy()
        assert np.nansum(viz.bits_map(sym, g, static)) == pytest.approx(ideal_bits(static, ks))


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
