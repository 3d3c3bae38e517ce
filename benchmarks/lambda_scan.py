"""Quality and rate along lambda at fixed ratios, on the held-out photos (never Kodak).

    python benchmarks/lambda_scan.py [--checkpoint hvq/pretrained/reduced.pt] [--ratio 0.45]

With the training forward pass (estimated bpp, no colour offset), as ``benchmarks/gpu_sweep.py``
measures its variants, at lambda 0.25, 0.5, 1, 1.41, 2, 4 and 8 and coarse = medium = ``--ratio``.
Prints a markdown table: where along lambda PSNR and LPIPS are best, and whether the rate rises.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_sweep import held_out_images, measure  # noqa: E402

from hvq.perceptual import LPIPS  # noqa: E402

LAMBDAS = (0.25, 0.5, 1.0, 1.41, 2.0, 4.0, 8.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "hvq" / "pretrained" / "reduced.pt")
    ap.add_argument("--data-dir", type=Path, default=Path(".devdata"))
    ap.add_argument("--ratio", type=float, default=0.45)
    args = ap.parse_args()
    images = held_out_images(args.data_dir)
    points = [(lam, args.ratio, args.ratio) for lam in LAMBDAS]
    rows = measure(args.checkpoint, images, LPIPS(), "cpu", points)
    print(f"{args.checkpoint.name}: {len(images)} held-out photos, ratios {args.ratio}\n")
    print("| lambda | bpp | PSNR dB | LPIPS | raw colour bias (levels) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['lam']:.2f} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['lpips']:.4f} | {r['bias']:.2f} |")


if __name__ == "__main__":
    main()
