"""Helpers for the rate-distortion notebook (``notebooks/04_kodak_rd_curves.ipynb``).

The figures of the results themselves come from :mod:`hvq.plots` (the RD curves, the static-table
ablation); this module adds what a notebook needs around them, as plain functions that return
DataFrames or :class:`matplotlib.figure.Figure` objects:

* finding and loading the files :func:`hvq.evaluate.run_eval` wrote (:func:`find_results`,
  :func:`load_results`; on Colab the committed results are fetched from GitHub, :func:`fetch_results`);
* tables of the anchors' settings, the hvq rate points, the BD-rates and the static-histogram
  ablation (:func:`anchor_table`, :func:`rate_point_table`, :func:`bd_summary`, :func:`ablation_table`);
* a picture of what BD-rate integrates (:func:`bd_figure`);
* one image coded by hvq at a rate point and by an anchor at the same rate, measured
  (:func:`compare_at_point`) and drawn (:func:`comparison_figure`).

    >>> from hvq import viz_rd                                          # doctest: +SKIP
    >>> res = viz_rd.load_results(viz_rd.find_results("kodak"))        # doctest: +SKIP
    >>> viz_rd.bd_summary(res.bdrate)                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from hvq import baselines
from hvq.bdrate import LOWER_IS_BETTER, _pchip_slopes, bd_rate
from hvq.data import REPO_ROOT, to_tensor
from hvq.evaluate import RatePoint, shared_lpips
from hvq.metrics import bits_per_pixel, psnr
from hvq.model import HVQCodec
from hvq.perceptual import LPIPS
from hvq.plots import figure_title, quality_for_bpp

#: Files every results folder has (anchors add ``<codec>.json``).
RESULT_FILES = ("per_image.csv", "summary.csv", "bdrate.csv", "hvq.json")
#: Where the committed results live on GitHub (``<RESULTS_URL>/<dataset>/<file>``).
RESULTS_URL = "https://raw.githubusercontent.com/hvq-kit/hvq/main/results"
#: Axis labels of the metrics.
METRIC_LABELS = {"lpips": "LPIPS-alex", "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM"}


# ------------------------------------------------------------------------------------ finding them


def results_candidates(dataset: str = "kodak", start: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for ``<results>/<dataset>``, in order: the repository root as the parent of the
    ``notebooks`` folder we run in (``start``, default the working directory), ``start`` itself, and the
    checkout the package was installed from (editable installs)."""
    start = Path.cwd() if start is None else Path(start)
    roots = ([start.parent] if start.name == "notebooks" else []) + [start, REPO_ROOT]
    return list(dict.fromkeys((root / "results" / dataset).resolve() for root in roots))


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in RESULT_FILES)


def find_results(
    dataset: str = "kodak", start: str | os.PathLike[str] | None = None, download: bool | None = None
) -> Path | None:
    """The first complete results folder of :func:`results_candidates`, or ``None``.

    If none is found and ``download`` is true (default: only on Colab, where the package is installed
    without the repository's ``results/``), the committed results are fetched with
    :func:`fetch_results`.
    """
    for folder in results_candidates(dataset, start):
        if _complete(folder):
            return folder
    if download is None:
        download = "google.colab" in sys.modules
    return fetch_results(dataset) if download else None


def fetch_results(
    dataset: str = "kodak",
    dest: str | os.PathLike[str] | None = None,
    base_url: str = RESULTS_URL,
    timeout: float = 30.0,
) -> Path | None:
    """Download ``<base_url>/<dataset>/{per_image,summary,bdrate}.csv``, ``hvq.json`` and every
    ``<anchor>.json`` that exists into ``dest`` (default ``~/.cache/hvq/results/<dataset>``).

    Returns the folder, or ``None`` after printing one line if a required file cannot be fetched.
    """
    dest = Path(dest) if dest is not None else Path.home() / ".cache" / "hvq" / "results" / dataset
    dest.mkdir(parents=True, exist_ok=True)

    def get(name: str) -> bytes:
        with urllib.request.urlopen(f"{base_url}/{dataset}/{name}", timeout=timeout) as response:
            return response.read()

    try:
        for name in RESULT_FILES:
            (dest / name).write_bytes(get(name))
    except (OSError, urllib.error.URLError) as exc:
        print(f"could not download the results from {base_url}/{dataset}: {exc}")
        return None
    for codec in baselines.SETTINGS:
        try:
            (dest / f"{codec}.json").write_bytes(get(f"{codec}.json"))
        except (OSError, urllib.error.URLError):
            pass  # an anchor that was not evaluated
    return dest


# ------------------------------------------------------------------------------------------ loading


