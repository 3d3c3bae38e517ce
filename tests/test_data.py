"""hvq.data: image reading on awkward files, training crops, Kodak checks, and the downloader.

The downloader tests talk only to a ThreadingHTTPServer on 127.0.0.1 started here.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvq import data
from hvq.data import (
    ArchiveError,
    ChecksumError,
    DatasetSpec,
    DownloadError,
    ImageError,
    ImageFolderCrops,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RNG = np.random.default_rng(0)


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


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
    assert data.kodak_checksums() == data.read_sha256sums(shared_kodak / "SHA256SUMS")


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


# --------------------------------------------------------------------------------------- downloads


@dataclass
class Server:
    """Files served at ``url + "/" + name``, with the Range header of every request recorded."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    honour_range: bool = True
    #: Announce the whole Content-Length but send the body only up to this offset, then close.
    cut_at: int | None = None


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            requested = self.headers.get("Range")
            server.ranges.append(requested)
            body = server.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            start = int(requested[6:-1]) if requested and server.honour_range else 0
            if start >= len(body) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start : server.cut_at])

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go to a proxy that the environment may name."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


PAYLOAD = bytes(range(256)) * 40


def test_download_verifies_and_reports_progress(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    seen: list[tuple[int, int | None]] = []
    dest = data.download_file(
        f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD), progress=lambda *a: seen.append(a)
    )
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and server.ranges == [None]
    data.download_file(f"{server.url}/f.bin", dest, sha256(PAYLOAD))  # present and valid: no request
    assert server.ranges == [None]


def test_download_resumes_a_cut_transfer(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    half = len(PAYLOAD) // 2
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:half])
    dest = data.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={half}-"]


def test_download_cut_mid_body_keeps_the_part_and_resumes(server: Server, tmp_path: Path) -> None:
    """A connection closed cleanly before Content-Length bytes is a cut download, not a bad checksum."""
    server.files["f.bin"] = PAYLOAD
    server.cut_at = cut = len(PAYLOAD) // 3
    url, dest, part = f"{server.url}/f.bin", tmp_path / "f.bin", tmp_path / "f.bin.part"
    with pytest.raises(DownloadError, match=f"cut after {cut} of {len(PAYLOAD)} bytes") as raised:
        data.download_file(url, dest, sha256(PAYLOAD))
    assert "resume" in str(raised.value) and not dest.exists()
    assert part.read_bytes() == PAYLOAD[:cut]
    server.cut_at = None
    assert data.download_file(url, dest, sha256(PAYLOAD)).read_bytes() == PAYLOAD
    assert server.ranges == [None, f"bytes={cut}-"] and not part.exists()


def test_download_restarts_when_the_server_ignores_range(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from another file")
    dest = data.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and server.ranges[0] is not None


def test_download_refuses_a_wrong_checksum(server: Server, tmp_path: Path) -> None:
    server.files["f.bin"] = PAYLOAD
    with pytest.raises(ChecksumError, match="expected 0000"):
        data.download_file(f"{server.url}/f.bin", tmp_path / "f.bin", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_a_wrong_checksum_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"mine")
    with pytest.raises(ChecksumError, match="f.bin"):
        data.download_file("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", "0" * 64)
    assert (tmp_path / "f.bin").read_bytes() == b"mine"


def test_download_without_a_known_checksum_needs_consent(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["f.bin"] = PAYLOAD
    url, dest = f"{server.url}/f.bin", tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=sha256(PAYLOAD)):
        data.download_file(url, dest, None)
    assert not dest.exists() and (tmp_path / "f.bin.part").exists()
    data.download_file(url, dest, None, allow_unverified=True)  # the kept .part is complete: HTTP 416
    assert dest.read_bytes() == PAYLOAD and server.ranges == [None, f"bytes={len(PAYLOAD)}-"]
    assert sha256(PAYLOAD) in capsys.readouterr().err


def test_download_http_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        data.download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", "0" * 64)


def test_unreachable_host_fails_fast_and_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = tmp_path / "f.bin"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="put it at") as raised:
        data.download_file(f"http://127.0.0.1:{port}/f.bin", dest, "0" * 64, timeout=2)
    assert time.monotonic() - started < 5
    assert str(dest) in str(raised.value) and not dest.exists()


# ---------------------------------------------------------------------------------------- archives


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _tar_gz(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        if symlink is not None:
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, symlink
            archive.addfile(link)
    return buffer.getvalue()


IMAGES = {"set/0001.png": b"one", "set/0002.png": b"two"}


@pytest.mark.parametrize(
    "archive_name, archive", [("set.zip", _zip(IMAGES)), ("set.tar.gz", _tar_gz(IMAGES))]
)
def test_download_dataset_extracts_an_archive(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_name: str, archive: bytes
) -> None:
    server.files[archive_name] = archive
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha256(archive)}  {archive_name}\n")
    spec = DatasetSpec(urls=(f"{server.url}/{archive_name}",), checksums=sums, extract=True)
    monkeypatch.setitem(data.DATASETS, "toy", spec)
    root = data.download_dataset("toy", tmp_path / "data")
    assert root == tmp_path / "data" / "toy"
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")} == IMAGES
    assert not (root / archive_name).exists() and (root / f".{archive_name}.extracted").exists()
    data.download_dataset("toy", tmp_path / "data")  # already done: no second request
    assert server.ranges == [None]


def test_kodak_download_through_the_registry(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = []
    for index, name in enumerate(data.KODAK_NAMES):
        buffer = io.BytesIO()
        Image.new("RGB", (3, 2), (index, 0, 0)).save(buffer, format="PNG")
        server.files[name] = buffer.getvalue()
        lines.append(f"{sha256(buffer.getvalue())}  {name}\n")
    (tmp_path / "SHA256SUMS").write_text("".join(lines))
    spec = DatasetSpec(
        urls=tuple(f"{server.url}/{n}" for n in data.KODAK_NAMES), checksums=tmp_path / "SHA256SUMS"
    )
    monkeypatch.setitem(data.DATASETS, "kodak", spec)
    images = data.kodak_images(tmp_path / "d", download=True)
    assert len(images) == 24 and data.load_image_uint8(images[23])[0, 0].tolist() == [23, 0, 0]
    assert data.kodak_images(tmp_path / "d") == images and len(server.ranges) == 24


@pytest.mark.parametrize(
    "name, archive",
    [
        ("evil.zip", _zip({"../evil.txt": b"x"})),
        ("evil.tar.gz", _tar_gz({"../evil.txt": b"x"})),
        ("abs.tar.gz", _tar_gz({"/tmp/hvq-evil.txt": b"x"})),
        ("link.tar.gz", _tar_gz({}, symlink="/etc/passwd")),
        ("evil.rar", b"Rar!"),
    ],
)
def test_extract_archive_refuses_unsafe_members(tmp_path: Path, name: str, archive: bytes) -> None:
    (tmp_path / name).write_bytes(archive)
    with pytest.raises(ArchiveError):
        data.extract_archive(tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "out").iterdir()) == []


def test_read_sha256sums_rejects_malformed_lines(tmp_path: Path) -> None:
    (tmp_path / "SUMS").write_text(f"# comment\n{'a' * 64} *x.png\n\nnot a line\n")
    with pytest.raises(ValueError, match=r"SUMS:4"):
        data.read_sha256sums(tmp_path / "SUMS")
