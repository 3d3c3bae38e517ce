"""Helpers for the rate-distortion notebook (``notebooks/04_kodak_rd_curves.ipynb``).

The figures of the results themselves come from :mod:`hvq.plots.figures` (the RD curves, the static-table
ablation); this module adds what a notebook needs around them, as plain functions that return
DataFrames or :class:`matplotlib.figure.Figure` objects:

* finding and loading the files :func:`hvq.evaluate.run_eval` wrote (:func:`find_results`,
  :func:`load_results`; on Colab the committed results are fetched from GitHub, :func:`fetch_results`);
* tables of the anchors' settings, the hvq rate points, the BD-rates and the static-histogram
  ablation (:func:`anchor_table`, :func:`rate_point_table`, :func:`bd_summary`, :func:`ablation_table`);
* a picture of what BD-rate integrates (:func:`bd_figure`), and any curve read at given rates
  (:func:`quality_at_rates`, :func:`at_common_rates`), for comparing codecs at equal bpp;
* the lambda panel: one image coded for real by hvq at any lambda and granularity ratios and by an
  anchor at the same bpp (:class:`LiveCoder`), drawn on the dataset's RD curves beside both
  reconstructions and hvq's bits map (:func:`live_figure`), with a readout (:func:`readout_html`),
  sliders ordered by rate (:func:`rate_sliders`) and the widget that ties them (:func:`live_panel`).

    >>> from hvq.plots import rd                                          # doctest: +SKIP
    >>> res = rd.load_results(rd.find_results("kodak"))        # doctest: +SKIP
    >>> rd.bd_summary(res.bdrate)                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hvq import baselines
from hvq.bdrate import LOWER_IS_BETTER, bd_rate, pchip_slopes
from hvq.data import REPO_ROOT, to_tensor
from hvq.evaluate import RatePoint
from hvq.metrics import bits_per_pixel, lpips_distance, psnr, shared_lpips
from hvq.model import Features, HVQCodec
from hvq.perceptual import LPIPS
from hvq.plots.figures import MARKERS, figure_title
from hvq.plots.maps import bits_per_pixel_map

#: Files every results folder has (anchors add ``<codec>.json``).
RESULT_FILES = ("per_image.csv", "summary.csv", "bdrate.csv", "hvq.json")
#: Where the committed results live on GitHub (``<RESULTS_URL>/<dataset>/<file>``).
RESULTS_URL = "https://raw.githubusercontent.com/hvq-kit/hvq/main/results"
#: Colours of the curves, in the order of :func:`hvq.plots.figures.rd_frame` (as
#: :func:`hvq.plots.figures.rd_figure`).
TAB10 = tuple(colormaps["tab10"].colors)
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
        """``"kodak (24 images)"``, as in the figures of :mod:`hvq.plots.figures`."""
        return figure_title(self.dataset, int(self.hvq["n_images"]))

    @property
    def curves(self) -> dict[str, list[str]]:
        """``{hvq curve name: [point names]}`` (from ``hvq.json``)."""
        return self.hvq["curves"]

    def rate_points(self) -> list[RatePoint]:
        """The hvq operating points that were evaluated, in the order of ``hvq.json``."""
        return [RatePoint(**p) for p in self.hvq["settings"]["rate_points"]]

    @property
    def anchor_names(self) -> list[str]:
        """The anchors of ``summary.csv``, in its order (``["jpeg", "webp", "avif", "jxl"]``)."""
        return [codec for codec in dict.fromkeys(self.summary.codec) if codec != "hvq"]

    def curve(self, name: str, rows: pd.DataFrame | None = None) -> pd.DataFrame:
        """The rows of one curve, sorted by bpp: an hvq curve of :attr:`curves` or an anchor's name.

        ``rows``: where to take them from (default ``summary``, the means; e.g. one image's rows of
        ``per_image``). Raises ``KeyError`` for a name that is neither.
        """
        rows = self.summary if rows is None else rows
        if name in self.curves:
            part = rows[(rows.codec == "hvq") & rows.point.isin(self.curves[name])]
        elif name in self.anchor_names:
            part = rows[rows.codec == name]
        else:
            raise KeyError(f"no curve {name!r}; one of {', '.join([*self.curves, *self.anchor_names])}")
        return part.sort_values("bpp")


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
    d = pchip_slopes(x, y)
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


# ---------------------------------------------------------------------------------- curves at a rate


def quality_at_rates(curve: pd.DataFrame, metric: str, rates: npt.ArrayLike) -> np.ndarray:
    """``metric`` of one RD curve at each of ``rates`` (bpp): linear in log bpp between the curve's
    points, NaN outside the rates it covers.

    ``curve``: rows with ``bpp`` and ``metric`` in any order (e.g. one codec's rows of ``summary.csv``);
    rows with a non-finite value or ``bpp <= 0`` are ignored. Returns ``(len(rates),)`` float64.
    """
    r, q = curve.bpp.to_numpy(float), curve[metric].to_numpy(float)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    order = np.argsort(r[keep], kind="stable")
    x = np.log(np.asarray(rates, dtype=float).clip(min=np.finfo(float).tiny))
    if not keep.any():
        return np.full(x.shape, np.nan)
    return np.interp(x, np.log(r[keep][order]), q[keep][order], left=np.nan, right=np.nan)


def common_rates(*curves: pd.DataFrame, n: int = 64) -> np.ndarray:
    """``(n,)`` rates (bpp) evenly spaced in log bpp over the interval that every curve covers (from the
    highest of their lowest rates to the lowest of their highest); ``(0,)`` if they do not overlap."""
    lo = max(float(c.bpp.min()) for c in curves)
    hi = min(float(c.bpp.max()) for c in curves)
    return np.geomspace(lo, hi, n) if 0 < lo < hi else np.empty(0)


def at_common_rates(curves: dict[str, pd.DataFrame], metric: str, n: int = 64) -> pd.DataFrame:
    """``metric`` of every curve at the :func:`common_rates` of all of them: one column per name of
    ``curves``, indexed by bpp (``(n, len(curves))``; no rows if they do not overlap), so that codecs
    can be compared at equal rate in one line (``table.avif > table.jpeg``)."""
    rates = common_rates(*curves.values(), n=n)
    columns = {name: quality_at_rates(curve, metric, rates) for name, curve in curves.items()}
    return pd.DataFrame(columns, index=pd.Index(rates, name="bpp"))


# ------------------------------------------------------------------------- one image, any lambda


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
    lp = lpips_distance(x, y, lpips)
    h, w = original.shape[:2]
    return Reconstruction(label, decoded, n_bytes, bits_per_pixel(n_bytes, h, w), psnr(x, y), lp)


@dataclass(frozen=True)
class LivePoint:
    """One position of the panel's sliders: the image coded by hvq at ``(lam, coarse_ratio,
    medium_ratio)`` and by an anchor at the quality whose file size is closest to hvq's."""

    lam: float
    coarse_ratio: float
    medium_ratio: float
    data: bytes  # the .hvq file
    hvq: Reconstruction
    bits: np.ndarray  # (H, W) index bits per pixel of that file (hvq.plots.maps.bits_per_pixel_map)
    anchor_codec: str
    anchor_quality: int
    anchor: Reconstruction
    seconds: float  # wall-clock seconds it took: hvq analysis and coding, anchor search, both metrics


