"""Fuzzing the decoder (CI slice): every mutated ``.hvq`` input decodes or raises ``BitstreamError``.

The corpus and the time-bounded decode live in ``tests/fuzzing.py``; the long run (>= 10,000 inputs in
rlimited worker processes) is ``benchmarks/fuzz_decoder.py``. Here: 540 inputs through
``model.decompress`` (every mutation kind equally), 62 through ``hvq decompress``, and checks of the
harness itself (a fuzzer that cannot report a failure proves nothing).
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import Counter
from pathlib import Path

import fuzzing as fz  # tests/fuzzing.py (pytest puts tests/ on sys.path)
import pytest
import torch
from PIL import Image

import hvq.bitstream
from hvq.checkpoint import save_checkpoint
from hvq.cli import main
from hvq.config import load_config
from hvq.errors import BitstreamError

#: Inputs through model.decompress (a multiple of the number of kinds, so each kind gets 20).
N_API = 20 * len(fz.MUTATIONS)
#: Inputs through the CLI: two of each kind (plus 8), drawn from another part of the corpus.
N_CLI = 2 * len(fz.MUTATIONS)
#: Wall-clock bound of one decode (a seed decodes in ~10 ms; the slowest mutation takes ~1 s).
TIME_LIMIT_S = 20.0  # generous: a hang runs forever, a loaded CI machine is merely slow


@pytest.fixture(scope="module")
def model():
    return fz.build_smoke_model()


@pytest.fixture(scope="module")
def seeds(model) -> list[bytes]:
    return fz.make_seed_files(model)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "smoke.pt"
    save_checkpoint(path, load_config("smoke"), model)
    return path


# --------------------------------------------------------------------------------- the corpus


def test_seeds_are_valid_and_decode_to_the_network_output(model, seeds) -> None:
    for spec, data in zip(fz.SEED_SPECS, seeds, strict=True):
        x = fz.synthetic_image(spec.height, spec.width, spec.seed)
        out = fz.run_one(model, data, TIME_LIMIT_S)
        assert out.status == "decoded", out
        assert torch.equal(model.decompress(data), model.reconstruct(x, spec.lam, spec.coarse, spec.medium))
        lay = fz.parse_layout(data)
        assert len(lay.lengths) == 7 and lay.n_knobs == 6  # lambda, two ratios, three colour offsets
        assert fz.rebuild(data, fz.streams_of(data)) == data  # the rebuild helper is exact


def test_corpus_is_deterministic_and_mutates(seeds) -> None:
    a = [c.data for c in fz.corpus(seeds, 3 * len(fz.MUTATIONS))]
    b = [c.data for c in fz.corpus(seeds, 3 * len(fz.MUTATIONS))]
    assert a == b
    assert fz.make_case(seeds, "payload_flip", 7).data == fz.make_case(seeds, "payload_flip", 7).data
    assert fz.make_case(seeds, "payload_flip", 7, seed=1).data != fz.make_case(seeds, "payload_flip", 7).data
    kinds = Counter(c.kind for c in fz.corpus(seeds, N_API))
    assert set(kinds) == set(fz.MUTATIONS) and set(kinds.values()) == {N_API // len(fz.MUTATIONS)}
    changed = Counter(c.kind for c in fz.corpus(seeds, N_API) if c.data not in seeds)
    assert all(changed[k] >= 16 for k in fz.MUTATIONS), changed  # at most a few no-op mutations


def test_resealed_mutations_pass_the_file_crc(seeds) -> None:
    """Header and payload mutations must get past the first check, or they test nothing deep."""
    deep = [k for k in fz.MUTATIONS if k.startswith(("header_", "payload_"))]
    for case in fz.corpus(seeds, 5 * len(deep), kinds=deep):
        body, (crc,) = case.data[:-4], struct.unpack("<I", case.data[-4:])
        assert zlib.crc32(body) == crc, case.kind


# ------------------------------------------------------------------------------- the harness


class _FakeModel:
    """Stands in for the codec to check that run_one classifies every kind of ending."""

    def __init__(self, action) -> None:
        self.action = action

    def decompress(self, data: bytes):
        return self.action(data)


def _header(h: int, w: int) -> bytes:
    return b"\x89HVQ\x01" + struct.pack("<HH", h, w)


def _sleep(data: bytes):
    time.sleep(2)


def _spin(data: bytes):
    while True:
        pass


def _raise(exc: BaseException):
    def action(data: bytes):
        raise exc

    return action


@pytest.mark.parametrize(
    "action, status",
    [
        (lambda d: torch.zeros(3, 2, 3), "decoded"),
        (_raise(BitstreamError("bad")), "BitstreamError"),
        (_raise(KeyError("x")), "error"),
        (_raise(ValueError("not a BitstreamError")), "error"),
        (_raise(MemoryError()), "memory"),
        (_raise(RuntimeError("DefaultCPUAllocator: can't allocate memory")), "memory"),
        (lambda d: torch.zeros(3, 3, 3), "error"),  # wrong size for the header
        (lambda d: torch.full((3, 2, 3), float("nan")), "error"),
        (lambda d: None, "error"),
        (_sleep, "timeout"),
        (_spin, "timeout"),
    ],
)
def test_run_one_classifies(action, status) -> None:
    out = fz.run_one(_FakeModel(action), _header(2, 3), time_limit_s=0.3)
    assert out.status == status, out
    assert out.ok == (status in fz.OK_STATUSES)


def test_run_one_restores_the_alarm_handler() -> None:
    import signal

    before = signal.getsignal(signal.SIGALRM)
    fz.run_one(_FakeModel(_raise(BitstreamError("x"))), _header(1, 1), 1.0)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# -------------------------------------------------------------------------------- the CI slice


def test_fuzz_slice_decodes_or_raises_bitstream_error(model, seeds) -> None:
    failures, statuses = [], Counter()
    for case in fz.corpus(seeds, N_API):
        out = fz.run_one(model, case.data, TIME_LIMIT_S)
        statuses[out.status] += 1
        if not out.ok:
            failures.append(fz.describe(case, out))
    assert not failures, f"{len(failures)} of {N_API} inputs failed:\n" + "\n".join(failures[:20])
    # The slice reaches both outcomes (a corpus that is rejected at the magic tests nothing deep).
    assert statuses["BitstreamError"] > N_API // 2 and statuses["decoded"] > 0, statuses


def test_deep_checks_are_reached(model, seeds) -> None:
    """The resealed mutations reach the range decoder and the decoded-symbols CRC32."""
    messages = Counter()
    deep = [k for k in fz.MUTATIONS if k.startswith("payload_")] + ["header_symbols_crc"]
    for case in fz.corpus(seeds, 20 * len(deep), kinds=deep):
        out = fz.run_one(model, case.data, TIME_LIMIT_S)
        assert out.ok, fz.describe(case, out)
        if out.status == "BitstreamError":
            messages[
                "symbols CRC" if "CRC32" in out.detail and "decoded symbols" in out.detail else "other"
            ] += 1
            messages["range decoder" if "range decoder" in out.detail else "not range decoder"] += 1
    # Counts for this deterministic corpus: ~60 symbols-CRC and ~3 range-decoder rejections of 160
    # (since z is coded only in occupied blocks the seed files' z streams are short, and 80 cases no
    # longer reached the range decoder's rejection).
    assert messages["symbols CRC"] >= 10 and messages["range decoder"] >= 1, messages


@pytest.mark.parametrize("size", [(8192, 8192), (65535, 1024)])
def test_header_above_codec_limit_is_refused_before_decoding(model, seeds, monkeypatch, size) -> None:
    data = bytearray(seeds[-1])
    struct.pack_into("<HH", data, fz.HEIGHT_AT, *size)
    data = fz.reseal(data)

    def no_decoding(*args, **kwargs):
        raise AssertionError(f"decoding started for a {size[0]}x{size[1]} header")

    monkeypatch.setattr(hvq.bitstream.coder, "decode_symbols", no_decoding)
    with pytest.raises(BitstreamError, match="pixels|size"):
        model.decompress(data)


# ------------------------------------------------------------------------------------ the CLI


def test_fuzz_slice_through_the_cli(seeds, checkpoint, tmp_path, capsys) -> None:
    codes = Counter()
    # Two of each kind, and a few of the kinds that often still decode (so that exit 0 is exercised).
    often_decode = ["payload_stream_resize", "header_size_small"]
    cases = [*fz.corpus(seeds, N_CLI, start=100_000), *fz.corpus(seeds, 8, kinds=often_decode, start=200_000)]
    for case in cases:
        work = tmp_path / f"case{case.index}"
        work.mkdir()
        src, out = work / "in.hvq", work / "out.png"
        src.write_bytes(case.data)
        rc = main(["decompress", str(src), str(out), "--model", str(checkpoint)])
        err = capsys.readouterr().err
        codes[rc] += 1
        where = f"{case.kind} #{case.index}"
        assert rc in (0, 2), f"{where}: exit {rc}, stderr {err!r}"
        if rc == 2:
            assert err.count("\n") == 1 and err.startswith("hvq: error: "), f"{where}: {err!r}"
            assert sorted(p.name for p in work.iterdir()) == ["in.hvq"], f"{where}: output left behind"
        else:
            h, w = struct.unpack_from("<HH", case.data, fz.HEIGHT_AT)
            with Image.open(out) as im:
                assert im.size == (w, h) and im.mode == "RGB", where
            assert sorted(p.name for p in work.iterdir()) == ["in.hvq", "out.png"], where
    assert codes[0] >= 2 and codes[2] >= N_CLI // 2, codes


def test_seed_files_decode_through_the_cli(seeds, checkpoint, tmp_path) -> None:
    for spec, data in zip(fz.SEED_SPECS, seeds, strict=True):
        src, out = tmp_path / f"{spec.name}.hvq", tmp_path / f"{spec.name}.png"
        src.write_bytes(data)
        assert main(["decompress", str(src), str(out), "--model", str(checkpoint)]) == 0
        with Image.open(out) as im:
            assert im.size == (spec.width, spec.height) and im.mode == "RGB"
