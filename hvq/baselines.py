"""Classical anchors (JPEG, WebP, AVIF, JPEG XL), encoded and decoded in memory through Pillow.

Every anchor is one Pillow format driven by one integer ``quality``; everything else that defines it
(effort settings, chroma subsampling, the default quality sweep) is written down in :data:`SETTINGS`,
which the evaluation copies into each codec's results JSON. Chroma follows each library's default:
4:2:0 for JPEG, WebP and AVIF; JPEG XL codes XYB without subsampling. Threads are each library's
default (libavif and libjxl use every core, as torch does for hvq), so timings are wall-clock seconds
on the machine that ran them.

AVIF needs Pillow >= 11.3 built with libavif (``PIL.features.check("avif")``); JPEG XL needs the
optional ``pillow-jxl-plugin`` package (``pip install -e ".[anchors]"``). A codec that is missing is
reported by :func:`available_codecs` and skipped by the evaluation, never an error at import.

The default sweeps cover roughly 0.05 to 1.0 bpp on Kodak together (measured: see each ``notes``).
JPEG cannot go very low: quality 1 still costs about 0.1 bpp on Kodak (the 8x8 DC terms and the
headers), and WebP and JPEG XL (largest libjxl distance, 25) stop near 0.1 to 0.15 bpp; only AVIF
reaches 0.05 bpp.

    >>> import numpy as np
    >>> image = np.zeros((32, 48, 3), dtype=np.uint8)
    >>> n_bytes, decoded, enc_s, dec_s = encode_decode("jpeg", image, quality=50)
    >>> decoded.shape, decoded.dtype.name
    ((32, 48, 3), 'uint8')
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, features

#: name -> how the anchor is made. ``options`` are the keyword arguments of ``Image.save`` besides
#: ``quality``; ``qualities`` is the default sweep (ascending); ``pillow_feature`` is what
#: :func:`available_codecs` checks (``None``: the ``pillow_module`` plugin must import).
SETTINGS: dict[str, dict[str, Any]] = {
    "jpeg": {
        "description": "JPEG (baseline DCT, libjpeg-turbo through Pillow)",
        "pillow_format": "JPEG",
        "pillow_feature": "jpg",
        "options": {"optimize": True},
        "chroma": "4:2:0 (Pillow/libjpeg default)",
        "qualities": [3, 5, 8, 12, 18, 25, 35, 50],
        "notes": "optimize=True: Huffman tables fitted per image (lossless, a few % smaller). "
        "Kodak: about 0.13 bpp at q=3 to 1.1 bpp at q=50; even q=1 costs about 0.1 bpp.",
    },
    "webp": {
        "description": "WebP (lossy VP8 intra, libwebp through Pillow)",
        "pillow_format": "WEBP",
        "pillow_feature": "webp",
        "options": {"method": 4},
        "chroma": "4:2:0 (the only lossy WebP format)",
        "qualities": [0, 5, 10, 20, 30, 45, 60, 75],
        "notes": "method=4 is the libwebp and Pillow default effort (0 fastest .. 6 best). "
        "Kodak: about 0.1-0.2 bpp at q=0 (its floor) to 1.3 bpp at q=75.",
    },
    "avif": {
        "description": "AVIF (AV1 intra, libavif through Pillow)",
        "pillow_format": "AVIF",
        "pillow_feature": "avif",
        "options": {"speed": 6},
        "chroma": "4:2:0 (Pillow default subsampling)",
        "qualities": [0, 8, 16, 24, 32, 40, 48, 56],
        "notes": "speed=6 is Pillow's default (0 slowest/best .. 10 fastest); the AV1 encoder is "
        "libavif's choice (codec='auto'). Kodak: about 0.06 bpp at q=0 to 1.1 bpp at q=56.",
    },
    "jxl": {
        "description": "JPEG XL (VarDCT, libjxl through pillow-jxl-plugin)",
        "pillow_format": "JXL",
        "pillow_feature": None,
        "pillow_module": "pillow_jxl",
        "options": {"effort": 7},
        "chroma": "none: XYB colour space, no subsampling (libjxl's lossy default)",
        "qualities": [1, 10, 20, 30, 40, 50, 60, 70],
        "notes": "effort=7 is libjxl's default (1 fastest .. 9). quality maps to libjxl's Butteraugli "
        "distance (q=1: distance ~24, near its maximum of 25). Kodak: about 0.15-0.25 bpp at q=1 "
        "(its floor) to 1.2 bpp at q=70.",
    },
}


def _pillow_has(feature: str) -> bool:
    """``PIL.features.check`` without the warning older Pillow versions give for unknown names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(features.check(feature))
        except ValueError:
            return False


