"""Cross-device decoding check: encode every Kodak image on device A, decode it on device B.

A learned codec breaks when the decoder computes other probability tables than the encoder (another
GPU, CPU, library version): the range decoder then desynchronises. hvq computes every table in float64
on the CPU from the transmitted integers (z and the indices), so a file written on a GPU must decode on
a CPU and the reverse; the ``.hvq`` symbol CRC32 reports a disagreement as an error instead of a wrong
image. This script checks it on real images and reports, per image, one of:

* ``identical``: the A -> B decode equals the same-device (A -> A) decode bit for bit (float32 pixels);
* ``identical 8-bit``: the float pixels differ (the synthesis network ran on other hardware) but the
  8-bit images, as a PNG would store them, are equal;
* ``mismatch``: the 8-bit images differ (the largest difference, in 8-bit levels, is shown);
* ``CRC error``: B could not decode A's file (``BitstreamError``): the tables disagreed.

    .venv/bin/python benchmarks/cross_device.py --encode-device cpu --decode-device cpu --limit 2
    python benchmarks/cross_device.py --encode-device cuda --decode-device cpu      # all 24 images
    python benchmarks/cross_device.py --encode-device cpu --decode-device cuda

``--model``: a checkpoint path (``runs/reduced/checkpoint.pt`` or an exported ``.pt``), a shipped model
name (``reduced``), or a config name (``smoke``, ``reduced``, ``paper``) for an *untrained* model of that
architecture (seed 0), which exercises the same code paths. Exit status: 0, or 1 if any image had a
CRC error (or, with ``--strict``, any 8-bit mismatch).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from hvq.errors import BitstreamError
from hvq.model import HVQCodec

T = TypeVar("T")


@dataclass
class Result:
    """One image's outcome."""

    name: str
    nbytes: int
    bpp: float
    status: str
    max_diff_8bit: int | None
    encode_s: float
    decode_s: float
    same_device_decode_s: float


