"""Progress bars on stderr (tqdm when installed, one line per step otherwise) and step notes."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def bar(items: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None) -> Any:
    """A tqdm bar over ``items`` on stderr, or a plain iterator printing one line per item."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _lines(items, desc)
    return tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr, leave=False)


def _lines(items: Iterable[T], desc: str) -> Iterator[T]:
    for i, item in enumerate(items):
        print(f"{desc}: {i + 1}", file=sys.stderr)
        yield item


def note(message: str, *, enabled: bool = True) -> None:
    """One progress line on stderr."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


class PairsBar:
    """An eigsh ``progress`` callback drawing a tqdm bar of converged pairs (rate-limited, unlike
    eigsh's own bar, so logs stay short), or printing a line every 10 % without tqdm."""

    def __init__(self, k: int, desc: str) -> None:
        self.k, self.desc, self.shown = k, desc, -1
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=k, desc=desc, unit="pair", file=sys.stderr, leave=False)

    def __call__(self, p: Any) -> None:
        if self.bar is not None:
            self.bar.n = p.num_converged
            self.bar.set_postfix(matvecs=p.num_matvecs, refresh=False)
            self.bar.update(0)
        elif p.num_converged * 10 // max(self.k, 1) > self.shown:
            self.shown = p.num_converged * 10 // max(self.k, 1)
            print(
                f"{self.desc}: {p.num_converged}/{self.k} pairs, {p.num_matvecs} HVPs",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
