"""Training: the loss falls, the log records every term, and a killed run resumes from its checkpoint."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from hvq.checkpoint import load_checkpoint
from hvq.config import load_config
from hvq.train import LOG_FIELDS, init_weights_from, lr_at, sample_knobs, train


@pytest.fixture()
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "imgs"
    folder.mkdir(parents=True)
    for i in range(3):
        yy, xx = np.mgrid[0:96, 0:96]
        img = np.stack([xx * 2, yy * 2, (xx + yy)], -1) + rng.integers(0, 40, (96, 96, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "data"


def _cfg():
    cfg = load_config("smoke")
    cfg.train.data_dirs = ("imgs",)
    cfg.train.ckpt_every = 2
    cfg.train.log_every = 1
    cfg.train.amp = False
    return cfg


class Killed(Exception):
    pass


def test_killed_run_resumes_from_last_checkpoint(tmp_path, data_dir):
    cfg = _cfg()
    run = tmp_path / "run"

    def kill_at_5(row):
        if row["step"] == 5:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, run, data_dir=data_dir, steps=8, callback=kill_at_5, progress=False)
    state = load_checkpoint(run / "checkpoint.pt", expect_config=cfg)
    assert state["step"] == 4  # lost at most one checkpoint interval (2 steps)
    adam_steps = {int(s["step"]) for s in state["opt"]["state"].values()}
    assert adam_steps == {4}
    train(cfg, run, data_dir=data_dir, steps=6, progress=False)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 6
    assert {int(s["step"]) for s in state["opt"]["state"].values()} == {6}  # optimiser state restored
    with open(run / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(LOG_FIELDS)
    assert [int(r["step"]) for r in rows][-2:] == [5, 6]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_lr_schedule_and_knob_sampling():
    cfg = load_config("reduced")
    assert lr_at(cfg, 0) < lr_at(cfg, cfg.train.warmup_steps) == pytest.approx(cfg.train.lr)
    assert lr_at(cfg, cfg.train.steps) == pytest.approx(cfg.train.lr_min)
    lam, rc, rm = sample_knobs(cfg, 1000, torch.Generator().manual_seed(0))
    assert lam.min() >= cfg.model.lambda_min and lam.max() <= cfg.model.lambda_max
    assert (lam.log().mean() - np.log(np.sqrt(cfg.model.lambda_min * cfg.model.lambda_max))).abs() < 0.2
    assert rc.min() >= cfg.train.coarse_ratio[0] and rc.max() <= cfg.train.coarse_ratio[1]


def test_init_from_copies_matching_weights_for_an_ablation(tmp_path, data_dir):
    import dataclasses

    from hvq.checkpoint import model_from_checkpoint
    from hvq.model import HVQCodec

    cfg = _cfg()
    source = train(cfg, tmp_path / "base", data_dir=data_dir, steps=2, progress=False)
    base, _, _ = model_from_checkpoint(source)
    plain = dataclasses.replace(cfg.model, adaptive_decoder=False)  # the decoder's input layers change
    model = HVQCodec(plain)
    loaded, skipped = init_weights_from(model, source)
    assert loaded > 0 and skipped and all(name.startswith("decoder.branch_in") for name in skipped)
    assert torch.equal(model.encoder.stem.weight, base.encoder.stem.weight)
    cfg.model = plain
    ckpt = train(cfg, tmp_path / "ablation", data_dir=data_dir, steps=2, progress=False, init_from=source)
    assert load_checkpoint(ckpt)["step"] == 2


def test_colour_loss_sees_colour_casts_that_keep_the_texture():
    from hvq.train import colour_loss

    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(colour_loss(x, x), torch.zeros(2))
    wobble = x + 0.05 * torch.sign(torch.randn_like(x))  # texture noise: block means nearly kept
    cast = x.clone()
    cast[1, 1] += 0.05  # image 1: a green cast of about 13 levels
    assert colour_loss(cast, x)[1] > 20 * colour_loss(wobble, x)[1]
    assert colour_loss(cast, x)[0] == 0


def test_mse_weight_leans_to_psnr_at_the_top_of_the_lambda_range():
    from hvq.train import mse_weights

    cfg = load_config("reduced")
    lo, hi = cfg.model.lambda_min, cfg.model.lambda_max
    lam = torch.tensor([lo, (lo * hi) ** 0.5, hi])
    assert torch.allclose(mse_weights(cfg, lam), torch.full((3,), cfg.train.mse_weight))  # power 0: flat
    cfg.train.mse_lambda_power = 0.5
    w = mse_weights(cfg, lam)
    assert w[0] < w[1] < w[2]
    assert w[1] == pytest.approx(cfg.train.mse_weight)
    assert w[2] / w[1] == pytest.approx((hi / (lo * hi) ** 0.5) ** 0.5)


def test_time_budget_ends_training_and_drives_the_schedule(tmp_path, data_dir):
    cfg = _cfg()
    cfg.train.time_budget_s = 3.0
    cfg.train.ckpt_every = 10**6
    train(cfg, tmp_path / "run", data_dir=data_dir, steps=10**6, progress=False)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert 0 < state["step"] < 10**6 and state["wall_s"] >= 3.0
    assert lr_at(cfg, 10**6, time_frac=0.0) == pytest.approx(cfg.train.lr)
    assert lr_at(cfg, 0 + cfg.train.warmup_steps, time_frac=1.0) == pytest.approx(cfg.train.lr_min)


def test_a_non_finite_step_is_counted_logged_and_leaves_the_weights(tmp_path, data_dir, monkeypatch):
    import hvq.train as train_module

    real = train_module._generator_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(train_module, "_generator_loss", poisoned)
    rows = []
    cfg = _cfg()
    cfg.train.ckpt_every = 1
    train(cfg, tmp_path / "run", data_dir=data_dir, steps=3, callback=rows.append, progress=False)
    assert [r["step"] for r in rows] == [1, 2, 3]  # the bad step is a logged step, not a silent retry
    assert [r["skipped"] for r in rows] == [0, 1, 1]
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert {int(s["step"]) for s in state["opt"]["state"].values()} == {2}  # no update from the bad batch
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_decoder_only_run_leaves_encoder_codebook_and_hyperpriors_as_they_were(tmp_path, data_dir):
    from hvq.checkpoint import model_from_checkpoint

    cfg = _cfg()
    source = train(cfg, tmp_path / "base", data_dir=data_dir, steps=2, progress=False)
    cfg.train.trainable = ("decoder", "embed_dec")
    cfg.train.restart_every = 1  # would move the codebook if codes were learning
    ckpt = train(cfg, tmp_path / "dec", data_dir=data_dir, steps=3, progress=False, init_from=source)
    before, after = (dict(model_from_checkpoint(p)[0].named_parameters()) for p in (source, ckpt))
    learning = {name for name in before if name.split(".")[0] in cfg.train.trainable}
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved & learning, "the decoder did not learn"
    assert moved <= learning  # the codebook (a parameter) included
    cfg.train.trainable = ("decodr",)
    with pytest.raises(ValueError, match="decodr"):
        train(cfg, tmp_path / "typo", data_dir=data_dir, steps=1, progress=False)


def test_all_fine_share_sets_both_ratios_to_zero_for_that_share_of_images():
    cfg = load_config("reduced")
    plain = sample_knobs(cfg, 2000, torch.Generator().manual_seed(0))
    cfg.train.all_fine_share = 0.25
    lam, rc, rm = sample_knobs(cfg, 2000, torch.Generator().manual_seed(0))
    both_zero = ((rc == 0) & (rm == 0)).float().mean().item()
    assert 0.2 < both_zero < 0.3
    assert torch.equal(lam, plain[0])  # the other knobs keep their draws
    assert torch.equal(rc[rc > 0], plain[1][rc > 0])


def test_lambda_max_share_puts_that_share_of_images_at_lambda_max():
    cfg = load_config("reduced")
    cfg.train.all_fine_share = 0.0
    plain = sample_knobs(cfg, 2000, torch.Generator().manual_seed(0))
    cfg.train.lambda_max_share = 0.2
    lam, rc, rm = sample_knobs(cfg, 2000, torch.Generator().manual_seed(0))
    at_max = lam == cfg.model.lambda_max
    assert 0.15 < at_max.float().mean().item() < 0.25
    assert torch.equal(lam[~at_max], plain[0][~at_max])  # the rest keep their draws
    assert torch.equal(rc, plain[1]) and torch.equal(rm, plain[2])


def test_sampled_regions_of_interest_are_boxes_in_their_share_of_images(tmp_path, data_dir):
    from hvq.nets import route
    from hvq.train import sample_roi

    cfg = load_config("reduced")
    assert sample_roi(cfg, 4, 64, 64, torch.Generator()) is None
    cfg.train.roi_share = 0.5
    roi = sample_roi(cfg, 400, 64, 96, torch.Generator().manual_seed(0))
    has_box = roi.flatten(1).amax(1) > 0
    assert 0.4 < has_box.float().mean() < 0.6
    for r in roi[has_box][:20, 0]:
        rows, cols = torch.nonzero(r.sum(1)).flatten(), torch.nonzero(r.sum(0)).flatten()
        assert r.sum() == len(rows) * len(cols)  # one filled rectangle
        assert 16 <= len(rows) <= 32 and 24 <= len(cols) <= 48
    x = torch.rand(3, 3, 64, 96)
    fine = route(x, 0.9, 0.9, roi[has_box][:3])[2]
    assert (fine >= (torch.nn.functional.max_pool2d(roi[has_box][:3], 4) > 0).float()).all()
    cfg = _cfg()
    cfg.train.roi_share = 1.0
    ckpt = train(cfg, tmp_path / "roi", data_dir=data_dir, steps=2, progress=False)
    assert load_checkpoint(ckpt)["step"] == 2
