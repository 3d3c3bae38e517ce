"""Images and datasets: reading and writing images, random training crops, the datasets and Kodak.

Everything that touches image files lives here; the rest of the package sees tensors. Fetching over
the network (resume, sha256 checks, safe unpacking) is :mod:`hvq.download`'s job; this module says
which datasets exist and where they go, and calls it.

Images are ``float32`` tensors of shape ``(3, H, W)`` with values in ``[0, 1]``; on disk they are 8-bit.
Datasets live in one data directory (:func:`default_data_dir`)::

    <data_dir>/kodak/kodim01.png .. kodim24.png      test set (checked against data/kodak/SHA256SUMS)
    <data_dir>/train/...                             the shared training photos, if present
    <data_dir>/div2k-train/DIV2K_train_HR/0001.png   after ``hvq data download div2k-train``
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from hvq.download import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    DatasetSpec,
    ProgressBar,
    download_into,
    verify_checksums,
)
from hvq.files import atomic_write

PathLike = str | os.PathLike[str]

#: Root of the repository (the folder that holds the ``hvq`` package and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Checksums kept in the package (installed with it; ``data/*/SHA256SUMS`` in the repository link here).
CHECKSUM_DIR = Path(__file__).resolve().parent / "checksums"
#: Largest image :func:`load_image` decodes by default (about 67 megapixels), as in the ``.hvq`` format.
MAX_PIXELS = 1 << 26
#: File types :class:`ImageFolderCrops` and :func:`find_images` pick up (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
KODAK_NAMES = tuple(f"kodim{i:02d}.png" for i in range(1, 25))

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image file cannot be used: not an image, truncated, corrupt, or larger than allowed."""


# --------------------------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """The data directory: ``$HVQ_DATA_DIR``, else ``<repo>/../shared/data`` if it exists, else
    ``~/.cache/hvq/data``."""
    env = os.environ.get("HVQ_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path.home() / ".cache" / "hvq" / "data"


def _data_dir(data_dir: PathLike | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


# -------------------------------------------------------------------------------------------- images


def load_image_uint8(path: PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` of shape ``(H, W, 3)``.

    Conversions: the EXIF orientation is applied, so a rotated photo comes back upright; greyscale and
    bilevel are repeated over three channels; palette images use their palette; images with
    transparency (RGBA, LA, palette or single-colour ``tRNS``) are composited on white, so transparent
    areas read as white; 16-bit samples (``I;16`` and ``I`` greyscale, and 16-bit RGB, RGBA and grey +
    alpha PNGs, whose low bytes Pillow would drop) become ``round(v / 257)``; float images (``F``, e.g.
    a float TIFF) are read as ``[0, 1]`` data scaled by 255, or as ``0..255`` data when their largest
    finite value is above 1, then clipped and rounded (NaN reads as 0); CMYK and YCbCr go through
    Pillow's ``convert`` (no ICC colour management). Of an animated or multi-frame image only the
    first frame is read, with a :class:`UserWarning` that says so.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageError: the file is not a readable image, is truncated, or has more than ``max_pixels``
            pixels. The size is read from the header, so an oversized image is refused before its
            pixels are decoded. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} image has {width * height} pixels, more than the "
                    f"{max_pixels} allowed (raise max_pixels to read it)"
                )
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":  # MPO: a camera JPEG's previews, not animation
                warnings.warn(
                    f"{path}: only the first of {frames} frames is coded", UserWarning, stacklevel=2
                )
            samples = _png16_samples(path, image)
            if samples is not None:
                return _sixteen_bit_to_rgb(samples, image.info.get("transparency"))
            ImageOps.exif_transpose(image, in_place=True)  # decodes the pixels
            return _to_rgb_uint8(image)
    except ImageError:
        raise
    except _PIL_ERRORS as error:
        raise ImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from error


def _png16_samples(path: Path, image: Image.Image) -> np.ndarray | None:
    """All 16 bits of a 16-bit RGB, RGBA or grey + alpha PNG as ``(H, W, C)`` int64, else ``None``.

    Pillow decodes these to 8 bits by keeping the high byte. Decoding the file again with the
    little-endian raw mode (or, for grey + alpha, as 8-bit RGBA: same 4 bytes per pixel, so the PNG
    row filters still apply) yields the low bytes too. The orientation is applied as for ``image``.
    """
    tile = image.tile
    if image.format != "PNG" or len(tile) != 1 or tile[0].args not in ("RGB;16B", "RGBA;16B", "LA;16B"):
        return None
    rawmode = tile[0].args

    def decode(raw: str) -> np.ndarray:
        with Image.open(path) as again:
            again.tile = [again.tile[0]._replace(args=raw)]
            ImageOps.exif_transpose(again, in_place=True)
            return np.asarray(again).astype(np.int64)

    if rawmode == "LA;16B":
        grey_alpha = decode("RGBA")  # bytes: grey high, grey low, alpha high, alpha low
        return grey_alpha[..., 0::2] * 256 + grey_alpha[..., 1::2]
    return decode(rawmode) * 256 + decode(rawmode.replace(";16B", ";16L"))


def _sixteen_bit_to_rgb(samples: np.ndarray, transparency: object = None) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` samples in ``0..65535`` (grey, grey + alpha, RGB or RGBA) -> uint8 RGB.

    Alpha (or a ``tRNS`` colour, ``transparency``) is composited on white at 16 bits, then each value
    becomes ``round(v / 257)`` (no ties can occur, so half-even and half-up agree).
    """
    values = np.clip(samples.astype(np.int64), 0, 65535)
    values = values[:, :, None] if values.ndim == 2 else values
    colour = values[:, :, : 3 if values.shape[2] >= 3 else 1].astype(np.float64)
    if values.shape[2] in (2, 4):
        alpha = values[:, :, -1:] / 65535
        colour = colour * alpha + 65535 * (1 - alpha)
    elif transparency is not None:
        key = np.ravel(np.asarray(transparency, dtype=np.int64))
        colour[(values == key).all(axis=2)] = 65535
    rgb = np.rint(colour / 257).astype(np.uint8)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def _float_to_uint8(image: Image.Image) -> np.ndarray:
    """A float (``F``) image -> ``(H, W)`` uint8: ``[0, 1]`` data times 255, or ``0..255`` data when the
    largest finite value is above 1; then clipped and rounded, NaN as 0."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    scale = 255.0 if finite.size == 0 or finite.max() <= 1.0 else 1.0
    return np.rint(np.clip(np.nan_to_num(values * scale, nan=0.0), 0, 255)).astype(np.uint8)


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> ``(H, W, 3)`` uint8 RGB (see :func:`load_image_uint8`)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(np.asarray(image), image.info.get("transparency"))
    if image.mode == "F":
        return np.repeat(_float_to_uint8(image)[:, :, None], 3, axis=2)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255)


def load_image(path: PathLike, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read an image file as a ``float32`` tensor of shape ``(3, H, W)`` in ``[0, 1]``.

    Any mode is converted to RGB as :func:`load_image_uint8` describes (alpha composited on white).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageError: not an image, truncated, or over ``max_pixels`` (checked before decoding).
    """
    return to_tensor(load_image_uint8(path, max_pixels))


