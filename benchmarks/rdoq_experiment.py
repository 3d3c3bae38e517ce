"""Would rate-aware index choice help? A frozen-model experiment on held-out photos.

    python benchmarks/rdoq_experiment.py [--data-dir .devdata] [--lam 1.41] [--ratio 0.45]

The encoder picks the nearest code; the file then pays ``-log2 p(k)`` bits for it under the
hyperprior's integer table. An encoder may instead pick ``argmin_k ||y - e_k||^2 + mu_rd * bits_k``
(rate-distortion optimised quantisation): the decoder is unchanged (it reads whatever index is sent),
z does not move (it is computed from ``y``), and the exact bits come from the tables already built.
This script codes the held-out photos (``<data dir>/val``) at one lambda and ratio with several
``mu_rd`` and compares them with the plain ratio sweep of the same model: bpp, PSNR and LPIPS averaged
over the photos, and the plain sweep's PSNR and LPIPS interpolated at each point's bpp.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hvq import tables  # noqa: E402
from hvq.data import find_images, load_image  # noqa: E402
from hvq.metrics import lpips_distance, psnr, shared_lpips  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402
from hvq.symbols import coded_positions  # noqa: E402


@torch.no_grad()
def rate_aware_indices(model, sym, feats, mu_rd: float) -> None:
    """Replace the coded indices of ``sym`` by ``argmin ||y - e_k||^2 + mu_rd * bits_k`` (in place)."""
    codebook = model.quantizer.codebook.double()
    for g in range(3):
        pos = torch.from_numpy(coded_positions(sym.masks[g]))
        if not len(pos):
            continue
        y = feats.ys[g][0].flatten(1)[:, pos].T.double()  # (n, D)
        dist = (y * y).sum(1, keepdim=True) - 2 * y @ codebook.T + (codebook * codebook).sum(1)
        bits = -torch.log2(torch.from_numpy(sym.freqs[g].astype(np.float64)) / tables.TOTAL)
        flat = sym.indices[g][0].flatten().clone()
        flat[pos] = (dist + mu_rd * bits).argmin(1)
        sym.indices[g] = flat.view_as(sym.indices[g][0])[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".devdata")
    ap.add_argument("--lam", type=float, default=1.41)
    ap.add_argument("--ratio", type=float, default=0.45)
    ap.add_argument("--mu", type=float, nargs="+", default=[0.0, 0.001, 0.003, 0.01, 0.03])
    ap.add_argument("--sweep", type=float, nargs="+", default=[0.75, 0.6, 0.45, 0.3, 0.15])
    args = ap.parse_args(argv)
    model = load_pretrained("reduced").eval()
    lp = shared_lpips()
    paths = find_images(args.data_dir / "val")
    rows = {("sweep", r): [] for r in args.sweep} | {("rd", m): [] for m in args.mu}
    for path in paths:
        x = load_image(path)
        pixels = x.shape[1] * x.shape[2]
        feats = model.encode_features(x, args.lam)
        for (kind, v), out in rows.items():
            ratio = v if kind == "sweep" else args.ratio
            sym = model.analyze(feats, coarse_ratio=ratio, medium_ratio=ratio, fit_colour=False)
            if kind == "rd":
                rate_aware_indices(model, sym, feats, v)
            sym, x_hat = model.fit_colour_and_synthesize(sym, feats)
            bpp = 8 * len(model.encode(sym)) / pixels
            out.append((bpp, psnr(x, x_hat), lpips_distance(x, x_hat, lp)))
        print(f"{path.name}: done", flush=True)
    mean = {k: np.mean(v, axis=0) for k, v in rows.items()}
    sweep = sorted((mean[("sweep", r)] for r in args.sweep), key=lambda m: m[0])
    s_bpp, s_psnr, s_lpips = (np.array([m[i] for m in sweep]) for i in range(3))
    print(f"\n{len(paths)} held-out photos, lambda {args.lam}\n")
    print("| point | bpp | PSNR | LPIPS | sweep PSNR at this bpp | sweep LPIPS at this bpp |")
    print("|---|---:|---:|---:|---:|---:|")
    for (kind, v), m in mean.items():
        label = f"ratio {v}" if kind == "sweep" else f"ratio {args.ratio}, mu_rd {v}"
        print(
            f"| {label} | {m[0]:.4f} | {m[1]:.2f} | {m[2]:.4f} "
            f"| {np.interp(m[0], s_bpp, s_psnr):.2f} | {np.interp(m[0], s_bpp, s_lpips):.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
