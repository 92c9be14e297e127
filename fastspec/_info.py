"""What this installation of fastspec was built with, and the devices it can use."""

from __future__ import annotations

import platform
from typing import Any

import torch

from fastspec._native import native


def build_info() -> dict[str, Any]:
    """Build and runtime facts of this installation.

    Returns:
        version, CUDA kernels and architectures, compiler, OpenMP, torch version, and the
        devices seen by torch and by the extension's CUDA runtime.
    """
    info = dict(native().build_info())
    info["python"] = platform.python_version()
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["torch_devices"] = ["cpu"] + [
        f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
    ]
    return info


def cuda_available() -> bool:
    """True when the CUDA kernels are compiled in and torch sees at least one GPU."""
    return bool(native().build_info()["cuda_compiled"]) and torch.cuda.is_available()


def format_build_info(info: dict[str, Any] | None = None) -> str:
    """The human-readable report printed by ``fastspec info``."""
    info = build_info() if info is None else info
    if info["cuda_compiled"]:
        rt = info["cuda_runtime_version"]
        cuda = f"yes (sm {info['cuda_archs']}, cudart {rt // 1000}.{rt % 1000 // 10}, static)"
        seen = info["cuda_device_count"]
        cuda_devices = f"{seen}" + (f" ({info['cuda_device_error']})" if not seen else "")
    else:
        cuda, cuda_devices = "no (CPU kernels only)", "0"
    openmp = f"yes ({info['openmp_max_threads']} threads)" if info["openmp"] else "no"
    rows = [
        ("fastspec", info["version"]),
        ("CUDA kernels", cuda),
        ("CUDA devices (extension)", cuda_devices),
        ("compiler", info["compiler"]),
        ("OpenMP", openmp),
        ("python", info["python"]),
        ("torch", f"{info['torch']} (CUDA {info['torch_cuda'] or 'none'})"),
        ("devices (torch)", ", ".join(info["torch_devices"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
