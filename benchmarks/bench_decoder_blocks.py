"""The decoder's blocks in their plain form against the kit's, in one process, printed as a markdown table.

    python benchmarks/bench_decoder_blocks.py [--image kodim23] [--repeats 7] [--threads 2]

The plain forms are ``conv(interpolate(x))`` for ``Upsample`` and norm, then FiLM, then a SiLU that
allocates for ``ResBlock``; the kit's compute the same values (``tests/test_model.py``) with the
upsampling folded into four 2x2 phase kernels, FiLM folded into the GroupNorm's affine for one image
and SiLU in place. Both are timed on the shipped model at ratios 0.45 (encode, decode, and the decoder
network with the colour offset: ``synthesize``), alternating plain and kit runs so that a busy machine
slows both alike; medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from hvq.data import kodak_images, load_image  # noqa: E402
from hvq.nets import blocks  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402


def plain_upsample(self: blocks.Upsample, x: Tensor) -> Tensor:
    return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def plain_resblock(self: blocks.ResBlock, x: Tensor, cond: Tensor | None = None) -> Tensor:
    h = self.norm1(x)
    if self.film1 is not None:
        h = self.film1(h, cond)
    h = self.conv1(F.silu(h))
    h = self.norm2(h)
    if self.film2 is not None:
        h = self.film2(h, cond)
    h = self.conv2(F.silu(h))
    return self.skip(x) + h


FORMS = {
    "plain": (plain_upsample, plain_resblock),
    "kit": (blocks.Upsample.forward, blocks.ResBlock.forward),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kodim23")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_pretrained("reduced")
    x = load_image(next(p for p in kodak_images() if p.stem == args.image))
    lam = (model.cfg.lambda_min * model.cfg.lambda_max) ** 0.5
    sym = model.analyze(x, lam, 0.45, 0.45)
    data = model.encode(sym)
    steps = {
        "encode": lambda: model.compress(x, lam, 0.45, 0.45),
        "decode": lambda: model.decompress(data),
        "decoder network": lambda: model.synthesize(sym),
    }
    times: dict[tuple[str, str], list[float]] = {(f, s): [] for f in FORMS for s in steps}
    for _ in range(args.repeats):
        for form, (upsample, resblock) in FORMS.items():
            blocks.Upsample.forward, blocks.ResBlock.forward = upsample, resblock
            for step, run in steps.items():
                t0 = time.perf_counter()
                run()
                times[form, step].append(time.perf_counter() - t0)
    blocks.Upsample.forward, blocks.ResBlock.forward = FORMS["kit"]
    print(f"{args.image}, {args.threads} threads, median of {args.repeats} alternating runs\n")
    print("| step | plain blocks s | kit's blocks s | kit / plain |\n|---|---:|---:|---:|")
    for step in steps:
        plain, kit = (statistics.median(times[form, step]) for form in FORMS)
        print(f"| {step} | {plain:.3f} | {kit:.3f} | {kit / plain:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
