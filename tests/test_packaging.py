"""Set-up stays consistent: one dependency list in pyproject, mirrored by environment.yml; README,
Makefile and CI agree on the two commands; notebooks install the kit the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_mirrors_pyproject():
    proj = _pyproject()["project"]
    extras = proj["optional-dependencies"]
    wanted = {_name(r) for r in proj["dependencies"]} | {
        _name(r) for k in ("test", "anchors", "notebooks") for r in extras[k]
    }
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_name(r) for r in pip_list if not r.startswith("-e")}
    assert have == wanted, f"missing in environment.yml: {wanted - have}; extra: {have - wanted}"


def test_torch_pins_live_in_constraints_and_match_environment():
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert set(pins) == {"torch", "torchvision"}
    env = (ROOT / "environment.yml").read_text()
    for name, version in pins.items():
        assert f"{name}=={version}" in env
    deps = " ".join(_pyproject()["project"]["dependencies"])
    assert "torch==" not in deps, "pyproject must not pin torch (Colab keeps its own)"


def test_readme_opens_with_the_two_make_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_notebooks_have_no_outputs_and_install_the_same_way():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, nb_path.name
        source = "".join("".join(c["source"]) for c in nb["cells"])
        assert "git+https://github.com/hvq-kit/hvq" in source, nb_path.name
        assert "colab-badge" in source, nb_path.name


def test_no_bytecode_or_bulky_data_tracked():
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert not [
        f for f in files if f.lower().endswith((".png", ".jpg", ".jpeg")) and not f.startswith("figures/")
    ]
