"""``python -m sluiceway``: the same command line as the ``sluiceway`` script."""

from __future__ import annotations

import sys

from sluiceway.cli import main

if __name__ == "__main__":
    sys.exit(main())
