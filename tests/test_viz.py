"""hvq.plots.maps: the numbers behind the notebooks' pictures agree with the coder and the container."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import io
import math

import numpy as np
import pytest
import torch
from helpers import assert_tables_vary, vary_hyper_tables

from hvq.config import load_config
from hvq.container import Container
from hvq.model import HVQCodec
from hvq.plots import maps


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
        b = maps.bits_map(sym, g)
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
            maps.bits_map(sym, g, static), _bits_by_hand(static, mask, idx), rtol=0, atol=1e-9
        )


def test_granularity_and_bits_per_pixel_maps(coded):
    _, x, sym, _ = coded
    gm = maps.granularity_map(sym)
    assert gm.shape == x.shape[1:] and set(np.unique(gm)) <= {0, 1, 2}
    bpp_map = maps.bits_per_pixel_map(sym)
    assert bpp_map.shape == x.shape[1:] and (bpp_map >= 0).all()
    padded_total = sum(np.nansum(maps.bits_map(sym, g)) for g in range(3))
    assert 0 < bpp_map.sum() <= padded_total + 1e-6


def test_stream_sizes_add_up_to_the_file(coded):
    _, _, _, data = coded
    sizes = maps.stream_sizes(data)
    assert list(sizes)[:7] == list(maps.STREAM_NAMES)
    assert sum(sizes.values()) == len(data)
    assert [sizes[n] for n in maps.STREAM_NAMES] == [len(s) for s in Container.from_bytes(data).streams]


def test_box_mask():
    roi = maps.box_mask(10, 20, (2, 3, 7, 9))
    assert roi.shape == (10, 20) and roi.sum() == 5 * 6 and roi[3, 2] == 1 and roi[9, 7] == 0
    with pytest.raises(ValueError):
        maps.box_mask(10, 20, (5, 3, 5, 9))


def test_plot_helpers_draw(coded):
    import matplotlib.pyplot as plt

    _, x, sym, _ = coded
    maps.plot_bits_maps(sym)
    maps.plot_granularity_map(sym, image=x)
    maps.show_images([x, x], ["a", "b"])
    shown = []
    live = maps.LivePlot(["loss"], display=shown.append)
    live({"step": 1, "loss": 2.0})
    live({"step": 2, "loss": 1.0})
    assert len(shown) == 2 and len(live.rows) == 2
    plt.close("all")


# ------------------------------------------------------------------ hvq.plots.rd: the lambda panel


def _curve(bpp, value, metric="psnr"):
    import pandas as pd

    return pd.DataFrame({"bpp": bpp, metric: value})


def test_quality_at_rates_is_linear_in_log_rate():
    from hvq.plots import rd

    # unordered rows, one with a NaN metric (ignored); sqrt(0.1 * 0.4) = 0.2 is the log midpoint
    curve = _curve([0.4, 0.1, 0.3], [30.0, 20.0, float("nan")])
    got = rd.quality_at_rates(curve, "psnr", [0.1, 0.2, 0.4, 0.05, 0.5])
    np.testing.assert_allclose(got[:3], [20.0, 25.0, 30.0])
    assert np.isnan(got[3:]).all()  # outside the rates the curve covers
    np.testing.assert_allclose(
        rd.common_rates(_curve([0.1, 0.4], [1, 2]), _curve([0.2, 1.0], [1, 2]), n=3),
        [0.2, 0.2**0.5 * 0.4**0.5, 0.4],
    )
    assert rd.common_rates(_curve([0.1, 0.2], [1, 2]), _curve([0.3, 1.0], [1, 2])).size == 0


def test_results_curve_and_at_common_rates(tmp_path):
    import pandas as pd

    from hvq.plots import rd

    summary = pd.DataFrame({
        "codec": ["hvq", "hvq", "hvq", "jpeg", "jpeg"], "point": ["b", "a", "c", "q5", "q1"],
        "bpp": [0.4, 0.1, 0.2, 0.8, 0.2], "psnr": [24.0, 20.0, 22.0, 30.0, 24.0],
    })  # fmt: skip
    hvq_json = {"curves": {"ratio sweep": ["a", "b"]}, "n_images": 1}
    res = rd.Results(tmp_path, summary, summary, summary, hvq_json)
    assert res.anchor_names == ["jpeg"]
    assert list(res.curve("ratio sweep").point) == ["a", "b"]  # its points only, by rate
    assert list(res.curve("jpeg").point) == ["q1", "q5"]
    with pytest.raises(KeyError, match="one of ratio sweep, jpeg"):
        res.curve("webp")
    table = rd.at_common_rates({c: res.curve(c) for c in ("ratio sweep", "jpeg")}, "psnr", n=3)
    np.testing.assert_allclose(table.index, [0.2, 0.2**0.5 * 0.4**0.5, 0.4])  # the rates both reach
    np.testing.assert_allclose(table["ratio sweep"], [22.0, 23.0, 24.0])  # 20 + 4 * log(r/0.1)/log(4)
    np.testing.assert_allclose(table["jpeg"], [24.0, 25.5, 27.0])


class _MeanAbs(torch.nn.Module):
    """Stand-in for LPIPS: the mean absolute difference, ``(B, 3, H, W) x 2 -> (B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # LiveCoder reads the device from a parameter

    def forward(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


@pytest.fixture(scope="module")
def live():
    from hvq.plots import rd

    torch.manual_seed(0)
    model = vary_hyper_tables(HVQCodec(load_config("smoke").model).eval())
    yy, xx = np.mgrid[0:40, 0:56]
    noise = np.random.default_rng(0).integers(0, 60, (40, 56, 3))
    pixels = (np.stack([4 * xx, 6 * yy, 3 * (xx + yy)], -1) + noise).clip(0, 255).astype(np.uint8)
    return model, pixels, rd.LiveCoder(model, pixels, "jpeg", lpips=_MeanAbs())


def test_live_coder_codes_for_real(live, monkeypatch):
    from hvq import baselines
    from hvq.data import to_tensor
    from hvq.metrics import psnr

    model, pixels, coder = live
    x = to_tensor(pixels)
    point = coder(1.0, 0.4, 0.5)
    assert point.data == model.compress(x, 1.0, 0.4, 0.5)  # the same file as compress
    decoded = (model.decompress(point.data).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(point.hvq.pixels, decoded)  # what the file decodes to
    assert point.hvq.bpp == pytest.approx(8 * len(point.data) / (40 * 56))
    assert point.hvq.psnr == pytest.approx(psnr(x, to_tensor(decoded)))
    assert point.hvq.lpips == pytest.approx(float((x - to_tensor(decoded)).abs().mean()), rel=1e-5)
    sym = model.analyze(x, 1.0, 0.4, 0.5)
    np.testing.assert_allclose(point.bits, maps.bits_per_pixel_map(sym))
    n_bytes, anchor_pixels, _, _ = baselines.encode_decode("jpeg", pixels, point.anchor_quality)
    assert point.anchor.n_bytes == n_bytes and np.array_equal(point.anchor.pixels, anchor_pixels)
    assert point.anchor_codec == "jpeg" and point.lam == 1.0 and point.coarse_ratio == 0.4
    # Caches: the same knobs give the same point; a ratio move reuses the encoder's features.
    calls = []
    encode_features = model.encode_features
    monkeypatch.setattr(model, "encode_features", lambda *a, **k: calls.append(a) or encode_features(*a, **k))
    assert coder(1.0, 0.4, 0.5) is point
    moved = coder(1.0, 0.8, 0.8)
    assert calls == [] and moved.hvq.n_bytes < point.hvq.n_bytes  # more of the image coarse: fewer bytes
    coder(2.0, 0.8, 0.8)
    assert len(calls) == 1
    lpips_calls = []
    monkeypatch.setattr(
        coder.lpips, "forward", lambda x, y: lpips_calls.append(1) or (x - y).abs().flatten(1).mean(1)
    )
    assert coder.anchor_at(point.anchor_quality) is point.anchor and lpips_calls == []  # measured once
    with pytest.raises(ValueError, match="uint8"):
        type(coder)(model, pixels.astype(np.float32))
    with pytest.raises(ValueError, match="unknown anchor"):
        type(coder)(model, pixels, "png")


def test_anchor_quality_is_the_closest_with_few_encodes(live, monkeypatch):
    from hvq import baselines
    from hvq.plots import rd

    model, pixels, _ = live
    sizes = [300 + 9 * q + q * q // 7 for q in range(101)]  # increasing, as a codec's file sizes
    encoded = []

    def fake(codec, image, quality):
        encoded.append(quality)
        return sizes[quality], image, 0.0, 0.0

    monkeypatch.setattr(baselines, "encode_decode", fake)
    coder = rd.LiveCoder(model, pixels, "jpeg", lpips=_MeanAbs())
    bpp = np.array(sizes) * 8 / pixels[..., 0].size
    targets = np.random.default_rng(1).uniform(0.5 * bpp[0], 1.2 * bpp[-1], 40)
    for t in targets:
        closest = int(np.argmin(np.abs(bpp - t)))  # the lowest on a tie, as argmin
        assert coder.anchor_quality(float(t)) == closest, t
    assert len(encoded) == len(set(encoded))  # every quality encoded once
    first = len(encoded)
    assert coder.anchor_quality(float(targets[0])) == int(np.argmin(np.abs(bpp - targets[0])))
    assert len(encoded) == first  # a target seen before costs nothing
    assert first <= 3 * len(targets)  # without the cache: about 7 per target


def _fake_point(hvq_values=(0.2, 25.0, 0.30), anchor_values=(0.21, 30.0, 0.12), lam=1.41, ratio=0.45):
    from hvq.plots import rd

    pixels = np.full((16, 24, 3), 128, np.uint8)

    def rec(label, values):
        bpp, psnr_db, lpips_value = values
        n_bytes = round(bpp * 16 * 24 / 8)
        return rd.Reconstruction(label, pixels + 1, n_bytes, bpp, psnr_db, lpips_value)

    bits = np.linspace(0, 1, 16 * 24).reshape(16, 24)
    return rd.LivePoint(lam, ratio, ratio, b"x", rec("hvq", hvq_values), bits, "avif", 40,
                            rec("avif q=40", anchor_values), 1.5)  # fmt: skip


def _frames():
    import pandas as pd

    from hvq.plots import figures

    summary = pd.DataFrame({
        "codec": ["hvq", "hvq", "avif", "avif"], "point": ["a", "b", "q0", "q8"],
        "bpp": [0.1, 0.3, 0.08, 0.4], "psnr": [22.0, 24.0, 26.0, 33.0], "lpips": [0.4, 0.3, 0.45, 0.1],
    })  # fmt: skip
    curves = {"hvq ratio sweep": ["a", "b"]}
    own = summary.assign(bpp=summary.bpp * 1.1, psnr=summary.psnr + 1)
    return figures.rd_frame(summary, curves), figures.rd_frame(own, curves)


def test_live_figure_shows_the_point_on_the_curves():
    from hvq.plots import rd

    point = _fake_point()
    kodak, own = _frames()
    original = np.zeros((16, 24, 3), np.uint8)
    fig = rd.live_figure(kodak, point, original, own, title="kodim23")
    rd_axes = fig.axes[:2]
    for ax, metric in zip(rd_axes, ("lpips", "psnr"), strict=True):
        xy = {
            (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
            for line in ax.lines
            if len(line.get_xdata())
        }
        assert (point.hvq.bpp, getattr(point.hvq, metric)) in xy  # the star of hvq
        assert (point.anchor.bpp, getattr(point.anchor, metric)) in xy  # and of the anchor
        mean_curve = next(line for line in ax.lines if line.get_label() == "hvq ratio sweep")
        np.testing.assert_allclose(mean_curve.get_ydata(), kodak[kodak.label == "hvq ratio sweep"][metric])
        pale = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
        assert len(pale) == 2  # this image's hvq curve and its anchor's curve
    image_axes = [ax for ax in fig.axes[2:] if ax.images]
    shown = [ax.images[0].get_array() for ax in image_axes]
    np.testing.assert_array_equal(shown[0], original)
    np.testing.assert_array_equal(shown[1], point.hvq.pixels)
    np.testing.assert_allclose(shown[2], point.bits)
    np.testing.assert_array_equal(shown[3], point.anchor.pixels)
    assert "25.00" in image_axes[1].get_title() and "30.00" in image_axes[3].get_title()


def test_readout_html_has_every_number_unclipped():
    from hvq.plots import rd

    point = _fake_point()
    html = rd.readout_html(point)
    assert "white-space: nowrap" in html
    for text in (
        "0.2000",
        "0.2100",
        str(point.hvq.n_bytes),
        str(point.anchor.n_bytes),
        "quality 40",
        "λ 1.41",
    ):
        assert text in html, text
    assert "<b>30.00</b>" in html and "<b>25.00</b>" not in html  # the better PSNR is bold
    assert "<b>0.1200</b>" in html and "<b>0.3000</b>" not in html  # and the better (lower) LPIPS
    assert "+5.00 dB" in html and "-0.1800" in html


def test_rate_sliders_run_from_low_to_high_rate():
    from hvq.plots import rd

    sliders = rd.rate_sliders((0.25, 8.0), (0.0, 0.9), lam=2**0.5, ratio=0.45)
    lambdas = [v for _, v in sliders["lam"].options]
    assert len(lambdas) == 21 and lambdas[0] == pytest.approx(0.25) and lambdas[-1] == pytest.approx(8.0)
    np.testing.assert_allclose(np.diff(np.log(lambdas)), np.log(32) / 20)  # evenly spaced in log
    assert sliders["lam"].value == pytest.approx(2**0.5)
    for name in ("coarse_ratio", "medium_ratio"):
        ratios = [v for _, v in sliders[name].options]
        np.testing.assert_allclose(ratios, np.linspace(0.9, 0.0, 19))  # most coarse (fewest bits) first
        assert sliders[name].value == 0.45
        assert max(len(label) for label, _ in sliders[name].options) <= 4  # short readouts
    reverse = rd.rate_sliders((0.25, 8.0), (0.0, 0.9), lam=1.0, ratio=0.2, lambda_raises_rate=False)
    assert [v for _, v in reverse["lam"].options] == lambdas[::-1] and reverse["coarse_ratio"].value == 0.2


def test_live_panel_draws_first_and_recodes_on_release():
    from hvq.plots import rd

    initial, moved = _fake_point(), _fake_point(hvq_values=(0.3, 26.0, 0.25), ratio=0.3)
    calls = []

    def coder(**knobs):
        calls.append(knobs)
        return moved

    drawn = []

    def draw(point):
        drawn.append(point)
        return rd.live_figure(*_frames()[:1], point, np.zeros((16, 24, 3), np.uint8))

    sliders = rd.rate_sliders((0.25, 8.0), (0.0, 0.9), lam=2**0.5, ratio=0.45)
    panel = rd.live_panel(coder, draw, sliders, initial)
    readout, out = panel.children[-2:]
    assert readout.value == rd.readout_html(initial) and drawn == [initial] and calls == []
    assert out.outputs and "image/png" in out.outputs[0]["data"]  # the figure, before any move
    sliders["coarse_ratio"].value = 0.3
    assert calls == [{"lam": sliders["lam"].value, "coarse_ratio": 0.3, "medium_ratio": 0.45}]
    assert readout.value == rd.readout_html(moved) and drawn[-1] is moved


# ------------------------------------------------------------------ hvq.plots.figures: the notebooks' figures


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_reconstruction_figure_shows_the_inputs_and_their_error(coded):
    from hvq.plots import figures

    _, x, _, _ = coded
    x_hat = (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    fig = figures.reconstruction_figure(x, x_hat, ["a", "b"])
    images = _images(fig)
    assert len(images) == 3 and len(fig.axes) == 4  # three panels and a colour bar
    np.testing.assert_allclose(images[0].get_array(), maps.to_numpy_image(x))
    np.testing.assert_allclose(images[1].get_array(), maps.to_numpy_image(x_hat))
    np.testing.assert_allclose(images[2].get_array(), (x - x_hat).abs().mean(0).numpy(), rtol=1e-6)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]


def test_file_anatomy_figure_bars_are_the_stream_sizes(coded):
    from hvq.plots import figures

    _, x, sym, data = coded
    sizes = maps.stream_sizes(data)
    fig = figures.file_anatomy_figure(sizes, sym, x)
    bars = fig.axes[0].patches
    assert [b.get_width() for b in bars] == list(sizes.values())
    assert fig.axes[0].get_title() == f"{len(data)} bytes in all"
    np.testing.assert_allclose(fig.axes[2].get_images()[0].get_array(), maps.bits_per_pixel_map(sym))


def test_renormalisation_and_integer_table_figures_plot_their_inputs():
    from hvq.plots import figures

    codebook = np.array([-1.0, 0.0, 0.5, 2.0])
    dens = np.exp(-0.5 * codebook**2) / np.sqrt(2 * np.pi)
    probs = dens / dens.sum()
    fig = figures.renormalisation_figure(codebook, 0.0, 1.0, dens, probs)
    left, right = fig.axes
    np.testing.assert_allclose([b.get_height() for b in right.patches], probs)
    stem_y = left.containers[0].markerline.get_ydata()
    np.testing.assert_allclose(stem_y, dens)
    assert f"{dens.sum():.3f}" in left.get_title() and "1.000" in right.get_title()

    p_int = probs * (1 + np.array([0.01, -0.02, 0.0, 0.03]))
    fig = figures.integer_table_figure(probs, p_int, 2.0**-24)
    x_data, y_data = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(x_data, probs)
    np.testing.assert_allclose(y_data, p_int)


def test_toy_figure_sizes_codes_by_probability_and_rings_the_nearest():
    from hvq.plots import figures

    codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    probs = np.array([0.5, 0.3, 0.2])
    fig = figures.toy_figure(codebook, probs, (0.9, 0.1), (1.0, 0.5), k_star=2, feature=(0.1, 1.8))
    ax = fig.axes[0]
    dots = ax.collections[0]
    np.testing.assert_allclose(dots.get_offsets(), codebook)
    np.testing.assert_allclose(dots.get_sizes(), 8 + 900 * probs)
    ring = next(line for line in ax.lines if line.get_label() == "nearest code to $\\mu$")
    assert tuple(ring.get_xydata()[0]) == (1.0, 0.0)  # codeword 1 is nearest to (0.9, 0.1)
    assert f"bits={-np.log2(0.2):.2f}" in ax.get_title()
    assert len(ax.patches) == 2  # the 1- and 2-sigma ellipses


def test_sigma_limits_rate_field_and_rate_line_figures_plot_their_inputs():
    from hvq.plots import figures

    sigmas = np.logspace(-2, 2, 9)
    max_p = {"a": np.linspace(1, 0.1, 9), "b": np.linspace(0.9, 0.1, 9)}
    entropy = {"a": np.linspace(0, 3, 9), "b": np.linspace(0, 2.9, 9)}
    fig = figures.sigma_limits_figure(sigmas, max_p, entropy, (0.1, 10.0), 8)
    left, right = fig.axes
    np.testing.assert_allclose(left.lines[1].get_ydata(), max_p["b"])
    np.testing.assert_allclose(right.lines[0].get_ydata(), entropy["a"])
    assert right.lines[-1].get_ydata()[0] == 3.0  # log2 K

    lin = np.linspace(-1, 1, 3)
    mu_y, mu_x = np.meshgrid(lin, lin, indexing="ij")
    grad = np.stack([mu_x, 2 * mu_y])
    fig = figures.rate_field_figure(mu_x, mu_y, mu_x**2 + mu_y**2, grad, np.zeros((2, 2)), 0, 1.0)
    quiver = next(c for c in fig.axes[0].collections if hasattr(c, "U"))
    np.testing.assert_allclose(quiver.U.ravel(), -grad[0].ravel())
    np.testing.assert_allclose(quiver.V.ravel(), -grad[1].ravel())

    line = np.linspace(-2, 2, 5)
    fig = figures.rate_along_line_figure(line, {0.5: line**2, 2.0: line**2 / 4}, 5.5, 0.3)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), line**2 / 4)
    assert ax.lines[2].get_ydata()[0] == 5.5 and ax.lines[3].get_xdata()[0] == 0.3


def test_coder_figures_stack_what_they_are_given():
    from hvq.plots import figures

    fig = figures.index_cost_figure(["a", "b"], [100.0, 50.0], [128.0, 64.0])
    bars = fig.axes[0].patches
    assert [b.get_width() for b in bars] == [100.0, 50.0, 28.0, 14.0]  # ideal, then overhead
    assert [b.get_x() for b in bars[2:]] == [100.0, 50.0]  # the overhead starts where the ideal ends

    fig = figures.entropy_models_figure([10, 20, 30], [8, 15, 20], [1, 2, 3], "t")
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == [10, 20, 30, 8, 15, 20, 1, 2, 3]
    assert [b.get_y() for b in bars[6:]] == [8, 15, 20]  # z sits on top of the index bytes


def test_bits_maps_figure_one_row_per_table(coded):
    from hvq.plots import figures

    model, _, sym, _ = coded
    static = model.static_freqs.numpy()
    fig = figures.bits_maps_figure(sym, {"hyperprior": None, "static": static})
    images = _images(fig)
    assert len(images) == 6
    for row, table in enumerate((None, static)):
        for g in range(3):
            shown = np.ma.filled(images[3 * row + g].get_array().astype(float), np.nan)
            np.testing.assert_allclose(shown, maps.bits_map(sym, g, table))
    assert len({im.norm.vmax for im in images}) == 1  # one colour scale


def test_desync_figure_counts_the_wrong_symbols_and_marks_a_stop():
    from hvq.plots import figures

    sent = np.arange(200) % 7
    decoded = sent[:150].copy()
    decoded[40:] = (decoded[40:] + 1) % 7
    fig = figures.desync_figure(sent, decoded, n_show=60, stopped="error")
    top, bottom = fig.axes
    assert len(top.lines[0].get_xdata()) == 60
    wrong = bottom.lines[0].get_ydata()
    assert wrong[39] == 0 and wrong[-1] == 110
    assert any("stopped after 150" in t.get_text() for t in bottom.get_legend().get_texts())


def test_training_terms_figure_stacks_the_rate(tmp_path):
    import pandas as pd

    from hvq.plots import figures

    log = pd.DataFrame(
        {
            "step": [1, 2, 3],
            "bpp_index": [0.3, 0.2, 0.1],
            "bpp_z": [0.02] * 3,
            "bpp_mask": [0.01] * 3,
            "mse": [0.1, 0.05, 0.02],
            "lpips": [0.5, 0.4, 0.3],
            "codebook": [1.0, 0.5, 0.2],
            "commit": [0.4, 0.2, 0.1],
            "perplexity": [5.0, 9.0, 12.0],
        }
    )
    fig = figures.training_terms_figure(log, 50.0, 1.0, 0.25)
    assert len(fig.axes) == 4  # three panels and the perplexity axis
    top_of_stack = fig.axes[0].collections[-1].get_paths()[0].vertices[:, 1].max()
    assert top_of_stack == pytest.approx(0.33)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), 50.0 * log["mse"])
    np.testing.assert_allclose(fig.axes[3].lines[0].get_ydata(), log["perplexity"])


def test_lambda_sweep_figure_ticks_are_the_lambdas_and_do_not_overlap():
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hvq.plots import figures

    lams = np.geomspace(0.25, 8.0, 4)
    sweep = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "lambda": lams,
            "bpp": [0.1, 0.2, 0.3, 0.4],
            "psnr": [25.0, 26.0, 27.0, 28.0],
            "lpips": [0.3, 0.25, 0.2, 0.15],
        }
    )
    fig = figures.lambda_sweep_figure(sweep)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax, column in zip(fig.axes, ["bpp", "psnr", "lpips"], strict=True):
        np.testing.assert_allclose(ax.get_xticks(), lams, rtol=1e-5)
        np.testing.assert_allclose(ax.lines[0].get_ydata(), sweep[column])
        labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True) if t.get_text()]
        assert [t.get_text() for t in labels] == ["0.25", "0.794", "2.52", "8"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_image_grid_and_rate_figures_show_their_images(coded):
    from hvq.plots import figures

    model, x, sym, data = coded
    fig = figures.image_grid_figure({"row a": [(x, "1"), (x, "2")], "row b": [(x, "3"), (x, "4")]})
    assert len(_images(fig)) == 4 and [ax.get_title() for ax in fig.axes] == ["1", "2", "3", "4"]

    p = np.linspace(0, 1, 5)
    fig = figures.rate_curve_figure(p, p + 0.1, p[::2], p[::2] + 0.12, (0.1, 1.1), "t")
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), p[::2] + 0.12)

    x_hat = model.decompress(data)
    fig = figures.rate_target_figure(x, x_hat, sym, "title")
    from hvq.metrics import psnr

    assert f"PSNR {psnr(x, x_hat):.2f} dB" in fig.axes[0].get_title()
    np.testing.assert_allclose(fig.axes[2].get_images()[0].get_array(), maps.bits_per_pixel_map(sym))