@dataclass
class Results:
    """One dataset's evaluation results (the files of :mod:`hvq.evaluate`)."""

    folder: Path
    per_image: pd.DataFrame
    summary: pd.DataFrame
    bdrate: pd.DataFrame
    hvq: dict[str, Any]
    anchors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return str(self.hvq.get("dataset", self.folder.name))

    @property
    def title(self) -> str:
        """``"kodak (24 images)"``, as in the figures of :mod:`hvq.plots`."""
        return figure_title(self.dataset, int(self.hvq["n_images"]))

    @property
    def curves(self) -> dict[str, list[str]]:
        """``{hvq curve name: [point names]}`` (from ``hvq.json``)."""
        return self.hvq["curves"]

    def rate_points(self) -> list[RatePoint]:
        """The hvq operating points that were evaluated, in the order of ``hvq.json``."""
        return [RatePoint(**p) for p in self.hvq["settings"]["rate_points"]]


def load_results(folder: str | os.PathLike[str]) -> Results:
    """Read a results folder written by :func:`hvq.evaluate.run_eval`."""
    folder = Path(folder)
    summary = pd.read_csv(folder / "summary.csv")
    anchors = {}
    for codec in dict.fromkeys(summary.codec):
        path = folder / f"{codec}.json"
        if codec != "hvq" and path.is_file():
            anchors[codec] = json.loads(path.read_text())
    return Results(
        folder=folder,
        per_image=pd.read_csv(folder / "per_image.csv"),
        summary=summary,
        bdrate=pd.read_csv(folder / "bdrate.csv"),
        hvq=json.loads((folder / "hvq.json").read_text()),
        anchors=anchors,
    )


# ------------------------------------------------------------------------------------------- tables


def anchor_table(results: Results) -> pd.DataFrame:
    """One row per anchor: what it is, the library version, the encoder options besides ``quality``,
    the chroma format, the quality sweep and the range of mean bpp it covered (from its JSON file)."""
    rows = []
    for codec, info in results.anchors.items():
        settings = info["settings"]
        bpp = [p["bpp"] for p in info["points"] if p.get("bpp") is not None]
        rows.append(
            {
                "codec": codec,
                "description": info["description"],
                "library": info.get("library_version"),
                "options": ", ".join(f"{k}={v}" for k, v in settings.get("options", {}).items()),
                "chroma": settings.get("chroma"),
                "qualities": " ".join(str(q) for q in settings["qualities"]),
                "bpp range": f"{min(bpp):.3f} - {max(bpp):.3f}" if bpp else "",
            }
        )
    return pd.DataFrame(rows).set_index("codec")


def rate_point_table(results: Results) -> pd.DataFrame:
    """One row per hvq rate point: its knobs, the curves it lies on and its mean bpp / quality."""
    means = results.summary[results.summary.codec == "hvq"].set_index("point")
    rows = []
    for p in results.rate_points():
        on = [name for name, members in results.curves.items() if p.name in members]
        row = {"point": p.name, "lambda": p.lam, "coarse": p.coarse_ratio, "medium": p.medium_ratio}
        row["curves"] = "; ".join(on)
        if p.name in means.index:
            row |= {k: means.loc[p.name, k] for k in ("bpp", "psnr", "ms_ssim", "lpips")}
        rows.append(row)
    return pd.DataFrame(rows).set_index("point")


def _notes(bdrate: pd.DataFrame) -> pd.Series:
    """The note of every row: ``bd_rate_note`` (older files called it ``reason``), and
    ``bd_quality_note`` after it where that one says something else."""
    empty = pd.Series("", index=bdrate.index)
    rate = next((bdrate[c].fillna("").astype(str) for c in ("bd_rate_note", "reason") if c in bdrate), empty)
    if "bd_quality_note" not in bdrate:
        return rate
    quality = bdrate["bd_quality_note"].fillna("").astype(str)
    extra = quality.where((quality != "") & (quality != rate), "")
    joined = rate.str.cat(extra.radd("BD-quality: ").where(extra != "", ""), sep=" | ")
    return joined.str.strip(" |")


