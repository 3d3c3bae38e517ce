"""Refit the hyperpriors of a checkpoint on the rate alone (:mod:`hvq.refit`), then save it.

    python benchmarks/hyperprior_refit.py --init checkpoints/continue.pt --run-dir runs/hp_refit \\
        --data-dir .devdata --budget 1500
    python benchmarks/gpu_sweep.py --data-dir .devdata --budget 0 --device cpu --variants hp_refit \\
        --runs runs --baseline checkpoints/continue.pt --out results/gpu_sweep/hp_refit

Random ``--crop`` crops of ``<data dir>/train`` in batches of ``--batch-size``, knobs sampled as in
training; ``<run dir>/log.csv`` gets the mean index and z bits per pixel of every 50 steps, and
``<run dir>/checkpoint.pt`` the refitted weights (tables updated), for ``--init-from`` or ``hvq export``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from hvq.checkpoint import model_from_checkpoint, save_checkpoint  # noqa: E402
from hvq.data import ImageFolderCrops  # noqa: E402
from hvq.refit import refit_hyperpriors, widen_side_latent  # noqa: E402
from hvq.train import sample_knobs  # noqa: E402

LOG_EVERY = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", type=Path, default=Path("checkpoints/continue.pt"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/hp_refit"))
    ap.add_argument("--data-dir", type=Path, default=Path(".devdata"))
    ap.add_argument("--budget", type=float, default=1500.0, help="training seconds")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where to train (update() builds the tables on the CPU)")
    ap.add_argument("--workers", type=int, default=0, help="loader processes (a GPU refit is loader-bound)")
    ap.add_argument("--z-channels", type=int, default=None,
                    help="first widen the side latents to this many channels (hvq.refit.widen_side_latent)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model, cfg, state = model_from_checkpoint(args.init, args.device)
    if args.z_channels:
        model = widen_side_latent(model, args.z_channels)
        cfg = dataclasses.replace(cfg, model=model.cfg)
    data = ImageFolderCrops(args.data_dir / "train", crop=args.crop, epoch_size=10**6, cache=True)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=gen,
                        num_workers=args.workers, persistent_workers=args.workers > 0)  # fmt: skip
    args.run_dir.mkdir(parents=True, exist_ok=True)
    t0, window = time.time(), []
    with open(args.run_dir / "log.csv", "w", newline="") as fh:
        log = csv.writer(fh)
        log.writerow(["step", "seconds", "lr", "bpp_index", "bpp_z"])

        def on_step(step: int, lr: float, bpp_index: float, bpp_z: float) -> None:
            window.append((bpp_index, bpp_z))
            if step % LOG_EVERY == 0:
                index, z = (sum(v) / len(window) for v in zip(*window, strict=True))
                log.writerow([step, round(time.time() - t0, 1), f"{lr:.2e}", f"{index:.5f}", f"{z:.5f}"])
                fh.flush()
                line = f"step {step} {time.time() - t0:.0f} s lr {lr:.1e} index {index:.4f} z {z:.4f}"
                print(line, flush=True)
                window.clear()

        batches = (x.to(args.device) for x in loader)

        def knobs(b: int) -> tuple[torch.Tensor, ...]:
            return tuple(k.to(args.device) for k in sample_knobs(cfg, b, gen))

        steps = refit_hyperpriors(model, batches, knobs, args.budget, args.lr, args.lr_min, on_step)
    model.to("cpu")
    out = args.run_dir / "checkpoint.pt"
    save_checkpoint(out, cfg, model, step=state.get("step"), wall_s=state.get("wall_s"))
    print(f"saved {out} after {steps} refit steps", flush=True)


if __name__ == "__main__":
    main()
