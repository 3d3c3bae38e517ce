"""Ablations of the kit's readings of the paper, each an equal-budget fine-tune of the shipped model.

    python benchmarks/ablations.py [--steps 300] [--limit N] [--points 0.75 0.45 0.15]

Four fine-tunes from ``hvq/pretrained/reduced.pt`` with the same data, steps, learning rate and seed
(``hvq train --init-from``): the **control** (the shipped config unchanged), **isotropic** scale,
**plain decoder** (no confidence input) and **shared hyperprior** (one for all granularities). Layers
whose shape changes start fresh; everything else starts from the shipped weights. Each is evaluated
on Kodak (real files, hvq only) at the same rate points; the script writes
``results/kodak/ablations_per_image.csv`` and prints a table of index bits, total bpp and LPIPS with
the per-image paired difference against the control (mean and standard deviation over images).
The fifth reading, hyperprior vs static histogram, needs no retraining: see ``results/kodak/summary.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from hvq.checkpoint import model_from_checkpoint  # noqa: E402
from hvq.config import load_config  # noqa: E402
from hvq.evaluate import RatePoint, run_eval  # noqa: E402
from hvq.pretrained import PRETRAINED_DIR  # noqa: E402
from hvq.train import train  # noqa: E402

VARIANTS = {
    "control": {},
    "isotropic": {"covariance": "isotropic"},
    "plain decoder": {"adaptive_decoder": False},
    "shared hyperprior": {"shared_hyperprior": True},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--points", type=float, nargs="+", default=[0.75, 0.45, 0.15])
    ap.add_argument("--work", default=None, help="folder for the fine-tune runs (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "results" / "kodak" / "ablations_per_image.csv"))
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="hvq_ablations_"))
    base = load_config("reduced")
    lam = (base.model.lambda_min * base.model.lambda_max) ** 0.5
    points = [RatePoint(f"c{r:.2f}-m{r:.2f}", lam, r, r) for r in args.points]
    frames = []
    for name, change in VARIANTS.items():
        cfg = load_config("reduced")
        cfg.model = dataclasses.replace(cfg.model, **change)
        cfg.train = dataclasses.replace(
            cfg.train, steps=args.steps, lr=args.lr, lr_min=args.lr / 10, warmup_steps=min(20, args.steps)
        )
        torch.manual_seed(0)
        run = work / name.replace(" ", "_")
        ckpt = train(cfg, run, steps=args.steps, progress=False, init_from=PRETRAINED_DIR / "reduced.pt")
        model, _, _ = model_from_checkpoint(ckpt)
        model.update()
        out = run_eval(
            "kodak", model=model, out_dir=work / "eval" / name.replace(" ", "_"), rate_points=points,
            codecs=(), limit=args.limit, static_fit_images=0, progress=False,
        )  # fmt: skip
        df = pd.read_csv(out / "per_image.csv")
        df["variant"] = name
        frames.append(df)
        print(f"{name}: fine-tuned {args.steps} steps, evaluated {df['image'].nunique()} images", flush=True)
    per_image = pd.concat(frames)
    per_image["index_bpp"] = per_image["hyper_index_bits"] / (per_image["height"] * per_image["width"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(args.out, index=False)
    print_table(per_image)
    return 0


def print_table(per_image: pd.DataFrame) -> None:
    keys = ["point", "image"]
    control = per_image[per_image["variant"] == "control"].set_index(keys)
    cols = ["variant", "point", "index bpp", "total bpp", "LPIPS", "paired d index bpp", "paired d bpp"]
    print("\n| " + " | ".join(cols + ["paired d LPIPS"]) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (variant, point), g in per_image.groupby(["variant", "point"], sort=False):
        g = g.set_index(keys)
        c = control.loc[g.index]
        cells = []
        for col in ("index_bpp", "bpp", "lpips"):
            d = g[col] - c[col]
            cells.append(f"{d.mean():+.4f} ± {d.std():.4f}")
        print(
            f"| {variant} | {point} | {g['index_bpp'].mean():.4f} | {g['bpp'].mean():.4f} | "
            f"{g['lpips'].mean():.4f} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