def test_roi_figure_one_row_per_file_with_the_box(coded):
    from hvq.plots import figures

    model, x, sym, data = coded
    x_hat = model.decompress(data)
    box = (8, 4, 24, 20)
    fig = figures.roi_figure(x, box, [("a", sym, x_hat, len(data)), ("b", sym, x_hat, 2 * len(data))])
    h, w = x.shape[1:]
    rows = [ax for ax in fig.axes if ax.get_images()]
    assert len(rows) == 8
    assert f"{8 * len(data) / (h * w):.4f} bpp" in rows[2].get_title()
    assert f"{16 * len(data) / (h * w):.4f} bpp" in rows[6].get_title()
    np.testing.assert_allclose(rows[3].get_images()[0].get_array(), maps.to_numpy_image(x_hat[:, 4:20, 8:24]))
    box_patches = [p for ax in rows[:3] for p in ax.patches if p.get_width() == 16]
    assert len(box_patches) == 3


def test_roi_figure_has_a_fixed_layout_and_titles_that_skip_tick_layout(coded):
    """A slider redraws it: no layout engine, and no title searches tick labels (slow in matplotlib)."""
    from hvq.plots import figures

    model, x, sym, data = coded
    fig = figures.roi_figure(x, (8, 4, 24, 20), [("a", sym, model.decompress(data), len(data))])
    assert fig.get_layout_engine() is None
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 4
    assert not any(ax._autotitlepos for ax in titled)


