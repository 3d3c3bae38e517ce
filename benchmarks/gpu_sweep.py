"""Train several variants of the shipped model at once on one GPU, then compare them on held-out photos.

The variants (``VARIANTS``) are the reduced model's config plus a few overrides each; they train side by
side as separate ``hvq train`` processes (a small model leaves most of a large GPU idle), each for the
same wall-clock budget with the learning-rate schedule run on time (``train.time_budget_s``). Then each
is measured on the held-out ``val/`` photos of the packed data (``benchmarks/pack_train_data.py``; never
Kodak) at several rate points with the differentiable forward pass: estimated bpp (index + z + mask),
PSNR, LPIPS, the worst channel's global mean error in levels of 255, and the index bits saved against
the model's own static histogram (the moving histogram kept during training).

    python benchmarks/pack_train_data.py --out .devdata      # here, once
    python benchmarks/gpu_sweep.py --data-dir .devdata --budget 360 --out results/gpu_sweep

On a lent machine the packages it lacks travel as wheels in ``.whl`` (constriction, lpips,
pytorch-msssim, pooch, platformdirs), and the working tree (about 20 MB) plus ``.devdata`` (52 MB) must
stay under the 64 MiB a call carries: for the fourth sweep ``checkpoints/continue.pt``, a copy of the
shipped weights, was emptied for the call and restored after. Run with ``PYTHONPATH`` holding the
repository, since the script lives in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from hvq.checkpoint import model_from_checkpoint, save_checkpoint
from hvq.data import find_images, load_image
from hvq.perceptual import LPIPS
from hvq.probability import LOG2

#: Architecture that moves capacity from full resolution to 1/4 (cheap on a CPU, where it is decoded).
WIDE4 = {
    "widths": [16, 32, 80, 112, 128],
    "res_blocks": [0, 1, 2, 1, 1],
    "decoder_widths": [16, 32, 96],
    "decoder_res_blocks": [0, 1, 3],
}
#: The third sweep's common start: the shipped model (itself ``ft_colour300``), a lower peak rate.
FT2 = {"colour_weight": 300.0, "mse_weight": 100.0, "lr": 1.5e-4, "lr_min": 1.5e-5, "warmup_steps": 100}
#: The fourth sweep's common start: stage 9 (the shipped model) with every weight learning, 15% of the
#: crops all fine and 25% with a box forced fine, so the encoder learns fine codes in flat areas too.
FT3 = {"lr": 1.0e-4, "lr_min": 1.0e-5, "warmup_steps": 100, "all_fine_share": 0.15, "roi_share": 0.25}
VARIANTS: dict[str, dict] = {
    # Fourth sweep: a joint anneal of the shipped stage 9, alone and with one change each.
    "g10": {"init_from": "hvq/pretrained/reduced.pt", "train": FT3},
    "g10_lowlr": {"init_from": "hvq/pretrained/reduced.pt",
                  "train": {**FT3, "lr": 3.0e-5, "lr_min": 5.0e-6, "warmup_steps": 20}},  # fmt: skip
    "g10_lpips2": {"init_from": "hvq/pretrained/reduced.pt", "train": {**FT3, "lpips_weight": 2.0}},
    "g10_mse150": {"init_from": "hvq/pretrained/reduced.pt", "train": {**FT3, "mse_weight": 150.0}},
    "g10_gan": {"init_from": "hvq/pretrained/reduced.pt",
                "train": {**FT3, "disc_start": 300, "disc_weight": 0.1}},  # fmt: skip
    # Third sweep: continue the shipped model, alone and with one change each.
    "ft2": {"init_from": "hvq/pretrained/reduced.pt", "train": FT2},
    "ft2_lpips2": {"init_from": "hvq/pretrained/reduced.pt", "train": {**FT2, "lpips_weight": 2.0}},
    "ft2_gan": {"init_from": "hvq/pretrained/reduced.pt",
                "train": {**FT2, "disc_start": 300, "disc_weight": 0.1}},  # fmt: skip
    "ft2_fine": {"init_from": "hvq/pretrained/reduced.pt",
                 "train": {**FT2, "coarse_ratio": [0.0, 0.6], "medium_ratio": [0.0, 0.6]}},  # fmt: skip
    # Second sweep: fine-tune the shipped model with colour inside the lambda-weighted distortion.
    "ft_colour300": {
        "init_from": "hvq/pretrained/reduced.pt",
        "train": {
            "colour_weight": 300.0,
            "mse_weight": 100.0,
            "lr": 2.0e-4,
            "lr_min": 2.0e-5,
            "warmup_steps": 100,
        },
    },
    # First sweep (results/gpu_sweep/sweep1.csv), run while the colour term was added outside the
    # lambda weighting; the code now puts it inside, so rerunning these trains a different loss.
    "colour": {"train": {"colour_weight": 1000.0}},
    "colour_mse150": {"train": {"colour_weight": 1000.0, "mse_weight": 150.0}},
    "wide4": {"model": WIDE4, "train": {"colour_weight": 1000.0, "mse_weight": 150.0}},
    "wide4_egrad03": {
        "model": {**WIDE4, "encoder_rate_grad": 0.3},
        "train": {"colour_weight": 1000.0, "mse_weight": 150.0},
    },
}
#: What every GPU run changes from ``configs/reduced.yaml`` (besides the variant's own overrides).
GPU_TRAIN = {"crop": 256, "batch_size": 16, "steps": 10**7, "warmup_steps": 300, "num_workers": 3,
             "log_every": 50, "ckpt_every": 1000, "device": "cuda", "data_dirs": ["train"]}  # fmt: skip
#: (lambda, coarse ratio, medium ratio) at which the variants are compared.
POINTS = [(1.41, 0.75, 0.75), (1.41, 0.45, 0.45), (1.41, 0.15, 0.15), (1.41, 0.0, 0.0),
          (0.25, 0.45, 0.45), (8.0, 0.45, 0.45)]  # fmt: skip


def variant_config(name: str, budget: float, base: str = "reduced") -> dict:
    """The YAML dict of one variant."""
    from hvq.config import load_config

    cfg = load_config(base).to_dict()
    cfg["name"] = name
    cfg["train"].update(GPU_TRAIN, time_budget_s=budget)
    for section, values in VARIANTS[name].items():
        if section in ("model", "train"):
            cfg[section].update(copy.deepcopy(values))
    return cfg


def run_all(jobs: dict[str, list[str]], logs: Path) -> None:
    """Run the commands of ``jobs`` side by side and wait for all; each one's output goes to
    ``logs/<name>.log``."""
    procs = []
    for name, cmd in jobs.items():
        log = open(logs / f"{name}.log", "w")
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    for name, proc, log in procs:
        proc.wait()
        log.close()
        print(f"{name}: exit {proc.returncode}", flush=True)


def launch(
    names: list[str], budget: float, runs: Path, data_dir: Path, train_overrides: dict, init: Path | None
) -> None:
    """One ``hvq train`` per variant, side by side, from ``init`` if given, else from the variant's
    ``init_from`` (if any)."""
    jobs = {}
    for name in names:
        cfg = variant_config(name, budget)
        cfg["train"].update(train_overrides)
        path = runs / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        jobs[name] = [sys.executable, "-m", "hvq", "train", "--config", str(path),
                      "--run-dir", str(runs / name), "--data-dir", str(data_dir)]  # fmt: skip
        start = init or VARIANTS[name].get("init_from")
        if start:
            jobs[name] += ["--init-from", str(start)]
    run_all(jobs, runs)


def refit(names: list[str], budget: float, runs: Path, data_dir: Path, device: str) -> list[str]:
    """Refit each trained variant's hyperpriors on the rate alone (``hyperprior_refit.py``), side by
    side, into ``runs/<name>_hp``; returns those names."""
    script = Path(__file__).with_name("hyperprior_refit.py")
    jobs = {
        f"{name}_hp": [sys.executable, str(script), "--init", str(runs / name / "checkpoint.pt"),
                       "--run-dir", str(runs / f"{name}_hp"), "--data-dir", str(data_dir),
                       "--budget", str(budget), "--batch-size", "16", "--device", device, "--workers", "2"]
        for name in names
        if (runs / name / "checkpoint.pt").exists()
    }  # fmt: skip
    run_all(jobs, runs)
    return list(jobs)


def held_out_images(data_dir: Path) -> list[torch.Tensor]:
    """The held-out photos ``<data dir>/val`` (sorted), each cropped to a multiple of 16 per side."""
    images = []
    for path in sorted(find_images(data_dir / "val")):
        x = load_image(path)
        images.append(x[..., : x.shape[-2] // 16 * 16, : x.shape[-1] // 16 * 16])
    return images


@torch.no_grad()
def measure(
    ckpt: Path, images: list[torch.Tensor], lpips: LPIPS, device: str, points: list[tuple] = POINTS
) -> list[dict]:
    """One row per rate point ``(lambda, coarse, medium)`` of ``points``: means over the images (see
    the module docstring)."""
    model, _, _ = model_from_checkpoint(ckpt, device)
    static_lp = model.static.log_probs().to(device)
    rows = []
    for lam, rc, rm in points:
        acc: dict[str, list[float]] = {k: [] for k in ("bpp", "psnr", "lpips", "bias", "saving")}
        for x in images:
            x = x[None].to(device)
            out = model(x, lam, rc, rm)
            x_hat = out["x_hat"].float().clamp(0, 1)
            x_hat = torch.round(x_hat * 255) / 255
            mse = float((x_hat - x).pow(2).mean())
            hyper_bits = sum(float(b.sum()) for b in out["bits"])
            static_bits = sum(
                float(-static_lp[i[m[:, 0] > 0]].sum() / LOG2)
                for i, m in zip(out["indices"], out["masks"], strict=True)
            )
            acc["bpp"].append(float(out["bpp"][0]))
            acc["psnr"].append(-10 * math.log10(max(mse, 1e-10)))
            acc["lpips"].append(float(lpips(x_hat, x)[0]))
            acc["bias"].append(float((x_hat - x).mean((2, 3)).abs().max()) * 255)
            acc["saving"].append(1 - (hyper_bits + float(out["bpp_z"][0]) * x[0, 0].numel()) / static_bits)
        row = {"lam": lam, "coarse": rc, "medium": rm}
        row.update({k: sum(v) / len(v) for k, v in acc.items()})
        row["bias_max"] = max(acc["bias"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".devdata"))
    ap.add_argument("--budget", type=float, default=360.0, help="training seconds per variant")
    ap.add_argument("--init", type=Path, default=None, help="start every variant here, not at its init_from")
    ap.add_argument("--refit-budget", type=float, default=0.0,
                    help="then refit each variant's hyperpriors for this long (as <name>_hp)")  # fmt: skip
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    ap.add_argument("--out", type=Path, default=Path("results/gpu_sweep"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--baseline", type=Path, default=Path("hvq/pretrained/reduced.pt"))
    ap.add_argument("--max-val", type=int, default=None)
    ap.add_argument("--crop", type=int, default=GPU_TRAIN["crop"])
    ap.add_argument("--batch-size", type=int, default=GPU_TRAIN["batch_size"])
    args = ap.parse_args()
    os.environ.setdefault("HVQ_DATA_DIR", str(args.data_dir.resolve()))
    t0 = time.time()
    if args.budget > 0:
        overrides = {"device": args.device, "crop": args.crop, "batch_size": args.batch_size}
        launch(args.variants, args.budget, args.runs, args.data_dir, overrides, args.init)
    print(f"training done in {time.time() - t0:.0f} s", flush=True)
    refitted = []
    if args.refit_budget > 0:
        refitted = refit(args.variants, args.refit_budget, args.runs, args.data_dir, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    val = held_out_images(args.data_dir)[: args.max_val]
    lpips = LPIPS().to(args.device)
    candidates = {"shipped": args.baseline} if args.baseline.exists() else {}
    candidates.update({n: args.runs / n / "checkpoint.pt" for n in args.variants + refitted})
    keep = set(refitted or args.variants)  # weights that come back (a lent machine returns few files)
    with open(args.out / "sweep.csv", "w", newline="") as fh:
        writer = None
        for name, ckpt in candidates.items():
            if not ckpt.exists():
                print(f"{name}: no checkpoint", flush=True)
                continue
            for row in measure(ckpt, val, lpips, args.device):
                row = {"variant": name, **{k: round(v, 5) for k, v in row.items()}}
                writer = writer or csv.DictWriter(fh, list(row))
                if fh.tell() == 0:
                    writer.writeheader()
                writer.writerow(row)
                print(row, flush=True)
            if name in keep:
                model, cfg, state = model_from_checkpoint(ckpt)
                save_checkpoint(args.out / f"{name}.pt", cfg, model, step=state.get("step"),
                                wall_s=state.get("wall_s"))  # fmt: skip
    print(f"all done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
