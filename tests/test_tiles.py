"""Large images as tiles (:mod:`hvq.tiles`): the grid, the blend, round trips, rate control, the CLI,
bad files, and the memory bound with the shipped model.

Most tests shrink the tiles (128 px, 16 px overlap, tiling above 128x128 padded pixels) so that a
small synthetic image becomes a 2x3 grid coded by the smoke model in a second.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import fuzzing as fz  # tests/fuzzing.py (pytest puts tests/ on sys.path)
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hvq import bitstream, tiles
from hvq.checkpoint import save_checkpoint
from hvq.cli import main
from hvq.config import load_config
from hvq.container import MAX_STREAMS, Container
from hvq.errors import BitstreamError
from hvq.model import HVQCodec
from hvq.ratecontrol import compress_to_bpp, reachable_bpp
from hvq.symbols import MAX_CODEC_PIXELS, PAD_MULTIPLE

#: The small image of most tests, and its grid under the small tiles: rows (0, 112), (88, 200);
#: columns (0, 112), (94, 206), (188, 300).
HEIGHT, WIDTH = 200, 300
SMALL_SIDE, SMALL_OVERLAP = 128, 16


@pytest.fixture(scope="module")
def model() -> HVQCodec:
    return fz.build_smoke_model(vary_means=True)


@pytest.fixture()
def small_tiles(monkeypatch) -> None:
    """Tiles of at most 128x128 pixels overlapping by 16, for images above 128x128 padded pixels."""
    monkeypatch.setattr(tiles, "TILE_SIDE", SMALL_SIDE)
    monkeypatch.setattr(tiles, "TILE_OVERLAP", SMALL_OVERLAP)
    monkeypatch.setattr(tiles, "TILE_PIXELS", SMALL_SIDE * SMALL_SIDE)


@pytest.fixture()
def image() -> torch.Tensor:
    return fz.synthetic_image(HEIGHT, WIDTH, seed=3)


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("side, overlap", [(1024, 32), (128, 16), (64, 8), (256, 0)])
def test_spans_cover_the_axis_with_the_promised_overlap(side: int, overlap: int) -> None:
    for length in list(range(1, 3 * side, 7)) + [side, side + 1, 10 * side + 3]:
        spans = tiles.axis_spans(length, side, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length, (length, spans)
        sizes = {stop - start for start, stop in spans}
        assert len(sizes) == 1 and max(sizes) <= side, (length, spans)
        if len(spans) > 1:
            assert sizes.pop() % PAD_MULTIPLE == 0
            assert len(spans) == -(-(length - overlap) // (side - overlap))  # as few tiles as possible
        for (s0, e0), (s1, e1) in zip(spans, spans[1:], strict=False):
            assert s0 < s1 and e1 - s1 > 0 and e0 - s1 >= overlap, (length, spans)
        for (_, e0), (s2, _) in zip(spans, spans[2:], strict=False):
            assert s2 >= e0, (length, spans)  # a pixel lies in at most two tiles


def test_weights_ramp_across_each_overlap_and_add_up_to_one() -> None:
    spans = tiles.axis_spans(300, SMALL_SIDE, SMALL_OVERLAP)
    weights = tiles.axis_weights(spans)
    total = torch.zeros(300, dtype=torch.float64)
    for (start, stop), w in zip(spans, weights, strict=True):
        assert w.shape == (stop - start,) and w.dtype == torch.float32
        total[start:stop] += w.double()
    assert torch.allclose(total, torch.ones(300, dtype=torch.float64), atol=1e-6)
    for p in range(300):  # an oracle: one pixel at a time, from the spans alone
        covering = [i for i, (s, e) in enumerate(spans) if s <= p < e]
        if len(covering) == 1:
            (i,) = covering
            assert weights[i][p - spans[i][0]] == 1.0
        else:
            left, right = covering
            rise = (p + 0.5 - spans[right][0]) / (spans[left][1] - spans[right][0])
            assert weights[right][p - spans[right][0]] == pytest.approx(rise, abs=1e-6)
            assert weights[left][p - spans[left][0]] == pytest.approx(1 - rise, abs=1e-6)
            assert 0 < rise < 1


def test_small_images_stay_single_files_and_large_ones_are_tiled() -> None:
    assert not tiles.needs_tiles(512, 768)  # Kodak
    assert not tiles.needs_tiles(1024, 1024) and not tiles.needs_tiles(720, 1280)
    assert tiles.needs_tiles(1024, 1040) and tiles.needs_tiles(1080, 1920)
    grid = tiles.tile_grid(3000, 4000)
    assert grid.shape == (3, 4) and len(grid.boxes()) == 12
    assert all(
        (b - t) <= tiles.TILE_SIDE and (r - left) <= tiles.TILE_SIDE for (t, b), (left, r) in grid.boxes()
    )


def test_every_image_within_the_codec_limit_fits_the_container() -> None:
    counts = [
        len(tiles.tile_grid(h, min(65535, MAX_CODEC_PIXELS // h)).boxes())
        for h in [1, 2, 255, 1024, 1025, 2016, 2017, 3000, 4096, 4097] + list(range(5, 65536, 389))
    ]
    assert max(counts) <= MAX_STREAMS and max(counts) >= 60  # the 65535-pixel panorama: 67 tiles


# -------------------------------------------------------------------------------------- round trips


def per_tile_oracle(data: bytes, model: HVQCodec) -> tuple[torch.Tensor, torch.Tensor]:
    """The blend of the tiles, each decoded on its own as an ordinary file, computed pixel by pixel
    from the linear-ramp rule; and a map of the pixels that only one tile covers."""
    c = Container.from_bytes(data)
    side, overlap = int(c.knobs[1]), int(c.knobs[2])
    rows = tiles.axis_spans(c.height, side, overlap)
    cols = tiles.axis_spans(c.width, side, overlap)

    def weights(spans, length: int) -> torch.Tensor:  # (n_tiles, length), zero outside a tile
        w = torch.zeros(len(spans), length, dtype=torch.float64)
        for p in range(length):
            covering = [i for i, (s, e) in enumerate(spans) if s <= p < e]
            if len(covering) == 1:
                w[covering[0], p] = 1.0
            else:
                left, right = covering
                w[right, p] = (p + 0.5 - spans[right][0]) / (spans[left][1] - spans[right][0])
                w[left, p] = 1 - w[right, p]
        return w

    wr, wc = weights(rows, c.height), weights(cols, c.width)
    expected = torch.zeros(3, c.height, c.width, dtype=torch.float64)
    for i, tile in enumerate(c.streams):
        r, k = divmod(i, len(cols))
        (top, bottom), (left, right) = rows[r], cols[k]
        decoded = model.decompress(tile).double()  # its own CRCs, symbols included
        assert decoded.shape == (3, bottom - top, right - left)
        weight = wr[r, top:bottom, None] * wc[k, None, left:right]
        expected[:, top:bottom, left:right] += decoded * weight
    alone = ((wr == 1).any(0)[:, None] & (wc == 1).any(0)[None, :]).expand(3, -1, -1)
    return expected, alone


def test_tiled_round_trip_blends_the_tiles_decoded_on_their_own(model, small_tiles, image) -> None:
    data = model.compress(image, lam=2.0, coarse_ratio=0.4, medium_ratio=0.5)
    assert tiles.is_tiled_file(data)
    grid, tile_files = tiles.read_tiles(data, model.model_tag())
    assert grid.shape == (2, 3)
    decoded = model.decompress(data)
    assert decoded.shape == (3, HEIGHT, WIDTH) and decoded.dtype == torch.float32
    expected, alone = per_tile_oracle(data, model)
    assert torch.equal(decoded[alone], expected.float()[alone])  # one tile: its pixels exactly
    assert torch.allclose(decoded.double(), expected, atol=1e-5)  # overlaps: the ramps
    assert not alone.all() and (decoded - image).abs().mean() < 0.25
    for tile in tile_files:  # one lambda and ratios for every tile
        assert Container.from_bytes(tile).knobs[:3] == Container.from_bytes(tile_files[0]).knobs[:3]


def test_reconstruct_of_a_tiled_image_is_what_its_file_decodes_to(model, small_tiles, image) -> None:
    knobs = (2.0, 0.4, 0.5)
    assert torch.equal(model.reconstruct(image, *knobs), model.decompress(model.compress(image, *knobs)))


def test_single_images_are_unchanged_by_tiling(model, image) -> None:
    """Below ``TILE_PIXELS`` a file is exactly the codec's single-image file."""
    data = model.compress(image, lam=2.0)
    assert not tiles.is_tiled_file(data)
    assert data == model.encode(model.analyze(image, 2.0, 0.5, 0.5))


