"""hvq.data: image reading on awkward files, training crops, the dataset registry and Kodak checks.

The downloads themselves are tested in test_download.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvq import data, download
from hvq.data import ImageError, ImageFolderCrops
from hvq.download import ChecksumError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RNG = np.random.default_rng(0)


def noise(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def write(path: Path, image: Image.Image, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


# ------------------------------------------------------------------------------------------- images


def _rgba() -> Image.Image:
    return Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]], dtype=np.uint8), "RGBA")


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    image.putpalette([200, 100, 50, 10, 20, 30])
    if transparent:
        image.info["transparency"] = 0
    return image


def _sixteen_bit() -> Image.Image:
    return Image.fromarray(np.array([[0, 257 * 100 + 128, 65535]], dtype=np.uint16))


def _cmyk() -> Image.Image:
    image = Image.new("CMYK", (2, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 255))
    return image


AWKWARD: dict[str, tuple[Callable[[], Image.Image], str, list[list[int]]]] = {
    # name: (image maker, file name, expected uint8 RGB rows as [r, g, b] per pixel, flattened per row)
    "grey": (
        lambda: Image.fromarray(np.array([[0, 100]], dtype=np.uint8), "L"),
        "g.png",
        [[0] * 3 + [100] * 3],
    ),
    "bilevel": (lambda: Image.new("1", (2, 1), 1), "b.png", [[255] * 6]),
    "rgba-on-white": (_rgba, "a.png", [[255, 255, 255, 0, 0, 255]]),
    "grey-alpha": (lambda: Image.new("LA", (1, 1), (40, 0)), "la.png", [[255, 255, 255]]),
    "palette": (lambda: _palette(False), "p.png", [[200, 100, 50, 10, 20, 30]]),
    "palette-transparent": (lambda: _palette(True), "pt.png", [[255, 255, 255, 10, 20, 30]]),
    "16-bit": (_sixteen_bit, "i16.png", [[0, 0, 0, 100, 100, 100, 255, 255, 255]]),
    "cmyk": (_cmyk, "c.tif", [[255, 255, 255, 0, 0, 0]]),
    "1x1": (lambda: Image.new("RGB", (1, 1), (1, 2, 3)), "one.png", [[1, 2, 3]]),
}


@pytest.mark.parametrize("case", sorted(AWKWARD))
def test_load_image_converts_awkward_modes_to_rgb(tmp_path: Path, case: str) -> None:
    make, name, rows = AWKWARD[case]
    path = write(tmp_path / name, make())
    expected = np.array(rows, dtype=np.uint8).reshape(len(rows), -1, 3)
    np.testing.assert_array_equal(data.load_image_uint8(path), expected)
    image = data.load_image(path)
    assert image.dtype == torch.float32 and image.shape == (3, *expected.shape[:2])
    torch.testing.assert_close(image, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)


def test_load_image_odd_size_is_channels_height_width(tmp_path: Path) -> None:
    pixels = noise(13, 7)
    image = data.load_image(write(tmp_path / "odd.png", Image.fromarray(pixels)))
    assert image.shape == (3, 13, 7) and 0 <= image.min() and image.max() <= 1
    np.testing.assert_array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), pixels)


def _truncated(path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _text(path: Path) -> Path:
    path.write_text("not an image")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda folder: _truncated(folder / "cut.png", "PNG"),
        lambda folder: _truncated(folder / "cut.jpg", "JPEG"),
        lambda folder: _text(folder / "notes.png"),
        lambda folder: _empty(folder / "empty.png"),
    ],
    ids=["truncated-png", "truncated-jpeg", "text-named-png", "empty-file"],
)
def test_load_image_refuses_broken_files_naming_them(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageError, match=re.escape(str(path))):
        data.load_image(path)


def test_load_image_refuses_too_many_pixels_before_decoding(tmp_path: Path) -> None:
    # The pixel data is cut off, so a decode would fail differently: the refusal comes from the header.
    path = _truncated(tmp_path / "big.png", "PNG")
    with pytest.raises(ImageError, match=r"64x64 image has 4096 pixels.*max_pixels") as raised:
        data.load_image(path, max_pixels=4095)
    assert str(path) in str(raised.value)
    assert data.load_image(write(tmp_path / "ok.png", Image.new("RGB", (64, 64))), max_pixels=4096).shape == (
        3,
        64,
        64,
    )


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        data.load_image(tmp_path / "nothing.png")


def test_save_image_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    pixels = noise(9, 5)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    path = data.save_image(image, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(data.load_image_uint8(path), pixels)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
    data.save_image(torch.full((1, 2, 3), 2.0), path)  # replaces, clamps, greyscale
    assert data.load_image_uint8(path).tolist() == [[[255] * 3] * 3] * 2
    with pytest.raises(ValueError, match="shape"):
        data.save_image(torch.zeros(2, 3, 4, 4), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="NaN"):
        data.save_image(torch.full((3, 2, 2), float("nan")), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ------------------------------------------------------------------------------------------- crops


def solid(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> Path:
    return write(path, Image.new("RGB", size, (value, value, value)))


def test_find_images_is_recursive_sorted_and_case_insensitive(tmp_path: Path) -> None:
    solid(tmp_path / "b.PNG", 0)
    solid(tmp_path / "a" / "c.jpg", 0)
    (tmp_path / "notes.txt").write_text("x")
    assert data.find_images(tmp_path) == [tmp_path / "a" / "c.jpg", tmp_path / "b.PNG"]


def test_crops_shapes_and_epoch_size_cycles_images(tmp_path: Path) -> None:
    solid(tmp_path / "one" / "x.png", 10)
    solid(tmp_path / "two" / "y.bmp", 200)
    crops = ImageFolderCrops([tmp_path / "one", tmp_path / "two"], crop=16, epoch_size=5)
    assert len(crops) == 5 and len(ImageFolderCrops(tmp_path, crop=16)) == 2
    items = [crops[i] for i in range(5)]
    assert all(item.shape == (3, 16, 16) and item.dtype == torch.float32 for item in items)
    assert [round(float(item[0, 0, 0]) * 255) for item in items] == [10, 200, 10, 200, 10]
    with pytest.raises(IndexError):
        crops[5]


def test_crops_are_deterministic_with_a_seeded_generator(tmp_path: Path) -> None:
    write(tmp_path / "n.png", Image.fromarray(noise(48, 64)))

    def draw(seed: int) -> torch.Tensor:
        crops = ImageFolderCrops(
            tmp_path, crop=16, epoch_size=6, generator=torch.Generator().manual_seed(seed)
        )
        return torch.stack([crops[i] for i in range(6)])

    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert not torch.equal(draw(1), draw(2))


def test_small_images_are_reflect_padded(tmp_path: Path) -> None:
    pixels = noise(3, 5)
    write(tmp_path / "small.png", Image.fromarray(pixels))
    solid(tmp_path / "tiny.png", 77, size=(1, 1))
    crops = ImageFolderCrops(tmp_path, crop=8, flip=False)
    expected = np.pad(pixels, ((0, 5), (0, 3), (0, 0)), mode="reflect")
    np.testing.assert_array_equal((crops[0] * 255).round().byte().permute(1, 2, 0).numpy(), expected)
    assert torch.equal(crops[1], torch.full((3, 8, 8), 77 / 255))


def test_cache_keeps_decoded_images(tmp_path: Path) -> None:
    path = solid(tmp_path / "x.png", 5)
    crops = ImageFolderCrops(tmp_path, crop=8, cache=True)
    first = crops[0]
    path.unlink()
    assert torch.equal(crops[0], first)


def test_crops_refuse_empty_or_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"empty: no image files"):
        ImageFolderCrops(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="absent"):
        ImageFolderCrops(tmp_path / "absent")
    with pytest.raises(ValueError, match="crop"):
        ImageFolderCrops(tmp_path, crop=0)


# ------------------------------------------------------------------------------------------- kodak


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HVQ_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    monkeypatch.delenv("HVQ_DATA_DIR")
    if SHARED.is_dir():
        assert data.default_data_dir() == SHARED
    else:
        assert data.default_data_dir() == Path.home() / ".cache" / "hvq" / "data"


def test_registry() -> None:
    kodak = data.DATASETS["kodak"].files()
    assert [name for _, name, _ in kodak] == list(data.KODAK_NAMES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for _, _, sha in kodak)
    assert kodak[0][0] == "https://r0k.us/graphics/kodak/kodak/kodim01.png"
    assert data.DATASETS["div2k-train"].files() == [
        (
            "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
            "DIV2K_train_HR.zip",
            "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        )
    ]
    assert data.DATASETS["div2k-train"].extract
    with pytest.raises(KeyError, match="kodak"):
        data.download_dataset("no-such-set")


@pytest.fixture
def shared_kodak() -> Path:
    if not (SHARED / "kodak").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED / "kodak"


def test_repo_checksums_match_the_shared_copy(shared_kodak: Path) -> None:
    assert data.kodak_checksums() == download.read_sha256sums(shared_kodak / "SHA256SUMS")


def test_kodak_images_finds_and_verifies_the_shared_set(
    shared_kodak: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HVQ_DATA_DIR", raising=False)
    images = data.kodak_images()
    assert images == [shared_kodak / f"kodim{i:02d}.png" for i in range(1, 25)]
    assert data.load_image(images[0]).shape == (3, 512, 768)
    assert data.load_image(images[3]).shape == (3, 768, 512)


def test_tampered_kodak_copy_fails_verification(shared_kodak: Path, tmp_path: Path) -> None:
    copy = tmp_path / "kodak"
    copy.mkdir()
    for name in data.KODAK_NAMES:
        (copy / name).symlink_to(shared_kodak / name)
    (copy / "kodim07.png").unlink()
    payload = bytearray((shared_kodak / "kodim07.png").read_bytes())
    payload[-100] ^= 1
    (copy / "kodim07.png").write_bytes(bytes(payload))
    with pytest.raises(ChecksumError, match="kodim07.png") as raised:
        data.kodak_images(tmp_path)
    assert "kodim06.png" not in str(raised.value)


def test_missing_kodak_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"kodak.*hvq data download kodak") as raised:
        data.kodak_dir(tmp_path)
    assert str(tmp_path / "kodak") in str(raised.value)
