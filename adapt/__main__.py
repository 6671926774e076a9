"""``python -m adapt``: the `adapt` command."""

from adapt.cli import main

raise SystemExit(main())