def _is_available(name: str) -> bool:
    spec = SETTINGS[name]
    if spec["pillow_feature"] is not None:
        return _pillow_has(spec["pillow_feature"])
    if importlib.util.find_spec(spec["pillow_module"]) is None:
        return False
    importlib.import_module(spec["pillow_module"])  # registers the Pillow plugin
    return True


def available_codecs() -> dict[str, bool]:
    """``{codec name: usable here}`` for every codec in :data:`SETTINGS`."""
    return {name: _is_available(name) for name in SETTINGS}


def missing_message(name: str) -> str:
    """One line saying why an anchor is unavailable and how to get it."""
    if name == "jxl":
        return "jxl: pillow-jxl-plugin is not installed (pip install -e '.[anchors]'); skipped"
    return f"{name}: this Pillow build lacks {SETTINGS[name]['pillow_feature']!r} support; skipped"


def _pillow_version(feature: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return features.version(feature)
        except ValueError:
            return None


def library_versions() -> dict[str, str | None]:
    """Versions of Pillow and of each anchor's library (``None`` where unknown or missing)."""
    out: dict[str, str | None] = {
        "pillow": Image.__version__,
        "jpeg": f"libjpeg API {_pillow_version('jpg')}, libjpeg-turbo {_pillow_version('libjpeg_turbo')}",
        "webp": _pillow_version("webp"),
        "avif": _pillow_version("avif"),
    }
    try:
        out["jxl"] = "pillow-jxl-plugin " + importlib.metadata.version("pillow-jxl-plugin")
    except importlib.metadata.PackageNotFoundError:
        out["jxl"] = None
    return out


def encode_decode(codec: str, image: np.ndarray, quality: int) -> tuple[int, np.ndarray, float, float]:
    """Encode an RGB image with an anchor at ``quality``, then decode it, all in memory.

    Args:
        codec: a key of :data:`SETTINGS`.
        image: ``(H, W, 3)`` uint8 RGB.
        quality: the codec's quality knob (0..100; higher is better).

    Returns:
        ``(n_bytes, decoded (H, W, 3) uint8, encode seconds, decode seconds)``; ``n_bytes`` is the
        whole file (headers included), so ``8 * n_bytes / (H * W)`` is the bpp.

    Raises:
        KeyError: unknown codec. RuntimeError: the codec is not available here.
        ValueError: ``image`` is not ``(H, W, 3)`` uint8.
    """
    spec = SETTINGS[codec]
    if not _is_available(codec):
        raise RuntimeError(missing_message(codec))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    picture = Image.fromarray(np.ascontiguousarray(image))
    buffer = io.BytesIO()
    t0 = time.perf_counter()
    picture.save(buffer, format=spec["pillow_format"], quality=int(quality), **spec["options"])
    t1 = time.perf_counter()
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as decoded_image:
        decoded = np.asarray(decoded_image.convert("RGB"), dtype=np.uint8)
    t2 = time.perf_counter()
    if decoded.shape != image.shape:
        raise RuntimeError(f"{codec} decoded {decoded.shape}, expected {image.shape}")
    return len(data), decoded, t1 - t0, t2 - t1


def quality_for_bpp(
    codec: str,
    image: np.ndarray,
    target_bpp: float,
    encode: Callable[[int], tuple[int, np.ndarray]] | None = None,
) -> tuple[int, int, np.ndarray]:
    """The quality (0..100) whose file's bpp is closest to ``target_bpp``: the smallest quality whose
    bpp reaches the target (a bisection, as bpp grows with quality) or the one below it (the lower one
    on a tie). The one "anchor at the same rate" routine of the kit.

    ``encode(quality) -> (n_bytes, decoded)`` defaults to :func:`encode_decode` of ``codec`` on
    ``image`` (pass a cached one to share encodes between targets). Returns ``(quality, bytes,
    decoded (H, W, 3) uint8)``.
    """
    h, w = image.shape[:2]
    if encode is None:

        def encode(quality: int) -> tuple[int, np.ndarray]:
            n_bytes, decoded, _, _ = encode_decode(codec, image, quality)
            return n_bytes, decoded

    files: dict[int, tuple[int, np.ndarray]] = {}

    def bpp(quality: int) -> float:
        if quality not in files:
            files[quality] = encode(quality)
        return 8.0 * files[quality][0] / (h * w)

    lo, hi = 0, 100
    while lo < hi:
        mid = (lo + hi) // 2
        if bpp(mid) >= target_bpp:
            hi = mid
        else:
            lo = mid + 1
    best = min(sorted({max(0, lo - 1), lo}), key=lambda q: abs(bpp(q) - target_bpp))
    return best, *files[best]
