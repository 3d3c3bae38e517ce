"""Point the kit at another GitHub repository, e.g. your fork:

    python benchmarks/set_repo_url.py OWNER/NAME

The address is written once, in ``pyproject.toml`` (``[project.urls] Repository``). This script sets
it there and replaces the old ``OWNER/NAME`` wherever the kit uses it: the Colab badges and install
cells of every notebook, README's Colab block, and the address notebook 04 downloads committed
results from (``hvq/plots/rd.py``). ``tests/test_notebooks_meta.py`` checks that they all agree. Branch
``main`` is assumed (the badges open ``blob/main``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Files besides the notebooks that name the repository.
FILES = ("pyproject.toml", "README.md", "hvq/plots/rd.py")
#: The URL prefixes under which OWNER/NAME appears.
PREFIXES = (
    "https://github.com/",
    "https://colab.research.google.com/github/",
    "https://raw.githubusercontent.com/",
)
REPO_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")


def repository(root: Path = ROOT) -> str:
    """``OWNER/NAME`` of ``[project.urls] Repository`` in ``root/pyproject.toml`` (read with a pattern,
    so that the script runs on Python 3.10, which has no ``tomllib``)."""
    text = (root / "pyproject.toml").read_text()
    urls = re.search(r"^\[project\.urls\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = re.search(r'^Repository\s*=\s*"([^"]*)"', urls.group(1), re.M) if urls else None
    if found is None:
        raise ValueError("pyproject.toml has no [project.urls] Repository")
    url = found.group(1).rstrip("/")
    if not url.startswith(PREFIXES[0]) or not REPO_NAME.fullmatch(url.removeprefix(PREFIXES[0])):
        raise ValueError(f"pyproject.toml: Repository {url!r} is not https://github.com/OWNER/NAME")
    return url.removeprefix(PREFIXES[0])


def rewrite(text: str, old: str, new: str) -> str:
    """``text`` with every ``<prefix>old`` address renamed to ``new`` (``old`` as a whole name:
    ``owner/hvq-extra`` is not ``owner/hvq``)."""
    for prefix in PREFIXES:
        text = re.sub(re.escape(prefix + old) + r"(?![A-Za-z0-9_-])", prefix + new, text)
    return text


def set_repository(new: str, root: Path = ROOT) -> list[Path]:
    """Rename the repository everywhere under ``root``; returns the files that changed."""
    if not REPO_NAME.fullmatch(new):
        raise ValueError(f"{new!r} is not OWNER/NAME")
    old = repository(root)
    changed = []
    for path in [*(root / f for f in FILES), *sorted((root / "notebooks").glob("*.ipynb"))]:
        if not path.is_file():
            continue
        text = path.read_text()
        updated = rewrite(text, old, new)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repository", help="OWNER/NAME of the GitHub repository, e.g. someone/hvq")
    args = ap.parse_args(argv)
    try:
        changed = set_repository(args.repository, root)
    except (ValueError, OSError) as exc:
        print(f"set_repo_url: error: {exc}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path.relative_to(root)}")
    print(f"the kit now points at https://github.com/{args.repository} ({len(changed)} files changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