class LiveCoder:
    """One image coded for real at any ``(lambda, coarse ratio, medium ratio)``, next to an anchor at
    the same bpp, with the caches a slider needs.

    ``coder(lam, coarse_ratio, medium_ratio)`` runs ``model.analyze`` then ``model.encode`` (which is
    what ``model.compress`` does: real bytes), reconstructs with ``model.synthesize`` (equal to
    ``model.decompress`` of those bytes), measures both codecs and returns a :class:`LivePoint`.
    Cached: the encoder features of the last ``keep_lambdas`` lambdas (a ratio move skips the
    encoder), every anchor file already made and measured (the quality search and the readout reuse
    them) and every point already computed (moving a slider back is instant).

        >>> coder = LiveCoder(model, pixels, "avif")               # doctest: +SKIP
        >>> point = coder(1.41, 0.45, 0.45)                        # doctest: +SKIP
        >>> point.hvq.bpp, point.anchor.bpp, point.anchor_quality  # doctest: +SKIP
        (0.2158, 0.2177, 39)
    """

    def __init__(
        self,
        model: HVQCodec,
        pixels: np.ndarray,
        anchor: str = "avif",
        lpips: LPIPS | None = None,
        keep_lambdas: int = 4,
    ) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {pixels.shape} {pixels.dtype}")
        if anchor not in baselines.SETTINGS:
            raise ValueError(f"unknown anchor {anchor!r}; one of {', '.join(baselines.SETTINGS)}")
        self.model = model
        self.pixels = pixels
        self.anchor = anchor
        self.lpips = lpips or shared_lpips()
        self.keep_lambdas = max(1, keep_lambdas)
        self._x = to_tensor(pixels)
        self._features: dict[float, Features] = {}
        self._anchor_files: dict[int, tuple[int, np.ndarray]] = {}
        self._anchor_measured: dict[int, Reconstruction] = {}
        self._points: dict[tuple[float, float, float], LivePoint] = {}

    def features(self, lam: float) -> Features:
        """The encoder's output at ``lam`` (cached for the last ``keep_lambdas`` lambdas)."""
        lam = float(lam)
        if lam not in self._features:
            if len(self._features) >= self.keep_lambdas:
                del self._features[next(iter(self._features))]  # the oldest
            self._features[lam] = self.model.encode_features(self._x, lam)
        return self._features[lam]

    def anchor_file(self, quality: int) -> tuple[int, np.ndarray]:
        """``(bytes, decoded (H, W, 3) uint8)`` of the anchor at ``quality`` (each quality made once)."""
        if quality not in self._anchor_files:
            n_bytes, decoded, _, _ = baselines.encode_decode(self.anchor, self.pixels, quality)
            self._anchor_files[quality] = (n_bytes, decoded)
        return self._anchor_files[quality]

    def anchor_at(self, quality: int) -> Reconstruction:
        """The anchor's file at ``quality``, measured (once per quality: a lambda move often lands on
        the same quality, and then costs no second LPIPS)."""
        if quality not in self._anchor_measured:
            n_bytes, decoded = self.anchor_file(quality)
            label = f"{self.anchor} q={quality}"
            self._anchor_measured[quality] = _measure(label, self.pixels, decoded, n_bytes, self.lpips)
        return self._anchor_measured[quality]

    def anchor_quality(self, target_bpp: float) -> int:
        """The anchor's quality whose bpp is closest to ``target_bpp`` (:func:`hvq.baselines.quality_for_bpp`
        on this coder's cached files, so later targets share the top of the bisection and cost two to
        five encodes instead of seven)."""
        return baselines.quality_for_bpp(self.anchor, self.pixels, target_bpp, self.anchor_file)[0]

    def __call__(self, lam: float, coarse_ratio: float, medium_ratio: float) -> LivePoint:
        """The point at these knobs (computed once, then served from the cache)."""
        key = (float(lam), float(coarse_ratio), float(medium_ratio))
        if key not in self._points:
            self._points[key] = self._code(*key)
        return self._points[key]

    def _code(self, lam: float, coarse_ratio: float, medium_ratio: float) -> LivePoint:
        start = time.perf_counter()
        sym = self.model.analyze(self.features(lam), coarse_ratio=coarse_ratio, medium_ratio=medium_ratio)
        data = self.model.encode(sym)
        decoded = (self.model.synthesize(sym).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        label = f"hvq: λ {lam:.3g}, ratios {coarse_ratio:.2f}/{medium_ratio:.2f}"
        ours = _measure(label, self.pixels, decoded, len(data), self.lpips)
        quality = self.anchor_quality(ours.bpp)
        theirs = self.anchor_at(quality)
        return LivePoint(
            lam,
            coarse_ratio,
            medium_ratio,
            data,
            ours,
            bits_per_pixel_map(sym),
            self.anchor,
            quality,
            theirs,
            time.perf_counter() - start,
        )


def _rd_axes(
    ax: Axes, kodak: pd.DataFrame | None, own: pd.DataFrame | None, point: LivePoint, metric: str
) -> None:
    """One RD panel of :func:`live_figure`: mean curves, this image's curves pale, the two points."""
    labels = [] if kodak is None else list(dict.fromkeys(kodak.label))
    colours = {label: TAB10[i % len(TAB10)] for i, label in enumerate(labels)}
    for i, label in enumerate(labels):
        part = kodak[kodak.label == label]
        ax.plot(
            part.bpp,
            part[metric],
            linestyle="-" if bool(part.line.iloc[0]) else "none",
            marker=MARKERS[i % len(MARKERS)],
            markersize=4,
            color=colours[label],
            label=label,
        )
    if own is not None:
        shown = [
            label
            for label in dict.fromkeys(own.label)
            if label.startswith("hvq") or label == point.anchor_codec
        ]
        for label in shown:
            part = own[own.label == label]
            ax.plot(
                part.bpp,
                part[metric],
                linestyle="--",
                linewidth=1.2,
                alpha=0.45,
                color=colours.get(label, "0.5"),
            )
        ax.plot([], [], linestyle="--", color="0.5", alpha=0.6, label="the same curves, this image alone")
    ax.axvline(point.hvq.bpp, color="0.6", linestyle=":", linewidth=1)
    ax.plot(
        point.hvq.bpp,
        getattr(point.hvq, metric),
        "*",
        markersize=17,
        color="black",
        markeredgecolor="white",
        label="hvq here (slider)",
        zorder=5,
    )
    ax.plot(
        point.anchor.bpp,
        getattr(point.anchor, metric),
        "*",
        markersize=17,
        color=colours.get(point.anchor_codec, "0.3"),
        markeredgecolor="black",
        label=f"{point.anchor_codec} here (same bpp)",
        zorder=5,
    )
    frames = [f for f in (kodak, own) if f is not None]
    right = max([float(f.bpp.max()) for f in frames] + [point.hvq.bpp, point.anchor.bpp])
    ax.set_xlim(0, 1.04 * right)
    ax.set_xlabel("rate (bits per pixel, real file sizes)")
    ax.set_ylabel(
        f"{METRIC_LABELS.get(metric, metric)}{' (lower is better)' if metric in LOWER_IS_BETTER else ''}"
    )
    ax.grid(alpha=0.3)


def live_figure(
    kodak: pd.DataFrame | None,
    point: LivePoint,
    original: np.ndarray,
    own: pd.DataFrame | None = None,
    title: str = "",
) -> Figure:
    """The picture of one slider position of :func:`live_panel`.

    Top: LPIPS and PSNR against bpp: the mean curves of ``kodak`` (:func:`hvq.plots.figures.rd_frame` of
    ``summary.csv``: both hvq sweeps and every anchor; ``None`` without results), this image's own
    hvq curves and the point's anchor curve dashed and pale (``own``: ``rd_frame`` of its rows of
    ``per_image.csv``, or ``None``), hvq at the sliders' knobs (black star) and the anchor at the
    same bpp (star in the anchor's colour). Bottom: ``original`` ``(H, W, 3)`` uint8, hvq's
    reconstruction, where hvq spends its index bits (bits per pixel), and the anchor's
    reconstruction, each titled with its bpp, PSNR and LPIPS.
    """
    h, w = original.shape[:2]
    image_width = 3.9
    fig = Figure(figsize=(4 * image_width, 4.6 + image_width * h / w + 0.8), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=(4.6, image_width * h / w + 0.8))
    for k, metric in enumerate(("lpips", "psnr")):
        ax = fig.add_subplot(grid[0, 2 * k : 2 * k + 2])
        _rd_axes(ax, kodak, own, point, metric)
        ax.set_title(f"{METRIC_LABELS[metric].split(' (')[0]} against rate")
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    images = [
        ("original", original),
        (point.hvq.caption(), point.hvq.pixels),
        None,
        (f"{point.anchor.caption()} (same bpp)", point.anchor.pixels),
    ]
    for k, panel in enumerate(images):
        ax = fig.add_subplot(grid[1, k])
        ax.set_axis_off()
        if panel is None:
            shown = ax.imshow(point.bits, cmap="magma", vmin=0, interpolation="nearest")
            fig.colorbar(shown, ax=ax, shrink=0.8, label="index bits per pixel")
            ax.set_title(
                f"where hvq spends its index bits\n{float(point.bits.mean()):.3f} bpp of the "
                f"file's {point.hvq.bpp:.3f} (rest: z, masks, header)",
                fontsize=9,
            )
        else:
            ax.imshow(panel[1], interpolation="nearest")
            ax.set_title(panel[0], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def readout_html(point: LivePoint) -> str:
    """The panel's readout as HTML: one row per codec (settings, bytes, bpp, PSNR, LPIPS; the better
    PSNR and LPIPS in bold) and one line comparing them. Cells do not wrap (``white-space: nowrap``),
    so a narrow notebook shows a scroll bar rather than a clipped number."""
    rows = [
        (
            "hvq",
            f"λ {point.lam:.3g}, coarse {point.coarse_ratio:.2f}, medium {point.medium_ratio:.2f}",
            point.hvq,
            point.anchor,
        ),
        (point.anchor_codec, f"quality {point.anchor_quality}", point.anchor, point.hvq),
    ]
    cell = 'style="padding: 2px 12px; text-align: right"'

    def bold(text: str, better: bool) -> str:
        return f"<b>{text}</b>" if better else text

    body = "".join(
        f"<tr><td {cell}>{name}</td><td {cell}>{settings}</td><td {cell}>{r.n_bytes}</td>"
        f"<td {cell}>{r.bpp:.4f}</td><td {cell}>{bold(f'{r.psnr:.2f}', r.psnr > other.psnr)}</td>"
        f"<td {cell}>{bold(f'{r.lpips:.4f}', r.lpips < other.lpips)}</td></tr>"
        for name, settings, r, other in rows
    )
    head = "".join(
        f"<th {cell}>{c}</th>" for c in ("codec", "settings", "bytes", "bpp", "PSNR (dB)", "LPIPS")
    )
    share = 100 * point.anchor.n_bytes / point.hvq.n_bytes
    summary = (
        f"{point.anchor_codec} uses {share:.0f}% of hvq's bytes; {point.anchor_codec} minus hvq: PSNR "
        f"{point.anchor.psnr - point.hvq.psnr:+.2f} dB, LPIPS {point.anchor.lpips - point.hvq.lpips:+.4f} "
        f"(computed in {point.seconds:.1f} s)"
    )
    return (
        f'<div style="white-space: nowrap; overflow-x: auto"><table><tr>{head}</tr>{body}</table>'
        f"<div>{summary}</div></div>"
    )


def _nearest(options: Sequence[float], value: float) -> float:
    return min(options, key=lambda v: abs(v - value))


def rate_sliders(
    lambda_range: tuple[float, float],
    ratio_range: tuple[float, float],
    lam: float,
    ratio: float,
    lambda_raises_rate: bool = True,
    n_lambdas: int = 21,
    ratio_step: float = 0.05,
) -> dict[str, Any]:
    """The panel's three ``ipywidgets.SelectionSlider``, keyed as :class:`LiveCoder` takes them
    (``lam``, ``coarse_ratio``, ``medium_ratio``); each runs from low rate (left) to high rate (right).

    Lambda: ``n_lambdas`` values evenly spaced in log over ``lambda_range``, ascending when
    ``lambda_raises_rate`` (else descending). Ratios: ``ratio_range`` in steps of ``ratio_step``, from
    the highest (most of the image coarse: fewest bits) to the lowest. They start at the options
    closest to ``lam`` and ``ratio``; their readouts are the plain numbers (short, so never clipped).
    """
    import ipywidgets as widgets

    lo, hi = lambda_range
    lambdas = [float(v) for v in np.geomspace(lo, hi, n_lambdas)]
    lambdas = lambdas if lambda_raises_rate else lambdas[::-1]
    n_ratios = int(round((ratio_range[1] - ratio_range[0]) / ratio_step)) + 1
    ratios = [round(float(v), 4) for v in np.linspace(ratio_range[1], ratio_range[0], n_ratios)]
    style = {"description_width": "14em"}
    layout = widgets.Layout(width="44em")

    def slider(description: str, options: list[float], value: float, fmt: str) -> Any:
        return widgets.SelectionSlider(
            options=[(format(v, fmt), v) for v in options],
            value=_nearest(options, value),
            description=description,
            continuous_update=False,
            style=style,
            layout=layout,
        )

    return {
        "lam": slider("λ (log scale)", lambdas, lam, ".3g"),
        "coarse_ratio": slider("coarse ratio (16×16 cells)", ratios, ratio, ".2f"),
        "medium_ratio": slider("medium ratio (8×8 of the rest)", ratios, ratio, ".2f"),
    }


def live_panel(
    coder: Callable[..., LivePoint],
    draw: Callable[[LivePoint], Figure],
    sliders: dict[str, Any],
    initial: LivePoint,
    initial_figure: Figure | None = None,
) -> Any:
    """The sliders, a readout (:func:`readout_html`) and the figure ``draw(point)``, redrawn when a slider
    is released; returns an ``ipywidgets.VBox`` for ``display``.

    ``coder(**slider values)`` gives the :class:`LivePoint` (a :class:`LiveCoder`). The panel shows
    ``initial`` (and ``initial_figure``, or ``draw(initial)``) before any slider moves: the figure is
    put in the output area as a PNG from the kernel side and the callbacks run only when a person
    moves a slider, which keeps notebook runners (nbmake, nbconvert) from waiting on a captured
    output (see :func:`hvq.plots.maps.figure_panel`).
    """
    import io

    import ipywidgets as widgets
    from IPython.display import Image, clear_output, display

    readout = widgets.HTML(readout_html(initial), layout=widgets.Layout(width="100%"))
    out = widgets.Output()
    buffer = io.BytesIO()
    (initial_figure or draw(initial)).savefig(buffer, format="png", bbox_inches="tight")
    out.append_display_data(Image(data=buffer.getvalue(), format="png"))

    def redraw(_change: Any = None) -> None:
        values = {name: s.value for name, s in sliders.items()}
        readout.value = "<i>coding " + ", ".join(f"{k} {v:.3g}" for k, v in values.items()) + " ...</i>"
        point = coder(**values)
        readout.value = readout_html(point)
        with out:
            clear_output(wait=True)
            display(draw(point))

    for s in sliders.values():
        s.observe(redraw, names="value")
    return widgets.VBox([*sliders.values(), readout, out])
