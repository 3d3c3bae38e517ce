"""LPIPS reproduces the official LPIPS-alex v0.1 values; a missing backbone is never silent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvq.data import default_data_dir
from hvq.perceptual import LPIPS, lpips_weights_path

CALIBRATION = default_data_dir() / "lpips" / "calibration"


def _load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(
        2, 0, 1
    )


@pytest.mark.skipif(not CALIBRATION.exists(), reason="needs the shared LPIPS calibration pairs")
def test_reproduces_official_lpips_values():
    metric = LPIPS()
    with open(CALIBRATION / "expected.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    for row in rows:
        ref = _load(CALIBRATION / "ref" / f"{row['pair']}.bmp")[None]
        dist = _load(CALIBRATION / "dist" / f"{row['pair']}.bmp")[None]
        value = metric(ref, dist).item()
        assert value == pytest.approx(float(row["lpips_alex_v0.1_official"]), abs=1e-3), row["pair"]


def test_lpips_is_frozen_and_differentiable_wrt_input():
    metric = LPIPS()
    assert all(not p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.net.training
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    metric(x, torch.rand(1, 3, 64, 64)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_explicit_missing_weights_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        lpips_weights_path(tmp_path / "nothing.pth")


def test_wrong_weights_file_fails_loudly(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"net.slice1.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError):
        LPIPS(bad)
