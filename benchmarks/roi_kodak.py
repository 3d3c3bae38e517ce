"""Does a region of interest coded fine look better inside the box at the same file size?

For every Kodak image: code it without a region at the middle lambda and ratios ``--ratio`` (size S),
then with the central box (the middle third of each side) forced fine, rate-controlled to the same S.
Inside the box, compare PSNR and LPIPS of the two decoded images.

    python benchmarks/roi_kodak.py [--limit N] [--ratio 0.6] [--model reduced | checkpoint.pt]
    python benchmarks/roi_kodak.py --images .devdata/val --out /tmp/roi_val.csv   # held-out photos

Prints a markdown table (one row per image) and a summary line; writes ``results/kodak/roi.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from hvq.data import find_images, kodak_images, load_image  # noqa: E402
from hvq.evaluate import central_box, roi_comparison  # noqa: E402
from hvq.perceptual import LPIPS  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--ratio", type=float, default=0.6)
    ap.add_argument("--model", default="reduced", help="a shipped model's name or a checkpoint path")
    ap.add_argument("--images", type=Path, default=None, help="a folder of photos instead of Kodak")
    ap.add_argument("--out", default=str(ROOT / "results" / "kodak" / "roi.csv"))
    args = ap.parse_args(argv)
    model = load_pretrained(args.model)
    paths = find_images(args.images) if args.images else kodak_images()
    lpips = LPIPS()
    rows = []
    print("| image | bpp plain / ROI | PSNR in box plain -> ROI | LPIPS in box plain -> ROI |")
    print("|---|---|---|---|")
    for path in paths[: args.limit]:
        x = load_image(path)
        box = central_box(*x.shape[1:])
        row = {"image": path.stem, **roi_comparison(model, x, box, args.ratio, lpips)}
        rows.append(row)
        print(
            f"| {row['image']} | {row['bpp_plain']:.4f} / {row['bpp_roi']:.4f} | "
            f"{row['psnr_plain']:.2f} -> {row['psnr_roi']:.2f} | "
            f"{row['lpips_plain']:.4f} -> {row['lpips_roi']:.4f} |",
            flush=True,
        )
    better = sum(r["psnr_roi"] > r["psnr_plain"] and r["lpips_roi"] < r["lpips_plain"] for r in rows)
    gain = sum(r["psnr_roi"] - r["psnr_plain"] for r in rows) / len(rows)
    dlp = sum(r["lpips_roi"] - r["lpips_plain"] for r in rows) / len(rows)
    print(f"\nROI better on both PSNR and LPIPS inside the box: {better}/{len(rows)} images; "
          f"mean change {gain:+.2f} dB, LPIPS {dlp:+.4f}")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0 if better == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
