"""deploy/tensorrt_verify.py is the bundle's verify.py, run on the Orin with the system Python: JetPack 5 ships
Python 3.8 (JetPack 6: 3.10). No Python 3.8 here, so it is read for what 3.8 cannot parse or run: the parser at
feature_version 3.8 (match, parenthesized context managers, except*), and an AST walk for the 3.9+ syntax the
parser lets through and the 3.9+ names a 3.8 interpreter would fail on at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VERIFY = Path(__file__).resolve().parents[1] / "deploy" / "tensorrt_verify.py"
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}  # subscriptable at run time from 3.9
NEWER_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
                 "readlink": "3.9", "bit_count": "3.10"}
NEWER_FUNCTIONS = {("functools", "cache"): "3.9", ("math", "lcm"): "3.9", ("ast", "unparse"): "3.9",
                   ("asyncio", "to_thread"): "3.9", ("random", "randbytes"): "3.9", ("itertools", "pairwise"): "3.10",
                   ("itertools", "batched"): "3.12", ("hashlib", "file_digest"): "3.11",
                   ("builtins", "aiter"): "3.10", ("builtins", "anext"): "3.10"}
NEWER_MODULES = {"zoneinfo": "3.9", "graphlib": "3.9", "tomllib": "3.11"}
NEWER_TYPING = {"Annotated": "3.9", "ParamSpec": "3.10", "TypeAlias": "3.10", "Concatenate": "3.10",
                "TypeGuard": "3.10", "Self": "3.11", "LiteralString": "3.11", "Never": "3.11", "assert_never": "3.11",
                "reveal_type": "3.11", "override": "3.12", "TypeIs": "3.13"}
NEWER_KEYWORDS = {("zip", "strict"): "3.10", ("dataclass", "slots"): "3.10", ("dataclass", "kw_only"): "3.10"}


def py38_problems(source: str) -> list[str]:
    """What in `source` Python 3.8 cannot parse or would fail on when run, one line each (empty: none found)."""
    try:
        tree = ast.parse(source, feature_version=(3, 8))
    except SyntaxError as err:
        return [f"line {err.lineno}: {err.msg}"]
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations"
                                                                                   for a in n.names)
                 for n in tree.body)
    annotations: set[int] = set()  # ids of nodes inside annotations: never evaluated with the __future__ import
    for node in ast.walk(tree):
        marked = [getattr(node, "returns", None), getattr(node, "annotation", None)]
        for expr in marked:
            if expr is not None and future:
                annotations.update(id(n) for n in ast.walk(expr))
    problems = []

    def say(node: ast.AST, what: str) -> None:
        problems.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    def is_type(node: ast.AST) -> bool:
        return (isinstance(node, ast.Constant) and node.value is None
                or isinstance(node, ast.Name) and node.id in BUILTIN_GENERICS | {"int", "str", "float", "bool", "bytes"}
                or isinstance(node, ast.Subscript) or isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr))

    def is_dict(node: ast.AST) -> bool:
        return isinstance(node, (ast.Dict, ast.DictComp)) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict")

    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for deco in node.decorator_list:  # 3.8: a dotted name, optionally called
                target = deco.func if isinstance(deco, ast.Call) else deco
                while isinstance(target, ast.Attribute):
                    target = target.value
                if not isinstance(target, ast.Name):
                    say(deco, "a decorator that is not a dotted name (3.9+)")
        if isinstance(node, ast.Subscript):
            if isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
                say(node, f"{node.value.id}[...] evaluated at run time (3.9+; use typing or the __future__ import)")
            if any(isinstance(n, ast.Starred) for n in ast.walk(node.slice)):
                say(node, "a starred expression in a subscript (3.11+)")
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.BitOr):
            left = node.left if isinstance(node, ast.BinOp) else node.target
            right = node.right if isinstance(node, ast.BinOp) else node.value
            if is_dict(left) or is_dict(right):
                say(node, "dict | dict (3.9+)")
            elif is_type(left) and is_type(right):
                say(node, "X | Y of types evaluated at run time (3.10+)")
        if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS:
            say(node, f".{node.attr} ({NEWER_METHODS[node.attr]}+)")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and (node.value.id, node.attr) in NEWER_FUNCTIONS:
            say(node, f"{node.value.id}.{node.attr} ({NEWER_FUNCTIONS[node.value.id, node.attr]}+)")
        if isinstance(node, ast.Name) and ("builtins", node.id) in NEWER_FUNCTIONS:
            say(node, f"{node.id} ({NEWER_FUNCTIONS['builtins', node.id]}+)")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in NEWER_MODULES:
                    say(node, f"import {alias.name} ({NEWER_MODULES[alias.name.split('.')[0]]}+)")
        if isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if root in NEWER_MODULES:
                say(node, f"from {node.module} ({NEWER_MODULES[root]}+)")
            for alias in node.names:
                if root == "typing" and alias.name in NEWER_TYPING:
                    say(node, f"typing.{alias.name} ({NEWER_TYPING[alias.name]}+)")
                if (node.module, alias.name) in NEWER_FUNCTIONS:
                    say(node, f"{node.module}.{alias.name} ({NEWER_FUNCTIONS[node.module, alias.name]}+)")
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for kw in node.keywords:
                if (func, kw.arg) in NEWER_KEYWORDS:
                    say(node, f"{func}({kw.arg}=...) ({NEWER_KEYWORDS[func, kw.arg]}+)")
    if not future:  # annotations are evaluated when the def runs
        for node in ast.walk(tree):
            for expr in (getattr(node, "returns", None), getattr(node, "annotation", None)):
                for sub in ast.walk(expr) if expr is not None else ():
                    if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) \
                            and sub.value.id in BUILTIN_GENERICS:
                        say(sub, f"annotation {sub.value.id}[...] without `from __future__ import annotations` (3.9+)")
                    if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr):
                        say(sub, "annotation X | Y without `from __future__ import annotations` (3.10+)")
    return problems


def test_verify_py_runs_on_jetpack_5_python_3_8():
    assert py38_problems(VERIFY.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source, found", [
    ("match x:\n    case 1:\n        pass\n", "Pattern matching"),
    ("with (open('a') as f, open('b') as g):\n    pass\n", "Parenthesized context managers"),
    ("name = 'verify.py'.removeprefix('v')\n", ".removeprefix (3.9+)"),
    ("from __future__ import annotations\nShapes = list[int]\n", "list[...] evaluated at run time"),
    ("def f(x: dict[str, int]) -> None: ...\n", "annotation dict[...] without"),
    ("def f(x: int | None) -> None: ...\n", "annotation X | Y without"),
    ("from __future__ import annotations\nok = isinstance(1, int | None)\n", "X | Y of types evaluated"),
    ("merged = {'a': 1} | extra\n", "dict | dict"),
    ("import functools\n@functools.cache\ndef f(): ...\n", "functools.cache (3.9+)"),
    ("from math import lcm\n", "math.lcm (3.9+)"),
    ("pairs = zip(a, b, strict=True)\n", "zip(strict=...)"),
    ("@buttons[0].connect\ndef f(): ...\n", "a decorator that is not a dotted name"),
    ("import zoneinfo\n", "import zoneinfo"),
    ("from typing import TypeAlias\n", "typing.TypeAlias"),
])
def test_the_check_finds_3_9_plus_constructs(source, found):
    problems = py38_problems(source)
    assert any(found in p for p in problems), problems


def test_the_check_passes_3_8_code():
    source = ("from __future__ import annotations\nfrom typing import Dict, List, Optional\n"
              "def f(x: list[int] | None, y: Optional[Dict[str, List[int]]] = None) -> dict[str, int]:\n"
              "    if (n := len(x or [])) > 1:\n        return {**(y or {}), 'n': n}\n    return {}\n"
              "flags = 1 | 2\n@property\ndef g(self): ...\nhit = self.cache\n")
    assert py38_problems(source) == []
