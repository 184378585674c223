"""Any Tune script's progress, read from its console lines as they arrive: the trials the
search runs (Tune's opening table), each trial's start and end (timed here, by when its line
came), turned into the progress records the bundled job writes, so that the live ETA
(rayscale.eta) serves a script as it serves the bundled job. The lines' shapes are Tune's own
output, known to job/tune_format.py alone (and gated there on Ray's version)."""

from __future__ import annotations

import functools
import importlib.util
import time

from rayscale import job_files


@functools.cache
def _format():
    """job/tune_format.py (standard library only), loaded from the job's folder: the one
    module that knows Tune's unpublished formats, for the launcher too."""
    spec = importlib.util.spec_from_file_location(
        "rayscale_tune_format", job_files.tune_format_file()
    )
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


class TuneConsole:
    """Feed it a script's log lines as they arrive; a trial's end gives a progress record."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.running: dict[str, float] = {}  # trial name: when its start line came
        self.done = 0

    def feed(self, line: str, now: float | None = None) -> dict | None:
        f, text = _format(), line.strip()
        now = time.time() if now is None else now
        if m := f.TRIAL_STARTED.match(text):
            self.running[m.group(1)] = now
        elif (m := f.TRIAL_ENDED.match(text)) and m.group(1) in self.running:
            began = self.running.pop(m.group(1))
            self.done += 1
            return {
                "done": self.done,
                # An adaptive search may not say: then the trials seen so far.
                "total": max(self.total or 0, self.done + len(self.running)),
                "at": now,
                "trial_s": round(now - began, 3),
                "running_s": [round(now - t, 3) for t in self.running.values()],
                "started": self.done + len(self.running),
            }
        elif self.total is None and (m := f.NUM_TRIALS.search(text)):
            self.total = int(m.group(1))
        return None
