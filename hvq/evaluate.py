"""Rate-distortion evaluation: hvq at several rate points with its static-histogram ablation, and the
classical anchors, on one dataset. Writes CSV and JSON files that :mod:`hvq.plots.figures` (and anyone who
wants to plot against the kit) reads.

    >>> run_eval("kodak", model="reduced", limit=2)            # doctest: +SKIP
    PosixPath('results/kodak')

Files in ``<out_dir>/<dataset>/``:

* ``per_image.csv``: one row per (codec, point, image), one schema for all codecs
  (:data:`PER_IMAGE_COLUMNS`); the ablation columns are empty for the anchors.
* ``summary.csv``: the mean over images of every numeric column per (codec, point), and ``n_images``.
* ``bdrate.csv``: every hvq curve against every anchor, on LPIPS and PSNR, with both interpolations of
  :mod:`hvq.bdrate`: BD-rate (%) and BD-quality (metric units, ``test - anchor``).
* ``<codec>.json``: name, description, settings, library versions, environment and the per-point
  means; ``hvq.json`` also lists the curves (which points form each).

**Rates are real.** hvq: the bytes of the ``.hvq`` file. ``model.compress`` is ``analyze`` followed by
``encode``; both are called here (and timed together as the encode time) so that the symbols can
also be coded under the static tables. Anchors: the bytes of the file Pillow writes. bpp is
``8 * bytes / (H * W)`` of the original image. Quality is measured on 8-bit images (hvq's output is
rounded to 8 bits as a PNG would store it). MS-SSIM is NaN for images with a side below 161 pixels.
Times are wall-clock seconds per image (``time.perf_counter``); hvq gets one untimed warm-up round
trip first. On a shared machine they vary with its load.

**Static-histogram ablation** (hvq rows only). The same indices, coded once more with one static table
for all positions instead of the hyperprior's per-position Gaussians. The static file would hold the
header and mask stream of the real file and the three static index streams, and no z. Columns:

* ``mask_header_bits``, ``z_bits``, ``hyper_index_bits``: the real file split up (they add up to
  ``8 * bytes``).
* ``static_global_*``: the table shipped with the model (``model.static_freqs``, an exponential moving
  histogram of the coded indices of the training batches, over all rate points).
* ``static_fit_*``: a table fitted for each rate point on training images (``<data_dir>/train``, never
  the test set) by :func:`fit_static_tables`, with Laplace smoothing 0.5.
* for each: ``*_index_bits``, ``*_bpp`` (whole static file), ``*_saving_index_pct`` =
  ``100 * (static index bits - hyperprior index bits - z bits) / static index bits`` (the net saving,
  z counted as a cost, in percent of the static index bits) and ``*_saving_total_pct``, the same
  saving in percent of the whole static file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hvq import baselines, tables
from hvq.bdrate import LOWER_IS_BETTER, METHODS, bd_quality, bd_rate
from hvq.config import ModelConfig
from hvq.container import Container
from hvq.data import default_data_dir, find_images, kodak_images, load_image, load_image_uint8, to_tensor
from hvq.metrics import bits_per_pixel, image_quality, psnr, shared_lpips
from hvq.model import Features, HVQCodec
from hvq.nets import route
from hvq.nets.router import box_mask
from hvq.perceptual import LPIPS
from hvq.ratecontrol import compress_to_bpp

#: The one schema of ``per_image.csv`` (anchors leave the hvq-only columns empty).
PER_IMAGE_COLUMNS = (
    "codec", "point", "quality", "lam", "coarse_ratio", "medium_ratio", "image", "height", "width",
    "bytes", "bpp", "psnr", "ms_ssim", "lpips", "colour_bias", "enc_s", "dec_s",
    "mask_header_bits", "z_bits", "hyper_index_bits",
    "static_global_index_bits", "static_global_bpp", "static_global_saving_index_pct",
    "static_global_saving_total_pct",
    "static_fit_index_bits", "static_fit_bpp", "static_fit_saving_index_pct", "static_fit_saving_total_pct",
)  # fmt: skip
_TEXT_COLUMNS = ("codec", "point", "image")
_INT_COLUMNS = ("quality", "height", "width", "bytes", "mask_header_bits", "z_bits", "hyper_index_bits",
                "static_global_index_bits", "static_fit_index_bits")  # fmt: skip
#: Per-point means that go into each ``<codec>.json``.
JSON_METRICS = ("bpp", "psnr", "ms_ssim", "lpips", "colour_bias", "colour_bias_max", "enc_s", "dec_s")
#: Metrics of ``bdrate.csv``.
BD_METRICS = ("lpips", "psnr")
#: Granularity ratios of the default sweep at the middle lambda (coarse = medium), high ratio = low rate.
DEFAULT_RATIOS = (0.9, 0.75, 0.6, 0.45, 0.3, 0.15, 0.0)
#: The "middle" ratios at which the lambda sweep runs (middle of the trained range 0..0.9).
MIDDLE_RATIO = 0.45
#: Laplace smoothing of the fitted static tables (as ``hvq.probability.StaticHistogram``).
STATIC_ALPHA = 0.5

Log = Callable[[str], None]


@dataclass(frozen=True)
class RatePoint:
    """One operating point of hvq: the rate knob ``lam`` and the two granularity ratios."""

    name: str
    lam: float
    coarse_ratio: float
    medium_ratio: float


@dataclass(frozen=True)
class _Image:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8
    tensor: Tensor  # (3, H, W) float32 in [0, 1]


# ------------------------------------------------------------------------------------- rate points


def _point(lam: float, coarse: float, medium: float) -> RatePoint:
    return RatePoint(f"lam{lam:.3g}-c{coarse:.2f}-m{medium:.2f}", lam, coarse, medium)


def default_rate_points(cfg: ModelConfig) -> list[RatePoint]:
    """The ratio sweep :data:`DEFAULT_RATIOS` at the middle (geometric mean) lambda, then
    ``lambda_min`` and ``lambda_max`` at the middle ratios: 9 points, lowest rate first per sweep."""
    mid = math.sqrt(cfg.lambda_min * cfg.lambda_max)
    points = [_point(mid, r, r) for r in DEFAULT_RATIOS]
    return points + [_point(lam, MIDDLE_RATIO, MIDDLE_RATIO) for lam in (cfg.lambda_min, cfg.lambda_max)]


def hvq_curves(points: Sequence[RatePoint]) -> dict[str, list[str]]:
    """Curves through the points: all points sharing a lambda (a ratio sweep), and all points sharing
    both ratios (a lambda sweep), when there are at least 2. ``{curve name: [point names]}``."""
    curves: dict[str, list[str]] = {}
    for lam in dict.fromkeys(p.lam for p in points):
        members = [p.name for p in points if p.lam == lam]
        if len(members) >= 2:
            curves[f"hvq ratio sweep (lambda {lam:.3g})"] = members
    for ratios in dict.fromkeys((p.coarse_ratio, p.medium_ratio) for p in points):
        members = [p.name for p in points if (p.coarse_ratio, p.medium_ratio) == ratios]
        if len(members) >= 2:
            curves[f"hvq lambda sweep (ratios {ratios[0]:.2f}/{ratios[1]:.2f})"] = members
    return curves


# ------------------------------------------------------------------------------------------ images


def dataset_images(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Test images in a fixed order: Kodak through :func:`hvq.data.kodak_images` (checksummed), any
    other name as every image under ``<data_dir>/<dataset>`` (sorted)."""
    if dataset == "train":
        raise ValueError("refusing to evaluate on the training images")
    if dataset == "kodak":
        return kodak_images(data_dir)
    root = (Path(data_dir) if data_dir is not None else default_data_dir()) / dataset
    found = find_images(root)
    if not found:
        raise FileNotFoundError(f"{root}: no images")
    return found


