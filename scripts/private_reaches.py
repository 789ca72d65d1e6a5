"""Counts the package's reaches into other objects' private attributes (issue 11).

A reach is an attribute access ``name._private`` (one leading underscore) in
``python/wschannel`` where ``name`` is neither ``self`` nor ``cls`` nor a module the file
imports (``engine._x`` after ``from . import _wschannel as engine`` is a module path, not a
reach). Read from the syntax tree, so strings and comments never count.

    python scripts/private_reaches.py [REV ...]    # default: the working tree

Prints the total and the files with the most reaches for each revision.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "python/wschannel"


def modules_of(tree: ast.Module) -> set[str]:
    """The names a file binds to modules: ``import a.b`` binds ``a``; ``import a as b`` and
    ``from x import y`` (when ``y`` is a module of the package or the engine) bind theirs."""
    names = {"wschannel"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") or alias.name in {"engine", "sync", "io"}:
                    names.add(alias.asname or alias.name)
    return names


def reaches(source: str) -> int:
    tree = ast.parse(source)
    modules = modules_of(tree)
    count = 0
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id not in {"self", "cls"}
            and node.value.id not in modules
        ):
            count += 1
    return count


def sources(rev: str | None) -> dict[str, str]:
    if rev is None:
        return {
            str(path.relative_to(ROOT / PACKAGE)): path.read_text()
            for path in sorted((ROOT / PACKAGE).rglob("*.py"))
        }
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, PACKAGE],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    return {
        name.removeprefix(PACKAGE + "/"): subprocess.run(
            ["git", "show", f"{rev}:{name}"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
        for name in names
        if name.endswith(".py")
    }


def main(revs: list[str]) -> None:
    for rev in revs or [None]:
        per_file = {name: reaches(text) for name, text in sources(rev).items()}
        top = sorted(((n, name) for name, n in per_file.items() if n), reverse=True)[:6]
        listed = ", ".join(f"{name} {n}" for n, name in top)
        print(f"{rev or 'working tree'}: {sum(per_file.values())} ({listed})")


if __name__ == "__main__":
    main(sys.argv[1:])
