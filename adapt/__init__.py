"""pocket-adapt: adapt."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # looked up on first use: importlib.metadata would add ~20 ms to every `adapt` start-up
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pocket-adapt")
        except PackageNotFoundError:  # a checkout run without `pip install` (PYTHONPATH=.)
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
