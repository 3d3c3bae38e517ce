"""Training throughput (images/s) and peak memory of a named config, through ``hvq.train.train`` itself.

Each measurement runs the real training loop (``hvq.train.train``: codec forward, LPIPS, rate + distortion
+ VQ loss, the adversarial term and discriminator step when on, gradient clipping, Adam, the static
histogram and dead-code restarts) on a temporary run directory, in a fresh child process, so that the
peak memory of one row is not inflated by another. ``log_every`` is set to 1 and the callback stamps the
time of every step; the first ``--warmup`` steps (codebook initialisation, allocator warm-up, first data
reads) are left out of the rate. The final checkpoint is written after the last timed step.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``); on every device
the process's peak resident set size (``resource.getrusage``), which includes Python, torch and LPIPS.

    .venv/bin/python benchmarks/bench_train.py --config smoke --steps 10 --device cpu
    python benchmarks/bench_train.py --config paper --steps 300 --device cuda     # a GPU, a few minutes

Prints a markdown table, one row per adversarial phase (``--gan both``: before and after ``disc_start``).
Data: the config's own ``data_dirs`` under ``--data-dir`` (default: hvq's data directory) when they
exist, otherwise (or with ``--synthetic``) random 512x512 PNGs written to the temporary directory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvq.config import Config, load_config
from hvq.data import default_data_dir


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def write_synthetic(folder: Path, n: int = 16, side: int = 512, seed: int = 0) -> Path:
    """``n`` random smooth-plus-noise ``side x side`` PNGs in ``folder`` (for configs without data)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * rng.uniform(0.3, 1.0, size=3)
        img = 0.7 * base + 0.3 * rng.random((side, side, 3))
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"synthetic{i:02d}.png")
    return folder


def build_config(args: argparse.Namespace, gan: bool, tmp: Path) -> tuple[Config, str]:
    """The named config with the benchmark's overrides; returns it and a note on the data used."""
    cfg = load_config(args.config)
    t = cfg.train
    if args.batch_size:
        t.batch_size = args.batch_size
    if args.crop:
        t.crop = args.crop
    if args.amp is not None:
        t.amp = args.amp
    if args.workers is not None:
        t.num_workers = args.workers
    t.steps = args.steps
    t.log_every = 1
    t.ckpt_every = 10**9  # only the final checkpoint, written after the timed steps
    t.disc_start = 0 if gan else 10**9
    data_root = Path(args.data_dir) if args.data_dir else default_data_dir()
    dirs = [Path(d) if Path(d).is_absolute() else data_root / d for d in t.data_dirs]
    if args.synthetic or not all(d.is_dir() for d in dirs):
        t.data_dirs = (str(write_synthetic(tmp / "synthetic", side=max(512, t.crop))),)
        return cfg, "synthetic"
    t.data_dirs = tuple(str(d) for d in dirs)
    return cfg, ",".join(d.name for d in dirs)


def measure(args: argparse.Namespace, gan: bool) -> dict[str, Any]:
    """Run ``args.steps`` training steps in this process and return one table row."""
    from hvq.train import pick_device, train

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hvq-bench-") as tmp:
        cfg, data = build_config(args, gan, Path(tmp))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

        def stamp(row: dict) -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            stamps.append(time.perf_counter())

        train(cfg, Path(tmp) / "run", steps=args.steps, device=str(dev), callback=stamp, progress=False)
    timed = len(stamps) - args.warmup  # from the end of the last warm-up step to the end of the last step
    if timed < 1 or args.warmup < 1:
        raise SystemExit(f"--steps {args.steps} leaves no timed step after --warmup {args.warmup}")
    dt = stamps[-1] - stamps[args.warmup - 1]
    t = cfg.train
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    )
    row = {
        "config": cfg.name,
        "device": name,
        "gan": "on" if gan else "off",
        "batch": t.batch_size,
        "crop": t.crop,
        "amp": "bf16" if t.amp and dev.type in ("cpu", "cuda") else "fp32",
        "timed steps": timed,
        "s/step": dt / timed,
        "images/s": timed * t.batch_size / dt,
        "peak RSS MiB": peak_rss_mib(),
        "data": data,
    }
    if dev.type == "cuda":
        row["peak alloc MiB"] = torch.cuda.max_memory_allocated(dev) / 2**20
        row["peak reserved MiB"] = torch.cuda.max_memory_reserved(dev) / 2**20
    return row


def _child(args: argparse.Namespace, gan: bool, conn: Any) -> None:
    try:
        conn.send(("ok", measure(args, gan)))
    except BaseException as exc:  # report, do not hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(args: argparse.Namespace, gan: bool) -> dict[str, Any]:
    """:func:`measure` in a fresh spawned process (its own peak RSS and CUDA context)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(args, gan, child))
    proc.start()
    child.close()
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise SystemExit(f"benchmark failed (gan {'on' if gan else 'off'}): {payload}")
    return payload


def markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table (floats to 3 significant digits, memory to whole MiB)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(k: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.0f}" if "MiB" in k else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="smoke", help="config name (smoke, reduced, paper) or YAML path")
    p.add_argument("--steps", type=int, default=10, help="training steps per row, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the rate (>= 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto")
    p.add_argument("--batch-size", type=int, default=None, help="override the config's batch size")
    p.add_argument("--crop", type=int, default=None, help="override the config's crop side")
    p.add_argument("--gan", choices=("off", "on", "both"), default="both", help="adversarial term")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    p.add_argument("--workers", type=int, default=None, help="override the config's DataLoader workers")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", default=None, help="where the config's data_dirs live")
    p.add_argument("--synthetic", action="store_true", help="train on generated images")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps <= args.warmup:
        p.error("need --warmup >= 1 and --steps > --warmup")
    phases = {"off": [False], "on": [True], "both": [False, True]}[args.gan]
    rows = [run_isolated(args, gan) for gan in phases]
    print(
        f"hvq training benchmark: torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, through hvq.train.train, {args.steps} steps per row "
        f"({args.warmup} warm-up steps not timed)\n"
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
