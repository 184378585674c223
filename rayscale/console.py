"""A line to the user: the one `say` every layer uses (report's tables and bars sit above)."""

from __future__ import annotations

import sys


def say(text: str, err: bool = False) -> None:
    """A plain status line: never wrapped, so logs and tests see it whole."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