def bd_summary(bdrate: pd.DataFrame, method: str = "pchip") -> pd.DataFrame:
    """``bdrate.csv`` as one row per (hvq curve, anchor): BD-rate (%) and BD-quality on each metric,
    for one interpolation ``method``, and the notes that explain a NaN (or flag a non-monotone curve).

    BD-rate < 0: hvq needs fewer bits for the same quality. BD-quality is ``hvq - anchor`` at equal
    rate in the metric's units (for LPIPS, < 0 is better).
    """
    part = bdrate[bdrate.method == method].assign(note=_notes(bdrate))
    metrics = list(dict.fromkeys(part.metric))
    short = {m: METRIC_LABELS.get(m, m).split(" (")[0] for m in metrics}
    units = {m: " (dB)" if m == "psnr" else "" for m in metrics}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in part.itertuples(index=False):
        row = rows.setdefault((r.curve, r.anchor), {"notes": []})
        row[f"BD-rate {short[r.metric]} (%)"] = r.bd_rate_pct
        row[f"BD-{short[r.metric]}{units[r.metric]}"] = r.bd_quality
        if r.note:
            row["notes"].append(f"{r.metric}: {r.note}")
    columns = [f"BD-rate {short[m]} (%)" for m in metrics] + [f"BD-{short[m]}{units[m]}" for m in metrics]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["curve", "anchor"])
    return table[columns].assign(notes=table["notes"].map("; ".join))


def ablation_table(per_image: pd.DataFrame, index_savings: bool = False) -> pd.DataFrame:
    """Static histogram vs hyperprior per hvq rate point (means over images).

    Columns: the file's bpp; the index and z bits of the real file per pixel; the index bits per pixel
    under the model's static table and under the table fitted for that point (when the evaluation
    fitted one); and the hyperprior's net saving (z counted as a cost) in percent of the static file
    (with ``index_savings``, also in percent of the static index bits). A positive saving: the
    hyperprior's file is smaller. Columns that are empty for every row (no fitted tables) are dropped.
    """
    hvq = per_image[per_image.codec == "hvq"]
    pixels = hvq.height * hvq.width
    columns = {
        "bpp": hvq.bpp,
        "hyperprior index bpp": hvq.hyper_index_bits / pixels,
        "z bpp": hvq.z_bits / pixels,
        "static index bpp (model table)": hvq.static_global_index_bits / pixels,
        "static index bpp (fitted)": hvq.static_fit_index_bits / pixels,
        "saving % of file (model table)": hvq.static_global_saving_total_pct,
        "saving % of file (fitted)": hvq.static_fit_saving_total_pct,
    }
    if index_savings:
        columns["saving % of index bits (model table)"] = hvq.static_global_saving_index_pct
        columns["saving % of index bits (fitted)"] = hvq.static_fit_saving_index_pct
    frame = pd.DataFrame(columns).assign(point=hvq.point)
    table = frame.groupby("point", sort=False).mean()
    return table.dropna(axis=1, how="all")


# ----------------------------------------------------------------------------------- BD-rate figure


def _interpolate(x: np.ndarray, y: np.ndarray, xs: np.ndarray, method: str) -> np.ndarray:
    """The interpolant :mod:`hvq.bdrate` integrates, evaluated at ``xs`` (``x`` sorted, distinct)."""
    if method == "cubic":
        return np.polyval(np.polyfit(x, y, min(3, len(x) - 1)), xs)
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, xs, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (xs - x[k]) / h
    return (
        (2 * t**3 - 3 * t**2 + 1) * y[k]
        + (t**3 - 2 * t**2 + t) * h * d[k]
        + (-2 * t**3 + 3 * t**2) * y[k + 1]
        + (t**3 - t**2) * h * d[k + 1]
    )


