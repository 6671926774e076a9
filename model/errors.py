"""The root of every error pocket-adapt raises for a user to act on.

`adapt` prints these as one line naming the file or key and what to do; anything else that escapes is a
bug and keeps its traceback. Each package's errors derive from `PocketAdaptError` (and, where callers
already catch it, from `ValueError` too). It lives here, in the package every other one may import.
"""

from __future__ import annotations


class PocketAdaptError(Exception):
    """A failure the user can fix (bad input, bad settings, a missing file): reported in one line."""


class ModelConfigError(PocketAdaptError, ValueError):
    """A model setting is unknown or invalid: a preset name, a chat template, a projector or tower option."""
