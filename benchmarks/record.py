"""Facts recorded next to every benchmark result: machine, commit, command, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import fastspec

RESULTS = Path(__file__).resolve().parent / "results"


def fair_blas_threads() -> None:
    """Re-run this script with OpenBLAS's shortest spin (``OPENBLAS_THREAD_TIMEOUT=4``) unless
    the caller set one; call it under ``if __name__ == "__main__"``, before anything else.

    numpy's and scipy's OpenBLAS threads keep spinning for a while after each call. A peer that
    runs torch from inside a scipy solver (ARPACK calls its products back) then computes them on
    cores those threads hold. Measured on the 2-core machine, curvlinops' Hessian-vector product
    on the digits MLP: 74 ms alone, 150 ms inside ARPACK (175 ms per ARPACK step); with the
    shortest spin 75 ms (98 ms per step); with OpenBLAS on one thread 79 ms (113 ms per step).
    fastspec does not call OpenBLAS, so the setting only removes a handicap of the peers.
    """
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
        os.execv(sys.executable, [sys.executable, *sys.argv])


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
        cwd=Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
        check=False, cwd=Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    info = fastspec.build_info()
    gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit or "unknown") + ("+dirty" if dirty else ""),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpu": ", ".join(gpu) or "none",
        "torch": torch.__version__,
        "fastspec": info["version"],
        "cuda_kernels": info["cuda_compiled"],
        "openmp_threads": info["openmp_max_threads"],
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"),
    }


def write_markdown(
    name: str, title: str, header: list[str], rows: list[list[Any]], notes: str = ""
) -> Path:
    """Write ``benchmarks/results/<name>.md`` with the machine facts, a table and notes."""
    RESULTS.mkdir(exist_ok=True)
    facts = machine()
    lines = [f"# {title}", ""]
    lines += [f"- {k}: `{v}`" for k, v in facts.items()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if notes:
        lines += ["", notes.strip()]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {path}")
    return path
