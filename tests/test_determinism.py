"""Determinism of the real coding path, and what happens when encoder and decoder disagree.

* The same input gives the same bytes, every time and from a freshly loaded copy of the model.
* The thread count changes nothing: a file encoded with one torch thread decodes with two (and the
  other way round) to identical pixels and identical decoded indices.
* A probability-table mismatch (a decoder whose hyper-synthesis differs by a tiny amount) is reported
  by the decoded-symbols CRC32 as a ``BitstreamError``, never decoded into a wrong image; a difference
  too small to move any table entry decodes to the right indices.
"""

from __future__ import annotations

from collections.abc import Iterator

import fuzzing as fz  # tests/fuzzing.py (pytest puts tests/ on sys.path)
import numpy as np
import pytest
import torch
from helpers import assert_tables_vary, distinct_tables

from hvq.checkpoint import model_from_checkpoint, save_checkpoint
from hvq.config import load_config
from hvq.errors import BitstreamError
from hvq.model import HVQCodec, Symbols

#: (height, width, lam, coarse ratio, medium ratio): big enough for two threads to split the work.
CASES = [(48, 64, 2.0, 0.3, 0.4), (96, 136, 0.5, 0.6, 0.5), (37, 29, 8.0, 0.0, 1.0)]


@pytest.fixture()
def threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the test."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> HVQCodec:
    return fz.build_smoke_model(vary_means=True)


def decode_with_symbols(model: HVQCodec, data: bytes, monkeypatch) -> tuple[torch.Tensor, Symbols]:
    """``model.decompress(data)`` and the decoded :class:`Symbols` (captured at ``synthesize``)."""
    captured: list[Symbols] = []
    real = HVQCodec.synthesize

    def spy(self, sym: Symbols) -> torch.Tensor:
        captured.append(sym)
        return real(self, sym)

    with monkeypatch.context() as m:
        m.setattr(HVQCodec, "synthesize", spy)
        x = model.decompress(data)
    assert len(captured) == 1
    return x, captured[0]


def assert_same_symbols(a: Symbols, b: Symbols) -> None:
    for g in range(3):
        assert torch.equal(a.masks[g], b.masks[g])
        assert torch.equal(a.z_hat[g], b.z_hat[g])
        assert torch.equal(a.indices[g], b.indices[g])
        assert np.array_equal(a.freqs[g], b.freqs[g])


@pytest.mark.parametrize("h, w, lam, rc, rm", CASES)
def test_same_input_same_bytes(model, h, w, lam, rc, rm, tmp_path) -> None:
    x = fz.synthetic_image(h, w, seed=h)
    first = model.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm)
    assert model.compress(x.clone(), lam=lam, coarse_ratio=rc, medium_ratio=rm) == first
    path = tmp_path / "m.pt"
    save_checkpoint(path, load_config("smoke"), model)
    reloaded, _, _ = model_from_checkpoint(path)
    assert reloaded.model_tag() == model.model_tag()
    assert reloaded.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm) == first


@pytest.mark.parametrize("h, w, lam, rc, rm", CASES)
@pytest.mark.parametrize("enc_threads, dec_threads", [(1, 2), (2, 1)])
def test_thread_count_changes_nothing(
    model, threads, monkeypatch, h, w, lam, rc, rm, enc_threads, dec_threads
):
    x = fz.synthetic_image(h, w, seed=h)
    torch.set_num_threads(1)
    reference = model.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm)
    ref_x, ref_sym = decode_with_symbols(model, reference, monkeypatch)

    torch.set_num_threads(enc_threads)
    assert torch.get_num_threads() == enc_threads
    data = model.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm)
    assert data == reference
    torch.set_num_threads(dec_threads)
    x_hat, sym = decode_with_symbols(model, data, monkeypatch)
    assert torch.equal(x_hat, ref_x)
    assert_same_symbols(sym, ref_sym)
    assert_tables_vary(ref_sym.freqs)  # the tables compared above differ from position to position
    assert torch.equal(x_hat, model.reconstruct(x, lam, rc, rm))


def _perturbed_copy(model: HVQCodec, g: int, delta: float) -> HVQCodec:
    """A copy of ``model`` whose hyper-synthesis ``g`` has its first output bias (a mean) moved by
    ``delta``, with the caches cleared and the original tag kept (so the tag check cannot catch it)."""
    other = HVQCodec(model.cfg).eval()
    other.load_state_dict(model.state_dict())
    tag = model.model_tag()
    other.hyperpriors[g].h_s.out.bias.data[0] += delta
    other._exact_cache = None
    other._tag_cache = tag
    return other


def test_probability_mismatch_is_caught_by_the_symbols_crc(model, monkeypatch) -> None:
    h, w, lam, rc, rm = CASES[0]
    data = model.compress(fz.synthetic_image(h, w, seed=h), lam=lam, coarse_ratio=rc, medium_ratio=rm)
    _, sym = decode_with_symbols(model, data, monkeypatch)
    assert distinct_tables(sym.freqs[0]) > 1  # varied tables (helpers.vary_hyper_tables)
    other = _perturbed_copy(model, g=0, delta=1e-3)
    # The perturbation really changes the fine-granularity index tables for this file's z ...
    freqs, _, _ = other.index_tables(0, sym.z_hat[0], sym.masks[0], model.lambda_index(lam))
    assert freqs.shape == sym.freqs[0].shape and not np.array_equal(freqs, sym.freqs[0])
    # ... and the decoder reports it instead of returning an image.
    with pytest.raises(BitstreamError, match="CRC32") as info:
        other.decompress(data)
    assert "decoded symbols" in str(info.value) and "probability tables differ" in str(info.value)
    assert torch.equal(
        model.decompress(data), model.reconstruct(fz.synthetic_image(h, w, seed=h), lam, rc, rm)
    )


