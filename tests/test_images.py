"""Awkward images through the whole codec via the CLI (``hvq compress`` then ``hvq decompress``).

Every input is either converted and round-trips (the output PNG has the input's size and three
channels) or is refused with exit code 2 and one line ``hvq: error: ...`` that names the file. Outputs
are never overwritten without ``--force``, and a failure while writing leaves neither a partial output
nor a temporary file behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import fuzzing as fz  # tests/fuzzing.py (pytest puts tests/ on sys.path)
import numpy as np
import pytest
import torch
from PIL import Image

import hvq.data
import hvq.model
from hvq.checkpoint import save_checkpoint
from hvq.cli import main
from hvq.config import load_config
from hvq.container import MAGIC

#: The codec's pixel limit (``hvq.model.MAX_CODEC_PIXELS``; 2**24 as announced if not there yet).
CODEC_LIMIT = getattr(hvq.model, "MAX_CODEC_PIXELS", 1 << 24)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "smoke.pt"
    save_checkpoint(path, load_config("smoke"), fz.build_smoke_model())
    return path


def run_cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> None:
    assert err.startswith("hvq: error: ") and err.count("\n") == 1, repr(err)
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def _gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(h, w, 3)`` uint8: smooth ramps plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(h + w - 2, 1)]
    )
    return np.clip(img.transpose(1, 2, 0) + rng.integers(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ awkward images

H, W = 20, 30


def _grey(path: Path) -> None:
    Image.fromarray(_gradient(H, W)[:, :, 0]).save(path)


def _bilevel(path: Path) -> None:
    Image.fromarray(_gradient(H, W)[:, :, 0]).convert("1").save(path)


def _grey_alpha(path: Path) -> None:
    g = _gradient(H, W)
    Image.fromarray(np.stack([g[:, :, 0], g[:, :, 1]], axis=2), mode="LA").save(path)


def _rgba(path: Path) -> None:
    g = _gradient(H, W)
    alpha = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    Image.fromarray(np.dstack([g, alpha]), mode="RGBA").save(path)


def _palette(path: Path) -> None:
    Image.fromarray(_gradient(H, W)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)


def _palette_transparent(path: Path) -> None:
    im = Image.fromarray(_gradient(H, W)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.save(path, transparency=0)


def _grey16(path: Path) -> None:
    values = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 97 % 65536).astype(np.uint16)
    Image.fromarray(values).save(path)  # mode I;16, a 16-bit greyscale PNG


def _cmyk_jpeg(path: Path) -> None:
    Image.fromarray(_gradient(H, W)).convert("CMYK").save(path, quality=95)


def _cmyk_tiff(path: Path) -> None:
    Image.fromarray(_gradient(H, W)).convert("CMYK").save(path)


def _rgb_jpeg(path: Path) -> None:
    Image.fromarray(_gradient(H, W)).save(path, quality=90)


def _one_by_one(path: Path) -> None:
    Image.new("RGB", (1, 1), (200, 30, 90)).save(path)


def _seven_by_thirteen(path: Path) -> None:
    Image.fromarray(_gradient(7, 13)).save(path)  # 7 rows, 13 columns


CONVERTIBLE: dict[str, tuple[Callable[[Path], None], tuple[int, int]]] = {
    "grey_L.png": (_grey, (W, H)),
    "bilevel_1.png": (_bilevel, (W, H)),
    "grey_alpha_LA.png": (_grey_alpha, (W, H)),
    "rgba.png": (_rgba, (W, H)),
    "palette_P.png": (_palette, (W, H)),
    "palette_tRNS.png": (_palette_transparent, (W, H)),
    "grey16_I16.png": (_grey16, (W, H)),
    "cmyk.jpg": (_cmyk_jpeg, (W, H)),
    "cmyk.tif": (_cmyk_tiff, (W, H)),
    "rgb.jpg": (_rgb_jpeg, (W, H)),
    "one_by_one.png": (_one_by_one, (1, 1)),
    "seven_by_thirteen.png": (_seven_by_thirteen, (13, 7)),
}


@pytest.mark.parametrize("name", list(CONVERTIBLE))
def test_awkward_image_round_trips(name, ckpt, tmp_path, capsys) -> None:
    make, size = CONVERTIBLE[name]
    src = tmp_path / name
    make(src)
    with Image.open(src) as im:
        assert im.size == size  # the file really is what its name says
    hvq_file, png = tmp_path / "out.hvq", tmp_path / "out.png"
    rc, out, err = run_cli(capsys, "compress", src, hvq_file, "--model", ckpt)
    assert rc == 0, err
    assert hvq_file.read_bytes()[:4] == MAGIC and f"({size[0]}x{size[1]})" in out
    rc, out, err = run_cli(capsys, "decompress", hvq_file, png, "--model", ckpt)
    assert rc == 0, err
    with Image.open(png) as im:
        assert im.size == size and im.mode == "RGB" and im.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.hvq", "out.png"])


def test_conversions_follow_the_documented_rules(tmp_path) -> None:
    """Grey repeats over RGB, transparency becomes white, 16 bits scale with rounding."""
    _grey(tmp_path / "g.png")
    x = hvq.data.load_image(tmp_path / "g.png")
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert torch.equal(hvq.data.load_image(tmp_path / "clear.png"), torch.ones(3, 2, 3))
    Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16)).save(tmp_path / "g16.png")
    assert hvq.data.load_image_uint8(tmp_path / "g16.png")[0, :, 0].tolist() == [0, 1, 255]


# ----------------------------------------------------------------------------- refused inputs


def _truncated_png(path: Path) -> None:
    Image.fromarray(_gradient(64, 64)).save(tmp := path.with_suffix(".full.png"))
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: len(data) // 2])


def _truncated_jpeg(path: Path) -> None:
    Image.fromarray(_gradient(64, 64)).save(tmp := path.with_suffix(".full.jpg"), quality=90)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: len(data) // 2])


def _not_an_image(path: Path) -> None:
    path.write_text("this is a text file, not a picture\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _hvq_as_image(path: Path) -> None:
    path.write_bytes(MAGIC + bytes(100))


def _directory(path: Path) -> None:
    path.mkdir()


def _missing(path: Path) -> None:
    pass


REFUSED: dict[str, Callable[[Path], None]] = {
    "truncated.png": _truncated_png,
    "truncated.jpg": _truncated_jpeg,
    "not_an_image.png": _not_an_image,
    "empty.png": _empty,
    "looks_like_hvq.png": _hvq_as_image,
    "a_directory.png": _directory,
    "missing.png": _missing,
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_input_is_refused_with_one_line(name, ckpt, tmp_path, capsys) -> None:
    src = tmp_path / name
    REFUSED[name](src)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = run_cli(capsys, "compress", src, tmp_path / "out.hvq", "--model", ckpt)
    assert rc == 2 and out == ""
    assert_one_line_error(err, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary file


@pytest.mark.parametrize("name", ["not_an_image.png", "empty.png", "a_directory.png", "missing.png"])
def test_bad_hvq_input_is_refused_with_one_line(name, ckpt, tmp_path, capsys) -> None:
    src = tmp_path / name
    REFUSED[name](src)
    rc, out, err = run_cli(capsys, "decompress", src, tmp_path / "out.png", "--model", ckpt)
    assert rc == 2 and out == ""
    assert_one_line_error(err)
    assert not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------------- overwriting


@pytest.fixture()
def image_and_code(ckpt, tmp_path, capsys) -> tuple[Path, Path]:
    """A small RGB PNG and its .hvq, in tmp_path."""
    src, code = tmp_path / "in.png", tmp_path / "in.hvq"
    Image.fromarray(_gradient(24, 40)).save(src)
    assert run_cli(capsys, "compress", src, code, "--model", ckpt)[0] == 0
    return src, code


def test_compress_refuses_to_overwrite_without_force(image_and_code, ckpt, tmp_path, capsys) -> None:
    src, _ = image_and_code
    out = tmp_path / "out.hvq"
    out.write_bytes(b"precious")
    rc, _, err = run_cli(capsys, "compress", src, out, "--model", ckpt)
    assert rc == 2 and out.read_bytes() == b"precious"
    assert_one_line_error(err, "out.hvq", "--force")
    rc, _, err = run_cli(capsys, "compress", src, out, "--model", ckpt, "--force")
    assert rc == 0, err
    assert out.read_bytes()[:4] == MAGIC


def test_decompress_refuses_to_overwrite_without_force(image_and_code, ckpt, tmp_path, capsys) -> None:
    _, code = image_and_code
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    rc, _, err = run_cli(capsys, "decompress", code, out, "--model", ckpt)
    assert rc == 2 and out.read_bytes() == b"precious"
    assert_one_line_error(err, "out.png", "--force")
    rc, _, err = run_cli(capsys, "decompress", code, out, "--model", ckpt, "--force")
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == (40, 24) and im.mode == "RGB"


# ---------------------------------------------------------------------- failures while writing


def _boom(exc: BaseException):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


@pytest.mark.parametrize(
    "target, exc, code",
    [
        # After the bytes are in the temporary file, before the rename.
        ((os, "fsync"), PermissionError(errno.EACCES, "simulated"), 2),
        ((os, "replace"), PermissionError(errno.EACCES, "simulated"), 2),
        ((os, "replace"), KeyboardInterrupt(), 130),
        # Half way through the codec, before anything is written.
        ((hvq.model.HVQCodec, "encode"), RuntimeError("simulated failure in the entropy coder"), 2),
    ],
)
def test_failed_compress_leaves_nothing(
    image_and_code, ckpt, tmp_path, capsys, monkeypatch, target, exc, code
):
    src, _ = image_and_code
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(*target, _boom(exc))
    rc, _, err = run_cli(capsys, "compress", src, tmp_path / "out.hvq", "--model", ckpt)
    monkeypatch.undo()
    assert rc == code and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("force", [False, True])
def test_failed_decompress_leaves_nothing(image_and_code, ckpt, tmp_path, capsys, monkeypatch, force) -> None:
    _, code = image_and_code
    out = tmp_path / "out.png"
    if force:
        out.write_bytes(b"old output")
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(os, "replace", _boom(PermissionError(errno.EACCES, "simulated")))
    rc, _, err = run_cli(capsys, "decompress", code, out, "--model", ckpt, *(["--force"] if force else []))
    monkeypatch.undo()
    assert rc == 2
    assert_one_line_error(err, "simulated")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out.png, no .out.png.*.tmp
    if force:
        assert out.read_bytes() == b"old output"


def test_disk_full_while_writing_leaves_nothing(image_and_code, ckpt, tmp_path, capsys, monkeypatch) -> None:
    """Whatever the exit path, a full disk leaves no partial file."""
    src, _ = image_and_code
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(os, "fsync", _boom(OSError(errno.ENOSPC, "No space left on device")))
    rc, out, err = run_cli(capsys, "compress", src, tmp_path / "out.hvq", "--model", ckpt)
    monkeypatch.undo()
    assert rc == 2 and out == ""
    assert_one_line_error(err, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("failure", ["disk full", "name too long"])
def test_os_errors_give_one_line_and_exit_2(image_and_code, ckpt, tmp_path, capsys, monkeypatch, failure):
    src, _ = image_and_code
    out = tmp_path / "out.hvq"
    if failure == "disk full":
        monkeypatch.setattr(os, "fsync", _boom(OSError(errno.ENOSPC, "No space left on device")))
    else:
        out = tmp_path / ("x" * 300 + ".hvq")
    rc, _, err = run_cli(capsys, "compress", src, out, "--model", ckpt)
    assert rc == 2
    assert_one_line_error(err)


# --------------------------------------------------------------------------------- a huge image


def _forbid_allocation(monkeypatch) -> None:
    """Make the codec's first big allocation (padding the image for the encoder) fail loudly, so a
    missing size check fails this test instead of allocating gigabytes."""

    def no_pad(x):
        raise AssertionError(f"the codec started on a {tuple(x.shape)} image without a size check")

    monkeypatch.setattr(hvq.model, "pad", no_pad)


def test_codec_refuses_images_above_its_limit_before_allocating(monkeypatch) -> None:
    _forbid_allocation(monkeypatch)
    model = fz.build_smoke_model()
    side = int(CODEC_LIMIT**0.5)
    x = torch.zeros(1, 1, 1).expand(3, side + 1, side)  # a view: no pixel memory at all
    with pytest.raises(ValueError, match=str(CODEC_LIMIT)):
        model.compress(x)
    with pytest.raises(ValueError, match=str(CODEC_LIMIT)):
        model.reconstruct(x, lam=1.0)


def test_cli_refuses_a_5000x4000_image_before_allocating(ckpt, tmp_path, capsys, monkeypatch) -> None:
    src = tmp_path / "huge.png"
    im = Image.new("RGB", (5000, 4000), (90, 120, 150))  # mostly flat: ~270 KB on disk
    im.paste((200, 10, 10), (100, 100, 400, 300))
    im.save(src, compress_level=1)
    del im
    _forbid_allocation(monkeypatch)
    rc, out, err = run_cli(capsys, "compress", src, tmp_path / "huge.hvq", "--model", ckpt)
    assert rc == 2 and out == ""
    assert_one_line_error(err, str(CODEC_LIMIT))
    assert not (tmp_path / "huge.hvq").exists()


# ------------------------------------------------------------ float, 16-bit, EXIF, animation


def test_float_tiff_is_scaled_not_black(tmp_path) -> None:
    """``F`` images: [0, 1] data times 255, or 0..255 data when the maximum is above 1; clipped, rounded
    half to even (Python's ``round``), NaN as 0."""
    unit = [0.0, 0.25, 0.5, 1.0, float("nan")]
    byte_range = [0.0, 12.5, 13.5, 254.6, 300.0, -5.0]
    for name, values, expected in [
        ("unit.tif", unit, [0, 64, 128, 255, 0]),  # 63.75 -> 64, 127.5 -> 128
        ("bytes.tif", byte_range, [0, 12, 14, 255, 255, 0]),  # 12.5 -> 12, 13.5 -> 14
    ]:
        Image.fromarray(np.array([values], dtype=np.float32), mode="F").save(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.mode == "F"
        got = hvq.data.load_image_uint8(tmp_path / name)
        assert got.tolist() == [[[v] * 3 for v in expected]], name


def _png16(path: Path, samples: np.ndarray, colour_type: int) -> None:
    """Write ``(H, W, C)`` samples as a 16-bit PNG (Pillow cannot write 16-bit colour), with the row
    filters None, Sub and Up in turn so that the decoder's unfiltering is exercised."""
    import struct
    import zlib

    rows = samples.astype(">u2").reshape(samples.shape[0], -1).view(np.uint8).astype(np.int64)
    bpp, filtered = 2 * samples.shape[2], []
    for y, row in enumerate(rows):
        kind = y % 3
        previous = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        predicted = [np.zeros_like(row), left, previous][kind]
        filtered.append(bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], 16, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(filtered))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _round257(v: float) -> int:
    return round(v / 257)  # Python's round: half to even (v / 257 never lands on a half for integers)


def test_sixteen_bit_pngs_are_rounded_not_truncated(tmp_path) -> None:
    """``round(v / 257)``, where keeping the high byte would give 0, 255, 1 for the first three."""
    levels = [0x00FF, 0xFF00, 0x01FF, 0x80FF, 0x7F80, 0xFFFF, 0]
    expected = [_round257(v) for v in levels]
    assert expected == [1, 254, 2, 128, 127, 255, 0]
    # Greyscale (Pillow writes it: mode I;16).
    Image.fromarray(np.array([levels], dtype=np.uint16)).save(tmp_path / "g.png")
    assert hvq.data.load_image_uint8(tmp_path / "g.png")[0, :, 0].tolist() == expected
    # RGB: three rows (one per filter), the levels rotated across the channels.
    rgb = np.array([[np.roll(levels, k)[:3] for k in range(5)] for _ in range(3)], dtype=np.int64)
    _png16(tmp_path / "rgb.png", rgb, colour_type=2)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode == "RGB" and im.size == (5, 3)
    got = hvq.data.load_image_uint8(tmp_path / "rgb.png")
    assert got.tolist() == [[[_round257(v) for v in px] for px in row] for row in rgb.tolist()]
    # RGBA and grey + alpha: composited on white at 16 bits, then rounded.
    alphas = [0xFFFF, 0, 0x8000, 0x00FF, 0xFF00]
    rgba = np.concatenate([rgb, np.broadcast_to(np.array(alphas)[None, :, None], (3, 5, 1))], axis=2)
    _png16(tmp_path / "rgba.png", rgba, colour_type=6)
    _png16(tmp_path / "la.png", rgba[:, :, [0, 3]], colour_type=4)

    def over_white(c: int, a: int) -> int:
        return _round257(c * (a / 65535) + 65535 * (1 - a / 65535))

    want = [[[over_white(c, px[3]) for c in px[:3]] for px in row] for row in rgba.tolist()]
    assert hvq.data.load_image_uint8(tmp_path / "rgba.png").tolist() == want
    assert hvq.data.load_image_uint8(tmp_path / "la.png").tolist() == [
        [[p[0]] * 3 for p in row] for row in want
    ]


def test_exif_orientation_is_applied(tmp_path) -> None:
    """A JPEG stored landscape with Orientation 6 (turn 90 degrees clockwise to view) comes back upright."""
    from PIL import ExifTags

    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, 16:] = 255  # left half black, right half white
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "turned.jpg") as im:
        assert im.size == (32, 16) and im.getexif()[ExifTags.Base.Orientation] == 6
        pixels = np.asarray(im.convert("RGB"))
    got = hvq.data.load_image_uint8(tmp_path / "turned.jpg")
    assert got.shape == (32, 16, 3)  # portrait
    np.testing.assert_array_equal(got, np.rot90(pixels, k=-1))
    assert got[:12].max() < 40 and got[20:].min() > 215  # the left (black) half is now on top


