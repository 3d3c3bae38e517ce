"""Time and peak memory of coding large photos as tiles (:mod:`hvq.tiles`), as a markdown table.

    python benchmarks/bench_tiles.py [--sizes 1 3 6 12] [--whole 3] [--threads 2] [--image kodim23]

Each size (megapixels, 3:2) is a Kodak image upscaled (bicubic) to that size, compressed by
``model.compress`` at the default knobs in one fresh process and decompressed in another, so each peak
RSS (``ru_maxrss``) is that of one operation: the shipped model, the image buffers and the coding. The
sizes in ``--whole`` are also coded as one piece (``TILE_PIXELS`` raised to the codec limit), the way
every image was coded before tiles. Seconds depend on what else runs on the machine; compare the
seconds per megapixel within one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def image_size(megapixels: float) -> tuple[int, int]:
    """``(height, width)`` of a 3:2 image of about ``megapixels``, sides multiples of 8."""
    width = round((megapixels * 1e6 * 1.5) ** 0.5 / 8) * 8
    return round(width / 1.5 / 8) * 8, width


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    """One operation in this process: ``compress`` (writes ``args.file``) or ``decompress``."""
    import torch
    import torch.nn.functional as F

    import hvq
    from hvq import tiles
    from hvq.data import kodak_images, load_image
    from hvq.symbols import MAX_CODEC_PIXELS

    torch.set_num_threads(args.threads)
    if args.whole_image:
        tiles.TILE_PIXELS = MAX_CODEC_PIXELS
    model = hvq.load_pretrained("reduced")
    model_mb = peak_rss_mb()
    path = Path(args.file)
    if args.child == "decompress":
        data = path.read_bytes()
        start = time.perf_counter()
        model.decompress(data)
        return {"seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb(), "model_mb": model_mb}
    height, width = image_size(args.megapixels)
    photo = load_image(next(p for p in kodak_images() if p.stem == args.image))
    x = F.interpolate(photo[None], size=(height, width), mode="bicubic", align_corners=False)[0].clamp_(0, 1)
    start = time.perf_counter()
    data = model.compress(x)
    seconds = time.perf_counter() - start
    path.write_bytes(data)
    grid = tiles.tile_grid(height, width) if tiles.is_tiled_file(data) else None
    return {
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
        "model_mb": model_mb,
        "bytes": len(data),
        "height": height,
        "width": width,
        "tiles": f"{grid.shape[0]}x{grid.shape[1]}" if grid else "1",
    }


def run_child(operation: str, megapixels: float, file: Path, whole: bool, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", operation, "--megapixels", str(megapixels)]
    command += ["--file", str(file), "--threads", str(args.threads), "--image", args.image]
    command += ["--whole-image"] if whole else []
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{operation} at {megapixels} MP failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 3, 6, 12], help="megapixels, tiled")
    ap.add_argument("--whole", type=float, nargs="*", default=[3], help="megapixels, also as one piece")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default="kodim23")
    ap.add_argument("--child", choices=["compress", "decompress"], help=argparse.SUPPRESS)
    ap.add_argument("--megapixels", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--whole-image", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    runs = [(mp, False) for mp in args.sizes] + [(mp, True) for mp in args.whole]
    print(f"{args.image} upscaled, default knobs, {args.threads} threads, one process per operation\n")
    print("| size | pixels | tiles | bytes | bpp | encode s | s/MP | peak MB | decode s | s/MP | peak MB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for megapixels, whole in runs:
            file = Path(tmp) / f"{megapixels}-{whole}.hvq"
            enc = run_child("compress", megapixels, file, whole, args)
            dec = run_child("decompress", megapixels, file, whole, args)
            pixels = enc["height"] * enc["width"]
            mp = pixels / 1e6
            print(
                f"| {enc['width']}x{enc['height']}{' (one piece)' if whole else ''} | {pixels:,} | "
                f"{enc['tiles']} | {enc['bytes']:,} | {8 * enc['bytes'] / pixels:.4f} | "
                f"{enc['seconds']:.1f} | {enc['seconds'] / mp:.1f} | {enc['peak_mb']:.0f} | "
                f"{dec['seconds']:.1f} | {dec['seconds'] / mp:.1f} | {dec['peak_mb']:.0f} |",
                flush=True,
            )
    print(f"\n(the model alone: {enc['model_mb']:.0f} MB peak RSS after loading)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
