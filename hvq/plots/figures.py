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
* ``granularity_map.png`` (:func:`granularity_figure`): the router's granularity mask and the bits of
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
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Patch, Rectangle
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from hvq import baselines
from hvq.data import load_image_uint8, to_tensor
from hvq.evaluate import MIDDLE_RATIO, RatePoint, dataset_images
from hvq.metrics import bits_per_pixel, lpips_distance, psnr, shared_lpips
from hvq.model import GRANULARITIES, STRIDES, HVQCodec, Symbols
from hvq.perceptual import LPIPS
from hvq.plots import maps

#: y axis of each rate-distortion figure: (summary column, label, file name).
RD_FIGURES = (
    ("lpips", "LPIPS-alex (lower is better)", "rd_lpips.png"),
    ("psnr", "PSNR (dB)", "rd_psnr.png"),
    ("ms_ssim", "MS-SSIM", "rd_msssim.png"),
)
MARKERS = "os^Dv<>pXP*h"
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
            quality, n_bytes, decoded = baselines.quality_for_bpp(codec, pixels, target)
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
            rate = f"{rate}\nPSNR {psnr(x, y):.2f} dB, LPIPS {lpips_distance(x, y, lpips):.3f}"
        ax.set_title(f"{name}\n{rate}" if rate else name, fontsize=8)
    fig.suptitle(
        f"{Path(image_path).stem}: crop {crop}x{crop} at ({left}, {top}); anchors at the quality closest "
        f"to hvq's rate (lambda {point.lam:.3g}, ratios {point.coarse_ratio:.2f}/{point.medium_ratio:.2f})",
        fontsize=9,
    )
    return _save(fig, Path(out_path))


def granularity_figure(
    model: HVQCodec,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    point: RatePoint | None = None,
) -> Path:
    """The image, its granularity mask, and the bits of every coded index per granularity
    (:func:`hvq.plots.maps.granularity_map`, :func:`hvq.plots.maps.bits_map`: what the range coder
    spends, from the integer tables it uses)."""
    point = point or _middle_point(model)
    pixels = load_image_uint8(image_path)
    h, w = pixels.shape[:2]
    sym = model.analyze(to_tensor(pixels), point.lam, point.coarse_ratio, point.medium_ratio)
    label = maps.granularity_map(sym)
    bit_maps = [maps.bits_map(sym, g) for g in range(len(STRIDES))]
    fig = Figure(figsize=(18.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 5)
    axes[0].imshow(pixels)
    axes[0].set_title(Path(image_path).stem)
    colors = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in maps.GRANULARITY_COLOURS], dtype=np.uint8
    )
    axes[1].imshow(colors[label], interpolation="nearest")
    patches = [Patch(color=c, label=g) for c, g in zip(maps.GRANULARITY_COLOURS, GRANULARITIES, strict=True)]
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
    written.append(granularity_figure(codec_model, image_path, out / "granularity_map.png"))
    return written


# ---------------------------------------------------------------------------------- notebook figures
#
# One function per figure of the notebooks: the notebook computes the numbers in a few visible lines,
# these functions only draw them. Each returns a Figure (no pyplot state); a notebook shows it with
# ``display(fig)``, and ``hvq.plots.maps.figure_panel`` redraws it from a control.


def _stream_colour(name: str) -> str:
    """Colour of a stream of :func:`hvq.plots.maps.stream_sizes`: its granularity's, grey for the rest."""
    for g, colour in zip(GRANULARITIES, maps.GRANULARITY_COLOURS, strict=True):
        if name.endswith(g):
            return colour
    return "0.6" if name == "mask" else "0.3"


def reconstruction_figure(
    x: torch.Tensor, x_hat: torch.Tensor, titles: Sequence[str], vmax: float = 0.25
) -> Figure:
    """Original, decoded image and their absolute error (mean over RGB), side by side (notebook 00).

    ``x``, ``x_hat``: ``(3, H, W)`` in [0, 1]; ``titles``: of the first two panels.
    """
    h, w = x.shape[-2:]
    fig = Figure(figsize=(15.0, 5.0 * h / w + 0.7), layout="constrained")
    axes = fig.subplots(1, 3)
    maps.show_images([x, x_hat], titles, axes=axes[:2])
    err = axes[2].imshow((x - x_hat).abs().mean(0).cpu().numpy(), cmap="inferno", vmin=0, vmax=vmax)
    axes[2].set_title("absolute error (mean over RGB)", fontsize=9)
    axes[2].set_axis_off()
    fig.colorbar(err, ax=axes[2], shrink=0.8)
    return fig


