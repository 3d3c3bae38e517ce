"""Every code example in the docstrings and the README's Python block runs (constriction's
test_docexamples, vector-quantize-pytorch's test_readme)."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

from hvq.data import kodak_images

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module", ["hvq.probability", "hvq.model", "hvq"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_python_block_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    usage = next(b for b in blocks if "load_pretrained" in b)
    kodim23 = next(p for p in kodak_images() if p.stem == "kodim23")
    (tmp_path / "kodim23.png").symlink_to(kodim23)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(usage, "README.md", "exec"), namespace)
    x, x_hat, data = namespace["x"], namespace["x_hat"], namespace["data"]
    assert x_hat.shape == x.shape
    assert abs(8 * len(data) / (x.shape[1] * x.shape[2]) - 0.25) <= 0.02 * 0.25  # the target_bpp line
