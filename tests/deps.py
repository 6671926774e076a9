"""Optional dependencies of the tests: skipped on a partial install, a failure under CI.

`make test` installs every extra, so a missing module there means a broken install, and a whole file
skipping would hide it. With `CI` set (to anything but `0`/`false`), `require` fails the file instead.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module: str, why: str = "") -> ModuleType:
    """Import `module`; if it is missing, skip (or fail under CI) with the reason named."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = f"needs {module!r}{f' ({why})' if why else ''}: {err}"
        if in_ci():
            pytest.fail(f"{reason} — CI is set, so a missing dependency is an error, not a skip", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
