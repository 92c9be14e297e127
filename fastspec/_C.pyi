# Typed stub of the compiled extension fastspec._C (csrc/bindings/module.cpp).
# Addresses are passed as integers; fastspec.ops wrappers are the only callers.
from typing import Any

def build_info() -> dict[str, Any]: ...
def powerlaw_scan_cpu(
    logx: int,
    run_start: int,
    candidates: int,
    tail_logsum: int,
    alpha: int,
    ks: int,
    best: int,
    n: int,
    num_candidates: int,
    alpha_lo: float,
    alpha_hi: float,
    prune: bool,
    dtype: int,
) -> None: ...
def powerlaw_scan_cuda(
    logx: int,
    run_start: int,
    candidates: int,
    tail_logsum: int,
    alpha: int,
    ks: int,
    best: int,
    n: int,
    num_candidates: int,
    alpha_lo: float,
    alpha_hi: float,
    prune: bool,
    dtype: int,
    device: int,
    stream: int,
) -> None: ...
def powerlaw_scan_batch_cpu(
    logx: int,
    run_start: int,
    tail_logsum: int,
    xmin_index: int,
    alpha: int,
    ks: int,
    rows: int,
    n: int,
    alpha_lo: float,
    alpha_hi: float,
    dtype: int,
) -> None: ...
def powerlaw_scan_batch_cuda(
    logx: int,
    run_start: int,
    tail_logsum: int,
    xmin_index: int,
    alpha: int,
    ks: int,
    rows: int,
    n: int,
    alpha_lo: float,
    alpha_hi: float,
    dtype: int,
    device: int,
    stream: int,
) -> None: ...
def seq_gram_cpu(
    a_i: int,
    g_i: int,
    a_j: int,
    g_j: int,
    out: int,
    n_i: int,
    n_j: int,
    t_i: int,
    t_j: int,
    d_in: int,
    d_out: int,
    dtype: int,
) -> None: ...
def seq_gram_cuda(
    a_i: int,
    g_i: int,
    a_j: int,
    g_j: int,
    out: int,
    n_i: int,
    n_j: int,
    t_i: int,
    t_j: int,
    d_in: int,
    d_out: int,
    dtype: int,
    device: int,
    stream: int,
) -> None: ...
def block_orthogonalize_cpu(
    V: int, W: int, W_out: int, C: int, sq_norms: int, n: int, P: int, B: int, dtype: int
) -> None: ...
def block_orthogonalize_cuda(
    V: int,
    W: int,
    W_out: int,
    C: int,
    sq_norms: int,
    n: int,
    P: int,
    B: int,
    dtype: int,
    device: int,
    stream: int,
) -> None: ...
