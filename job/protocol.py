"""What the job says to the launcher: one JSON line per marker (the record, progress,
a rejected input)."""

from __future__ import annotations

import json

RESULT_MARKER = "RAYSCALE_RESULT"
PROGRESS_MARKER = "RAYSCALE_PROGRESS"
ERROR_MARKER = "RAYSCALE_ERROR"


def emit(marker: str, payload: dict) -> None:
    print(f"{marker} {json.dumps(payload, separators=(',', ':'))}", flush=True)
