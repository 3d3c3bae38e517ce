"""The codec on the integer hyper-synthesis: lambda travels as a grid index, the FiLM tables travel in
the weights file, and weights saved before them still load and code identically."""

from __future__ import annotations

import struct

import fuzzing as fz  # tests/fuzzing.py
import pytest
import torch

from hvq.container import Container
from hvq.errors import BitstreamError
from hvq.model import FILM_KEYS, HVQCodec
from hvq.nets.integer import LAMBDA_STEPS


@pytest.fixture(scope="module")
def model() -> HVQCodec:
    return fz.build_smoke_model()


def test_the_file_carries_lambda_as_a_grid_index(model) -> None:
    x = fz.synthetic_image(48, 64, seed=1)
    data = model.compress(x, lam=1.41, coarse_ratio=0.3, medium_ratio=0.5)
    index = Container.from_bytes(data).knobs[0]
    assert index == round(index) and 0 <= index < LAMBDA_STEPS
    assert index == model.lambda_index(1.41)
    assert model.grid_lambda(int(index)) == pytest.approx(1.41, rel=0.01)  # 256 steps over 0.25..8
    # The codec works at the grid's lambda: coding at that lambda gives the same file.
    assert model.compress(x, lam=model.grid_lambda(int(index)), coarse_ratio=0.3, medium_ratio=0.5) == data


@pytest.mark.parametrize("value", [127.5, -1.0, float(LAMBDA_STEPS), float("nan"), float("inf")])
def test_a_lambda_knob_off_the_grid_is_refused(model, value) -> None:
    data = bytearray(model.compress(fz.synthetic_image(32, 32, seed=2), lam=2.0))
    struct.pack_into("<f", data, fz.KNOBS_AT, value)
    with pytest.raises(BitstreamError, match="knob"):
        model.decompress(fz.reseal(data))


def test_weights_without_film_tables_load_and_code_identically(model) -> None:
    state = {k: v for k, v in model.state_dict().items() if k not in FILM_KEYS}
    older = HVQCodec(model.cfg).eval()
    older.load_state_dict(state)  # as written before the integer hyper-synthesis
    for key in FILM_KEYS:
        assert torch.equal(getattr(older, key), getattr(model, key))
    assert bool(older.film_gamma_q.any())
    assert older.model_tag() == model.model_tag()
    x = fz.synthetic_image(40, 40, seed=3)
    assert older.compress(x, lam=0.5) == model.compress(x, lam=0.5)


def test_empty_film_tables_are_refused_like_empty_z_tables(model) -> None:
    fresh = HVQCodec(model.cfg).eval()
    fresh.load_state_dict(model.state_dict())
    fresh.film_gamma_q.zero_()
    with pytest.raises(RuntimeError, match="update"):
        fresh.compress(fz.synthetic_image(32, 32, seed=4), lam=1.0)
