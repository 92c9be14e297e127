"""Build facts, the `info` command, and the torch-free extension."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastspec
from fastspec import _C


def test_build_info_reports_the_build() -> None:
    info = fastspec.build_info()
    assert info["version"] == fastspec.__version__
    assert info["torch"] == torch.__version__
    assert isinstance(info["cuda_compiled"], bool)
    assert info["openmp_max_threads"] >= 1
    if info["cuda_compiled"]:
        assert info["cuda_archs"], "a CUDA build must say which architectures it carries"
        assert info["cuda_runtime_version"] >= 12000
    assert fastspec.cuda_available() == (info["cuda_compiled"] and torch.cuda.is_available())


def test_info_command_prints_the_report(tmp_path: Path) -> None:
    # run outside the source tree, so that the installed package is the one imported
    out = subprocess.run(
        [sys.executable, "-m", "fastspec", "info"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    for label in ("fastspec", "CUDA kernels", "compiler", "OpenMP", "torch", "devices"):
        assert label in out
    assert fastspec.__version__ in out


def test_extension_links_no_libtorch() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("ELF check")
    readelf = subprocess.run(
        ["readelf", "-d", str(Path(_C.__file__))], capture_output=True, text=True, check=False
    )
    if readelf.returncode != 0:
        pytest.skip("readelf not available")
    needed = [line for line in readelf.stdout.splitlines() if "NEEDED" in line]
    assert needed, "readelf found no dynamic section"
    for line in needed:
        for lib in ("torch", "c10", "libcudart.so", "libcuda.so", "python"):
            assert lib not in line, f"fastspec._C must not link {lib}: {line}"


def test_cuda_stub_raises_clearly_without_cuda_kernels() -> None:
    if fastspec.build_info()["cuda_compiled"]:
        pytest.skip("this build has CUDA kernels")
    for op, fields in _C.ops.items():
        zero = {"address": 0, "int": 0, "float": 0.0, "bool": False, "DType": _C.DType.float64}
        args = {name: zero[kind] for name, kind in fields}
        with pytest.raises(RuntimeError, match=f"{op}: fastspec was built without CUDA kernels"):
            getattr(_C, f"{op}_cuda")(args, 0, 0)
