"""Signals and output streams for a command that must undo what it started.

SIGTERM and SIGHUP are taken as Ctrl-C, so that the same teardown runs for each; and a
write to a stream whose reader is gone (a closed terminal, `| head`, a killed parent)
goes nowhere instead of raising in the middle of that teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, taken as Ctrl-C: what a command started is undone the same way."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


def _to_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError):
        os.dup2(devnull, fd)
    os.close(devnull)


def _terminated(signum, frame):
    if signum == signal.SIGHUP:
        # The terminal is gone: a write to it would fail mid-teardown.
        # (After a hang-up isatty() is False: a terminal is a character device.)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    _to_devnull(fd)
    raise Terminated(signum)


class _Outlives:
    """A text stream whose reader may go away: once a write finds the pipe broken, the
    stream writes to /dev/null instead, and the command goes on."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        _to_devnull(self._stream.fileno())
        with contextlib.suppress(OSError):
            self._stream.flush()  # what was buffered goes to /dev/null now

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install() -> None:
    """For the command's whole run: SIGTERM and SIGHUP as Ctrl-C, and stdout and stderr
    that outlive their readers."""
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)  # a closed terminal, a lost SSH session
    if not isinstance(sys.stdout, _Outlives):
        sys.stdout, sys.stderr = _Outlives(sys.stdout), _Outlives(sys.stderr)


@contextlib.contextmanager
def deferred():
    """Ctrl-C, SIGTERM and SIGHUP that land inside are raised at its end, so that a process
    started inside is recorded before the teardown looks for it. Off the main thread (where
    no handler can be set) it defers nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in kinds}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            signal.raise_signal(got[0])  # now, to the command's own handler
