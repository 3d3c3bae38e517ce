"""Rate-control accuracy on Kodak: for each target bpp, every image is compressed with
``compress_to_bpp`` and the real file size is compared with the target.

    python benchmarks/rate_control_kodak.py [--targets 0.1 0.2 0.3 0.4] [--limit N] [--model reduced]

Writes ``results/kodak/rate_control.csv`` (one row per image and target), draws
``figures/kodak/rate_control.png`` (target vs achieved, every image a point) and prints a markdown table
(target, min/mean/max achieved, worst relative error, images within 2%, mean encode time).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hvq.data import kodak_images, load_image  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402
from hvq.ratecontrol import RateTargetError, compress_to_bpp  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default="reduced")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--out", default=str(ROOT / "results" / "kodak" / "rate_control.csv"))
    ap.add_argument("--figure", default=str(ROOT / "figures" / "kodak" / "rate_control.png"))
    ap.add_argument("--from-csv", action="store_true", help="only redraw the figure and table from --out")
    args = ap.parse_args(argv)
    if args.from_csv:
        with open(args.out) as fh:
            rows = [_typed(r) for r in csv.DictReader(fh)]
        targets = sorted({r["target_bpp"] for r in rows})
        print_table(rows, targets, args.tolerance)
        plot(rows, args.figure, len({r["image"] for r in rows}))
        return 0

    model = load_pretrained(args.model)
    images = kodak_images()[: args.limit]
    rows = []
    for path in images:
        x = load_image(path)
        for target in args.targets:
            t0 = time.perf_counter()
            try:
                res = compress_to_bpp(model, x, target, tolerance=args.tolerance)
                achieved, err = res.bpp, ""
            except RateTargetError as exc:
                achieved, err = float("nan"), str(exc)
            dt = time.perf_counter() - t0
            rows.append(
                {
                    "image": path.stem,
                    "target_bpp": target,
                    "achieved_bpp": achieved,
                    "rel_error": (achieved - target) / target,
                    "encode_s": round(dt, 3),
                    "real_encodes": getattr(res, "real_encodes", "") if not err else "",
                    "lam": getattr(res, "lam", "") if not err else "",
                    "coarse_ratio": getattr(res, "coarse_ratio", "") if not err else "",
                    "error": err,
                }
            )
            print(
                f"{path.stem} target {target:.3f}: achieved {achieved:.4f} bpp in {dt:.1f} s {err}",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows, args.targets, args.tolerance)
    plot(rows, args.figure, len(images))
    return 0


def _typed(row: dict) -> dict:
    for key in ("target_bpp", "achieved_bpp", "rel_error", "encode_s"):
        row[key] = float(row[key])
    return row


def print_table(rows: list[dict], targets: list[float], tol: float) -> None:
    header = ["target bpp", "min achieved", "mean achieved", "max achieved", "worst error", "within 2%"]
    print("\n| " + " | ".join(header + ["mean encode s"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        sel = [r for r in rows if r["target_bpp"] == t]
        ok = [r for r in sel if not r["error"]]
        if not ok:
            print(f"| {t:.3f} | unreachable | | | | 0/{len(sel)} | |")
            continue
        ach = [r["achieved_bpp"] for r in ok]
        worst = max(abs(r["rel_error"]) for r in ok)
        within = sum(abs(r["rel_error"]) <= tol for r in ok)
        enc = sum(r["encode_s"] for r in ok) / len(ok)
        print(
            f"| {t:.3f} | {min(ach):.4f} | {sum(ach) / len(ach):.4f} | {max(ach):.4f} | {100 * worst:.2f}% "
            f"| {within}/{len(sel)} | {enc:.1f} |"
        )


def plot(rows: list[dict], figure: str, n_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if not r["error"]]
    target = np.array([r["target_bpp"] for r in ok])
    achieved = np.array([r["achieved_bpp"] for r in ok])
    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(10, 4.4))
    lim = target.max() * 1.1
    ax.scatter(target, achieved, s=14, alpha=0.6, label="one image")
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="achieved = target")
    ax.set(
        xlabel="target bits per pixel",
        ylabel="achieved bits per pixel (real file)",
        xlim=(0, lim),
        ylim=(0, lim),
    )
    ax.legend(loc="upper left")
    jitter = (
        np.random.default_rng(0).uniform(-0.25, 0.25, len(ok))
        * np.diff(np.unique(target)).min(initial=0.05)
        / 4
    )
    ax_err.scatter(target + jitter, 100 * (achieved / target - 1), s=14, alpha=0.6)
    ax_err.axhspan(-2, 2, color="grey", alpha=0.2, label="±2% tolerance")
    ax_err.axhline(0, color="k", lw=1, ls="--")
    ax_err.set(xlabel="target bits per pixel", ylabel="achieved / target - 1 (%)", ylim=(-3, 3))
    ax_err.legend(loc="upper right")
    fig.suptitle(f"hvq rate control on Kodak ({n_images} images, every image a point)")
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
