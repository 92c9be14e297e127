"""Which Ritz pairs are wanted, and in what order they are returned (``which``).

Host-side helpers on small numpy arrays of Ritz values:

>>> import numpy as np
>>> values = np.array([0.5, -2.0, 1.0, -0.1])
>>> priority(values, "LM").tolist()  # most wanted first
[1, 2, 0, 3]
>>> priority(values, "BE").tolist()  # top and bottom in turn, top first
[2, 1, 0, 3]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["WHICH", "Which", "output_order", "priority"]

Which = Literal["LA", "SA", "LM", "BE"]
WHICH = ("LA", "SA", "LM", "BE")


def priority(values: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``values`` from most to least wanted."""
    if which == "LA":
        return np.argsort(-values, kind="stable")
    if which == "SA":
        return np.argsort(values, kind="stable")
    if which == "LM":
        return np.argsort(-np.abs(values), kind="stable")
    # "BE": alternate between the top and the bottom, top first
    desc = np.argsort(-values, kind="stable")
    n = values.shape[0]
    taken = np.zeros(n, dtype=bool)
    out: list[int] = []
    hi, lo = 0, n - 1
    while len(out) < n:
        while taken[desc[hi]]:
            hi += 1
        out.append(int(desc[hi]))
        taken[desc[hi]] = True
        if len(out) == n:
            break
        while taken[desc[lo]]:
            lo -= 1
        out.append(int(desc[lo]))
        taken[desc[lo]] = True
    return np.asarray(out, dtype=np.int64)


def output_order(values: np.ndarray, which: str) -> np.ndarray:
    """Permutation putting the selected ``values`` in the documented output order."""
    if which == "BE":
        return np.argsort(-values, kind="stable")
    return priority(values, which)
