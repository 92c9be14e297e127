"""A block Lanczos run's state to and from a checkpoint (files: :mod:`fastspec.checkpoint`).

Saved: the used rows of the basis ``V`` and of the stored products ``AV``, the projected matrix
``T``, the counters (positions, coupling ``C``, locked values, ``‖A‖`` estimate, product and
restart counts, confirmation state), the generator's state, the exact power-of-two scale, the
basis size after growth, and the loop's position (block steps since the last check, the check
interval). Restored into a fresh :class:`~fastspec.linalg.lanczos.state.LanczosState`, they give
bitwise the continuation of the interrupted run.

Phases: ``"iterate"`` (saved at the top of the loop of
:meth:`~fastspec.linalg.lanczos.solver.BlockLanczos.iterate`), ``"extract"`` (the iteration is
over; a resumed run recomputes its last check, which reads only the saved state, and
certifies), ``"done"`` (the result is stored; a resumed run returns it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastspec.checkpoint import CheckpointError, Store
from fastspec.linalg.lanczos.result import EigshResult
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["LanczosCheckpoint", "Position"]

_COUNTERS = ("n_lock", "m", "c0", "num_matvecs", "num_restarts", "num_single_pass")


@dataclass(frozen=True)
class Position:
    """Where a resumed run continues: the phase and the loop's counters."""

    phase: str
    since: int
    interval: int


class LanczosCheckpoint:
    """Saves and restores one ``eigsh`` run through a :class:`~fastspec.checkpoint.Store`."""

    def __init__(self, store: Store) -> None:
        """Wrap ``store``; nothing is read yet."""
        self.store = store
        self.loaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        if store.exists:
            self.loaded = store.load()

    def result(self, device: torch.device, sharding: Any = None) -> EigshResult | None:
        """The stored result of a finished run (``None`` when the run is not finished).

        Args:
            device: the operator's device.
            sharding: the run's vector layer (under a process group, each rank stored its rows
                of the eigenvectors).
        """
        if self.loaded is None or self.loaded[1].get("phase") != "done":
            return None
        tensors, meta = self.loaded
        vecs = tensors.get("eigenvectors")
        return EigshResult(
            eigenvalues=tensors["eigenvalues"].to(device),
            eigenvectors=None if vecs is None else vecs.to(device),
            residuals=tensors["residuals"].to(device),
            converged=tensors["converged"].to(device),
            **meta["result"],
            **({} if sharding is None or not sharding.distributed else {"sharding": sharding}),
        )

    def restore(self, st: LanczosState) -> Position | None:
        """Load the saved state into ``st``; ``None`` when there is none (a fresh start)."""
        if self.loaded is None:
            return None
        tensors, meta = self.loaded
        self.loaded = None
        try:
            M = int(meta["M"])
            if M != st.M:  # the basis grew before the save
                st.V = st.empty_like_basis(M)
                st.AV = None if st.AV is None else st.empty_like_basis(M)
                st.T = torch.zeros(M, M, dtype=st.T.dtype, device=st.T.device)
                st.M = M
            used = tensors["V"].shape[0]
            st.V[:used] = tensors["V"].to(st.V.device)
            if st.AV is not None:
                st.AV[:used] = tensors["AV"].to(st.AV.device)
            st.T.copy_(tensors["T"])
            s = st.s
            for name in _COUNTERS:
                setattr(s, name, int(meta[name]))
            s.C = tensors["C"].to(st.small)
            s.locked_theta = tensors["locked_theta"].numpy()
            s.anorm = float(meta["anorm"])
            s.broke = bool(meta["broke"])
            vv = tensors.get("verify_values")
            s.verify_values = None if vv is None else vv.numpy()
            st.progress = int(meta["progress"])
            st.scale = meta["scale"]
            st.gen.set_state(tensors["gen"])
            return Position(str(meta["phase"]), int(meta["since"]), int(meta["interval"]))
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.store.dir}: the checkpoint does not fit this eigsh run ({exc})"
            ) from None

    def maybe_save(
        self, st: LanczosState, since: int, interval: int, phase: str = "iterate"
    ) -> None:
        """Save the run when a save is due (see :meth:`fastspec.checkpoint.Store.due`)."""
        if self.store.due(st.s.num_matvecs):
            self.save(st, since, interval, phase)

    def save(self, st: LanczosState, since: int, interval: int, phase: str) -> None:
        """Save the run's state now."""
        s = st.s
        used = min(st.M, s.n_lock + s.m + st.b)
        assert s.C is not None
        tensors = {
            "V": st.V[:used],
            "T": st.T,
            "C": s.C,
            "locked_theta": torch.from_numpy(np.asarray(s.locked_theta, dtype=np.float64)),
            "gen": st.gen.get_state(),
        }
        if st.AV is not None:
            tensors["AV"] = st.AV[:used]
        if s.verify_values is not None:
            tensors["verify_values"] = torch.from_numpy(np.asarray(s.verify_values))
        meta: dict[str, Any] = {name: getattr(s, name) for name in _COUNTERS}
        meta.update(
            phase=phase, since=since, interval=interval, M=st.M, anorm=s.anorm, broke=s.broke,
            progress=st.progress, scale=st.scale,
        )  # fmt: skip
        self.store.save(tensors, meta, s.num_matvecs)

    def save_result(self, result: EigshResult) -> None:
        """Store the finished result, so that a resumed run returns it without products."""
        tensors = {
            "eigenvalues": result.eigenvalues,
            "residuals": result.residuals,
            "converged": result.converged,
        }
        if result.eigenvectors is not None:
            tensors["eigenvectors"] = result.eigenvectors
        keep = (
            "num_matvecs", "num_restarts", "which", "tol", "block_size", "max_basis", "method",
            "basis_dtype", "basis_spilled",
        )  # fmt: skip
        meta = {"phase": "done", "result": {name: getattr(result, name) for name in keep}}
        self.store.save(tensors, meta, result.num_matvecs)
