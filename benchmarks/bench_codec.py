"""Encode and decode time of one Kodak image with the shipped model, printed as a markdown table.

    python benchmarks/bench_codec.py [--image kodim23] [--repeats 3] [--threads 2] [--device cpu]

Times ``model.compress`` (analysis, integer tables, range coding, container) and ``model.decompress``
at three granularity settings, and ``compress_to_bpp`` at the middle setting's rate; reports the median
of ``--repeats`` runs, the stage that dominates (masks, z and the integer tables), and each time as a
ratio to AVIF's encode time of the same image at the quality closest to the same bpp, measured in the
same run (Pillow; so the ratios hold even on a busy machine, where the seconds do not). A second table
splits the middle setting into its stages: what encode and decode each run, and so what bounds them.
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

from hvq import baselines  # noqa: E402
from hvq.data import kodak_images, load_image, load_image_uint8  # noqa: E402
from hvq.model import HVQCodec  # noqa: E402
from hvq.pretrained import load_pretrained  # noqa: E402
from hvq.ratecontrol import compress_to_bpp  # noqa: E402


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kodim23")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="reduced")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.model, args.device)
    path = next(p for p in kodak_images() if p.stem == args.image)
    x = load_image(path)
    h, w = x.shape[1:]
    lam = (model.cfg.lambda_min * model.cfg.lambda_max) ** 0.5
    print(f"{path.name} {w}x{h}, device {args.device}, {args.threads} threads, median of {args.repeats}\n")
    pixels = load_image_uint8(path)
    has_avif = baselines.available_codecs().get("avif", False)

    def avif_encode_s(bpp: float) -> float:
        """Median encode seconds of AVIF at the quality whose file is closest to ``bpp``."""
        if not has_avif:
            return float("nan")
        quality, _, _ = baselines.quality_for_bpp("avif", pixels, bpp)
        times = [baselines.encode_decode("avif", pixels, quality)[2] for _ in range(args.repeats)]
        return statistics.median(times)

    print(
        "| coarse/medium | bytes | bpp | encode s | of which masks + z + tables s | decode s "
        "| AVIF encode s | encode / AVIF | decode / AVIF |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    middle_bpp = None
    for r in (0.8, 0.45, 0.0):
        enc, data = _median_time(
            lambda r=r: model.compress(x, lam=lam, coarse_ratio=r, medium_ratio=r), args.repeats
        )
        feats = model.encode_features(x, lam)  # the ratio-independent part, so "tables" is the rest
        tab, _ = _median_time(  # without the colour fit, which is a decoder pass
            lambda r=r, f=feats: model.analyze(f, coarse_ratio=r, medium_ratio=r, fit_colour=False),
            args.repeats,
        )
        dec, _ = _median_time(lambda data=data: model.decompress(data), args.repeats)
        bpp = 8 * len(data) / (h * w)
        middle_bpp = bpp if r == 0.45 else middle_bpp
        avif = avif_encode_s(bpp)
        print(
            f"| {r:.2f}/{r:.2f} | {len(data)} | {bpp:.4f} | {enc:.2f} | {tab:.2f} | {dec:.2f} "
            f"| {avif:.3f} | {enc / avif:.1f}x | {dec / avif:.1f}x |"
        )
    target, _ = _median_time(lambda: compress_to_bpp(model, x, middle_bpp, lams=[lam]), args.repeats)
    avif = avif_encode_s(middle_bpp)
    print(f"| target_bpp {middle_bpp:.4f} | | | {target:.2f} | | | {avif:.3f} | {target / avif:.1f}x | |")
    print_stages(model, x, lam, 0.45, args.repeats)
    return 0


def print_stages(model: HVQCodec, x: torch.Tensor, lam: float, ratio: float, repeats: int) -> None:
    """The stages of one setting as a markdown table: median seconds of each, and which side runs it."""
    features_s, feats = _median_time(lambda: model.encode_features(x, lam), repeats)
    tables_s, sym = _median_time(
        lambda: model.analyze(feats, coarse_ratio=ratio, medium_ratio=ratio, fit_colour=False), repeats
    )
    decoder_s, _ = _median_time(lambda: model.synthesize(sym), repeats)
    coding_s, _ = _median_time(lambda: model.encode(sym), repeats)
    print(f"\n| stage at {ratio:.2f}/{ratio:.2f} | s | run by |")
    print("|---|---:|---|")
    print(f"| encoder network and nearest codes | {features_s:.2f} | encode |")
    print(f"| masks, z and integer tables | {tables_s:.2f} | encode and decode |")
    print(f"| decoder network | {decoder_s:.2f} | encode (colour offset) and decode |")
    print(f"| range coding and container | {coding_s:.2f} | encode (decode about the same) |")


if __name__ == "__main__":
    raise SystemExit(main())
