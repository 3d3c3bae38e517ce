"""Notebook 04's lambda panel at one slider position, saved as a picture (the panel's own figure).

    python benchmarks/lambda_panel_figure.py [--image kodim23] [--lam 1.41] [--ratio 0.45]
        [--out figures/notebooks/04_lambda_panel.png]

The image coded for real by the shipped model at ``(lambda, ratio, ratio)``, AVIF at the closest file
size, both on the Kodak mean curves of the committed results (``results/kodak``) with this image's
own curves: what :func:`hvq.plots.rd.live_figure` draws for each move of the panel's sliders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hvq.data import kodak_dir, load_image_uint8  # noqa: E402
from hvq.plots import figures, rd  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kodim23")
    ap.add_argument("--lam", type=float, default=1.41)
    ap.add_argument("--ratio", type=float, default=0.45)
    ap.add_argument("--anchor", default="avif")
    ap.add_argument("--out", type=Path, default=ROOT / "figures" / "notebooks" / "04_lambda_panel.png")
    args = ap.parse_args(argv)
    res = rd.load_results(rd.find_results("kodak", start=ROOT, download=False))
    pixels = load_image_uint8(kodak_dir() / f"{args.image}.png")
    point = rd.LiveCoder(load_pretrained("reduced"), pixels, args.anchor)(args.lam, args.ratio, args.ratio)
    kodak = figures.rd_frame(res.summary, res.curves)
    own = figures.rd_frame(res.per_image[res.per_image.image == args.image], res.curves)
    title = f"{args.image}: hvq and {args.anchor} at equal bpp (notebook 04's lambda panel)"
    fig = rd.live_figure(kodak, point, pixels, own, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    anchor = f"{args.anchor} q={point.anchor_quality} {point.anchor.bpp:.4f} bpp"
    print(f"{args.out}: hvq {point.hvq.bpp:.4f} bpp, {anchor}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
