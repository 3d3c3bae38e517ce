"""Seconds per move of notebook 05's sliders, printed as a markdown table (README "Rate control").

    python benchmarks/bench_slider.py [--image kodim04] [--threads 2] [--moves 6]

Notebook 05 opens kodim04 (full size in full mode), then every move of a slider re-runs rate control
and redraws a figure. This script replays such moves without a browser, each timed from the new value
to the rendered PNG (what ``hvq.plots.maps.figure_panel`` shows):

* **target slider**: ``--moves`` targets spread over the reachable band, in a shuffled but fixed order;
* **region-of-interest panel**: the same number of moves, alternating between the target and the
  box (each move codes the image twice, without and with the box, as the notebook does).

Each is timed two ways in the same run: *before*, the notebook's code until this change
(``compress_to_bpp`` per search, then ``decompress`` and a second ``analyze`` for the figure), and
*now*, one :class:`hvq.ratecontrol.RateController` per image whose results carry their symbols and
reconstruction. The first row, "open", is the one-off cost when the image is loaded (the encoder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import torch  # noqa: E402

from hvq.data import kodak_images, load_image  # noqa: E402
from hvq.plots import figures, maps  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402
from hvq.ratecontrol import RateController, compress_to_bpp, reachable_bpp  # noqa: E402

#: The face in kodim04 (notebook 05's FACE_BOX), and a second box the ROI moves switch to.
FACE = (190, 300, 410, 520)
OTHER_BOX = (150, 60, 420, 260)


def _render(fig) -> None:
    """What the panel does with a figure on a move: a PNG (``maps.figure_png(fig, fast=True)``)."""
    maps.figure_png(fig, fast=True)


def rate_move_before(model, x, target: float) -> None:
    res = compress_to_bpp(model, x, target)
    x_hat = model.decompress(res.data)
    sym = model.analyze(x, res.lam, res.coarse_ratio, res.medium_ratio)
    _render(figures.rate_target_figure(x, x_hat, sym, "before"))


def rate_move_now(control: RateController, x, target: float) -> None:
    res = control.compress(target)
    _render(figures.rate_target_figure(x, res.reconstruction, res.symbols, "now"))


def roi_move_before(model, x, target: float, box) -> None:
    h, w = x.shape[1:]
    rows = []
    for mask in (None, maps.box_mask(h, w, box)):
        res = compress_to_bpp(model, x, target, roi=mask)
        sym = model.analyze(x, res.lam, res.coarse_ratio, res.medium_ratio, roi=mask)
        rows.append(("", sym, model.decompress(res.data), len(res.data)))
    _render(figures.roi_figure(x, box, rows))


def roi_move_now(control: RateController, x, target: float, box, by_box: dict) -> None:
    """As notebook 05: one controller per box seen (``by_box``), the plain one shared."""
    h, w = x.shape[1:]
    if box not in by_box:
        by_box[box] = control.with_roi(maps.box_mask(h, w, box))
    rows = []
    for ctl in (control, by_box[box]):
        res = ctl.compress(target)
        rows.append(("", res.symbols, res.reconstruction, len(res.data)))
    _render(figures.roi_figure(x, box, rows))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kodim04")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--moves", type=int, default=6)
    ap.add_argument("--model", default="reduced")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.model, "cpu")
    x = load_image(next(p for p in kodak_images() if p.stem == args.image))
    h, w = x.shape[1:]

    open_before = _timed(lambda: reachable_bpp(model, x))  # the notebook's band, before
    t0 = time.perf_counter()
    control = RateController(model, x)
    low, high = control.reachable()
    open_now = time.perf_counter() - t0
    order = [(2 * i + 1) % args.moves for i in range(args.moves)]  # a fixed shuffle of the band
    targets = [low + (0.1 + 0.8 * k / max(1, args.moves - 1)) * (high - low) for k in order]
    boxes = [FACE if i % 4 < 2 else OTHER_BOX for i in range(args.moves)]  # box moves every other move

    rows = [("open the image (encoder, band)", [open_now], [open_before])]
    before = [_timed(lambda t=t: rate_move_before(model, x, t)) for t in targets]
    now = [_timed(lambda t=t: rate_move_now(control, x, t)) for t in targets]
    rows.append(("target slider, per move", now, before))
    before = [
        _timed(lambda t=t, b=b: roi_move_before(model, x, t, b)) for t, b in zip(targets, boxes, strict=True)
    ]
    by_box: dict = {}
    now = [
        _timed(lambda t=t, b=b: roi_move_now(control, x, t, b, by_box))
        for t, b in zip(targets, boxes, strict=True)
    ]
    rows.append(("ROI panel, per move (two files)", now, before))

    print(
        f"{args.image} {w}x{h}, {args.threads} threads, {args.moves} moves, "
        f"targets in [{low:.3f}, {high:.3f}] bpp\n"
    )
    print("| what | now: median s | now: max s | before: median s | before: max s |")
    print("|---|---:|---:|---:|---:|")
    for label, t_now, t_before in rows:
        print(
            f"| {label} | {statistics.median(t_now):.2f} | {max(t_now):.2f} "
            f"| {statistics.median(t_before):.2f} | {max(t_before):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
