"""The live demo page: its computation, its widgets, the ``hvq demo --web`` command, and (when Chromium,
Voila and Playwright are installed) the page itself driven in headless Chromium."""

from __future__ import annotations

import fnmatch
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from PIL import Image

import hvq
from hvq.cli import main
from hvq.data import kodak_dir
from hvq.ratecontrol import reachable_bpp
from hvq.webdemo import NOTEBOOK
from hvq.webdemo.app import CSS_CLASSES, RateControlApp, bits_map_png, build_app, rate_move

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def model():
    return hvq.load_pretrained("reduced")


#: Large enough that a file size lands within 2% of a target (64x96 has only 24 coarse cells: 4% steps).
H, W = 128, 192


def flat_left_textured_right(h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    """``(3, h, w)``: a smooth gradient on the left half (routed coarse) and 4x4 noise on the right."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    texture = torch.rand(3, h // 4, w // 4, generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    return (0.6 * torch.stack([xx, yy, 1 - xx]) + 0.4 * texture * (xx > 0.5)).clamp(0, 1)


def band_point(model, x: torch.Tensor, fraction: float) -> float:
    low, high = reachable_bpp(model, x)
    return low + fraction * (high - low)


def test_rate_move_lands_on_the_target_and_maps_the_file_bits(model):
    x = flat_left_textured_right()
    moves = [rate_move(model, x, band_point(model, x, f)) for f in (0.3, 0.7)]
    for move in moves:
        assert abs(move.bpp / move.target_bpp - 1) <= 0.02
        assert move.bpp == 8 * len(move.data) / (H * W)
        assert torch.equal(move.x_hat, model.decompress(move.data))  # the shown image is the file's
        assert move.bits_map.shape == (H, W) and np.isfinite(move.bits_map).all()
        assert 0 < move.bits_map.sum() <= 8 * len(move.data)  # index bits are part of the file
    low, high = moves
    assert len(low.data) < len(high.data) and low.bits_map.sum() < high.bits_map.sum()


def test_rate_move_spends_bits_inside_the_box(model):
    x = flat_left_textured_right()
    target = band_point(model, x, 0.5)
    x0, y0, x1, y1 = 8, 16, 40, 48  # in the flat half, coarse without a region of interest
    plain, with_box = rate_move(model, x, target), rate_move(model, x, target, (x0, y0, x1, y1))
    assert with_box.bits_map[y0:y1, x0:x1].sum() > 2 * plain.bits_map[y0:y1, x0:x1].sum()


def test_bits_map_png_scales_and_outlines_the_box():
    bits = np.zeros((16, 24))
    bits[0, -1] = 5.0  # above the colour scale: saturates
    image = np.asarray(Image.open(io.BytesIO(bits_map_png(bits, box=(8, 4, 16, 12)))))
    assert image.shape == (16, 24, 3)
    assert tuple(image[4, 8]) == (0, 255, 0) and tuple(image[11, 15]) == (0, 255, 0)
    assert image[0, 0].max() < 10 and image[0, -1].sum() > image[0, 0].sum() + 300  # black .. bright


def test_app_reports_missing_kodak_in_one_message(tmp_path):
    widget = build_app(data_dir=tmp_path)
    assert CSS_CLASSES["error"] in widget._dom_classes
    assert "hvq data download kodak" in widget.value


def test_app_moves_when_a_control_changes(model):
    try:
        directory = kodak_dir()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"Kodak images needed: {exc}")
    app = RateControlApp(model, {n: directory / f"{n}.png" for n in ("kodim04", "kodim23")}, long_side=96)
    assert app.moves == 1 and "id='hvq-bpp'" in app.readout.value
    shown = (app.readout.value, app.reconstruction.value)
    app.target.value = app.target.max  # high enough for any box
    assert app.moves == 2 and (app.readout.value, app.reconstruction.value) != shown, app.status.value
    app.roi_x.value = (0, 32)  # the box moves nothing while the region of interest is off
    assert app.moves == 2 and app.roi_x.disabled
    app.roi.value = True
    assert app.moves == 3 and not app.roi_x.disabled, app.status.value
    app.image.value = "kodim23"  # 96x64: the box sliders follow the new size
    assert (app.roi_x.max, app.roi_y.max) == (96, 64)
    after_switch = app.moves  # the kept target may lie below this image's band with the box: one line
    assert after_switch == 4 or "reachable range" in app.status.value, app.status.value
    # High enough for the centred box, and a change: the kept target may already be this band's top.
    top = app.target.max
    app.target.value = top if app.target.value != top else top - app.target.step
    assert app.moves == after_switch + 1, app.status.value
    assert app.reconstruction.layout.width == "96px"


def test_demo_notebook_ships_with_the_package_and_builds_the_app():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = NOTEBOOK.relative_to(ROOT / "hvq").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data["hvq"])
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    source = "".join("".join(c["source"]) for c in code)
    assert "build_app(" in source and "pip install" not in source


def pretend_voila(monkeypatch, installed: bool) -> None:
    """Make ``importlib.util.find_spec("voila")`` say that Voila is (or is not) installed."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args):
        if name == "voila":
            return object() if installed else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_demo_web_without_voila_says_which_extra(monkeypatch, capsys):
    pretend_voila(monkeypatch, installed=False)
    assert main(["demo", "--web", "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "hvq[web]"' in err


def test_demo_web_hands_the_shipped_notebook_to_voila(monkeypatch, tmp_path):
    pretend_voila(monkeypatch, installed=True)
    calls = []

    def fake_run(command: list[str], env: dict, check: bool) -> subprocess.CompletedProcess:
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert main(["demo", "--web", "--port", "9123", "--no-browser", "--data-dir", str(tmp_path)]) == 0
    (command, env), = calls
    assert command[:4] == [sys.executable, "-m", "voila", str(NOTEBOOK)]
    assert "--port=9123" in command and "--no-browser" in command
    assert env["HVQ_DATA_DIR"] == str(tmp_path.resolve()) and env["HVQ_DEMO_MODEL"] == "reduced"


def _browser_check_skip_reason() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if importlib.util.find_spec("voila") is None or importlib.util.find_spec("playwright") is None:
        return 'voila or playwright missing (pip install "hvq[web]")'
    try:
        kodak_dir()
    except (FileNotFoundError, ValueError) as exc:
        return f"Kodak images needed: {exc}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_browser_check_skip_reason() is not None, reason=str(_browser_check_skip_reason()))
def test_page_answers_the_slider_in_headless_chromium(tmp_path):
    """benchmarks/web_demo_check.py end to end: serve, open, move the slider, tick the region."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "web_demo_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout
    assert (tmp_path / "before.png").is_file() and (tmp_path / "after.png").is_file()
