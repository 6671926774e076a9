"""The packages import one way (design.md): `domains` never imports training code, `model` knows nothing of
recipes, domains or deployment, `deploy` reads models through `model`, never through training code. A scorer that
reached into `adapt` for a parser broke the first rule; `adapt demo`'s parser that took the argument types of
`adapt.cli` (its private `_seed`, `_temperature`, `_top_p`) broke the last: they live in `model.arguments`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"domains": {"adapt", "deploy"}, "model": {"adapt", "domains", "deploy"}, "deploy": {"adapt"}}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_the_floors_below_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 5
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert not {f: names for f, names in wrong.items() if names}
