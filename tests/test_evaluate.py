"""Evaluation: Bjontegaard deltas against known answers, the classical anchors, and a small end-to-end
run of ``run_eval`` and ``make_figures`` with the untrained smoke model on generated images."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hvq import baselines, bdrate, coder, evaluate, tables
from hvq.bdrate import bd_quality, bd_rate
from hvq.config import load_config
from hvq.evaluate import (
    PER_IMAGE_COLUMNS,
    RatePoint,
    default_rate_points,
    fit_static_table,
    hvq_curves,
    run_eval,
)
from hvq.model import HVQCodec
from hvq.plots.figures import DPI, make_figures

# An uneven anchor curve (PSNR-like): rates in bpp, qualities increasing.
RATE = [0.08, 0.21, 0.33, 0.71, 1.4]
QUALITY = [26.0, 28.9, 30.1, 33.2, 36.5]
ANCHORS = ("jpeg", "webp", "avif", "jxl")


def natural_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus a noisy half: ``(h, w, 3)`` uint8."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1)
    noise = np.random.default_rng(seed).random((h, w, 3)) * (xx[..., None] > 0.5)
    return (255 * np.clip(0.7 * base + 0.3 * noise, 0, 1)).astype(np.uint8)


# ---------------------------------------------------------------------------------------- bdrate


@pytest.mark.parametrize("method", bdrate.METHODS)
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 3.0])
def test_bd_rate_of_scaled_rates_is_the_factor(method, factor):
    result = bd_rate(RATE, QUALITY, [factor * r for r in RATE], QUALITY, method=method)
    assert result.value == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert result.reason == ""


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_quality_of_shifted_quality_is_the_shift(method):
    assert bd_quality(RATE, QUALITY, RATE, [q + 0.7 for q in QUALITY], method).value == pytest.approx(0.7)


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_identical_curves_give_zero(method):
    assert bd_rate(RATE, QUALITY, RATE, QUALITY, method).value == pytest.approx(0.0, abs=1e-12)
    assert bd_quality(RATE, QUALITY, RATE, QUALITY, method).value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_lower_is_better_metric(method):
    lpips = [0.5, 0.35, 0.3, 0.2, 0.1]
    rate = bd_rate(RATE, lpips, [0.9 * r for r in RATE], lpips, method, higher_is_better=False)
    assert rate.value == pytest.approx(-10.0)
    better = [v - 0.02 for v in lpips]
    assert bd_quality(RATE, lpips, RATE, better, method, higher_is_better=False).value == pytest.approx(-0.02)


def test_no_overlap_or_too_few_points_give_nan_with_reason():
    result = bd_rate(RATE, QUALITY, RATE, [q + 20 for q in QUALITY])
    assert math.isnan(result.value) and "overlap" in result.reason
    result = bd_quality(RATE, QUALITY, [100 * r for r in RATE], QUALITY)
    assert math.isnan(result.value) and "overlap" in result.reason
    result = bd_rate(RATE, QUALITY, [0.5], [30.0])
    assert math.isnan(result.value) and "fewer than 2" in result.reason


def test_numpy_pchip_integral_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        for _ in range(50):
            x = np.sort(rng.choice(1000, size=n, replace=False) / 100.0)
            y = rng.normal(size=n)
            lo, hi = np.sort(rng.uniform(x[0], x[-1], 2))
            expected = interpolate.PchipInterpolator(x, y).integrate(lo, hi)
            assert bdrate._pchip_integral_numpy(x, y, lo, hi) == pytest.approx(expected, abs=1e-10)


# ------------------------------------------------------------------------------------- baselines


def _pillow_round_trips(pillow_format: str) -> bool:
    """Whether this Pillow really writes and reads back ``pillow_format`` (independent of
    ``baselines``' feature checks)."""
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (16, 16), (200, 30, 90)).save(buffer, format=pillow_format, quality=50)
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            return image.convert("RGB").size == (16, 16)
    except (KeyError, OSError, ValueError):
        return False