def load_model(name: str) -> tuple[HVQCodec, str]:
    """``(model in eval mode on the CPU with its tables, description)`` for ``--model``."""
    from hvq.checkpoint import model_from_checkpoint
    from hvq.config import load_config
    from hvq.pretrained import available, load_pretrained

    if Path(name).suffix:
        model, cfg, state = model_from_checkpoint(name)
        return model, f"checkpoint {name} ({cfg.name}, step {state.get('step')})"
    if name in available():
        return load_pretrained(name), f"shipped model {name!r}"
    cfg = load_config(name)  # FileNotFoundError for an unknown name
    torch.manual_seed(0)
    model = HVQCodec(cfg.model).eval()
    model.update()
    return model, f"UNTRAINED {cfg.name!r} architecture (seed 0): checks decodability, not quality"


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Pixels as a PNG stores them: ``round(255 x)`` as int16."""
    return torch.round(x.clamp(0, 1) * 255).to(torch.int16)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], T], dev: torch.device) -> tuple[T, float]:
    """``(fn(), seconds)``, synchronising ``dev`` before and after."""
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t0


def check_image(
    path: Path,
    enc: HVQCodec,
    dec: HVQCodec,
    dev_a: torch.device,
    dev_b: torch.device,
    lam: float,
    coarse: float,
    medium: float,
) -> Result:
    """Encode ``path`` with ``enc`` (on A), decode with ``enc`` (A -> A) and ``dec`` (A -> B), compare."""
    from hvq.data import load_image
    from hvq.metrics import bits_per_pixel

    x = load_image(path)
    h, w = x.shape[1:]
    data, t_enc = timed(lambda: enc.compress(x, lam=lam, coarse_ratio=coarse, medium_ratio=medium), dev_a)
    ref, t_ref = timed(lambda: enc.decompress(data), dev_a)
    try:
        out, t_dec = timed(lambda: dec.decompress(data), dev_b)
    except BitstreamError:
        return Result(
            path.stem, len(data), bits_per_pixel(len(data), h, w), "CRC error", None, t_enc, math.nan, t_ref
        )
    diff = int((to_8bit(out) - to_8bit(ref)).abs().max())
    if torch.equal(out, ref):
        status = "identical"
    elif diff == 0:
        status = "identical 8-bit"
    else:
        status = "mismatch"
    return Result(path.stem, len(data), bits_per_pixel(len(data), h, w), status, diff, t_enc, t_dec, t_ref)


def warm_up(model: HVQCodec, dev: torch.device, lam: float) -> None:
    """One small encode + decode (CUDA context, cuDNN algorithm choice) before anything is timed."""
    x = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0))
    model.decompress(model.compress(x, lam=lam))
    _sync(dev)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encode-device", default="cpu", help="device A (cpu, cuda, cuda:1, mps)")
    p.add_argument("--decode-device", default="cpu", help="device B")
    p.add_argument("--model", default="reduced", help="checkpoint path, shipped name, or config name")
    p.add_argument("--data-dir", default=None, help="data directory holding kodak/ (default: hvq's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N Kodak images")
    p.add_argument("--lam", type=float, default=None, help="rate knob (default: middle of the range)")
    p.add_argument("--coarse", type=float, default=0.5, help="coarse ratio")
    p.add_argument("--medium", type=float, default=0.5, help="medium ratio")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None, help="cuDNN/matmul TF32")
    p.add_argument("--strict", action="store_true", help="exit 1 on any 8-bit mismatch too")
    args = p.parse_args(argv)

    from hvq.data import kodak_images

    if args.tf32 is not None:
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    dev_a, dev_b = torch.device(args.encode_device), torch.device(args.decode_device)
    base, description = load_model(args.model)
    lam = args.lam if args.lam is not None else math.sqrt(base.cfg.lambda_min * base.cfg.lambda_max)
    enc = copy.deepcopy(base).to(dev_a).eval()
    dec = copy.deepcopy(base).to(dev_b).eval()
    if enc.model_tag() != dec.model_tag():
        raise SystemExit("the two device copies have different model tags (weights changed in the copy)")
    for model, dev in ((enc, dev_a), (dec, dev_b)):
        warm_up(model, dev, lam)
    images = kodak_images(args.data_dir)[: args.limit]

    def name(dev: torch.device) -> str:
        return f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev)

    print(
        f"cross-device check: encode on {name(dev_a)}, decode on {name(dev_b)}; model: {description}; "
        f"lambda {lam:.4g}, coarse {args.coarse}, medium {args.medium}; torch {torch.__version__}, "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
        f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}\n"
    )
    print(
        f"| image | bytes | bpp | A -> B vs A -> A | max diff (8-bit) | encode s ({dev_a}) "
        f"| decode s ({dev_b}) | decode s ({dev_a}) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for path in images:
        r = check_image(path, enc, dec, dev_a, dev_b, lam, args.coarse, args.medium)
        results.append(r)
        diff = "-" if r.max_diff_8bit is None else str(r.max_diff_8bit)
        print(
            f"| {r.name} | {r.nbytes} | {r.bpp:.4f} | {r.status} | {diff} | {r.encode_s:.2f} "
            f"| {r.decode_s:.2f} | {r.same_device_decode_s:.2f} |",
            flush=True,
        )
    counts = {
        s: sum(r.status == s for r in results)
        for s in ("identical", "identical 8-bit", "mismatch", "CRC error")
    }
    print(
        f"\n{len(results)} images: identical {counts['identical']}, identical 8-bit only "
        f"{counts['identical 8-bit']}, mismatch {counts['mismatch']}, CRC error {counts['CRC error']}; "
        f"mean bpp {sum(r.bpp for r in results) / max(1, len(results)):.4f}"
    )
    failed = counts["CRC error"] or (args.strict and counts["mismatch"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