def test_tiled_coding_is_deterministic_across_thread_counts(model, small_tiles, image) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = model.compress(image, lam=0.5, coarse_ratio=0.6, medium_ratio=0.3)
        one = model.decompress(first)
        torch.set_num_threads(2)
        assert model.compress(image.clone(), lam=0.5, coarse_ratio=0.6, medium_ratio=0.3) == first
        two = model.decompress(first)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_roi_is_cropped_per_tile_and_coded_fine(model, small_tiles, image) -> None:
    roi = torch.zeros(HEIGHT, WIDTH)
    roi[60:150, 80:250] = 1  # crosses both rows and all three columns of tiles
    data = model.compress(image, lam=2.0, coarse_ratio=0.9, medium_ratio=0.9, roi=roi)
    grid, tile_files = tiles.read_tiles(data, model.model_tag())
    for tile, ((top, bottom), (left, right)) in zip(tile_files, grid.boxes(), strict=True):
        sym = bitstream.decode(model, tile)
        crop = roi[top:bottom, left:right]
        hp, wp = -(-crop.shape[0] // 16) * 16, -(-crop.shape[1] // 16) * 16
        wanted = F.max_pool2d(F.pad(crop, (0, wp - crop.shape[1], 0, hp - crop.shape[0]))[None, None], 4) > 0
        assert wanted.any() and sym.masks[0][wanted].min() == 1  # every region cell is fine
    with pytest.raises(ValueError, match="roi"):
        model.compress(image, lam=2.0, roi=roi[:, :-1])


# ------------------------------------------------------------------------------------- rate control


def test_rate_control_searches_one_setting_for_all_tiles(model, small_tiles, image) -> None:
    low, high = reachable_bpp(model, image, 2.0)
    target = low + 0.5 * (high - low)
    result = compress_to_bpp(model, image, target, lams=[2.0])
    assert tiles.is_tiled_file(result.data)
    assert result.bpp == 8 * len(result.data) / (HEIGHT * WIDTH)
    assert abs(result.bpp - target) <= 0.02 * target
    _, tile_files = tiles.read_tiles(result.data, model.model_tag())
    knobs = {Container.from_bytes(t).knobs[:3] for t in tile_files}
    ratios = (float(np.float32(result.coarse_ratio)), float(np.float32(result.medium_ratio)))  # as stored
    assert knobs == {(float(model.lambda_index(2.0)), *ratios)}
    assert model.decompress(result.data).shape == (3, HEIGHT, WIDTH)


# -------------------------------------------------------------------------------------------- files


def reseal(data: bytes, **changes) -> bytes:
    """The tiled file with some container fields changed, its file CRC recomputed."""
    c = Container.from_bytes(data)
    for name, value in changes.items():
        setattr(c, name, value)
    return c.to_bytes()


@pytest.fixture()
def tiled_file(model, small_tiles, image) -> bytes:
    return model.compress(image, lam=2.0)


def forged_variants(data: bytes, model: HVQCodec) -> dict[str, tuple[bytes, str]]:
    """Named bad files made from a good tiled file, with the words their error must contain."""
    c = Container.from_bytes(data)
    knobs, streams = c.knobs, c.streams
    flipped = bytearray(streams[3])
    flipped[len(flipped) // 2] ^= 0x40
    other_size = model.compress(fz.synthetic_image(100, 112, seed=1), lam=2.0)
    return {
        "truncated": (data[: len(data) // 2], "CRC32"),
        "header byte flipped": (data[:6] + bytes([data[6] ^ 1]) + data[7:], "CRC32"),
        "payload byte flipped": (data[:-40] + bytes([data[-40] ^ 1]) + data[-39:], "CRC32"),
        "rows": (reseal(data, knobs=(*knobs[:3], 3.0, knobs[4])), "grid"),
        "tile missing": (reseal(data, streams=streams[:-1]), "grid"),
        "side not a multiple of 16": (reseal(data, knobs=(knobs[0], 120.0, *knobs[2:])), "tile side"),
        "side too large": (reseal(data, knobs=(knobs[0], 8192.0, *knobs[2:])), "tile side"),
        "overlap too large": (reseal(data, knobs=(*knobs[:2], 64.0, *knobs[3:])), "overlap"),
        "fractional knob": (reseal(data, knobs=(*knobs[:3], 2.5, knobs[4])), "tile knobs"),
        "knob count": (reseal(data, knobs=knobs[:4]), "knobs"),
        "symbols crc": (reseal(data, symbols_crc=1), "tile knobs"),
        "another model": (reseal(data, model_tag=b"another!"), "another model"),
        "image size": (reseal(data, height=4000, width=5000), "codec limit"),
        "tile of another size": (
            reseal(data, streams=[*streams[:2], other_size, *streams[3:]]),
            "tile 3 of 6",
        ),
        "tile corrupt inside": (
            reseal(data, streams=[*streams[:3], bytes(flipped), *streams[4:]]),
            "tile 4 of 6",
        ),
        "tile not a file": (reseal(data, streams=[b"junk", *streams[1:]]), "tile 1 of 6"),
    }


def test_bad_tiled_files_are_refused_quickly_with_one_line(model, tiled_file) -> None:
    for name, (bad, words) in forged_variants(tiled_file, model).items():
        start = time.perf_counter()
        with pytest.raises(BitstreamError) as info:
            model.decompress(bad)
        assert time.perf_counter() - start < 1.0, name
        assert words in str(info.value) and "\n" not in str(info.value), (name, str(info.value))


def test_every_truncation_is_refused(model, tiled_file) -> None:
    for n in range(0, len(tiled_file), max(1, len(tiled_file) // 97)):
        with pytest.raises(BitstreamError):
            model.decompress(tiled_file[:n])


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_compresses_describes_and_decompresses_a_tiled_file(model, small_tiles, image, tmp_path, capsys):
    from hvq.data import load_image, save_image

    ckpt = tmp_path / "smoke.pt"
    save_checkpoint(ckpt, load_config("smoke"), model)
    save_image(image, tmp_path / "in.png")
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "a.hvq"), "--model", str(ckpt)]) == 0
    assert main(["info", str(tmp_path / "a.hvq")]) == 0
    out = capsys.readouterr().out
    assert "tiles: 2 x 3" in out and "index fine" in out and "tile 6" in out and "(every tile)" in out
    assert main(["decompress", str(tmp_path / "a.hvq"), str(tmp_path / "b.png"), "--model", str(ckpt)]) == 0
    assert load_image(tmp_path / "b.png").shape == (3, HEIGHT, WIDTH)


def png_bomb(path: Path, side: int) -> None:
    """An RGB PNG of ``side x side`` black pixels, compressed row by row (no pixel array is made)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte 0, then the row
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_cli_refuses_an_8000x8000_png_bomb_from_its_header(tmp_path, capsys) -> None:
    bomb = tmp_path / "bomb.png"
    png_bomb(bomb, 8000)
    assert bomb.stat().st_size < 300_000
    start = time.perf_counter()
    code = main(["compress", str(bomb), str(tmp_path / "out.hvq")])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and seconds < 1.0, seconds
    assert err.startswith("hvq: error: ") and err.count("\n") == 1 and str(MAX_CODEC_PIXELS) in err
    assert not (tmp_path / "out.hvq").exists()


# ------------------------------------------------------------------------------------------- memory

MEMORY_CHECK = textwrap.dedent(
    """
    import json, resource, sys, torch
    torch.set_num_threads(2)

    def peak_rss_mb():
        # VmHWM is this program's own peak: ru_maxrss would also count the pytest process it was
        # forked from (Linux keeps the larger of the two across exec).
        try:
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import hvq
    from hvq import tiles
    height, width = int(sys.argv[1]), int(sys.argv[2])
    model = hvq.load_pretrained("reduced")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    x = torch.stack([xx, yy, 0.5 + 0.3 * torch.sin(6 * xx + 4 * yy)]).clamp(0, 1)
    del yy, xx
    data = model.compress(x)
    x_hat = model.decompress(data)
    grid, _ = tiles.read_tiles(data, model.model_tag())
    print(json.dumps({
        "grid": grid.shape, "shape": tuple(x_hat.shape), "mse": float((x_hat - x).pow(2).mean()),
        "max_rss_mb": peak_rss_mb(),
    }))
    """
)


@pytest.mark.slow
def test_an_8_megapixel_photo_codes_in_bounded_memory() -> None:
    """3264x2448 (8 MP) with the shipped model: compress and decompress in one process stay under
    1.9 GB of peak RSS. The whole-image codec took 7.1 GB at 12 MP; with tiles the peak is the model
    (about 0.5 GB), one tile's coding and about 24 bytes per pixel of image buffers. 12 MP took 4.7
    minutes on the shared 2-core development machine, so the test codes 8 MP, against 2 GB less the
    buffers of the 4 MP fewer."""
    height, width = 2448, 3264
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CHECK, str(height), str(width)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["grid"] == [3, 4] and found["shape"] == [3, height, width]
    assert found["mse"] < 0.01  # the smooth image comes back (PSNR above 20 dB)
    assert found["max_rss_mb"] < 1900, found