def _oriented(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(quality oriented so that higher is better, log bpp)`` sorted by quality, finite points only."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    q, r = sign * frame[metric].to_numpy(float), frame.bpp.to_numpy(float)
    keep = np.isfinite(q) & np.isfinite(r) & (r > 0)
    order = np.argsort(q[keep], kind="stable")
    return q[keep][order], np.log(r[keep][order])


def bd_figure(
    summary: pd.DataFrame,
    points: list[str],
    anchor: str,
    metric: str = "lpips",
    method: str = "pchip",
    label: str = "hvq",
) -> Figure:
    """What BD-rate integrates, for the hvq ``points`` (one curve) against ``anchor`` on ``metric``.

    Left: the two RD curves, with the quality interval where both are defined shaded. Right: the same
    curves turned round, log rate as a function of quality, interpolated as :func:`hvq.bdrate.bd_rate`
    does (``method``); the area between them over the shared interval, divided by its width, is the
    mean log-rate difference, and ``100 * (exp(mean) - 1)`` the BD-rate in the title.
    """
    hvq = summary[(summary.codec == "hvq") & summary.point.isin(points)]
    ref = summary[summary.codec == anchor]
    result = bd_rate(ref.bpp, ref[metric], hvq.bpp, hvq[metric], method=method,
                     higher_is_better=metric not in LOWER_IS_BETTER)  # fmt: skip
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    fig = Figure(figsize=(12.0, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    curves = {label: _oriented(hvq, metric), anchor: _oriented(ref, metric)}
    lo = max(q.min() for q, _ in curves.values())
    hi = min(q.max() for q, _ in curves.values())
    for i, (name, (q, log_r)) in enumerate(curves.items()):
        color = f"C{i}"
        left.plot(np.exp(log_r), sign * q, "o", color=color, label=name)
        right.plot(sign * q, log_r, "o", color=color, label=name)
        if len(q) >= 2 and (np.diff(q) > 0).all():
            qs = np.linspace(q.min(), q.max(), 200)
            fit = _interpolate(q, log_r, qs, method)
            left.plot(np.exp(fit), sign * qs, "-", color=color, lw=1)
            right.plot(sign * qs, fit, "-", color=color, lw=1)
    if hi > lo and all(len(q) >= 2 and (np.diff(q) > 0).all() for q, _ in curves.values()):
        qs = np.linspace(lo, hi, 200)
        (q_t, r_t), (q_a, r_a) = curves.values()
        right.fill_between(sign * qs, _interpolate(q_t, r_t, qs, method), _interpolate(q_a, r_a, qs, method),
                           color="0.6", alpha=0.35, label="integrated difference")  # fmt: skip
    if hi > lo:
        left.axhspan(sign * lo, sign * hi, color="0.85", zorder=0, label="shared quality interval")
        right.axvspan(sign * lo, sign * hi, color="0.92", zorder=0)
    name = METRIC_LABELS.get(metric, metric)
    left.set(xlabel="rate (bpp)", ylabel=name, title="RD curves")
    right.set(xlabel=name, ylabel="ln(bpp)", title=f"log rate as a function of quality ({method})")
    if sign < 0:
        right.invert_xaxis()  # better quality to the right, as for PSNR
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    value = "undefined" if np.isnan(result.value) else f"{result.value:+.1f}%"
    note = f" ({result.reason})" if result.reason else ""
    fig.suptitle(f"BD-rate of {label} against {anchor} on {name}: {value}{note}", fontsize=10)
    return fig


# ------------------------------------------------------------------------------ one image, one rate


@dataclass(frozen=True)
class Reconstruction:
    """One decoded image and how it was measured (bpp from the real file; PSNR, LPIPS on 8 bits)."""

    label: str
    pixels: np.ndarray  # (H, W, 3) uint8
    n_bytes: int
    bpp: float
    psnr: float
    lpips: float

    def caption(self) -> str:
        return f"{self.label}\n{self.bpp:.3f} bpp, PSNR {self.psnr:.2f} dB, LPIPS {self.lpips:.3f}"


def _measure(
    label: str, original: np.ndarray, decoded: np.ndarray, n_bytes: int, lpips: LPIPS
) -> Reconstruction:
    x, y = to_tensor(original), to_tensor(decoded)
    device = next(lpips.parameters()).device
    with torch.no_grad():
        lp = float(lpips(x[None].to(device), y[None].to(device))[0])
    h, w = original.shape[:2]
    return Reconstruction(label, decoded, n_bytes, bits_per_pixel(n_bytes, h, w), psnr(x, y), lp)


def compare_at_point(
    model: HVQCodec, pixels: np.ndarray, point: RatePoint, anchor: str = "avif", lpips: LPIPS | None = None
) -> tuple[Reconstruction, Reconstruction]:
    """Code ``pixels`` ``(H, W, 3)`` uint8 with hvq at ``point`` (a real ``.hvq`` file), then with
    ``anchor`` at the quality whose file size is closest to hvq's (bisection over 0..100 with
    :func:`hvq.baselines.encode_decode`); returns both, measured."""
    lpips = lpips or shared_lpips()
    data = model.compress(to_tensor(pixels), point.lam, point.coarse_ratio, point.medium_ratio)
    decoded = (model.decompress(data).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    label = f"hvq: lambda {point.lam:.3g}, ratios {point.coarse_ratio:.2f}/{point.medium_ratio:.2f}"
    ours = _measure(label, pixels, decoded, len(data), lpips)
    quality, n_bytes, anchor_pixels = quality_for_bpp(anchor, pixels, ours.bpp)
    return ours, _measure(f"{anchor} q={quality}", pixels, anchor_pixels, n_bytes, lpips)


def comparison_figure(original: np.ndarray, reconstructions: list[Reconstruction], title: str = "") -> Figure:
    """The original next to each reconstruction, with its caption (bpp, PSNR, LPIPS) as the title."""
    h, w = original.shape[:2]
    n = 1 + len(reconstructions)
    side = 4.2
    fig = Figure(figsize=(side * n * max(1.0, w / h) ** 0.5, side * 1.08), layout="constrained")
    panels = [("original", original)] + [(r.caption(), r.pixels) for r in reconstructions]
    for ax, (caption, image) in zip(fig.subplots(1, n), panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