def _load(path: Path, root: Path) -> _Image:
    pixels = load_image_uint8(path)
    return _Image(path.relative_to(root).with_suffix("").as_posix(), pixels, to_tensor(pixels))


def _spread(items: Sequence[Path], n: int) -> list[Path]:
    """``n`` items evenly spaced over the sequence (all of them if it is shorter)."""
    n = min(n, len(items))
    return [items[i * len(items) // n] for i in range(n)]


def _center_crop(x: Tensor, size: int) -> Tensor:
    """Central ``size x size`` window of ``(3, H, W)`` (smaller sides are kept whole)."""
    h, w = x.shape[1:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[:, top : top + size, left : left + size]


# ----------------------------------------------------------------------------- static tables (fit)


def _coded_index_counts(feats: Features, point: RatePoint, k: int) -> np.ndarray:
    """Counts ``(K,)`` of the indices the file would code at ``point`` (masked, all granularities)."""
    rc, rm = float(np.float32(point.coarse_ratio)), float(np.float32(point.medium_ratio))
    coarse, medium, fine = route(feats.x_padded, rc, rm, None, feats.entropies)
    counts = np.zeros(k, dtype=np.int64)
    for idx, mask in zip(feats.indices, (fine, medium, coarse), strict=True):
        counts += np.bincount(idx[mask[:, 0] > 0].cpu().numpy(), minlength=k)
    return counts


def fit_static_tables(
    model: HVQCodec, points: Sequence[RatePoint], paths: Sequence[Path], crop: int = 512
) -> dict[str, np.ndarray]:
    """One static index table per rate point, from the indices the model codes on ``paths`` (central
    ``crop x crop`` windows; pass training images, never the test set). ``{point name: (K,) table}``.

    Each lambda's features are computed once per image; the ratios only change the masks.
    """
    k = model.cfg.codebook_size
    counts = {p.name: np.zeros(k, dtype=np.int64) for p in points}
    for path in paths:
        x = _center_crop(load_image(path), crop)
        for lam in dict.fromkeys(p.lam for p in points):
            feats = model.encode_features(x, lam)
            for p in points:
                if p.lam == lam:
                    counts[p.name] += _coded_index_counts(feats, p, k)
    return {name: tables.static_table(c, STATIC_ALPHA) for name, c in counts.items()}


def fit_static_table(
    model: HVQCodec, point: RatePoint, images: Sequence[Path], n: int, crop: int = 512
) -> np.ndarray:
    """The static table of one rate point fitted on ``n`` of ``images`` (evenly spaced), ``(K,)``."""
    return fit_static_tables(model, [point], _spread(images, n), crop)[point.name]


# ------------------------------------------------------------------------------------------- rows


def _quality(image: _Image, decoded: Tensor, lpips: LPIPS) -> dict[str, float]:
    """:func:`hvq.metrics.image_quality` of a decoded ``(3, H, W)`` image (8-bit values)."""
    return image_quality(image.tensor, decoded, lpips)


def _ablation(prefix: str, static_index_bits: int, real: dict[str, int], pixels: int) -> dict[str, float]:
    """The ``static_<prefix>_*`` columns for one static index-stream size (see the module docstring)."""
    saving = static_index_bits - real["hyper_index_bits"] - real["z_bits"]
    static_total = real["mask_header_bits"] + static_index_bits
    return {
        f"static_{prefix}_index_bits": static_index_bits,
        f"static_{prefix}_bpp": static_total / pixels,
        f"static_{prefix}_saving_index_pct": 100.0 * saving / static_index_bits,
        f"static_{prefix}_saving_total_pct": 100.0 * saving / static_total,
    }


def _hvq_row(
    model: HVQCodec, point: RatePoint, image: _Image, lpips: LPIPS, fit_table: np.ndarray | None
) -> dict[str, Any]:
    """Compress, decompress and measure one image at one rate point, with the static ablation."""
    t0 = time.perf_counter()
    sym = model.analyze(image.tensor, point.lam, point.coarse_ratio, point.medium_ratio)
    data = model.encode(sym)
    t1 = time.perf_counter()
    decoded = model.decompress(data)
    t2 = time.perf_counter()
    decoded = torch.round(decoded * 255) / 255
    streams = Container.from_bytes(data).streams  # mask, z x3, index x3 (fine, medium, coarse)
    real = {"z_bits": 8 * sum(map(len, streams[1:4])), "hyper_index_bits": 8 * sum(map(len, streams[4:7]))}
    real["mask_header_bits"] = 8 * len(data) - real["z_bits"] - real["hyper_index_bits"]
    h, w = image.pixels.shape[:2]
    row = {
        "codec": "hvq",
        "point": point.name,
        "lam": point.lam,
        "coarse_ratio": point.coarse_ratio,
        "medium_ratio": point.medium_ratio,
        "image": image.name,
        "height": h,
        "width": w,
        "bytes": len(data),
        "bpp": bits_per_pixel(len(data), h, w),
        "enc_s": t1 - t0,
        "dec_s": t2 - t1,
        **_quality(image, decoded, lpips),
        **real,
    }
    row |= _ablation("global", 8 * sum(map(len, model.static_index_streams(sym))), real, h * w)
    if fit_table is not None:
        row |= _ablation("fit", 8 * sum(map(len, model.static_index_streams(sym, fit_table))), real, h * w)
    return row


def _warm_up(model: HVQCodec, image: _Image, point: RatePoint) -> None:
    """One untimed round trip of a 64x64 corner, so that lazy initialisation (thread pools, kernel
    selection) is not charged to the first image's timings."""
    corner = image.tensor[:, :64, :64]
    model.decompress(model.compress(corner, point.lam, point.coarse_ratio, point.medium_ratio))


def _anchor_row(codec: str, quality: int, image: _Image, lpips: LPIPS) -> dict[str, Any]:
    n_bytes, decoded, enc_s, dec_s = baselines.encode_decode(codec, image.pixels, quality)
    h, w = image.pixels.shape[:2]
    return {
        "codec": codec,
        "point": f"q{quality}",
        "quality": quality,
        "image": image.name,
        "height": h,
        "width": w,
        "bytes": n_bytes,
        "bpp": bits_per_pixel(n_bytes, h, w),
        "enc_s": enc_s,
        "dec_s": dec_s,
        **_quality(image, to_tensor(decoded), lpips),
    }


def _hvq_rows(
    model: HVQCodec,
    points: Sequence[RatePoint],
    images: Sequence[_Image],
    lpips: LPIPS,
    fitted: dict[str, np.ndarray] | None,
    log: Log,
) -> list[dict[str, Any]]:
    """Rows of every rate point (outer loop) and image, after one untimed warm-up."""
    _warm_up(model, images[0], points[0])
    rows = []
    for point in points:
        table = fitted[point.name] if fitted else None
        block = [_hvq_row(model, point, image, lpips, table) for image in images]
        log(_block_summary(block))
        rows += block
    return rows


def _anchor_rows(
    codec: str, qualities: Sequence[int], images: Sequence[_Image], lpips: LPIPS, log: Log
) -> list[dict[str, Any]]:
    """Rows of one anchor: every quality (ascending, outer loop) and image."""
    rows = []
    for quality in sorted(qualities):
        block = [_anchor_row(codec, quality, image, lpips) for image in images]
        log(_block_summary(block))
        rows += block
    return rows


def _block_summary(rows: list[dict[str, Any]]) -> str:
    keys = ("bpp", "psnr", "lpips", "colour_bias", "enc_s", "dec_s")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return (
        f"{rows[0]['codec']} {rows[0]['point']}: {mean['bpp']:.4f} bpp, PSNR {mean['psnr']:.2f} dB, "
        f"LPIPS {mean['lpips']:.4f}, colour bias {mean['colour_bias']:.2f}, "
        f"encode {mean['enc_s']:.3f} s, decode {mean['dec_s']:.3f} s per image"
    )


# --------------------------------------------------------------------------------------- summaries


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the per-image table: every column of :data:`PER_IMAGE_COLUMNS`, numeric where it can be."""
    frame = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    for column in PER_IMAGE_COLUMNS:
        if column not in _TEXT_COLUMNS:
            frame[column] = frame[column].astype("Int64" if column in _INT_COLUMNS else "float64")
    return frame


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean of every numeric column per (codec, point), in first-appearance order, with ``n_images``
    and ``colour_bias_max`` (the worst image's colour bias)."""
    numeric = [c for c in PER_IMAGE_COLUMNS if c not in _TEXT_COLUMNS]
    groups = per_image.groupby(["codec", "point"], sort=False)
    means = groups[numeric].mean().astype("float64")
    means.insert(0, "n_images", groups.size())
    means.insert(means.columns.get_loc("colour_bias") + 1, "colour_bias_max", groups["colour_bias"].max())
    return means.reset_index()


def bd_table(summary: pd.DataFrame, curves: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Every hvq curve (``{name: [point names]}``) against every anchor in ``summary``, on
    :data:`BD_METRICS` with each method of :mod:`hvq.bdrate`. One row per combination; the two
    ``*_note`` columns say why a value is NaN (or warn that a curve is not monotone)."""
    hvq = summary[summary.codec == "hvq"].set_index("point")
    anchors = [c for c in dict.fromkeys(summary.codec) if c != "hvq"]
    rows = []
    for curve, names in curves.items():
        test = hvq.loc[list(names)]
        for anchor in anchors:
            ref = summary[summary.codec == anchor]
            for metric in BD_METRICS:
                higher = metric not in LOWER_IS_BETTER
                args = (ref.bpp, ref[metric], test.bpp, test[metric])
                for method in METHODS:
                    rate = bd_rate(*args, method=method, higher_is_better=higher)
                    qual = bd_quality(*args, method=method, higher_is_better=higher)
                    rows.append(
                        {
                            "curve": curve,
                            "anchor": anchor,
                            "metric": metric,
                            "method": method,
                            "bd_rate_pct": rate.value,
                            "bd_quality": qual.value,
                            "n_test": len(test),
                            "n_anchor": len(ref),
                            "bd_rate_note": rate.reason,
                            "bd_quality_note": qual.reason,
                        }
                    )
    return pd.DataFrame(rows)


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON for other tools)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _points_json(summary: pd.DataFrame, codec: str, extra: Sequence[str]) -> list[dict[str, Any]]:
    keys = ["point", *extra, "n_images", *JSON_METRICS]
    points = summary.loc[summary.codec == codec, keys]
    if "quality" in extra:
        points = points.astype({"quality": int})
    return points.to_dict(orient="records")


def _environment(device: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------- run_eval


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (nothing changes for ``None``)."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resolve_model(model: str | HVQCodec, device: str) -> tuple[HVQCodec, str]:
    if isinstance(model, HVQCodec):
        return model.to(device).eval(), "custom (HVQCodec instance)"
    from hvq.pretrained import load_pretrained

    return load_pretrained(model, device).eval(), model


def _fit_tables(
    model: HVQCodec, points: Sequence[RatePoint], data_dir, n: int, crop: int, log: Log
) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
    """Fitted static tables (or None, with a one-line message) and their description for hvq.json."""
    train_dir = (Path(data_dir) if data_dir is not None else default_data_dir()) / "train"
    if n <= 0 or not train_dir.is_dir():
        print(
            f"hvq eval: static_fit columns left empty (n={n}, {train_dir} exists: {train_dir.is_dir()})",
            file=sys.stderr,
        )
        return None, {"fitted": False}
    paths = _spread(find_images(train_dir), n)
    log(f"fitting {len(points)} static tables on {len(paths)} training images ({crop}x{crop} crops)")
    fitted = fit_static_tables(model, points, paths, crop)
    info = {
        "fitted": True,
        "train_dir": str(train_dir),
        "crop": crop,
        "laplace_alpha": STATIC_ALPHA,
        "images": [p.relative_to(train_dir).as_posix() for p in paths],
        "table": "one histogram per rate point, shared by the three granularities",
    }
    return fitted, info


def run_eval(
    dataset: str = "kodak",
    model: str | HVQCodec = "reduced",
    out_dir: str | os.PathLike[str] = "results",
    data_dir: str | os.PathLike[str] | None = None,
    rate_points: Sequence[RatePoint] | None = None,
    codecs: Sequence[str] = ("jpeg", "webp", "avif", "jxl"),
    limit: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    qualities: Mapping[str, Sequence[int]] | None = None,
    static_fit_images: int = 16,
    static_fit_crop: int = 512,
    threads: int | None = None,
) -> Path:
    """Evaluate hvq and the anchors on a dataset; returns the folder ``<out_dir>/<dataset>``.

    Args:
        dataset: ``"kodak"`` or a folder name under ``data_dir`` (see :func:`dataset_images`).
        model: a shipped model name or checkpoint path (:func:`hvq.pretrained.load_pretrained`), or an
            :class:`HVQCodec` whose tables are filled (``update()``).
        out_dir: results root.
        data_dir: the data directory (default :func:`hvq.data.default_data_dir`); training images for
            the fitted static tables come from ``<data_dir>/train``.
        rate_points: hvq operating points (default :func:`default_rate_points`).
        codecs: anchors, in order; unavailable ones are skipped with a one-line message.
        limit: evaluate only the first ``limit`` images.
        device: torch device of the model and LPIPS (entropy coding always runs on the CPU).
        progress: print a line per (codec, point) to stderr.
        qualities: ``{codec: qualities}`` overriding :data:`hvq.baselines.SETTINGS` sweeps.
        static_fit_images: training images for the fitted static tables (0: skip, columns empty).
        static_fit_crop: side of the central crop of each of those images.
        threads: torch threads during the run (restored afterwards); ``None`` leaves torch's setting.
            On a machine whose cores are busy (a training run), 1 thread is several times faster
            for the model, LPIPS and MS-SSIM than oversubscribing them.
    """
    unknown = [c for c in codecs if c not in baselines.SETTINGS]
    if unknown:
        raise ValueError(f"unknown codecs {unknown}; known: {list(baselines.SETTINGS)}")

    def log(message: str) -> None:
        if progress:
            print(f"hvq eval: {message}", file=sys.stderr, flush=True)

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    with _torch_threads(threads):
        paths = dataset_images(dataset, data_dir)[:limit]
        root = Path(os.path.commonpath([p.parent for p in paths]))
        images = [_load(p, root) for p in paths]
        out = Path(out_dir) / dataset
        out.mkdir(parents=True, exist_ok=True)
        codec_model, model_name = _resolve_model(model, device)
        points = list(rate_points) if rate_points is not None else default_rate_points(codec_model.cfg)
        lpips = shared_lpips(device)
        fitted, fit_info = _fit_tables(codec_model, points, data_dir, static_fit_images, static_fit_crop, log)

        rows = _hvq_rows(codec_model, points, images, lpips, fitted, log)
        _frame(rows).to_csv(out / "per_image.csv", index=False)  # rewritten after each codec
        available = baselines.available_codecs()
        for codec in codecs:
            if not available[codec]:
                print(f"hvq eval: {baselines.missing_message(codec)}", file=sys.stderr)
                continue
            sweep = (qualities or {}).get(codec, baselines.SETTINGS[codec]["qualities"])
            rows += _anchor_rows(codec, sweep, images, lpips, log)
            _frame(rows).to_csv(out / "per_image.csv", index=False)

        summary = summarize(_frame(rows))
        summary.to_csv(out / "summary.csv", index=False)
        curves = hvq_curves(points)
        bd_table(summary, curves).to_csv(out / "bdrate.csv", index=False)
        common = {
            "dataset": dataset,
            "n_images": len(images),
            "images": [im.name for im in images],
            "environment": _environment(device),
        }
        hvq_settings = {
            "model": model_name,
            "model_tag": codec_model.model_tag().hex(),
            "config": asdict(codec_model.cfg),
            "rate_points": [asdict(p) for p in points],
            "static_global": "model.static_freqs: exponential moving histogram (decay 0.995 per step) of the "
            "coded indices of the training batches, over all sampled rate points",
            "static_fit": fit_info,
        }
        _write_codec_jsons(out, summary, common, hvq_settings, curves)
    return out


def _write_codec_jsons(
    out: Path,
    summary: pd.DataFrame,
    common: dict[str, Any],
    hvq_settings: dict[str, Any],
    curves: dict[str, list[str]],
) -> None:
    """``hvq.json`` and one ``<anchor>.json`` per anchor in ``summary`` (see the module docstring)."""
    hvq = {
        "name": "hvq",
        "description": "HVQ-CGIC (this kit): VQ indices coded with per-granularity hyperpriors",
        **common,
        "settings": hvq_settings,
        "curves": curves,
        "points": _points_json(summary, "hvq", ["lam", "coarse_ratio", "medium_ratio"]),
    }
    _write_json(out / "hvq.json", hvq)
    versions = baselines.library_versions()
    for codec in dict.fromkeys(summary.codec):
        if codec == "hvq":
            continue
        settings = baselines.SETTINGS[codec]
        anchor = {
            "name": codec,
            "description": settings["description"],
            **common,
            "settings": settings,
            "library_version": versions[codec],
            "pillow": versions["pillow"],
            "points": _points_json(summary, codec, ["quality"]),
        }
        _write_json(out / f"{codec}.json", anchor)


# ------------------------------------------------------------------------------- region of interest


def central_box(height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the middle third of each side of an ``height x width`` image."""
    return width // 3, height // 3, 2 * width // 3, 2 * height // 3


@torch.no_grad()
def roi_comparison(
    model: HVQCodec, x: Tensor, box: tuple[int, int, int, int], ratio: float, lpips: LPIPS
) -> dict[str, float]:
    """What a region of interest buys inside it at the same file size.

    ``x (3, H, W)`` is coded at the middle lambda and both ratios ``ratio`` without a region (size S),
    then with ``box`` forced fine and rate-controlled to S (:func:`hvq.ratecontrol.compress_to_bpp`).
    Returns ``bpp_plain``, ``bpp_roi`` and, inside the box of the two decoded 8-bit images,
    ``psnr_plain``, ``psnr_roi``, ``lpips_plain``, ``lpips_roi``.
    """
    h, w = x.shape[1:]
    lam = math.sqrt(model.cfg.lambda_min * model.cfg.lambda_max)
    plain = model.compress(x, lam=lam, coarse_ratio=ratio, medium_ratio=ratio)
    target = 8 * len(plain) / (h * w)
    with_roi = compress_to_bpp(model, x, target, lams=[lam], roi=box_mask(h, w, box)).data
    row = {"bpp_plain": target, "bpp_roi": 8 * len(with_roi) / (h * w)}
    x0, y0, x1, y1 = box
    inside = x[:, y0:y1, x0:x1]
    for name, data in (("plain", plain), ("roi", with_roi)):
        decoded = torch.round(model.decompress(data)[:, y0:y1, x0:x1] * 255) / 255
        row[f"psnr_{name}"] = psnr(inside, decoded)
        row[f"lpips_{name}"] = float(lpips(inside[None], decoded[None])[0])
    return row
