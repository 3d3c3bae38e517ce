"""Integer hyper-synthesis against the float64 path on Kodak: index bits, differing parameters, time.

For every image the shipped model analyses the image once (its own masks, z and indices, at the lambda
of the grid index nearest to ``--lam``), then computes the entropy parameters of the three
granularities twice: with the float64 path the codec uses today (``float_params``) and with the integer
network (``IntegerHyperSynthesis``), and prices the same indices under both sets of integer tables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/integer_hyper.py [--limit N] [--lam 1.41] [--ratio 0.45]

Prints a markdown table, one row per image: coded positions, positions whose snapped mean (any of the
D coordinates) or scale index differ, index bits under the float and integer tables and their relative
difference, and the time of the two parameter paths (the table build and coding are the same for both
and not timed). Exit status 1 if an image's bits differ by more than ``--tolerance`` (0.5 %).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hvq import tables  # noqa: E402
from hvq.data import kodak_images, load_image  # noqa: E402
from hvq.nets import integer  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402


def at_positions(maps: tuple[torch.Tensor, torch.Tensor], sel: torch.Tensor) -> list[np.ndarray]:
    """``(1, C, h, w)`` maps -> ``(n, C)`` arrays of the positions where ``sel (h w,)`` is true."""
    return [m[0].flatten(1).T[sel].numpy() for m in maps]


def table_row(name: str, row: np.ndarray) -> str:
    """A markdown row from ``(positions, mu differ, scale differ, bits float, bits int, s float, s int)``."""
    positions, mu_differ, scale_differ, bits_float, bits_int, s_float, s_int = row
    cells = [name, f"{positions:.0f}", f"{mu_differ / positions:.2%}", f"{scale_differ / positions:.2%}",
             f"{bits_float:.0f}", f"{bits_int:.0f}", f"{(bits_int - bits_float) / bits_float:+.2e}",
             f"{s_float:.2f}", f"{s_int:.2f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="reduced", help="shipped model name or checkpoint path")
    ap.add_argument("--lam", type=float, default=1.41, help="lambda (snapped to the nearest grid index)")
    ap.add_argument("--ratio", type=float, default=0.45, help="coarse and medium ratio")
    ap.add_argument("--limit", type=int, default=None, help="only the first N Kodak images")
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest relative bit difference")
    args = ap.parse_args(argv)
    try:
        model = load_pretrained(args.model)
        images = kodak_images()[: args.limit]
        index = integer.lambda_index(float(model.lambda_to_t(args.lam)))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = model.cfg
    lam = cfg.lambda_min * (cfg.lambda_max / cfg.lambda_min) ** integer.lambda_grid_t(index)
    codebook_q = tables.quantize_mu(model.quantizer.codebook.detach().double().numpy())
    embed64 = copy.deepcopy(model.embed_hyper).double() if cfg.cond_dim else None
    embed = model.embed_hyper if cfg.cond_dim else None
    nets = [
        (integer.IntegerHyperSynthesis.from_float(hp.h_s, *integer.film_tables(hp.h_s, embed), cfg.z_support),
         copy.deepcopy(hp.h_s).double().cpu())
        for hp in model.hyperpriors
    ]  # fmt: skip
    print(f"lambda {args.lam} -> grid index {index} (lambda {lam:.4f}), ratios {args.ratio}, "
          f"{torch.get_num_threads()} torch thread(s)\n")  # fmt: skip
    print("| image | positions | mu differ | scale differ | bits float | bits integer | rel. diff | "
          "float64 path s | integer path s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    totals = np.zeros(7)
    worst = 0.0
    for path in images:
        sym = model.analyze(load_image(path), lam, args.ratio, args.ratio, fit_colour=False)
        row = np.zeros(7)  # positions, mu differ, scale differ, bits float, bits int, t float, t int
        for g in range(3):
            net, h_s64 = nets[0 if cfg.shared_hyperprior else g]
            z_hat, mask = sym.z_hat[g], sym.masks[g]
            start = time.perf_counter()
            float_maps = integer.float_params(h_s64, embed64, z_hat, mask, index)
            middle = time.perf_counter()
            int_maps = net(z_hat, mask, index)
            row[5:] += (middle - start, time.perf_counter() - middle)
            sel = mask[0, 0].flatten() > 0
            if not sel.any():
                continue
            (mu_f, scale_f), (mu_q, scale_idx) = at_positions(float_maps, sel), at_positions(int_maps, sel)
            symbols = sym.indices[g][0].flatten()[sel].numpy()
            row[:5] += (
                int(sel.sum()),
                int((mu_q != mu_f).any(1).sum()),
                int((scale_idx != scale_f).any(1).sum()),
                tables.ideal_bits(sym.freqs[g], symbols),
                tables.ideal_bits(tables.gaussian_index_freqs(mu_q, scale_idx, codebook_q), symbols),
            )
        totals += row
        worst = max(worst, abs(row[4] - row[3]) / row[3])
        print(table_row(path.stem, row), flush=True)
    print(table_row(f"all {len(images)}", totals))
    print(f"\nlargest per-image relative bit difference {worst:.2e} (tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
