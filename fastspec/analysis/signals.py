"""SIGINT and SIGTERM as exceptions, so a stopped run unwinds and cleans up after itself.

:func:`signals_as_exceptions` turns SIGINT into :class:`KeyboardInterrupt`, SIGTERM and SIGHUP
(a closed terminal) into :class:`Terminated` (both ``BaseException``: ``except Exception`` does
not swallow them), so ``finally`` blocks and :func:`fastspec.analysis.output.atomic_dir` remove
their temporary files.
:func:`deferred_signals` marks a short critical section (renaming a finished report into place,
removing a temporary directory): a signal arriving inside it is raised when it ends, so the
section is never left half done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Terminated", "deferred_signals", "exit_code", "signals_as_exceptions"]


class Terminated(BaseException):
    """The process received SIGTERM (or another terminating signal ``signum``)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        """Record the signal number."""
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = int(signum)


def exit_code(exc: BaseException) -> int:
    """The shell's exit code for a run stopped by ``exc``: 128 + the signal number."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return 128 + int(signal.SIGINT)


_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_depth = 0  # nesting of deferred_signals sections (signal handlers run in the main thread only)
_pending: int | None = None


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth > 0:
        _pending = _pending or signum  # the first signal wins; raised when the section ends
        return
    raise _exception(signum)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (when :func:`signals_as_exceptions` is active) until the block ends."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread only: nothing to hold elsewhere
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise _exception(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """In the block, SIGINT raises :class:`KeyboardInterrupt`, SIGTERM/SIGHUP :class:`Terminated`.

    Only in the main thread (elsewhere the block runs with the handlers as they are); a signal
    the process ignores (``nohup``, a background job) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    for signum in _SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _handler)
    try:
        yield
    finally:
        for restored, old in previous.items():
            signal.signal(restored, old)
