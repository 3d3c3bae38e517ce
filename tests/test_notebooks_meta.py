"""The notebooks' Colab badges and install cells agree with the one repository address in pyproject.toml,
the install cell keeps Colab's own packages, and benchmarks/set_repo_url.py moves everything at once."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BADGE = re.compile(
    r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/main/notebooks/([^\s)]+)"
)
GITHUB = re.compile(r"https://(?:github\.com|raw\.githubusercontent\.com)/([A-Za-z0-9-]+/[A-Za-z0-9._-]+)")


def _script():
    spec = importlib.util.spec_from_file_location("set_repo_url", ROOT / "benchmarks" / "set_repo_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repository_url(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _install_cell(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text())["cells"]
    install = [c for c in cells if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
    assert len(install) == 1, f"{nb_path.name}: expected one install cell, found {len(install)}"
    return "".join(install[0]["source"])


def _check_addresses(root: Path, url: str) -> None:
    """Every badge, install cell and GitHub address in the notebooks and README names ``url``."""
    repo = url.removeprefix("https://github.com/")
    for nb_path in sorted((root / "notebooks").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"])
        badges = BADGE.findall(text)
        assert badges == [(repo, nb_path.name)], f"{nb_path.name}: badge {badges} is not itself in {repo}"
        assert f"git+{url}" in _install_cell(nb_path), f"{nb_path.name}: install cell does not install {url}"
        assert set(GITHUB.findall(text)) <= {repo}, f"{nb_path.name}: names another repository"
    readme = (root / "README.md").read_text()
    assert f'pip install -q --no-deps "git+{url}"' in readme, "README's Colab block installs another address"


def test_badges_and_install_cells_name_the_repository_in_pyproject():
    url = _repository_url()
    assert re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9._-]+", url)
    assert NOTEBOOKS
    _check_addresses(ROOT, url)


def _run_install_cell(nb_path: Path, monkeypatch, colab: bool, installed: set[str]) -> list[list[str]]:
    """Execute the notebook's install cell with ``subprocess.run`` recorded, as if on Colab (or not)
    with hvq missing and only the distributions named in ``installed`` present."""
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check=False: calls.append(list(cmd)))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "hvq" else find_spec(n, *a))
    present = [d for d in importlib.metadata.distributions() if d.name.lower() in installed]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(present))
    if colab:
        fake = types.ModuleType("google.colab")
        fake.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)
        monkeypatch.setitem(sys.modules, "google.colab", fake)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(_install_cell(nb_path), nb_path.name, "exec"), {})
    return calls


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_install_cell_keeps_colabs_packages_and_adds_only_missing_ones(nb_path, monkeypatch):
    # On Colab, torch, ipywidgets and the rest are preinstalled; lpips and constriction are not.
    colab_has = {"torch", "torchvision", "ipywidgets", "numpy", "pillow", "matplotlib", "pandas", "tqdm"}
    calls = _run_install_cell(nb_path, monkeypatch, colab=True, installed=colab_has)
    assert calls, f"{nb_path.name}: nothing installed on Colab"
    first = calls[0]
    assert first[1:4] == ["-m", "pip", "install"] and "--no-deps" in first
    assert first[-1] == f"git+{_repository_url()}"
    requirements = [req for cmd in calls[1:] for req in cmd[4:] if not req.startswith("-")]
    named = [re.match(r"[\w.-]+", req)[0].lower() for req in requirements]
    assert "lpips" in named and "constriction" in named  # what Colab lacks is installed
    assert not set(named) & colab_has, f"{nb_path.name}: reinstalls Colab's {set(named) & colab_has}"
    assert not any(n in {"pytest", "ruff", "pillow-jxl-plugin"} for n in named)  # no extras


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_install_cell_does_nothing_outside_colab(nb_path, monkeypatch):
    assert _run_install_cell(nb_path, monkeypatch, colab=False, installed=set()) == []


def test_set_repo_url_moves_every_address(tmp_path, capsys):
    notebooks = [f"notebooks/{p.name}" for p in NOTEBOOKS]
    for rel in ("pyproject.toml", "README.md", "hvq/plots/rd.py", *notebooks):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    script = _script()
    old = script.repository(tmp_path)
    assert script.main(["someone/hvq-fork"], root=tmp_path) == 0
    assert _repository_url(tmp_path) == "https://github.com/someone/hvq-fork"
    _check_addresses(tmp_path, "https://github.com/someone/hvq-fork")
    results_url = "raw.githubusercontent.com/someone/hvq-fork/main/results"
    assert results_url in (tmp_path / "hvq/plots/rd.py").read_text()
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or f"/{old}" not in path.read_text(), path
    capsys.readouterr()
    assert script.main(["someone/hvq-fork"], root=tmp_path) == 0  # a second run changes nothing
    assert "(0 files changed)" in capsys.readouterr().out
    assert script.main(["not a repository"], root=tmp_path) == 2
    assert capsys.readouterr().err.startswith("set_repo_url: error: ")