def test_available_codecs_tells_the_truth(monkeypatch):
    """Each anchor is reported available exactly when Pillow can actually code it, and an unavailable
    one is refused with the reason (availability checked against a real encode, not the same table)."""
    available = baselines.available_codecs()  # imports the JXL plugin where it is installed
    assert list(available) == list(ANCHORS)
    assert all(type(v) is bool for v in available.values()), available
    assert available["jpeg"], "Pillow without JPEG: no anchor at all"
    for codec, ok in available.items():
        assert ok == _pillow_round_trips(baselines.SETTINGS[codec]["pillow_format"]), codec
    # A feature Pillow lacks is reported unavailable, and encode_decode refuses it with the reason.
    monkeypatch.setattr(baselines.features, "check", lambda name: name != "webp")
    assert baselines.available_codecs()["webp"] is False
    with pytest.raises(RuntimeError, match="lacks 'webp' support"):
        baselines.encode_decode("webp", natural_image(16, 16, 0), 50)


@pytest.mark.parametrize("codec", ANCHORS)
def test_anchor_round_trip(codec):
    if not baselines.available_codecs()[codec]:
        pytest.skip(baselines.missing_message(codec))
    image = natural_image(64, 96, seed=1)
    n_bytes, decoded, enc_s, dec_s = baselines.encode_decode(codec, image, quality=60)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert 0.05 < 8 * n_bytes / (64 * 96) < 12
    mse = np.mean((decoded.astype(float) - image.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 20
    assert enc_s >= 0 and dec_s >= 0


def test_unavailable_anchor_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(baselines, "_is_available", lambda name: False)
    with pytest.raises(RuntimeError, match="skipped"):
        baselines.encode_decode("jpeg", natural_image(16, 16, 0), 50)


# ------------------------------------------------------------------------------------- evaluate


def test_default_rate_points_and_curves():
    cfg = load_config("reduced").model
    points = default_rate_points(cfg)
    assert len(points) == 9 and len({p.name for p in points}) == 9
    curves = hvq_curves(points)
    assert sorted(len(v) for v in curves.values()) == [3, 7]


def test_static_table_from_counts_is_a_valid_table():
    table = tables.static_table(np.array([0, 10, 0, 1000]), evaluate.STATIC_ALPHA)
    assert table.sum() == tables.TOTAL and table.min() >= 1
    assert table[3] > table[1] > table[0] == table[2]


@pytest.fixture(scope="module")
def smoke_model() -> HVQCodec:
    torch.manual_seed(0)
    model = HVQCodec(load_config("smoke").model).eval()
    # A non-uniform static histogram (the untrained one is all zeros, so its table is uniform and a
    # static stream coded with the wrong table could not be told apart).
    counts = np.random.default_rng(0).integers(0, 1000, model.static.counts.shape[0])
    model.static.counts.copy_(torch.from_numpy(counts))
    model.update()
    assert len(np.unique(model.static_freqs.numpy())) > 10
    return model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for folder, size, seeds in (("tiny", (176, 192), (0, 1)), ("train", (96, 128), (10, 11))):
        (root / folder).mkdir()
        for seed in seeds:
            Image.fromarray(natural_image(*size, seed)).save(root / folder / f"img{seed}.png")
    return root


POINTS = [RatePoint("a", 1.0, 0.8, 0.6), RatePoint("b", 1.0, 0.2, 0.2), RatePoint("c", 4.0, 0.2, 0.2)]


@pytest.fixture(scope="module")
def results(smoke_model, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    qualities = {c: [40] for c in ANCHORS}
    run_eval("tiny", smoke_model, out, data_dir=data_dir, rate_points=POINTS, qualities=qualities,
             progress=False, static_fit_images=2, threads=1)  # fmt: skip
    return out


def test_run_eval_writes_one_schema_and_json(results):
    folder = results / "tiny"
    per_image = pd.read_csv(folder / "per_image.csv")
    assert tuple(per_image.columns) == PER_IMAGE_COLUMNS
    available = [c for c in ANCHORS if baselines.available_codecs()[c]]
    assert list(dict.fromkeys(per_image.codec)) == ["hvq", *available]
    assert len(per_image) == 2 * (len(POINTS) + len(available))
    assert per_image[["bpp", "psnr", "ms_ssim", "lpips", "enc_s", "dec_s"]].notna().all().all()
    hvq = per_image[per_image.codec == "hvq"]
    ablation = [c for c in PER_IMAGE_COLUMNS if c.startswith(("static_", "z_", "hyper_", "mask_"))]
    assert hvq[ablation].notna().all().all()
    assert per_image.loc[per_image.codec != "hvq", ablation].isna().all().all()
    total = hvq.mask_header_bits + hvq.z_bits + hvq.hyper_index_bits
    assert (total == 8 * hvq.bytes).all()
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == len(POINTS) + len(available) and (summary.n_images == 2).all()
    bd = pd.read_csv(folder / "bdrate.csv")
    assert set(bd.metric) == {"lpips", "psnr"} and set(bd.method) == set(bdrate.METHODS)
    assert {"bd_rate_pct", "bd_quality", "bd_rate_note", "bd_quality_note"} <= set(bd.columns)
    for codec in ["hvq", *available]:
        payload = json.loads((folder / f"{codec}.json").read_text())
        assert payload["name"] == codec and payload["n_images"] == 2 and payload["settings"]
        assert {"bpp", "psnr", "ms_ssim", "lpips"} <= set(payload["points"][0])
    assert json.loads((folder / "hvq.json").read_text())["curves"] == hvq_curves(POINTS)


def test_hvq_rows_are_real_files(results, smoke_model, data_dir):
    """The bytes counted are those of model.compress; the static streams match the model's own."""
    per_image = pd.read_csv(results / "tiny" / "per_image.csv")
    row = per_image[(per_image.codec == "hvq") & (per_image.image == "img1")].iloc[0]
    point = POINTS[0]
    x = torch.from_numpy(np.array(Image.open(data_dir / "tiny" / "img1.png"))).permute(2, 0, 1) / 255
    data = smoke_model.compress(x, point.lam, point.coarse_ratio, point.medium_ratio)
    assert row.point == point.name and row.bytes == len(data)
    sym = smoke_model.analyze(x, point.lam, point.coarse_ratio, point.medium_ratio)
    fitted = fit_static_table(smoke_model, point, sorted((data_dir / "train").glob("*.png")), n=2)
    assert fitted.sum() == tables.TOTAL
    assert not np.array_equal(fitted, smoke_model.static_freqs.numpy())  # two different ablations
    # The default (no table: the model's static_freqs, what the evaluation's global column uses) and
    # the fitted table; each stream is decoded with the table it is meant to be coded with.
    for arg, table, column in ((None, smoke_model.static_freqs.numpy(), "static_global_index_bits"),
                               (fitted, fitted, "static_fit_index_bits")):  # fmt: skip
        streams = smoke_model.static_index_streams(sym, arg)
        assert 8 * sum(map(len, streams)) == row[column]
        for g, stream in enumerate(streams):
            # Each static stream decodes, under that one table, to exactly the indices the real file
            # codes at granularity g, and costs their information content under it (by hand:
            # 24 - log2 f[k]) rounded up to 32-bit words plus at most one flush word.
            mask = sym.masks[g][0, 0].numpy().ravel() > 0
            ks = sym.indices[g][0].numpy().ravel()[mask]
            np.testing.assert_array_equal(coder.decode_symbols(stream, table, count=len(ks)), ks)
            ideal = float(np.sum(24 - np.log2(table[ks].astype(np.float64))))
            assert ideal - 2 <= 8 * len(stream) <= 1.005 * ideal + 64, (column, g, ideal, len(stream))


def assert_drawn_figure(path: Path, width_in: float, height_in: float) -> None:
    """``path`` is a PNG of about ``width_in x height_in`` inches at ``hvq.plots.figures.DPI`` (saved
    with a tight bounding box: within 10% each way) with something drawn on it: varied pixels, several
    colours, coloured ink (curves, markers, images; not only black text and empty axes) and ink in
    every quarter of the figure."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    h, w = pixels.shape[:2]
    assert 0.9 * width_in * DPI <= w <= 1.1 * width_in * DPI, (path.name, w, width_in * DPI)
    assert 0.9 * height_in * DPI <= h <= 1.1 * height_in * DPI, (path.name, h, height_in * DPI)
    assert pixels.std() > 10, (path.name, pixels.std())
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= 16, path.name
    chroma = pixels.max(axis=2).astype(np.int16) - pixels.min(axis=2)
    assert (chroma > 60).mean() > 0.001, (path.name, (chroma > 60).mean())
    ink = (pixels < 235).any(axis=2)
    for part in (ink[: h // 2], ink[h // 2 :], ink[:, : w // 2], ink[:, w // 2 :]):
        assert part.mean() > 0.01, path.name


def test_figure_check_refuses_blank_and_wrong_size(tmp_path):
    """The check above fails on a blank figure, on empty labelled axes, and on a drawn figure of the
    wrong size; it passes a drawn one of the right size."""
    from matplotlib.figure import Figure

    blank = tmp_path / "blank.png"
    Figure(figsize=(7.0, 4.8)).savefig(blank, dpi=DPI)
    with pytest.raises(AssertionError):
        assert_drawn_figure(blank, 7.0, 4.8)
    empty_axes = tmp_path / "axes.png"
    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.subplots()
    ax.set(xlabel="bpp", ylabel="PSNR (dB)", title="nothing plotted", xlim=(0, 1), ylim=(20, 40))
    fig.savefig(empty_axes, dpi=DPI)
    with pytest.raises(AssertionError):
        assert_drawn_figure(empty_axes, 7.0, 4.8)
    drawn = tmp_path / "drawn.png"
    fig = Figure(figsize=(7.0, 4.8))
    fig.subplots().imshow(np.random.default_rng(0).random((20, 30, 3)))
    fig.savefig(drawn, dpi=DPI)
    assert_drawn_figure(drawn, 7.0, 4.8)
    with pytest.raises(AssertionError):
        assert_drawn_figure(drawn, 13.0, 4.8)


def test_make_figures_writes_every_png(results, smoke_model, data_dir, tmp_path):
    written = make_figures(results, tmp_path, "tiny", model=smoke_model, data_dir=data_dir, image="img1")
    assert all(p.parent == tmp_path / "tiny" for p in written)
    by_name = {p.name: p for p in written}
    # Figure sizes in inches as hvq.plots.figures draws them; the crops have one panel per image shown (the
    # original, hvq and each available anchor among jpeg, webp and avif).
    panels = 2 + sum(baselines.available_codecs()[c] for c in ("jpeg", "webp", "avif"))
    sizes = {"rd_lpips.png": (7.0, 4.8), "rd_psnr.png": (7.0, 4.8), "rd_msssim.png": (7.0, 4.8),
             "static_vs_hyperprior.png": (13.0, 4.8), "visual_crops.png": (2.6 * panels, 3.2),
             "granularity_map.png": (18.0, 3.6)}  # fmt: skip
    assert set(by_name) == set(sizes) and len(written) == len(sizes)
    for name, (width_in, height_in) in sizes.items():
        assert_drawn_figure(by_name[name], width_in, height_in)


def test_colour_bias_metric_reports_the_worst_channel_in_levels():
    from hvq.metrics import colour_bias

    x = torch.rand(3, 16, 16)
    y = x.clone()
    y[2] -= 3 / 255
    assert colour_bias(x, y) == pytest.approx(3.0, abs=1e-4)
    assert colour_bias(x, x) == 0.0


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_and_quality_agree_with_the_bjontegaard_package(method):
    """The kit's Bjontegaard deltas against the reference implementation (``bjontegaard`` on PyPI)."""
    bjontegaard = pytest.importorskip("bjontegaard")
    rng = np.random.default_rng(3)
    rate_anchor = np.array([0.1, 0.2, 0.35, 0.5, 0.8])
    psnr_anchor = 25 + 4 * np.log(rate_anchor / 0.1)
    rate_test = rate_anchor * 0.85 * np.exp(rng.normal(0, 0.03, 5))
    psnr_test = psnr_anchor + rng.normal(0.2, 0.1, 5)
    ours = bdrate.bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, method=method).value
    ref = bjontegaard.bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, method=method)
    assert ours == pytest.approx(ref, abs=1e-6)
    ours_q = bdrate.bd_quality(rate_anchor, psnr_anchor, rate_test, psnr_test, method=method).value
    assert ours_q == pytest.approx(
        bjontegaard.bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test, method=method)
    )
