"""``python -m deploy.demo [--model M] [--domain D] ...`` (the same as ``adapt demo``)."""

import sys

from deploy.demo.cli import main

sys.exit(main())