def test_figure_png_fast_and_full_give_pngs_of_the_figure():
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(4, 2), dpi=50)
    fig.subplots().plot([0, 1], [1, 0])
    fast, full = maps.figure_png(fig, fast=True), maps.figure_png(fig)
    assert Image.open(io.BytesIO(fast)).size == (200, 100)  # drawn as laid out
    assert Image.open(io.BytesIO(full)).size != (200, 100)  # cropped to the content
    assert fast[:8] == full[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_panel_redraws_on_a_move_and_shows_the_initial_figure():
    pytest.importorskip("ipywidgets")
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    calls = []

    def make(n):
        calls.append(n)
        fig = Figure(figsize=(2, 2), dpi=40)
        fig.subplots().plot(range(n))
        return fig if n > 1 else None

    slider = widgets.IntSlider(value=3, min=0, max=9)
    panel = maps.figure_panel(make, {"n": slider}, initial=make(3))
    out = panel.children[-1]
    assert calls == [3] and len(out.outputs) == 1 and "image/png" in out.outputs[0]["data"]
    slider.value = 5
    assert calls == [3, 5]
    slider.value = 1  # no figure: nothing drawn, the function ran
    assert calls == [3, 5, 1]


def test_gradient_flow_figure_bars_and_zeros():
    from hvq.plots import figures

    norms = {"rate": {"encoder": 0.5, "decoder": 0.0}, "distortion": {"encoder": 7.0, "decoder": 26.0}}
    fig = figures.gradient_flow_figure(norms)
    ax = fig.axes[0]
    heights = [b.get_height() for b in ax.patches]
    assert heights[0] == 0.5 and np.isnan(heights[1]) and heights[2:] == [7.0, 26.0]
    assert [t.get_text() for t in ax.texts] == ["0"]  # the rate does not reach the decoder
