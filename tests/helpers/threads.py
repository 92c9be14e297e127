"""Run one function in several threads at once (thread-safety tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(fn: Callable[[], None], num_threads: int = 3) -> None:
    """Start ``num_threads`` threads running ``fn`` together; raise the first error any got."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # reported to the calling thread
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
