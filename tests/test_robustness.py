"""Second reliability pass: no stale caches, no tracebacks for bad checkpoints or configs, and a model
tag that does not depend on torch's default dtype."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hvq.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from hvq.config import Config, load_config
from hvq.errors import BitstreamError, CheckpointError
from hvq.model import HVQCodec


@pytest.fixture()
def smoke_ckpt(tmp_path):
    cfg = load_config("smoke")
    torch.manual_seed(0)
    model = HVQCodec(cfg.model).eval()
    model.update()
    path = tmp_path / "smoke.pt"
    save_checkpoint(path, cfg, model)
    return path, cfg, model


def test_load_state_dict_forgets_the_old_tag_and_tables(smoke_ckpt):
    path, cfg, model = smoke_ckpt
    x = torch.rand(3, 32, 32)
    torch.manual_seed(1)
    other = HVQCodec(cfg.model).eval()
    other.update()
    data_other = other.compress(x, lam=2.0)
    model.compress(x, lam=2.0)  # fills the caches with the first weights
    model.load_state_dict(other.state_dict())
    assert model.model_tag() == other.model_tag()
    assert torch.equal(model.decompress(data_other), other.decompress(data_other))


def test_tag_and_decoding_do_not_depend_on_the_default_dtype(smoke_ckpt):
    path, _, _ = smoke_ckpt
    model, _, _ = model_from_checkpoint(path)
    data = model.compress(torch.rand(3, 32, 32), lam=2.0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again, _, _ = model_from_checkpoint(path)
    finally:
        torch.set_default_dtype(previous)
    assert again.model_tag() == model.model_tag()
    assert torch.equal(again.decompress(data), model.decompress(data))


@pytest.mark.parametrize("drop", ["config", "model"])
def test_checkpoint_without_config_or_model_is_refused(smoke_ckpt, tmp_path, drop):
    path, _, _ = smoke_ckpt
    state = torch.load(path, weights_only=True)
    del state[drop]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="'config' and 'model'"):
        load_checkpoint(bad)


def test_unsafe_checkpoint_error_never_advises_unsafe_loading(tmp_path):
    bad = tmp_path / "pickle.pt"
    torch.save({"kind": "hvq-checkpoint", "obj": Config()}, bad)  # a Python object: refused
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "field, value", [("codebook_size", "1024"), ("codebook_size", 2**31), ("embed_dim", 4.5), ("widths", 3)]
)
def test_config_fields_of_the_wrong_type_or_size_are_refused(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        Config.from_dict({"model": {field: value}})


def test_config_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ValueError, match="mapping"):
        Config.from_dict({"model": [1, 2]})


def test_checkpoint_with_a_bad_config_is_a_checkpoint_error(smoke_ckpt, tmp_path):
    path, _, _ = smoke_ckpt
    state = torch.load(path, weights_only=True)
    state["config"]["model"]["codebook_size"] = "1024"
    bad = tmp_path / "badcfg.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="codebook_size"):
        model_from_checkpoint(bad)


def test_model_only_checkpoint_cannot_be_resumed(smoke_ckpt, tmp_path):
    from hvq.train import train

    path, cfg, _ = smoke_ckpt
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="--init-from"):
        train(cfg, run, steps=1, progress=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "download", "nosuch"], "unknown dataset 'nosuch'"),
        (["decompress", "x.hvq", "y.png"], "x.hvq"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "hvq", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hvq: error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_corrupt_colour_offset_never_reaches_the_pixels(smoke_ckpt):
    from hvq.container import Container

    _, _, model = smoke_ckpt
    c = Container.from_bytes(model.compress(torch.rand(3, 16, 16), lam=2.0))
    c.knobs = (*c.knobs[:3], float("inf"), 0.0, 0.0)
    with pytest.raises(BitstreamError):
        model.decompress(c.to_bytes())
