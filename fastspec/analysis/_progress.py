"""Progress on stderr: tqdm bars on a terminal, a few plain lines otherwise, and step notes.

A bar redraws its line with carriage returns, which turns a log file into one huge line; so bars
are drawn only when stderr is a terminal (and tqdm is installed). Anywhere else each bar prints
at most one line per tenth of its length, and :class:`JobProgress` one line per step of the whole
job with the elapsed time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

T = TypeVar("T")


def _tqdm() -> Any:
    """Tqdm's class when stderr is a terminal and tqdm is installed, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def bar(items: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None) -> Any:
    """A tqdm bar over ``items`` on a terminal; otherwise a line at every tenth of the items."""
    tqdm = _tqdm()
    if tqdm is None:
        if total is None and isinstance(items, Sized):
            total = len(items)
        return _lines(items, desc, unit, total)
    return tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr, leave=False)


def _lines(items: Iterable[T], desc: str, unit: str, total: int | None) -> Iterator[T]:
    shown = -1
    for i, item in enumerate(items):
        yield item
        tenth = (i + 1) * 10 // total if total else i + 1
        if tenth > shown:
            shown = tenth
            of = f"/{total}" if total else ""
            print(f"{desc}: {i + 1}{of} {unit}", file=sys.stderr, flush=True)


def note(message: str, *, enabled: bool = True) -> None:
    """One progress line on stderr."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


class JobProgress:
    """Progress over a whole job of ``total`` steps.

    One line per step, ``[i/total, m min] what``, so a log shows where a long job is and how fast
    it goes.
    """

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        """Start the clock for ``total`` steps (prints nothing when not ``enabled``)."""
        self.total, self.enabled, self.done = total, enabled, 0
        self.start = time.perf_counter()

    def step(self, what: str) -> None:
        """Announce the next step."""
        self.done += 1
        minutes = (time.perf_counter() - self.start) / 60
        note(f"[{self.done}/{self.total}, {minutes:.1f} min] {what}", enabled=self.enabled)


class CountBar:
    """A ``progress(done, total)`` callback: a tqdm bar on a terminal, a line per tenth otherwise."""

    def __init__(self, desc: str, unit: str) -> None:
        """A bar labelled ``desc`` counting ``unit``s; its total comes with the first call."""
        self.desc, self.unit, self.shown = desc, unit, -1
        self.bar: Any = None
        self.tqdm = _tqdm()

    def __call__(self, done: int, total: int) -> None:
        """Record ``done`` of ``total``."""
        if self.tqdm is not None:
            if self.bar is None:
                self.bar = self.tqdm(
                    total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=False
                )
            self.bar.update(done - self.bar.n)
        elif done * 10 // max(total, 1) > self.shown:
            self.shown = done * 10 // max(total, 1)
            note(f"{self.desc}: {done}/{total} {self.unit}")

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


class PairsBar:
    """An eigsh ``progress`` callback drawing the converged pairs.

    A tqdm bar on a terminal (rate-limited, unlike eigsh's own bar), or a line at every tenth of
    the pairs otherwise.
    """

    def __init__(self, k: int, desc: str) -> None:
        """A bar for ``k`` pairs labelled ``desc``."""
        self.k, self.desc, self.shown = k, desc, -1
        tqdm = _tqdm()
        self.bar = (
            None
            if tqdm is None
            else tqdm(total=k, desc=desc, unit="pair", file=sys.stderr, leave=False)
        )

    def __call__(self, p: Any) -> None:
        """Take one eigsh progress record."""
        if self.bar is not None:
            self.bar.n = p.num_converged
            self.bar.set_postfix(matvecs=p.num_matvecs, refresh=False)
            self.bar.update(0)
        elif p.num_converged * 10 // max(self.k, 1) > self.shown:
            self.shown = p.num_converged * 10 // max(self.k, 1)
            print(
                f"{self.desc}: {p.num_converged}/{self.k} pairs, {p.num_matvecs} HVPs",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