def save_image(image: torch.Tensor, path: PathLike) -> Path:
    """Write a ``(3, H, W)`` (or ``(1, H, W)`` greyscale) float image in ``[0, 1]`` as an 8-bit PNG.

    Values are clamped to ``[0, 1]`` and rounded to the nearest of 256 levels. The file is written
    under a temporary name in the same folder and renamed over ``path``, so a reader never sees half a
    file. Missing parent folders are created.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"expected a floating-point image in [0, 1], got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError("image holds NaN or infinite values")
    pixels = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().permute(1, 2, 0)
    array = pixels.numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    return atomic_write(Path(path), lambda file: picture.save(file, format="PNG"))


# ---------------------------------------------------------------------------------- training crops


def find_images(root: PathLike) -> list[Path]:
    """All image files (:data:`IMAGE_SUFFIXES`) under ``root``, recursively, in sorted order.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _pad_to(pixels: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an ``(H, W, 3)`` array at the bottom and right so that both sides are >= ``size``."""
    height, width = pixels.shape[:2]
    if height >= size and width >= size:
        return pixels
    padding = ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0))
    return np.pad(pixels, padding, mode="reflect")


class ImageFolderCrops(Dataset):
    """Random square crops from every image under one or more folders, for training.

    Item ``i`` is a random ``crop x crop`` window of image ``i % n`` (``n`` files, sorted, roots in the
    given order), flipped left-right with probability 1/2: a ``float32`` tensor ``(3, crop, crop)`` in
    ``[0, 1]``. Images smaller than ``crop`` are first reflect-padded at the bottom and right.

    Args:
        roots: a folder or a sequence of folders, searched recursively (:func:`find_images`).
        crop: side of the square crops in pixels.
        epoch_size: number of items per epoch; ``None`` means one crop per image. A larger value lets
            one epoch draw many crops (image ``i % n`` for item ``i``).
        flip: apply random horizontal flips.
        cache: keep each decoded image in memory as uint8 after its first use (about 2.4 MB for a
            1024x768 photo). Each DataLoader worker holds its own cache.
        generator: source of the random crops and flips. ``None`` uses torch's global generator, which
            :class:`torch.utils.data.DataLoader` seeds differently in each worker; pass a seeded
            generator for reproducible crops in the main process (``num_workers=0``).
        max_pixels: refuse images larger than this (see :func:`load_image_uint8`).

    Raises:
        FileNotFoundError: a root is not a directory.
        ValueError: a root holds no image file, or ``crop`` / ``epoch_size`` is not positive.
    """

    def __init__(
        self,
        roots: PathLike | Sequence[PathLike],
        crop: int = 256,
        *,
        epoch_size: int | None = None,
        flip: bool = True,
        cache: bool = False,
        generator: torch.Generator | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        if epoch_size is not None and epoch_size < 1:
            raise ValueError(f"epoch_size must be positive, got {epoch_size}")
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        self.files: list[Path] = []
        for root in roots:
            found = find_images(root)
            if not found:
                raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found under it")
            self.files.extend(found)
        self.crop = crop
        self.epoch_size = epoch_size
        self.flip = flip
        self.cache = cache
        self.generator = generator
        self.max_pixels = max_pixels
        self._cached: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.epoch_size if self.epoch_size is not None else len(self.files)

    def _pixels(self, file_index: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 pixels of one file, from the cache when enabled."""
        pixels = self._cached.get(file_index)
        if pixels is None:
            pixels = load_image_uint8(self.files[file_index], self.max_pixels)
            if self.cache:
                self._cached[file_index] = pixels
        return pixels

    def __getitem__(self, index: int) -> torch.Tensor:
        """A random ``(3, crop, crop)`` float32 crop of image ``index % n``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        pixels = _pad_to(self._pixels(index % len(self.files)), self.crop)
        height, width = pixels.shape[:2]
        top = int(torch.randint(height - self.crop + 1, (), generator=self.generator))
        left = int(torch.randint(width - self.crop + 1, (), generator=self.generator))
        patch = pixels[top : top + self.crop, left : left + self.crop]
        if self.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            patch = patch[:, ::-1]
        return to_tensor(patch)


# ------------------------------------------------------------------------------------------- datasets

#: The datasets :func:`download_dataset` fetches into ``<data_dir>/<name>/``.
DATASETS: dict[str, DatasetSpec] = {
    "kodak": DatasetSpec(
        urls=tuple(f"https://r0k.us/graphics/kodak/kodak/{name}" for name in KODAK_NAMES),
        checksums=CHECKSUM_DIR / "kodak" / "SHA256SUMS",
        source="Kodak PhotoCD images (24 PNG, 768x512), from r0k.us/graphics/kodak; test set only",
    ),
    # The sha256 in data/div2k/SHA256SUMS is the one TensorFlow Datasets publishes for this URL
    # (not recomputed here); set checksums=None to accept downloads only with allow_unverified.
    "div2k-train": DatasetSpec(
        urls=("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",),
        checksums=CHECKSUM_DIR / "div2k" / "SHA256SUMS",
        extract=True,
        source="DIV2K training HR images (800 PNG, about 3.5 GB zip), ETH Zurich; research use",
    ),
}


def download_dataset(
    name: str,
    data_dir: PathLike | None = None,
    allow_unverified: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    progressbar: bool | ProgressBar = False,
) -> Path:
    """Fetch the registered dataset ``name`` (:data:`DATASETS`) into ``<data_dir>/<name>/``.

    Files already present are checked, not fetched again; archives are verified, checked, extracted,
    marked done and deleted (:func:`hvq.download.download_into`). Returns the dataset folder.

    Raises:
        KeyError: ``name`` is not registered.
        hvq.download.DownloadError, hvq.download.ChecksumError, hvq.download.ArchiveError: see
            :func:`hvq.download.download_file` and :func:`hvq.download.extract_archive`.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return download_into(
        DATASETS[name],
        _data_dir(data_dir) / name,
        allow_unverified=allow_unverified,
        timeout=timeout,
        retries=retries,
        progressbar=progressbar,
    )


# ---------------------------------------------------------------------------------------------- kodak


def kodak_checksums() -> dict[str, str]:
    """``{"kodim01.png": sha256, ...}`` from the repository file ``data/kodak/SHA256SUMS``."""
    return {name: sha256 for _, name, sha256 in DATASETS["kodak"].files() if sha256 is not None}


def kodak_dir(data_dir: PathLike | None = None, download: bool = False) -> Path:
    """The folder holding kodim01..24.png (``<data_dir>/kodak``), each checked against its sha256.

    With ``download=True`` missing images are fetched from r0k.us (:func:`download_dataset`).

    Raises:
        FileNotFoundError: images are missing and ``download`` is false; the message names the folder
            and the command that fetches them.
        hvq.download.ChecksumError: an image differs from ``data/kodak/SHA256SUMS``.
    """
    if download:
        return download_dataset("kodak", data_dir)
    directory = _data_dir(data_dir) / "kodak"
    missing = [name for name in KODAK_NAMES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} Kodak images missing in {directory} (first: {missing[0]}). Fetch them with "
            "`hvq data download kodak`, or put kodim01.png .. kodim24.png there by hand (see data/README.md)."
        )
    verify_checksums(directory, kodak_checksums())
    return directory


def kodak_images(data_dir: PathLike | None = None, download: bool = False) -> list[Path]:
    """The 24 verified Kodak image paths, kodim01.png first (see :func:`kodak_dir`)."""
    directory = kodak_dir(data_dir, download)
    return [directory / name for name in KODAK_NAMES]