def file_anatomy_figure(sizes: dict[str, int], sym: Symbols, image: torch.Tensor) -> Figure:
    """Bytes per stream of a file (``hvq.plots.maps.stream_sizes``), the granularity of every pixel over the
    image, and the index bits spread over the pixels each code covers (notebook 00).

    ``image``: ``(3, H, W)``, the image ``sym`` was analysed from.
    """
    fig = Figure(figsize=(15.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1.25, 1, 1])
    names = list(sizes)
    axes[0].barh(names, [sizes[n] for n in names], color=[_stream_colour(n) for n in names])
    axes[0].invert_yaxis()
    axes[0].set(xlabel="bytes", title=f"{sum(sizes.values())} bytes in all")
    maps.plot_granularity_map(sym, ax=axes[1], image=image)
    axes[1].set_title("granularity of each pixel", fontsize=9)
    shown = axes[2].imshow(maps.bits_per_pixel_map(sym), cmap="magma")
    axes[2].set_title("index bits per pixel", fontsize=9)
    axes[2].set_axis_off()
    fig.colorbar(shown, ax=axes[2], shrink=0.8, label="bits / pixel")
    return fig


def renormalisation_figure(
    codebook: np.ndarray, mu: float, sigma: float, densities: np.ndarray, probs: np.ndarray
) -> Figure:
    """1-D picture of notebook 01's steps 1 and 2: the Gaussian density with its values at the ``K``
    codewords (left), and those values divided by their sum (right).

    ``codebook``, ``densities``, ``probs``: ``(K,)``.
    """
    codebook, densities, probs = (np.asarray(a, dtype=np.float64) for a in (codebook, densities, probs))
    fig = Figure(figsize=(11.0, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    xs = np.linspace(codebook.min() - 1, codebook.max() + 1, 400)
    curve = np.exp(-0.5 * ((xs - mu) / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    left.plot(xs, curve, color="0.4", label=rf"$\mathcal{{N}}(x;\mu={mu:g},\sigma={sigma:g})$")
    left.stem(
        codebook, densities, basefmt=" ", linefmt="C0-", markerfmt="C0o", label=r"density at codeword $e_k$"
    )
    left.set(
        xlabel="embedding coordinate $x$",
        ylabel="density",
        title=f"step 1: densities, sum = {densities.sum():.3f}",
    )
    left.legend(loc="upper left", fontsize=8)
    right.bar(range(len(probs)), probs, color="C1")
    right.set(
        xlabel="index $k$",
        ylabel="$p(k)$",
        title=f"step 2: renormalised, sum = {probs.sum():.3f}",
        xticks=range(len(probs)),
    )
    return fig


def toy_figure(
    codebook: np.ndarray,
    probs: np.ndarray,
    mu: Sequence[float],
    sigma: Sequence[float],
    k_star: int,
    feature: Sequence[float],
) -> Figure:
    """Notebook 01's 2-D toy: every codeword with area and colour proportional to ``p(k)``, the
    Gaussian's 1- and 2-sigma ellipses, its mean, the codeword nearest to the mean (black ring), the
    chosen index ``k_star`` (red star) and the encoder's feature (grey plus).

    ``codebook``: ``(K, 2)``; ``probs``: ``(K,)``; ``mu``, ``sigma``, ``feature``: 2 numbers each.
    """
    codebook, probs = np.asarray(codebook, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    mu_x, mu_y = (float(v) for v in mu)
    sigma_x, sigma_y = (float(v) for v in sigma)
    nearest = int(((codebook - np.array([mu_x, mu_y])) ** 2).sum(1).argmin())
    bits = -math.log2(float(probs[k_star]))
    fig = Figure(figsize=(6.6, 5.6), layout="constrained")
    ax = fig.subplots()
    dots = ax.scatter(
        codebook[:, 0],
        codebook[:, 1],
        s=8 + 900 * probs,
        c=np.clip(probs, 1e-6, None),
        norm=LogNorm(1e-6, 1),
        cmap="viridis",
        edgecolors="k",
        linewidths=0.3,
        zorder=3,
    )
    fig.colorbar(dots, ax=ax, label="$p(k\\mid\\mu,\\sigma)$ (log colour scale)")
    for n_sd, style in ((1, "-"), (2, "--")):
        ax.add_patch(
            Ellipse(
                (mu_x, mu_y),
                2 * n_sd * sigma_x,
                2 * n_sd * sigma_y,
                fill=False,
                ls=style,
                color="C3",
                lw=1.2,
                label=f"{n_sd}$\\sigma$ contour",
            )
        )
    ax.plot(mu_x, mu_y, "x", color="C3", ms=9, mew=2, label="$\\mu$", zorder=5)
    ax.plot(
        *codebook[nearest], "o", ms=16, mfc="none", mec="k", mew=1.5, label="nearest code to $\\mu$", zorder=4
    )
    ax.plot(
        *codebook[k_star],
        "*",
        ms=18,
        mfc="none",
        mec="red",
        mew=1.5,
        label=f"chosen $k^*={k_star}$",
        zorder=4,
    )
    ax.plot(*feature, "+", color="0.4", ms=10, mew=1.5, label="feature $y$", zorder=4)
    lim = float(np.abs(codebook).max()) + 0.7
    ax.set(
        xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="embedding dim 1", ylabel="embedding dim 2"
    )
    ax.set_title(
        f"p(chosen)={probs[k_star]:.3f}, bits={bits:.2f}   (uniform: {math.log2(len(probs)):.0f} bits)"
    )
    ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    return fig


def sigma_limits_figure(
    sigmas: np.ndarray,
    max_prob: dict[str, np.ndarray],
    entropy: dict[str, np.ndarray],
    scale_range: tuple[float, float],
    k: int,
) -> Figure:
    """Notebook 01's two limits: the largest index probability (left) and the entropy of the index
    distribution in bits (right) against an isotropic scale, one line per labelled variant; the scales
    outside ``scale_range`` (the kit's clamp) are shaded.

    ``sigmas``: ``(S,)``; every value of ``max_prob`` and ``entropy``: ``(S,)``.
    """
    fig = Figure(figsize=(11.5, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, curves in ((left, max_prob), (right, entropy)):
        ax.axvspan(sigmas[0], scale_range[0], color="0.9")
        ax.axvspan(scale_range[1], sigmas[-1], color="0.9")
        for i, (label, values) in enumerate(curves.items()):
            ax.plot(sigmas, values, "-" if i == 0 else "--", label=label)
        ax.set_xscale("log")
        ax.set_xlabel(r"scale $\sigma$ (isotropic)")
    left.axhline(1 / k, color="k", lw=0.8, ls=":", label="$1/K$")
    left.set(ylabel=r"$\max_k\, p(k)$", title=r"$\sigma\to0$: all mass on the nearest code", yscale="log")
    right.axhline(math.log2(k), color="k", lw=0.8, ls=":", label=rf"$\log_2 K = {math.log2(k):.0f}$")
    right.set(ylabel="entropy $H$ [bits]", title=r"$\sigma\to\infty$: entropy $\to\log_2 K$")
    for ax in (left, right):
        ax.legend(fontsize=8)
    return fig


def rate_field_figure(
    mu_x: np.ndarray,
    mu_y: np.ndarray,
    bits: np.ndarray,
    grad: np.ndarray,
    codebook: np.ndarray,
    k_star: int,
    sigma: float,
) -> Figure:
    """Bits of the chosen index over a grid of predicted means (filled contours) with the descent
    direction ``-d bits / d mu`` as arrows (notebook 01, Section 4).

    ``mu_x``, ``mu_y``, ``bits``: ``(n, n)``; ``grad``: ``(2, n, n)``; ``codebook``: ``(K, 2)``.
    """
    mu_x, mu_y, bits, grad, codebook = (np.asarray(a) for a in (mu_x, mu_y, bits, grad, codebook))
    fig = Figure(figsize=(6.8, 5.6), layout="constrained")
    ax = fig.subplots()
    filled = ax.contourf(mu_x, mu_y, bits, levels=20, cmap="magma_r")
    fig.colorbar(filled, ax=ax, label=f"bits of $k^*$ at $\\sigma={sigma:g}$")
    ax.quiver(mu_x, mu_y, -grad[0], -grad[1], color="w", angles="xy", width=0.004)
    ax.scatter(codebook[:, 0], codebook[:, 1], s=6, c="0.7", zorder=3)
    ax.plot(
        *codebook[k_star], "*", ms=18, mfc="none", mec="cyan", mew=2, label=f"chosen $k^*={k_star}$", zorder=4
    )
    ax.set(
        xlim=(mu_x.min() - 0.3, mu_x.max() + 0.3),
        ylim=(mu_y.min() - 0.3, mu_y.max() + 0.3),
        aspect="equal",
        xlabel=r"$\mu_1$",
        ylabel=r"$\mu_2$",
        title=r"$-\partial\,\mathrm{bits}(k^*)/\partial\mu$ over a grid of predicted means",
    )
    ax.legend(loc="lower left", fontsize=8)
    return fig


def rate_along_line_figure(
    mu_line: np.ndarray, bits_by_sigma: dict[float, np.ndarray], static_bits: float, e_chosen: float
) -> Figure:
    """Bits of the chosen index as the predicted mean moves along a line, one curve per scale, against
    the static histogram's one number (notebook 01, Section 4).

    ``mu_line``: ``(L,)`` positions; every value of ``bits_by_sigma``: ``(L,)``; ``e_chosen``: the
    chosen codeword's coordinate on that line.
    """
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for sigma, bits in bits_by_sigma.items():
        ax.plot(mu_line, bits, label=rf"hyperprior, $\sigma={sigma:g}$")
    ax.axhline(static_bits, color="k", ls="--", label="static histogram (no $\\mu$ at all)")
    ax.axvline(e_chosen, color="red", lw=0.8, ls=":", label="$e_{k^*}$ (dim 1)")
    ax.set(
        xlabel=r"$\mu_1$ (with $\mu_2 = e_{k^*,2}$)",
        ylabel="bits of $k^*$",
        ylim=(0, 16),
        title="rate of the chosen index as the prediction moves",
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def integer_table_figure(p_float: np.ndarray, p_int: np.ndarray, floor: float) -> Figure:
    """Integer-table probability against float probability for every code, log-log, with ``y = x``
    and the table's floor ``1 / 2**24`` (notebook 01, Section 5). ``p_float``, ``p_int``: ``(K,)``."""
    p_float, p_int = np.asarray(p_float, dtype=np.float64), np.asarray(p_int, dtype=np.float64)
    fig = Figure(figsize=(4.8, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.loglog(p_float, p_int, "o", ms=4)
    ax.plot([1e-9, 1], [1e-9, 1], "k--", lw=0.8, label="$y=x$")
    ax.axhline(floor, color="C3", lw=0.8, ls=":", label="floor $2^{-24}$ (every code stays codable)")
    ax.set(
        xlabel="float probability (index_log_probs)",
        ylabel="integer-table probability",
        title=f"toy, default prediction: all {len(p_float)} codes",
        xlim=(p_float.min() / 10, 2),
        ylim=(min(1e-9, floor / 10), 2),
    )
    ax.legend(fontsize=7)
    return fig


def index_cost_figure(
    streams: Sequence[str], ideal_bits: Sequence[float], real_bits: Sequence[float]
) -> Figure:
    """Ideal information content of each index stream and the range coder's overhead on top of it
    (stacked horizontal bars, notebook 02). One entry per stream in each argument."""
    ideal, real = np.asarray(ideal_bits, dtype=np.float64), np.asarray(real_bits, dtype=np.float64)
    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(list(streams), ideal, color="0.7", label="ideal: sum of $24-\\log_2 f$")
    ax.barh(list(streams), real - ideal, left=ideal, color="C3", label="range coder overhead")
    ax.invert_yaxis()
    ax.set(xlabel="bits", title="index streams: information content vs real size")
    ax.legend(fontsize=8)
    return fig


def entropy_models_figure(
    static_index: Sequence[int], hyper_index: Sequence[int], hyper_z: Sequence[int], title: str
) -> Figure:
    """Bytes of the same indices under the static histogram and under the hyperprior (index + side
    information z stacked), one group per granularity (notebook 02). Each argument: one entry per
    granularity, fine to coarse."""
    static_index, hyper_index, hyper_z = (
        np.asarray(a, dtype=np.float64) for a in (static_index, hyper_index, hyper_z)
    )
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(static_index))
    ax.bar(xs - 0.2, static_index, 0.4, color="0.55", label="static histogram: index")
    ax.bar(xs + 0.2, hyper_index, 0.4, color="C0", label="hyperprior: index")
    ax.bar(xs + 0.2, hyper_z, 0.4, bottom=hyper_index, color="C9", label="hyperprior: side info z")
    ax.set_xticks(xs, GRANULARITIES[: len(xs)])
    ax.set(ylabel="bytes (real range-coded streams)", title=title)
    ax.legend(fontsize=8)
    return fig


def bits_maps_figure(sym: Symbols, tables_by_row: dict[str, np.ndarray | None]) -> Figure:
    """Bits of every coded index, one column per granularity (at its own resolution; grey: coded at
    another granularity), one row per pricing: ``None`` for the file's per-position tables, or one
    shared ``(K,)`` table (e.g. the static histogram). One colour scale for all panels: the 99th
    percentile of all bits shown (notebook 02)."""
    bit_maps = {
        label: [maps.bits_map(sym, g, table) for g in range(3)] for label, table in tables_by_row.items()
    }
    finite = np.concatenate([m[np.isfinite(m)] for row in bit_maps.values() for m in row])
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    cmap = colormaps["magma"].with_extremes(bad="0.85")
    fig = Figure(figsize=(13.0, 4.1 * len(bit_maps)), layout="constrained")
    axes = fig.subplots(len(bit_maps), 3, squeeze=False)
    shown = None
    for row, (label, row_maps) in enumerate(bit_maps.items()):
        for g, (ax, bits) in enumerate(zip(axes[row], row_maps, strict=True)):
            shown = ax.imshow(bits, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(
                f"{GRANULARITIES[g]} (1/{STRIDES[g]}): {int(np.isfinite(bits).sum())} codes, "
                f"{np.nansum(bits):.0f} bits",
                fontsize=9,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=11)
    fig.colorbar(shown, ax=axes.ravel().tolist(), label="bits of the chosen index", shrink=0.85)
    return fig


def desync_figure(sent: np.ndarray, decoded: np.ndarray, n_show: int = 120, stopped: str = "") -> Figure:
    """What a decoder with different probabilities does (notebook 02): the first ``n_show`` symbols
    sent and decoded (top), and the count of wrong symbols so far over the whole stream (bottom).
    ``decoded`` may be shorter than ``sent`` when the decoder stopped; ``stopped`` then says why."""
    sent, decoded = np.asarray(sent), np.asarray(decoded)
    n, m = min(n_show, len(sent)), len(decoded)
    fig = Figure(figsize=(11.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[2, 1])
    top.plot(np.arange(n), sent[:n], "o-", ms=3, color="0.3", label="sent")
    top.plot(
        np.arange(min(n, m)), decoded[:n], "x", ms=5, color="C3", label="decoded with the perturbed floats"
    )
    top.set(
        xlabel="position in the stream", ylabel="codebook index", title=f"the first {n} symbols of the stream"
    )
    top.legend(fontsize=8, loc="upper right")
    bottom.plot(np.arange(m), np.cumsum(decoded != sent[:m]), color="C3", label="wrong so far")
    if m < len(sent):
        bottom.axvline(
            m,
            color="k",
            ls=":",
            lw=1,
            label=f"decoder stopped after {m}" + (f": {stopped}" if stopped else ""),
        )
    bottom.set(
        xlim=(0, len(sent)),
        xlabel="position in the stream",
        ylabel="wrong so far",
        title=f"the whole stream, {len(sent)} symbols",
    )
    bottom.legend(fontsize=8, loc="upper left")
    return fig


def training_terms_figure(log: pd.DataFrame, mse_weight: float, lpips_weight: float, beta: float) -> Figure:
    """Every logged term of a training run (``run_dir/log.csv``, notebook 03): the rate split by stream
    (stacked), the weighted distortion terms, and the vector quantiser's losses with its perplexity
    (dotted, right axis)."""
    fig = Figure(figsize=(15.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    step = log["step"]
    axes[0].stackplot(
        step,
        log["bpp_index"],
        log["bpp_z"],
        log["bpp_mask"],
        labels=["index", "z", "mask"],
        colors=["C0", "C9", "0.6"],
    )
    axes[0].set(xlabel="step", ylabel="bits per pixel", title="rate, by stream")
    axes[1].plot(step, mse_weight * log["mse"], label=f"{mse_weight:g} x MSE")
    axes[1].plot(step, lpips_weight * log["lpips"], label=f"{lpips_weight:g} x LPIPS")
    axes[1].set(xlabel="step", title="distortion terms (before lambda)")
    axes[2].plot(step, log["codebook"], label="codebook")
    axes[2].plot(step, beta * log["commit"], label=f"{beta:g} x commit")
    axes[2].set(xlabel="step", title="vector quantiser (dotted: perplexity, right axis)")
    perplexity = axes[2].twinx()
    perplexity.plot(step, log["perplexity"], "k:", label="perplexity")
    perplexity.set_ylabel("perplexity (codes in use)")
    for ax in axes:
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    return fig


def lambda_sweep_figure(sweep: pd.DataFrame) -> Figure:
    """Rate, PSNR and LPIPS against lambda, one line per model (notebook 03). ``sweep``: one row per
    coded file with columns ``model``, ``lambda``, ``bpp``, ``psnr``, ``lpips``. The x ticks are the
    lambdas coded, written out (a log axis spanning less than two decades otherwise labels its minor
    ticks too, and they overlap)."""
    fig = Figure(figsize=(15.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    columns = {
        "bpp": "rate (real file size)",
        "psnr": "PSNR [dB] (higher is better)",
        "lpips": "LPIPS (lower is better)",
    }
    for (label, group), marker in zip(sweep.groupby("model", sort=False), "os^D", strict=False):
        for ax, col in zip(axes, columns, strict=True):
            ax.plot(group["lambda"], group[col], marker + "-", label=label)
    lams = np.unique(sweep["lambda"].to_numpy(dtype=np.float64).round(6))
    for ax, (col, title) in zip(axes, columns.items(), strict=True):
        ax.set(xscale="log", xlabel=r"$\lambda$ (input of the networks)", ylabel=col, title=title)
        ax.xaxis.set_major_locator(FixedLocator(lams))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{v:.3g}" for v in lams]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def image_grid_figure(rows: dict[str, Sequence[tuple[torch.Tensor, str]]], size: float = 3.25) -> Figure:
    """Images in rows, each row labelled on its left; ``rows`` maps a label to ``(image (3, H, W),
    title)`` pairs, all rows equally long (notebook 03's reconstructions per lambda)."""
    n_cols = max(len(r) for r in rows.values())
    h, w = next(iter(rows.values()))[0][0].shape[-2:]
    fig = Figure(figsize=(size * n_cols, (size * h / w + 0.4) * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, items) in enumerate(rows.items()):
        maps.show_images([im for im, _ in items], [t for _, t in items], axes=axes[r])
        axes[r, 0].text(
            -0.05, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right"
        )
    return fig


def rate_curve_figure(
    p_dense: np.ndarray,
    est_bpp: np.ndarray,
    p_real: np.ndarray,
    real_bpp: np.ndarray,
    reachable: tuple[float, float],
    title: str,
) -> Figure:
    """File size against the rate-control knob ``p``: the estimate (line), real files (dots) and the
    reachable band (shaded) (notebook 05). ``p_dense``/``est_bpp`` and ``p_real``/``real_bpp``: pairs of
    equally long 1-D arrays."""
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(p_dense, est_bpp, label="estimate (float entropy model)")
    ax.plot(p_real, real_bpp, "o", color="C3", label="real file size")
    low, high = reachable
    ax.axhspan(low, high, color="C0", alpha=0.08, label=f"reachable: {low:.3f} .. {high:.3f} bpp")
    ax.set(xlabel="$p$  (coarse = medium = 1 - p)", ylabel="bits per pixel", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def rate_target_figure(x: torch.Tensor, x_hat: torch.Tensor, sym: Symbols, title: str) -> Figure:
    """A rate-controlled file: the decoded image with its PSNR, the granularity the search chose over
    the original, and where the index bits went (notebook 05). ``x``, ``x_hat``: ``(3, H, W)``."""
    fig = Figure(figsize=(14.0, 5.0), layout="constrained")
    axes = fig.subplots(1, 3)
    maps.show_images([x_hat], [f"decoded: PSNR {psnr(x, x_hat):.2f} dB"], axes=axes[:1])
    maps.plot_granularity_map(sym, ax=axes[1], image=x)
    axes[1].set_title(
        f"granularity: coarse ratio {sym.coarse_ratio:.3f}, medium {sym.medium_ratio:.3f}", fontsize=9
    )
    shown = axes[2].imshow(maps.bits_per_pixel_map(sym), cmap="magma")
    axes[2].set_title("index bits per pixel", fontsize=9)
    axes[2].set_axis_off()
    fig.colorbar(shown, ax=axes[2], shrink=0.75)
    fig.suptitle(title)
    return fig


def roi_figure(
    x: torch.Tensor, box: tuple[int, int, int, int], rows: Sequence[tuple[str, Symbols, torch.Tensor, int]]
) -> Figure:
    """Files of one image with and without a region of interest, one row each: granularity, index bits
    per pixel (one colour scale), the decoded image and the decoded box, with bpp and PSNR (notebook
    05). ``x``: ``(3, H, W)``; ``box``: ``(x0, y0, x1, y1)`` in pixels; ``rows``: ``(label, symbols,
    decoded image, file bytes)``.

    A slider redraws it on every move, so its layout is fixed (no layout engine: constrained layout
    measured every title and tick for about half of the drawing time) and it is drawn at 80 dpi."""
    x0, y0, x1, y1 = box
    h, w = x.shape[-2:]
    bit_maps = [maps.bits_per_pixel_map(sym) for _, sym, _, _ in rows]
    vmax = max(float(np.percentile(m, 99.5)) for m in bit_maps)
    width, title_in, top_in = 14.0, 0.45, 0.5
    row_in = 0.9 * width / 4 * h / w + title_in  # four panels of the image's aspect, a title above each
    fig = Figure(figsize=(width, top_in + row_in * len(rows)), dpi=80)
    axes = fig.subplots(len(rows), 4, squeeze=False, gridspec_kw={
        "left": 0.01, "right": 0.92, "bottom": 0.01, "top": 1 - top_in / fig.get_figheight(),
        "wspace": 0.05, "hspace": title_in / (row_in - title_in)})  # fmt: skip
    shown = None
    for row, ((label, sym, x_hat, n_bytes), bits) in enumerate(zip(rows, bit_maps, strict=True)):
        maps.plot_granularity_map(sym, ax=axes[row, 0], image=x)
        axes[row, 0].set_title(
            f"{label}: coarse {sym.coarse_ratio:.2f}, medium {sym.medium_ratio:.2f}", fontsize=9, y=1.0
        )
        shown = axes[row, 1].imshow(bits, cmap="magma", vmin=0, vmax=vmax)
        axes[row, 1].set_title("index bits per pixel", fontsize=9, y=1.0)
        axes[row, 1].set_axis_off()
        inside = psnr(x[:, y0:y1, x0:x1], x_hat[:, y0:y1, x0:x1])
        maps.show_images(
            [x_hat, x_hat[:, y0:y1, x0:x1]],
            [
                f"{bits_per_pixel(n_bytes, h, w):.4f} bpp, PSNR {psnr(x, x_hat):.2f} dB",
                f"in the box: PSNR {inside:.2f} dB",
            ],
            axes=axes[row, 2:],
        )
        for ax in axes[row, :3]:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
    fig.colorbar(shown, cax=fig.add_axes((0.935, 0.25, 0.012, 0.5)), label="bits / pixel")
    return fig


def gradient_flow_figure(norms: dict[str, dict[str, float]]) -> Figure:
    """Size of the gradient each loss term sends to each part of the model, grouped bars on a log axis;
    a part a term does not reach gets no bar and a "0" (notebook 03's hand-written step).

    ``norms``: ``{term: {part: gradient norm}}``, the same parts for every term.
    """
    terms = list(norms)
    parts = list(norms[terms[0]])
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(terms)
    positive = [v for per_part in norms.values() for v in per_part.values() if v > 0]
    floor = min(positive) / 10 if positive else 1e-12
    for i, term in enumerate(terms):
        xs = np.arange(len(parts)) + (i - (len(terms) - 1) / 2) * width
        values = np.array([norms[term][p] for p in parts], dtype=np.float64)
        ax.bar(xs, np.where(values > 0, values, np.nan), width, label=term, color=f"C{i}")
        for x, v in zip(xs, values, strict=True):
            if v == 0:
                ax.text(x, floor, "0", ha="center", va="bottom", fontsize=8, color=f"C{i}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xticks(np.arange(len(parts)), parts)
    ax.set(ylabel="gradient norm", title="where each term of the loss sends its gradient")
    ax.legend(fontsize=8)
    return fig
