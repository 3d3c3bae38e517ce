"""Where the hyperprior saves bits: the saving over the static histogram, per granularity.

    python benchmarks/saving_by_granularity.py [--checkpoint hvq/pretrained/reduced.pt] [--data-dir .devdata]

On the held-out photos of the packed training data (``<data dir>/val``, never Kodak), with the
training forward pass at lambda 1.41 and a few ratios, for each granularity: the coded positions, the
bits per index under the model's own static histogram (the moving histogram kept in training), under
the hyperprior, the z bits per coded index, the saving ``1 - (hyperprior + z) / static`` (also
without z), and the share of z's 4x4 blocks that hold a coded position (only those are coded:
``hvq.entropy.occupied_blocks``). Printed as a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from gpu_sweep import held_out_images  # noqa: E402

from hvq.checkpoint import model_from_checkpoint  # noqa: E402
from hvq.entropy import hyper_parameters, occupied_blocks  # noqa: E402
from hvq.model import GRANULARITIES  # noqa: E402
from hvq.probability import LOG2  # noqa: E402

RATIOS = (0.75, 0.45, 0.15, 0.0)


@torch.no_grad()
def totals(model, images: list[torch.Tensor], lam: float, ratio: float) -> torch.Tensor:
    """``(3, 6)`` float64: per granularity, [coded positions, static bits, hyperprior bits, z bits,
    occupied z blocks, all z blocks]."""
    static_lp = model.static.log_probs()
    acc = torch.zeros(3, 6, dtype=torch.float64)
    cond_h = model._conds(model.lambda_to_t(lam).view(1))[2]
    for x in images:
        out = model(x[None], lam, ratio, ratio)
        for g in range(3):
            mask, idx = out["masks"][g], out["indices"][g]
            hyper = hyper_parameters(model.hyperprior(g), out["features"][g].float(), mask, cond_h,
                                     model.cfg.z_support)  # fmt: skip
            occupied = occupied_blocks(mask)
            acc[g] += torch.tensor([float(mask.sum()), float(-static_lp[idx[mask[:, 0] > 0]].sum() / LOG2),
                                    float(out["bits"][g].sum()), float(hyper.z_bits.sum()),
                                    float(occupied.sum()), float(occupied.numel())])  # fmt: skip
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "hvq" / "pretrained" / "reduced.pt")
    ap.add_argument("--data-dir", type=Path, default=Path(".devdata"))
    ap.add_argument("--lam", type=float, default=1.41)
    args = ap.parse_args()
    model, _, _ = model_from_checkpoint(args.checkpoint)
    images = held_out_images(args.data_dir)
    print(f"{args.checkpoint.name}: z_channels {model.cfg.z_channels}, {len(images)} held-out photos, "
          f"lambda {args.lam}\n")  # fmt: skip
    print("| ratios | granularity | coded indices | static b/index | hyperprior b/index | z b/index "
          "| saving | saving without z | z blocks coded |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for ratio in RATIOS:
        acc = totals(model, images, args.lam, ratio)
        for g in range(3):
            if acc[g, 0] > 0:
                print(row(f"{ratio:.2f} | {GRANULARITIES[g]}", *acc[g].tolist()))
        print(row(f"{ratio:.2f} | all", *acc.sum(0).tolist()))


def row(label: str, n: float, static: float, hyper: float, z: float, occupied: float, blocks: float) -> str:
    """One markdown row: bits per coded index, the savings and the coded share of z blocks in percent."""
    saving, without_z = 100 * (1 - (hyper + z) / static), 100 * (1 - hyper / static)
    return (f"| {label} | {n:.0f} | {static / n:.2f} | {hyper / n:.2f} | {z / n:.2f} | {saving:.1f}% "
            f"| {without_z:.1f}% | {100 * occupied / blocks:.0f}% |")  # fmt: skip

if __name__ == "__main__":
    main()
