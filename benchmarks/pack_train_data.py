"""Pack the training photos into a small folder that travels to a rented GPU (or Colab).

Every photo under ``<data dir>/train`` is downscaled so that its shorter side is at most ``--short``
pixels (Lanczos; downscaling also removes sensor noise and JPEG artefacts, as is usual for learned
codecs) and stored as JPEG (quality 90 by default), 4:4:4. A fixed, deterministic 1 in
``--val-every`` of the files (sorted by path) goes to ``val/`` instead of ``train/``: the held-out
photos on which GPU sweeps choose between variants (Kodak is never used to choose). With the defaults
the pack is about 40 MiB, small enough to travel with the repository to a rented GPU.

    python benchmarks/pack_train_data.py --out .devdata --short 384
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from hvq.data import default_data_dir, find_images


def pack(src: Path, out: Path, short: int, val_every: int, quality: int = 90) -> tuple[int, int, int]:
    """Returns ``(train files, val files, bytes written)``."""
    files = sorted(find_images(src))
    total = 0
    counts = [0, 0]
    for i, f in enumerate(files):
        split = "val" if i % val_every == val_every // 2 else "train"
        counts[split == "val"] += 1
        with Image.open(f) as im:
            im = im.convert("RGB")
            scale = short / min(im.size)
            if scale < 1:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            dest = out / split / f"{f.parent.name}_{f.stem}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            im.save(dest, quality=quality, subsampling=0)
        total += dest.stat().st_size
    return counts[0], counts[1], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=None, help="default: <data dir>/train")
    ap.add_argument("--out", type=Path, default=Path(".devdata"))
    ap.add_argument("--short", type=int, default=384)
    ap.add_argument("--val-every", type=int, default=25)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    src = args.src or default_data_dir() / "train"
    n_train, n_val, size = pack(src, args.out, args.short, args.val_every, args.quality)
    print(f"{n_train} train + {n_val} val photos, {size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