@pytest.mark.parametrize("name", ["anim.gif", "anim.png"])
def test_animated_image_codes_the_first_frame_with_a_warning(name, ckpt, tmp_path, capsys) -> None:
    colours = [(200, 30, 10), (0, 0, 255), (0, 255, 0)]
    frames = [Image.new("RGB", (12, 8), c) for c in colours]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=40, loop=0)
    with pytest.warns(UserWarning, match=r"only the first of 3 frames is coded"):
        got = hvq.data.load_image_uint8(tmp_path / name)
    assert got.shape == (8, 12, 3) and (got == colours[0]).all()
    rc, out, err = run_cli(capsys, "compress", tmp_path / name, tmp_path / "out.hvq", "--model", ckpt)
    assert rc == 0 and "(12x8)" in out
    assert err == f"hvq: warning: {tmp_path / name}: only the first of 3 frames is coded\n"


def test_info_shows_the_knobs_and_the_colour_offset(tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 48, 3), (40, 160, 60), dtype=np.uint8)).save(src)
    assert main(["compress", str(src), str(tmp_path / "a.hvq"), "--lam", "1.41"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a.hvq")]) == 0
    out = capsys.readouterr().out
    assert "lambda 1.405 (index 127, model reduced)" in out  # 1.41 on the 256-step grid of 0.25..8
    assert "colour offset (R, G, B)" in out and "index fine" in out


def test_compress_refuses_an_image_above_the_codec_limit_from_its_header(tmp_path, capsys, monkeypatch):
    """A PNG bomb (small file, huge canvas) is refused before its pixels are decoded."""
    import hvq.data

    src = tmp_path / "bomb.png"
    Image.new("L", (4200, 4000)).save(src, optimize=True)  # 16.8 MP of zeros, a few kB
    assert src.stat().st_size < 100_000
    decoded = []
    monkeypatch.setattr(hvq.data, "_to_rgb_uint8", lambda image: decoded.append(1))
    rc = main(["compress", str(src), str(tmp_path / "out.hvq")])
    err = capsys.readouterr().err
    assert rc == 2 and "more than the" in err and not decoded
    assert not (tmp_path / "out.hvq").exists()
