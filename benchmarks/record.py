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
