"""Evaluation: Bjontegaard deltas against known answers, the classical anchors, and a small end-to-end
run of ``run_eval`` and ``make_figures`` with the untrained smoke model on generated images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hvq import baselines, bdrate, evaluate, tables
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
from hvq.plots import make_figures

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


def test_available_codecs_lists_every_anchor():
    assert set(baselines.available_codecs()) == set(baselines.SETTINGS) == set(ANCHORS)


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
    model.update()
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
    table = smoke_model.static_freqs.numpy()
    assert smoke_model.static_index_streams(sym, table) == smoke_model.static_index_streams(sym)
    fitted = fit_static_table(smoke_model, point, sorted((data_dir / "train").glob("*.png")), n=2)
    assert fitted.sum() == tables.TOTAL
    assert 8 * sum(map(len, smoke_model.static_index_streams(sym, fitted))) == row.static_fit_index_bits


def test_make_figures_writes_every_png(results, smoke_model, data_dir, tmp_path):
    written = make_figures(results, tmp_path, "tiny", model=smoke_model, data_dir=data_dir, image="img1")
    names = {p.name for p in written}
    assert names == {"rd_lpips.png", "rd_psnr.png", "rd_msssim.png", "static_vs_hyperprior.png",
                     "visual_crops.png", "granularity_map.png"}  # fmt: skip
    for path in written:
        assert path.stat().st_size > 10_000


def test_colour_bias_metric_reports_the_worst_channel_in_levels():
    from hvq.metrics import colour_bias

    x = torch.rand(3, 16, 16)
    y = x.clone()
    y[2] -= 3 / 255
    assert colour_bias(x, y) == pytest.approx(3.0, abs=1e-4)
    assert colour_bias(x, x) == 0.0
