"""Layering rule and benchmark smoke run."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import fastspec.linalg

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = ("fastspec.stats", "fastspec.curvature", "fastspec.grads", "fastspec.analysis")


def test_linalg_knows_operators_not_models():
    pkg = pathlib.Path(fastspec.linalg.__file__).parent
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_public_names_exported():
    import fastspec

    for name in fastspec.linalg.__all__:
        assert hasattr(fastspec.linalg, name)
    for name in ("eigsh", "slq", "trace", "aslinearoperator", "LinearOperator"):
        assert getattr(fastspec, name) is getattr(fastspec.linalg, name)


def test_benchmark_smoke():
    script = ROOT / "benchmarks" / "side_by_side_eigsh.py"
    out = subprocess.run(
        [sys.executable, str(script), "--smoke", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| fastspec eigsh" in out.stdout and "| scipy.sparse.linalg.eigsh" in out.stdout
