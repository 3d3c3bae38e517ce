"""Figures from the evaluation results (:mod:`hvq.evaluate`), written as PNG files.

:func:`make_figures` reads only ``<results_dir>/<dataset>/{summary.csv, per_image.csv, *.json}`` and
writes:

* ``rd_lpips.png``, ``rd_psnr.png``, ``rd_msssim.png``: quality against bpp, every anchor and every
  hvq curve (the curves listed in ``hvq.json``).
* ``static_vs_hyperprior.png``: index bits per pixel under the hyperprior and the static tables, and
  the net saving of the hyperprior (z counted as a cost) per rate point.

Two more figures need the model and one test image, because they encode again (or analyse) that
image; :func:`make_figures` draws them only when both are at hand (a ``model`` argument, or the
shipped model named in ``hvq.json``; the image in the dataset folder) and otherwise prints one line
saying why they were skipped:

* ``visual_crops.png`` (:func:`visual_comparison`): the same crop of one image under hvq and the
  anchors, each anchor's quality chosen to match hvq's bpp as closely as it can.
* ``granularity_map.png`` (:func:`granularity_map`): the router's granularity mask and the bits of
  each coded index, ``24 - log2(freq of the chosen index)``, per granularity.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hvq import baselines, tables
from hvq.data import load_image_uint8, to_tensor
from hvq.evaluate import MIDDLE_RATIO, RatePoint, dataset_images, shared_lpips
from hvq.metrics import bits_per_pixel, psnr
from hvq.model import GRANULARITIES, STRIDES, HVQCodec
from hvq.perceptual import LPIPS

#: y axis of each rate-distortion figure: (summary column, label, file name).
RD_FIGURES = (
    ("lpips", "LPIPS-alex (lower is better)", "rd_lpips.png"),
    ("psnr", "PSNR (dB)", "rd_psnr.png"),
    ("ms_ssim", "MS-SSIM", "rd_msssim.png"),
)
MARKERS = "os^Dv<>pXP*h"
GRANULARITY_COLORS = ("#d95f02", "#7570b3", "#1b9e77")  # fine, medium, coarse
DPI = 130


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def figure_title(dataset: str, n_images: int) -> str:
    return f"{dataset} ({n_images} image{'s' if n_images != 1 else ''})"


# --------------------------------------------------------------------------------- rate-distortion


def rd_frame(summary: pd.DataFrame, curves: dict[str, list[str]]) -> pd.DataFrame:
    """Long table for the RD plots: one row per (label, point), hvq curves first, then the anchors in
    their order; points sorted by bpp within a label.

    Anchors are labelled by codec name; each hvq curve by its name; hvq points on no curve go under
    ``"hvq (other points)"``.
    """
    parts = []
    hvq = summary[summary.codec == "hvq"]
    for name, points in curves.items():
        parts.append(hvq[hvq.point.isin(points)].sort_values("bpp").assign(label=name, line=True))
    on_curve = {p for points in curves.values() for p in points}
    others = hvq[~hvq.point.isin(on_curve)]
    if len(others):
        parts.append(others.sort_values("bpp").assign(label="hvq (other points)", line=False))
    for codec in dict.fromkeys(summary.codec):
        if codec != "hvq":
            parts.append(summary[summary.codec == codec].sort_values("bpp").assign(label=codec, line=True))
    return pd.concat(parts, ignore_index=True)


def rd_figure(frame: pd.DataFrame, metric: str, ylabel: str, title: str) -> Figure:
    """Quality ``metric`` against bpp, one line (with markers) per label of :func:`rd_frame`."""
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    labels = list(dict.fromkeys(frame.label))
    colors = sns.color_palette("tab10", len(labels))
    for i, label in enumerate(labels):
        part = frame[frame.label == label]
        style = "-" if bool(part.line.iloc[0]) else "none"
        ax.plot(
            part.bpp,
            part[metric],
            linestyle=style,
            marker=MARKERS[i % len(MARKERS)],
            color=colors[i],
            label=label,
            markersize=5,
        )
    if not np.isfinite(frame[metric].to_numpy(dtype=float)).any():
        ax.text(0.5, 0.5, f"no finite {metric} values", transform=ax.transAxes, ha="center")
    ax.set_xlabel("rate (bits per pixel, real file sizes)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    ax.set_title(title)
    ax.legend(title="codec", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------ static tables


def static_frame(per_image: pd.DataFrame) -> pd.DataFrame:
    """Long table of index bits per pixel (``kind``, ``bpp``) per hvq image and point."""
    hvq = per_image[per_image.codec == "hvq"]
    pixels = hvq.height * hvq.width
    kinds = {
        "hyperprior (index)": hvq.hyper_index_bits,
        "hyperprior (index + z)": hvq.hyper_index_bits + hvq.z_bits,
        "static, model table": hvq.static_global_index_bits,
        "static, fitted per point": hvq.static_fit_index_bits,
    }
    parts = [pd.DataFrame({"point": hvq.point, "kind": k, "bpp": bits / pixels}) for k, bits in kinds.items()]
    return pd.concat(parts, ignore_index=True).dropna(subset=["bpp"])


def static_figure(per_image: pd.DataFrame, title: str) -> Figure:
    """Left: mean index bpp per rate point under each model. Right: net saving of the hyperprior in
    percent of the static file, per image (dots) and mean (bars), against both static tables."""
    hvq = per_image[per_image.codec == "hvq"]
    fig = Figure(figsize=(13.0, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    sns.barplot(data=static_frame(per_image), x="point", y="bpp", hue="kind", errorbar=None, ax=left)
    left.set_ylabel("index information (bits per pixel)")
    left.set_title("index bits: hyperprior vs static histogram")
    savings = pd.concat(
        [
            pd.DataFrame({"point": hvq.point, "table": name, "saving": hvq[col]})
            for name, col in (
                ("model table", "static_global_saving_total_pct"),
                ("fitted per point", "static_fit_saving_total_pct"),
            )
        ],
        ignore_index=True,
    ).dropna(subset=["saving"])
    sns.barplot(data=savings, x="point", y="saving", hue="table", errorbar=None, alpha=0.6, ax=right)
    sns.stripplot(
        data=savings,
        x="point",
        y="saving",
        hue="table",
        dodge=True,
        legend=False,
        size=3,
        palette="dark:black",
        ax=right,
    )
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_ylabel("hyperprior saving (% of the static file)")
    right.set_title("net saving, z included (above 0: hyperprior smaller)")
    for ax in (left, right):
        ax.set_xlabel("hvq rate point")
        ax.tick_params(axis="x", labelrotation=45)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.suptitle(f"static histogram vs hyperprior on {title}")
    return fig


# ----------------------------------------------------------------------------- figures with a model


def _middle_point(model: HVQCodec) -> RatePoint:
    lam = math.sqrt(model.cfg.lambda_min * model.cfg.lambda_max)
    return RatePoint("middle", lam, MIDDLE_RATIO, MIDDLE_RATIO)


def quality_for_bpp(codec: str, pixels: np.ndarray, target: float) -> tuple[int, int, np.ndarray]:
    """The quality (0..100) whose bpp is closest to ``target`` by bisection (bpp grows with quality).

    Returns ``(quality, bytes, decoded (H, W, 3) uint8)``.
    """
    h, w = pixels.shape[:2]

    def run(q: int) -> tuple[int, np.ndarray]:
        n_bytes, decoded, _, _ = baselines.encode_decode(codec, pixels, q)
        return n_bytes, decoded

    lo, hi = 0, 100
    while lo < hi:  # smallest quality whose bpp reaches the target
        mid = (lo + hi) // 2
        if bits_per_pixel(run(mid)[0], h, w) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = {q: run(q) for q in {max(0, lo - 1), lo}}
    best = min(candidates, key=lambda q: abs(bits_per_pixel(candidates[q][0], h, w) - target))
    return best, *candidates[best]


def _detail_window(pixels: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left ``(row, col)`` of the ``size x size`` window with the most gradient energy."""
    luma = pixels.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(luma, axis=0))[:, :-1] + np.abs(np.diff(luma, axis=1))[:-1, :]
    h, w = energy.shape
    size = min(size, h, w)
    step = max(1, size // 4)
    best, where = -1.0, (0, 0)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            e = float(energy[top : top + size, left : left + size].sum())
            if e > best:
                best, where = e, (top, left)
    return where


def visual_comparison(
    model: HVQCodec,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    point: RatePoint | None = None,
    codecs: Sequence[str] = ("jpeg", "webp", "avif"),
    crop: int = 192,
    lpips: LPIPS | None = None,
) -> Path:
    """Crops of one image: original, hvq at ``point`` (default: middle lambda and ratios), and each
    available anchor at the quality whose bpp is closest to hvq's. Titles give the bpp, PSNR and
    LPIPS of the *whole* image; the crop is the window with the most detail."""
    point = point or _middle_point(model)
    pixels = load_image_uint8(image_path)
    x = to_tensor(pixels)
    h, w = pixels.shape[:2]
    data = model.compress(x, point.lam, point.coarse_ratio, point.medium_ratio)
    hvq_pixels = (model.decompress(data).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    target = bits_per_pixel(len(data), h, w)
    panels = [("original", pixels, ""), ("hvq", hvq_pixels, f"{target:.3f} bpp")]
    available = baselines.available_codecs()
    for codec in codecs:
        if available.get(codec):
            quality, n_bytes, decoded = quality_for_bpp(codec, pixels, target)
            panels.append((f"{codec} q={quality}", decoded, f"{bits_per_pixel(n_bytes, h, w):.3f} bpp"))
    lpips = lpips or shared_lpips()
    top, left = _detail_window(pixels, crop)
    fig = Figure(figsize=(2.6 * len(panels), 3.2), layout="constrained")
    for ax, (name, image, rate) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        ax.imshow(image[top : top + crop, left : left + crop], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if name != "original":
            y = to_tensor(image)
            with torch.no_grad():
                lp = float(lpips(x[None], y[None])[0])
            rate = f"{rate}\nPSNR {psnr(x, y):.2f} dB, LPIPS {lp:.3f}"
        ax.set_title(f"{name}\n{rate}" if rate else name, fontsize=8)
    fig.suptitle(
        f"{Path(image_path).stem}: crop {crop}x{crop} at ({left}, {top}); anchors at the quality closest "
        f"to hvq's rate (lambda {point.lam:.3g}, ratios {point.coarse_ratio:.2f}/{point.medium_ratio:.2f})",
        fontsize=9,
    )
    return _save(fig, Path(out_path))


def _upsample(grid: np.ndarray, stride: int, h: int, w: int) -> np.ndarray:
    """``(h_g, w_g)`` -> ``(h, w)``: every cell repeated over its ``stride x stride`` pixels, cropped."""
    return np.kron(grid, np.ones((stride, stride), dtype=grid.dtype))[:h, :w]


def granularity_map(
    model: HVQCodec,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    point: RatePoint | None = None,
) -> Path:
    """The image, its granularity mask, and the bits of every coded index per granularity.

    Bits come from the integer tables the coder uses: ``24 - log2(freqs[n, k_n])`` for the ``n``-th
    coded position of a granularity and its chosen index ``k_n`` (``sym.freqs``, ``sym.indices``).
    """
    point = point or _middle_point(model)
    pixels = load_image_uint8(image_path)
    h, w = pixels.shape[:2]
    sym = model.analyze(to_tensor(pixels), point.lam, point.coarse_ratio, point.medium_ratio)
    label = np.zeros((h, w), dtype=np.int64)
    bit_maps = []
    for g, stride in enumerate(STRIDES):
        mask = sym.masks[g][0, 0].numpy()
        label[_upsample(mask, stride, h, w) > 0] = g
        pos = np.flatnonzero(mask)
        chosen = sym.indices[g][0].numpy().ravel()[pos]
        bits = np.full(mask.size, np.nan)
        bits[pos] = tables.PRECISION - np.log2(sym.freqs[g][np.arange(len(pos)), chosen].astype(np.float64))
        bit_maps.append(bits.reshape(mask.shape))
    fig = Figure(figsize=(18.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 5)
    axes[0].imshow(pixels)
    axes[0].set_title(Path(image_path).stem)
    colors = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in GRANULARITY_COLORS], dtype=np.uint8
    )
    axes[1].imshow(colors[label], interpolation="nearest")
    patches = [Patch(color=c, label=g) for c, g in zip(GRANULARITY_COLORS, GRANULARITIES, strict=True)]
    axes[1].legend(handles=patches, fontsize=7, loc="lower right")
    axes[1].set_title(f"granularity (ratios {point.coarse_ratio:.2f}/{point.medium_ratio:.2f})")
    vmax = max((float(np.nanmax(b)) for b in bit_maps if np.isfinite(b).any()), default=1.0)
    cmap = colormaps["magma"].with_extremes(bad="lightgrey")
    for ax, name, bits, stride in zip(axes[2:], GRANULARITIES, bit_maps, STRIDES, strict=True):
        extent = (0, bits.shape[1] * stride, bits.shape[0] * stride, 0)  # padded grid, in pixels
        shown = ax.imshow(bits, extent=extent, vmin=0, vmax=vmax, cmap=cmap, interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        total = float(np.nansum(bits))
        ax.set_title(f"{name}: {int(np.isfinite(bits).sum())} codes, {total / (h * w):.3f} bpp", fontsize=9)
    fig.colorbar(shown, ax=list(axes[2:]), shrink=0.8, label="bits per code")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"index bits per position under the hyperprior, lambda {point.lam:.3g} (grey: not coded)")
    return _save(fig, Path(out_path))


# ------------------------------------------------------------------------------------- make_figures


def _model_for_figures(model: str | HVQCodec | None, hvq_json: dict[str, Any]) -> HVQCodec | None:
    """The model to re-encode with: the argument, else the shipped model named in ``hvq.json``."""
    if isinstance(model, HVQCodec):
        return model
    from hvq.pretrained import available, load_pretrained

    name = model or hvq_json["settings"]["model"]
    if name in available() or Path(name).is_file():
        return load_pretrained(name)
    return None


def _find_image(dataset: str, data_dir, stem: str) -> Path | None:
    try:
        paths = dataset_images(dataset, data_dir)
    except (FileNotFoundError, ValueError):
        return None
    return next((p for p in paths if p.stem == stem), None)


def make_figures(
    results_dir: str | os.PathLike[str] = "results",
    figures_dir: str | os.PathLike[str] = "figures",
    dataset: str = "kodak",
    model: str | HVQCodec | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    image: str = "kodim23",
) -> list[Path]:
    """Write the figures of one dataset's results into ``<figures_dir>/<dataset>/``; returns their paths.

    The RD and static-table figures come from the CSV/JSON files alone. ``visual_crops.png`` and
    ``granularity_map.png`` are drawn only if a model is at hand (``model``: an instance, a shipped
    name or a checkpoint path; default: the shipped model named in ``hvq.json``) and ``image`` (a file
    stem) is in the dataset; otherwise one line on stderr says they were skipped.
    """
    results = Path(results_dir) / dataset
    out = Path(figures_dir) / dataset
    summary = pd.read_csv(results / "summary.csv")
    per_image = pd.read_csv(results / "per_image.csv")
    hvq_json = json.loads((results / "hvq.json").read_text())
    title = figure_title(dataset, int(hvq_json["n_images"]))
    frame = rd_frame(summary, hvq_json["curves"])
    written = [
        _save(rd_figure(frame, metric, ylabel, f"{ylabel.split(' (')[0]} vs rate on {title}"), out / name)
        for metric, ylabel, name in RD_FIGURES
    ]
    written.append(_save(static_figure(per_image, title), out / "static_vs_hyperprior.png"))
    codec_model = _model_for_figures(model, hvq_json)
    image_path = _find_image(dataset, data_dir, image)
    skip = "no model (pass model=...; the results' model is not a shipped one)" if codec_model is None else ""
    skip = skip or ("" if image_path is not None else f"image {image!r} not found in dataset {dataset!r}")
    if skip:
        print(f"hvq figures: skipping visual_crops.png and granularity_map.png: {skip}", file=sys.stderr)
        return written
    if codec_model.model_tag().hex() != hvq_json["settings"]["model_tag"]:
        print("hvq figures: note: the model drawing the crops is not the one that made the results",
              file=sys.stderr)  # fmt: skip
    written.append(visual_comparison(codec_model, image_path, out / "visual_crops.png"))
    written.append(granularity_map(codec_model, image_path, out / "granularity_map.png"))
    return written
