"""The package's layering: no import cycle anywhere in ``hvq/`` (lazy imports inside functions
included), and no module imports another module's private (``_x``) names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hvq"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """``(imported hvq module, [names])`` for every import statement in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hvq"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("hvq")]
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> hvq modules it imports (a ``from hvq import x`` of a submodule counts as ``hvq.x``).
    A package's ``__init__`` is left out as a target: importing ``hvq.nets.router`` runs it anyway, and
    the package re-exports its own submodules."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, names in imports_of(path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for t in subs or [target]:
                if t in modules and not (t == "hvq" or path.name == "__init__.py" and t.startswith(mod)):
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if colour.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in colour and (cycle := visit(n)):
                return cycle
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(graph):
        if m not in colour and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert "hvq.bitstream" in graph["hvq.model"]  # and sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_no_private_name_crosses_a_module(path: Path) -> None:
    private = [f"{mod}.{n}" for mod, names in imports_of(path) for n in names if n.startswith("_")]
    assert not private, f"{module_name(path)} imports private names {private}"


def test_codec_layers_point_down() -> None:
    """The bitstream codec imports no network and no model; rate control sits on the model, never the
    reverse."""
    graph = import_graph()
    assert not {"hvq.model", "hvq.nets.encoder", "hvq.nets.decoder"} & graph["hvq.bitstream"]
    assert "hvq.ratecontrol" not in graph["hvq.model"]
    assert "hvq.model" in graph["hvq.ratecontrol"]


def test_readme_names_every_module() -> None:
    """README's "What is where" names every module of the package (a folder covers its files), and
    every path it names exists."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(hvq/[\w/]+(?:\.py)?/?)`", section))
    assert named, "no module paths found in README's What is where"
    for path in named:
        assert (PACKAGE.parent / path).exists(), f"README names {path}, which does not exist"
    folders = {p.rstrip("/") for p in named if p.endswith("/")}
    for module in PACKAGE.rglob("*.py"):
        rel = module.relative_to(PACKAGE.parent).as_posix()
        if module.name == "__init__.py" or module.name == "__main__.py":
            continue
        covered = rel in named or any(rel.startswith(f + "/") for f in folders)
        assert covered, f"README's What is where does not name {rel}"
