"""``python -m adapt``: the `adapt` command."""

import os
import sys
from pathlib import Path

# `python -m` puts the working folder first on sys.path, where a user's own model.py or deploy.py would stand in
# for this distribution's packages of those names; the `adapt` command does not look there, nor does this
first = sys.path[0] if sys.path and not sys.flags.safe_path else None
if first in ("", os.getcwd()) and Path(first or os.curdir).resolve() != Path(__file__).resolve().parent.parent:
    del sys.path[0]

from adapt.cli import main  # noqa: E402

raise SystemExit(main())
