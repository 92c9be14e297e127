"""Thin wrappers over the native kernels: validate, allocate with torch, call ``fastspec._C``.

Each op has one name through every layer (``csrc/include/fastspec/<op>.h``,
``csrc/cpu/<op>_cpu.cpp``, ``csrc/cuda/<op>_cuda.cu``, ``fastspec/ops/<op>.py``,
``fastspec/reference/<op>.py``, ``tests/ops/test_<op>.py``, ``benchmarks/bench_<op>.py``).
"""

from fastspec.ops.powerlaw_scan import powerlaw_scan
from fastspec.ops.powerlaw_scan_batch import powerlaw_scan_batch
from fastspec.ops.seq_gram import seq_gram

__all__ = ["powerlaw_scan", "powerlaw_scan_batch", "seq_gram"]
