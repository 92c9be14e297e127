"""A user's ``usermod.py`` in a fresh directory, importable as ``usermod`` by the CLI under test."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest


def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> Path:
    """Write ``source`` to ``tmp_path/usermod.py``, chdir there and put it first on ``sys.path``.

    A ``usermod`` another test imported is dropped from ``sys.modules``: ``--model usermod:model``
    must load this test's module, not a stale one with another model and data.
    """
    (tmp_path / "usermod.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "usermod", raising=False)
    return tmp_path
