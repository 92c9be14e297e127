"""CI smoke run of benchmarks/side_by_side_compat.py: the compat front doors and the originals
on a small MLP, answers checked, in every mode (the full comparison is run as a script)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_side_by_side_compat_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sklearn", "pyhessian", "hessian_eigenthings", "powerlaw"):
        pytest.importorskip(name)
    # the script imports its siblings (digits_mlp, record) as a script run from benchmarks/ would
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from side_by_side_compat import main

    main(["--smoke"])