def test_tag_check_comes_first(model) -> None:
    """Without the tag trick, a changed model is refused by its tag before any decoding."""
    h, w, lam, rc, rm = CASES[0]
    data = model.compress(fz.synthetic_image(h, w, seed=h), lam=lam, coarse_ratio=rc, medium_ratio=rm)
    other = _perturbed_copy(model, g=0, delta=1e-3)
    other._tag_cache = None
    with pytest.raises(BitstreamError, match="another model"):
        other.decompress(data)


def test_mismatch_below_the_grid_decodes_the_same_symbols(monkeypatch) -> None:
    """The limit of the CRC: the untrained smoke model predicts mean 0 everywhere, and 1e-3 stays on
    the same 2**-8 grid point, so the tables are identical and the file decodes exactly (a mismatch
    that changes no table cannot, and need not, be detected)."""
    base = fz.build_smoke_model()
    h, w, lam, rc, rm = CASES[0]
    data = base.compress(fz.synthetic_image(h, w, seed=h), lam=lam, coarse_ratio=rc, medium_ratio=rm)
    ref_x, ref_sym = decode_with_symbols(base, data, monkeypatch)
    assert all(distinct_tables(f) == 1 for f in ref_sym.freqs if len(f))  # the premise: one table each
    other = _perturbed_copy(base, g=0, delta=1e-3)
    x_hat, sym = decode_with_symbols(other, data, monkeypatch)
    assert_same_symbols(sym, ref_sym)
    assert torch.equal(x_hat, ref_x)


#: Forces the portable code paths: no AVX in ATen kernels, SSE4.1 in oneDNN, SSE4.2 in MKL.
OLD_CPU_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
}


def symbols_digest(sym: Symbols) -> str:
    """sha256 over every decoded mask, z, index array and frequency table (shapes included)."""
    import hashlib

    digest = hashlib.sha256()
    for part in (*sym.masks, *sym.z_hat, *sym.indices, *sym.freqs):
        array = np.ascontiguousarray(part.cpu().numpy() if isinstance(part, torch.Tensor) else part)
        digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


#: Decodes argv[1] with the shipped model in a fresh interpreter; writes the uint8 image to argv[2] and
#: prints the CPU capability ATen uses and the digest of the decoded symbols.
DECODE_ELSEWHERE = """
import sys
import numpy as np
import torch
import hvq
from hvq.model import HVQCodec, Symbols

SYMBOLS_DIGEST

captured = []
real = HVQCodec.synthesize
HVQCodec.synthesize = lambda self, sym: captured.append(sym) or real(self, sym)
x_hat = hvq.load_pretrained("reduced").decompress(open(sys.argv[1], "rb").read())
np.save(sys.argv[2], x_hat.mul(255).round().to(torch.uint8).numpy())
print(torch.backends.cpu.get_cpu_capability(), symbols_digest(captured[0]))
"""


def test_file_decodes_to_the_same_symbols_on_a_cpu_without_avx(monkeypatch, tmp_path) -> None:
    """Encode here (native SIMD), decode in a subprocess held to SSE-era kernels: the decoded symbols are
    identical (the container's symbol CRC would refuse the file otherwise) and pixels differ by <= 1."""
    import inspect
    import os
    import subprocess
    import sys

    import hvq

    model = hvq.load_pretrained("reduced")
    data = model.compress(fz.synthetic_image(64, 96, seed=7))
    x_hat, sym = decode_with_symbols(model, data, monkeypatch)
    here = x_hat.mul(255).round().to(torch.uint8).numpy()
    (tmp_path / "x.hvq").write_bytes(data)
    script = DECODE_ELSEWHERE.replace("SYMBOLS_DIGEST", inspect.getsource(symbols_digest))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.hvq"), str(tmp_path / "x.npy")],
        env={**os.environ, **OLD_CPU_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    capability, digest = done.stdout.split()
    assert capability == "DEFAULT"  # the variable took effect
    assert digest == symbols_digest(sym)
    there = np.load(tmp_path / "x.npy")
    max_diff = int(np.abs(here.astype(np.int16) - there.astype(np.int16)).max())
    print(f"native {torch.backends.cpu.get_cpu_capability()} vs DEFAULT: max pixel difference {max_diff}")
    assert max_diff <= 1


def test_channels_last_weights_change_rounding_only(monkeypatch) -> None:
    """``load_pretrained`` keeps the CPU model's network weights channels-last (faster convolutions):
    same model tag, a file of either layout decodes to the same symbols under the other, and the two
    reconstructions of one file differ by float rounding (at most one level after 8-bit rounding)."""
    import hvq
    from hvq.checkpoint import model_from_checkpoint
    from hvq.pretrained import PRETRAINED_DIR

    fast = hvq.load_pretrained("reduced")
    plain, _, _ = model_from_checkpoint(PRETRAINED_DIR / "reduced.pt")
    conv = fast.decoder.conv_out.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.decoder.conv_out.weight.is_contiguous()
    assert fast.model_tag() == plain.model_tag()
    image = fz.synthetic_image(64, 96, seed=11)
    for data in (fast.compress(image), plain.compress(image)):
        x_fast, sym_fast = decode_with_symbols(fast, data, monkeypatch)
        x_plain, sym_plain = decode_with_symbols(plain, data, monkeypatch)
        assert symbols_digest(sym_fast) == symbols_digest(sym_plain)
        assert float((x_fast - x_plain).abs().max()) < 1e-3
