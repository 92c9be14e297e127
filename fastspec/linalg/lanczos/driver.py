"""The ``eigsh`` driver: validation and defaults, the dense path, the block Lanczos run.

The method (block Lanczos with full reorthogonalisation, thick restart and locking) is spread
over one module per job:

- :mod:`~fastspec.linalg.lanczos.solver`: the block step and the iterate / extract loop;
- :mod:`~fastspec.linalg.lanczos.orthogonalize`: BCGS2 with a one-pass test, breakdown;
- :mod:`~fastspec.linalg.lanczos.convergence`: check cadence, convergence, confirmation;
- :mod:`~fastspec.linalg.lanczos.restart_locking`: thick restart, locking, basis growth;
- :mod:`~fastspec.linalg.lanczos.certify`: final Rayleigh–Ritz and recomputed residuals;
- :mod:`~fastspec.linalg.lanczos.dense`: small problems by dense ``eigh``;
- :mod:`~fastspec.linalg.lanczos.state`, :mod:`~fastspec.linalg.lanczos.ordering`,
  :mod:`~fastspec.linalg.lanczos.result`: the run's buffers, ``which``, the result.

>>> import torch
>>> from fastspec.linalg import eigsh
>>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
>>> res = eigsh(A, 3, seed=0)
>>> [round(float(v), 8) for v in res.eigenvalues], res.all_converged
([100.0, 99.0, 98.0], True)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from fastspec._checks import check_bool, check_choice, check_float, check_int
from fastspec.checkpoint import Resume, Store, as_checkpoint, check_resume, guard, tensor_digest
from fastspec.linalg._random import make_generator
from fastspec.linalg.lanczos.checkpoint import LanczosCheckpoint
from fastspec.linalg.lanczos.dense import dense_eigsh
from fastspec.linalg.lanczos.ordering import WHICH, Which
from fastspec.linalg.lanczos.restart_locking import max_growth
from fastspec.linalg.lanczos.result import EigshResult, ProgressArg, Reporter, warn_unconverged
from fastspec.linalg.lanczos.solver import BlockLanczos
from fastspec.linalg.lanczos.state import LanczosState
from fastspec.linalg.lanczos.storage import BasisStorage, basis_dtype_for, check_basis_dir
from fastspec.linalg.operator import LinearOperator, aslinearoperator, check_symmetric
from fastspec.linalg.sharded import Sharding, run_group

__all__ = ["eigsh"]

#: default cap on restarts
_DEFAULT_MAX_RESTARTS = 500
#: ``store_products=None`` keeps ``A V`` when that buffer takes at most this many bytes
_STORE_PRODUCTS_MAX_BYTES = 1 << 30


def _default_block_size(k: int, device: torch.device) -> int:
    if k > 256:
        return 16
    # at least 2: a block of B >= 2 shows every multiplicity (B equal values trigger the
    # confirmation), one vector shows none; on a CPU a block of products costs about as much per
    # vector as single ones, while every column costs Krylov degree: stay at 2 there
    # (benchmarks/results/eigsh_vs_peers.md, "Block size")
    return max(2, min(2 if device.type == "cpu" else 8, k // 8))


def _default_max_basis(k: int, b: int) -> int:
    return max(2 * k + 2 * b, k + 6 * b, 24)


def _check_dtype(A: LinearOperator) -> None:
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"op.dtype must be float32 or float64 for eigsh, got {A.dtype}")


def _prepare_v0(v0: Any, A: LinearOperator, b: int) -> torch.Tensor | None:
    if v0 is None:
        return None
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a torch.Tensor or None, got {type(v0).__name__}")
    if v0.dtype != A.dtype:
        raise TypeError(f"v0.dtype {v0.dtype} does not match op.dtype {A.dtype}")
    if v0.device != A.device:
        raise TypeError(f"v0 is on {v0.device}, but op is on {A.device}")
    V = v0.reshape(-1, 1) if v0.dim() == 1 else v0
    if V.dim() != 2 or V.shape[0] != A.shape[0] or V.shape[1] > b:
        raise ValueError(
            f"v0 must have shape [P] or [P, c] with P = {A.shape[0]} and c <= block_size = {b}, "
            f"got {tuple(v0.shape)}"
        )
    if not bool(torch.isfinite(V).all()):
        raise ValueError("v0 contains NaN or inf")
    if not bool((V.abs().sum(dim=0) > 0).all()):
        raise ValueError("v0 has a zero column")
    return V


def _store_products(
    store: Any, M: int, P: int, dtype: torch.dtype, basis_dtype: torch.dtype
) -> bool:
    rounded = basis_dtype != dtype  # rounded products would not certify the residuals
    if store is None:
        return not rounded and M * P * dtype.itemsize <= _STORE_PRODUCTS_MAX_BYTES
    if check_bool("store_products", store) and rounded:
        raise ValueError(
            f"store_products=True needs basis_dtype equal to the operator's dtype ({dtype}), "
            f"got basis_dtype={basis_dtype}: a basis stored in a lower precision recomputes "
            "the final residuals with fresh products"
        )
    return bool(store)


def _check_progress(progress: Any) -> ProgressArg:
    if callable(progress):
        return progress
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or a callable, got {progress!r}")
    return bool(progress)


def eigsh(
    op: Any,
    k: int,
    *,
    which: Which = "LA",
    tol: float = 1e-6,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_restarts: int | None = None,
    return_eigenvectors: bool = False,
    seed: int | None = None,
    v0: torch.Tensor | None = None,
    progress: ProgressArg = False,
    store_products: bool | None = None,
    process_group: Any = None,
    checkpoint: Any = None,
    resume: Resume = False,
    basis_dtype: torch.dtype | str | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
) -> EigshResult:
    """``k`` eigenpairs of a symmetric operator by thick-restarted block Lanczos.

    Args:
        op: a symmetric operator: anything :func:`~fastspec.linalg.aslinearoperator` accepts.
            float32 or float64.
        k: number of eigenpairs, ``1 <= k < P``.
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest
            magnitude, ``"BE"`` both ends (``ceil(k/2)`` from the top, ``floor(k/2)`` from the
            bottom).
        tol: relative residual tolerance in ``(0, 1)``: a pair is converged when
            ``‖Av − λv‖ <= tol · max(|λ|, √ε‖A‖)``. With float32 operators, tolerances much
            below ``1e-4`` are out of reach for eigenvalues far below ``‖A‖``; such pairs are
            reported as unconverged.
        block_size: vectors per operator call ``B``. Default for ``k <= 256``: 2 on CPU (where
            a block of Hessian-vector products is not cheaper per vector),
            ``max(2, min(8, k // 8))`` on other devices; 16 for ``k > 256``. A block finds
            eigenvalues of multiplicity up to ``B`` without relying on rounding, shows larger
            multiplicities as ``B`` equal values (see Notes), and turns ``B`` products into one
            batched call, but the Krylov degree is only basis size / ``B``, so it costs more
            products (measured in ``benchmarks/results/eigsh_vs_peers.md``). For large ``k``
            the basis sweeps of the orthogonalisation dominate, and a wide block makes fewer
            of them. ``B = 1`` sees one copy of every eigenvalue, so every ``B = 1`` run is
            confirmed by a fresh start (more products than ``B = 2``).
        max_basis: cap on stored basis vectors of length ``P`` (locked, active and the pending
            block); peak memory is about ``max_basis · P`` elements (twice that with
            ``store_products``) plus a few blocks and a ``max_basis²`` float64 projected matrix
            (elements of ``basis_dtype``, see there).
            Default ``max(2k + 2B, k + 6B, 24)``: like ARPACK's ``ncv = 2k + 1``, twice the
            wanted count leaves the restart a margin of unwanted Ritz vectors as wide as the
            wanted set, which keeps the convergence rate close to that of an unrestarted run
            while bounding memory at ``~2k`` vectors. A default basis that fills up with no new
            converged pair since the last restart (a hard end of the spectrum, such as a
            cluster) is doubled instead of restarted, up to ``min(128, P / 4)`` vectors that fit
            in 512 MiB; the result's ``max_basis`` is the final size. A given ``max_basis`` is
            kept. Must be at least ``k + 2B``. Lower it when ``2k · P`` elements do not fit.
        max_restarts: cap on thick restarts (default 500); pairs not converged by then are
            returned with ``converged=False`` and a :class:`ConvergenceWarning`.
        return_eigenvectors: also return the ``[P, K]`` eigenvectors.
        seed: seed of the random start block (and of replacement directions after a
            breakdown); ``None`` draws a fresh seed.
        v0: ``[P]`` or ``[P, c]`` (``c <= B``) start vectors, completed with random ones.
        progress: ``True`` shows a tqdm bar (or prints to stderr without tqdm); a callable
            receives an :class:`EigshProgress` at every convergence check. Off by default.
        store_products: keep ``A V`` next to the basis (a second ``max_basis × P`` buffer), so
            that the final residuals come from the stored products instead of ``k`` more
            (``2k`` with locking) products; only pairs whose residual is within rounding of
            ``tol`` are recomputed. Default: on when the extra buffer takes at most 1 GiB
            (of the whole vectors, so that every number of ranks makes the same choice). Off,
            and ``True`` refused, with a ``basis_dtype`` below the operator's.
        process_group: a ``torch.distributed`` group to run over; default ``op.process_group``
            when the operator carries one, else the default group when it has more than one
            rank (:func:`fastspec.distributed.resolve_group`). Under a group each rank keeps
            only its slice ``shard_range(P, W, rank)`` of every basis vector and stored product
            (:mod:`fastspec.linalg.sharded`): a data-parallel operator (``local_matmat``) has
            its products reduce-scattered, any other is taken as the same on every rank. Every
            rank passes the same arguments (checked before the first collective); ``v0`` is
            given whole on every rank. The numbers equal one process's with the same seed up
            to rounding; ``eigenvectors`` are this rank's rows (see
            :meth:`EigshResult.gather_eigenvectors`). ``progress=True`` shows rank 0's bar.
        checkpoint: a directory or a :class:`fastspec.checkpoint.Checkpoint`: the run's state
            (basis, stored products, projected matrix, counters, generator) is saved there
            atomically every ``every_seconds`` (default 300 s, and never more than 2 % of the
            time) or ``every_products``, and the result when it is done. The dense path
            (``P <= max_basis + B``) is not checkpointed.
        resume: ``True`` continues from the checkpoint (it must exist), ``"if-present"``
            continues when there is one; ``False`` (default) starts and refuses a directory
            holding a checkpoint. A resumed run returns bitwise the result of an uninterrupted
            one (same machine, same threads, same world size); under a process group every rank
            writes its shard of the basis and rank 0 the manifest. A checkpoint of another
            operator fingerprint or other settings is refused with an error naming what differs.
        basis_dtype: the dtype the basis (and stored products) are kept in: ``None`` (default)
            the operator's; ``float32`` or ``bfloat16`` (a ``torch.dtype`` or its name) for a
            float64 operator, ``bfloat16`` for a float32 one. A lower precision halves or
            quarters the basis memory (``max_basis · P · sizeof(basis_dtype)`` bytes) at the
            price of accuracy: all arithmetic stays in the operator's dtype (stored rows are
            upcast in row blocks when read, only results are rounded when written), but every
            stored row is rounded, which limits the attainable relative residual to about
            ``u · ‖A‖ / |λ|`` (``u`` the storage's unit roundoff, ``6e-8`` for float32 and
            ``4e-3`` for bfloat16; measured: ``benchmarks/results/basis_storage_memory.md``),
            while the eigenvalues keep a second-order error.
            ``store_products`` is then off: the returned vectors are the stored rows upcast and
            normalised, and their residuals come from fresh products (``k`` more, ``2k`` with
            locking), so ``converged`` stays honest. A ``tol`` below the attainable level is not
            refused (the level depends on the spectrum): the iteration's estimates may pass it
            while the recomputed residuals do not, so such pairs are returned unconverged with
            a :class:`ConvergenceWarning`, typically after a cycle or two and never after more
            than ``max_restarts``. Under a process group every rank passes the same.
        basis_dir: an existing writable directory to spill the basis (and the stored products)
            to: they live in memory-mapped files there (``tempfile`` names, one per rank),
            unlinked as soon as they are mapped, so nothing remains when eigsh returns or
            raises. The kernel keeps as many pages resident as memory allows and writes the
            others back. A spilled basis in the operator's dtype gives bitwise the in-memory
            result. The operator, if on a GPU, then reads the basis in row blocks from the
            host.

    Returns:
        An :class:`EigshResult`. Pairs that missed ``tol`` are returned with
        ``converged=False`` and a :class:`ConvergenceWarning`; nothing is dropped silently.

    Raises:
        TypeError: unsupported ``op``, an argument of the wrong type (a non-int ``k``, a
            non-number ``tol``, a ``basis_dtype`` that is no dtype, …), a dtype other than
            float32/float64, ``v0`` with another dtype or device than ``op``, or an operator
            output of the wrong dtype or device.
        ValueError: ``k`` outside ``[1, P)``, unknown ``which``, ``tol`` outside ``(0, 1)``,
            bad ``block_size``/``max_basis``/``max_restarts``/``v0``, a ``basis_dtype`` other
            than the operator's or a lower one of float32/bfloat16, a ``basis_dir`` that is not
            an existing writable directory, a non-square or (dense and) non-symmetric operator,
            or NaN/inf produced by the operator.

    Notes:
        When the basis would hold (nearly) the whole space, ``P <= max_basis + B`` (this covers
        ``P`` smaller than the block and ``k`` close to ``P``), Lanczos cannot save anything:
        the operator is materialised with ``P`` products and solved by dense ``eigh`` in
        float64 (``method="dense"``). Residuals are recomputed in both cases (in
        the Lanczos case from stored products when ``store_products``; see that argument).

        A block Krylov space holds at most ``B`` vectors of one eigenspace, so an eigenvalue of
        multiplicity above ``B`` shows ``B`` copies. When the wanted values hold ``B`` equal
        ones (within ``tol``), when the space became invariant (breakdown; fresh random
        directions are injected), or whenever ``B = 1``, convergence is confirmed by a fresh
        random start deflated against the wanted pairs (counted in ``num_restarts``), repeated
        until it brings no new wanted pair. So (with probability one, in exact arithmetic)
        every copy of a wanted eigenvalue is found, whatever its multiplicity.

        ``return_eigenvectors=True`` adds a ``[K, P]`` copy (returned as its ``[P, K]``
        transpose) to the peak memory.
    """
    A = aslinearoperator(op)
    _check_dtype(A)
    P = A.shape[0]
    k = check_int("k", k, minimum=1, maximum=P - 1)
    which = check_choice("which", which, WHICH)  # type: ignore[assignment]
    tol = check_float("tol", tol, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    block_size = check_int("block_size", block_size, minimum=1, none_ok=True)
    max_basis = check_int("max_basis", max_basis, minimum=1, none_ok=True)
    max_restarts = check_int("max_restarts", max_restarts, minimum=0, none_ok=True)
    check_bool("return_eigenvectors", return_eigenvectors)
    check_int("seed", seed, none_ok=True)
    progress = _check_progress(progress)
    cp = as_checkpoint(checkpoint)
    resume = check_resume(resume)
    storage_dtype = basis_dtype_for(basis_dtype, A.dtype)
    spill_dir = check_basis_dir(basis_dir)
    b = block_size if block_size is not None else _default_block_size(k, A.device)
    M = max_basis if max_basis is not None else _default_max_basis(k, b)
    store = _store_products(store_products, M, P, A.dtype, storage_dtype)
    if max_restarts is None:
        max_restarts = _DEFAULT_MAX_RESTARTS
    check_symmetric(A)
    v0_block = _prepare_v0(v0, A, b)
    sh = Sharding(P, run_group(A, process_group))
    sh.agree(
        "eigsh",
        dtype=str(A.dtype),
        k=k,
        which=which,
        tol=float(tol),
        block_size=b,
        max_basis=M,
        max_restarts=max_restarts,
        store_products=store,
        basis_dtype=str(storage_dtype),
        return_eigenvectors=bool(return_eigenvectors),
        seed=seed,
        v0=None if v0_block is None else v0_block.shape[1],
        local_matmat=callable(getattr(A, "local_matmat", None)),
    )
    seed_arg, seed = seed, sh.shared_seed(seed)
    report = Reporter(progress if sh.rank == 0 or callable(progress) else False, k)
    st: LanczosState | None = None
    try:
        if P <= M + b:
            result = dense_eigsh(
                A,
                k,
                which=which,
                tol=float(tol),
                block_size=min(b, P),
                max_basis=min(M, P),
                return_eigenvectors=return_eigenvectors,
                report=report,
            )
            if sh.distributed:  # the same dense solve on every rank; keep this rank's rows
                ev = result.eigenvectors
                ev = None if ev is None else sh.take(ev).clone()
                result = dataclasses.replace(result, eigenvectors=ev, sharding=sh)
            warn_unconverged(result, stacklevel=2)
            return result
        if M < k + 2 * b:
            raise ValueError(
                f"max_basis must be >= k + 2*block_size = {k + 2 * b} (got {M}): the basis holds "
                "the k wanted vectors, the current block and the next one"
            )
        saver = None
        if cp is not None:
            settings = {
                "solver": "eigsh", "P": P, "dtype": str(A.dtype), "k": k, "which": which,
                "tol": float(tol), "block_size": b, "max_basis": M, "growth": max_basis is None,
                "max_restarts": int(max_restarts), "seed": seed_arg, "store_products": store,
                "basis_dtype": str(storage_dtype),
                "return_eigenvectors": bool(return_eigenvectors),
                "v0": None if v0_block is None else tensor_digest(v0_block),
                "matrix": tensor_digest(op) if isinstance(op, torch.Tensor) else None,
            }  # fmt: skip
            saver = LanczosCheckpoint(Store(cp, settings, resume=resume, group=sh.group))
            done = saver.result(A.device, sh)
            if done is not None:
                warn_unconverged(done, stacklevel=2)
                return done
        st = LanczosState(
            A,
            k,
            which=which,
            tol=float(tol),
            b=b,
            M=M,
            max_restarts=int(max_restarts),
            gen=make_generator(seed),
            report=report,
            store_products=store,
            max_growth=None if max_basis is not None else max_growth(M, P, storage_dtype),
            sh=sh,
            storage=BasisStorage(storage_dtype, A.device, spill_dir, sh.rank),
        )
        with guard(None if saver is None else saver.store):
            result = BlockLanczos(st, v0_block, saver).run(return_eigenvectors=return_eigenvectors)
            if saver is not None:
                saver.save_result(result)
        warn_unconverged(result, stacklevel=2)
        return result
    finally:
        if st is not None:
            st.release()
        report.close()
