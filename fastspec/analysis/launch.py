"""The ``hessian`` and ``gradients`` commands on several processes, launched by torchrun.

``torchrun --nproc_per_node=N -m fastspec hessian ...`` (or ``python -m torch.distributed.run
...``) starts N copies of the command. Each finds torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins one process group:
gloo for CPU tensors, NCCL for CUDA ones (rank r on GPU ``LOCAL_RANK``), ``--backend``
overrides. Every collective waits at most ``--dist-timeout`` seconds (default
:data:`DEFAULT_TIMEOUT_S`) for the other ranks: a rank that dies without torchrun (whose agent
stops the other ranks as soon as one exits non-zero) ends the others' waits there.

Data: batch i of ``--data`` goes to rank ``i mod N`` (after ``--max-samples`` has cut the whole
sequence), so the batches must come in the same order on every rank and every pass (no
shuffling DataLoader); a data factory that takes ``rank`` and ``world_size`` keyword arguments
returns its rank's share itself (``--max-samples`` is then refused). Fewer batches than ranks is
an error. Rank 0 alone shows progress and writes the report, which records the world size.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from fastspec.batches import batch_size, truncate

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Launch",
    "RoundRobin",
    "add_launch_options",
    "env_world",
    "launched",
    "record_failure",
]

#: seconds a collective waits for the other ranks (``--dist-timeout``)
DEFAULT_TIMEOUT_S = 600


def env_world() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` outside torchrun."""
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return 0, 1


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--dist-timeout``, read only under torchrun."""
    g = p.add_argument_group("several processes (under torchrun)")
    g.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="process-group backend (default: nccl for CUDA, gloo for CPU)")  # fmt: skip
    g.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="longest wait for the other ranks at a collective "
                   f"(default {DEFAULT_TIMEOUT_S})")  # fmt: skip


@dataclass(frozen=True)
class Launch:
    """This process's place in the run: ``rank`` of ``world_size`` on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_root(self) -> bool:
        """Whether this rank shows progress and writes the report (rank 0)."""
        return self.rank == 0

    def share(self, data: Any, *, shared: bool, max_samples: int | None) -> Any:
        """This rank's batches of ``data`` (all of them on one process).

        Args:
            data: the batches of ``--data``.
            shared: ``data`` is already this rank's share (its factory sharded itself).
            max_samples: ``--max-samples``, applied to the whole sequence of batches.
        """
        if self.world_size == 1:
            return data
        if shared:
            if max_samples is not None:
                raise ValueError(
                    "--max-samples: the data factory returns each rank's share itself, so the "
                    "first N samples of the whole data are unknown; cut the data in the factory"
                )
            return data
        return RoundRobin(data, self.rank, self.world_size, max_samples=max_samples)


@contextmanager
def launched(args: argparse.Namespace, device: torch.device) -> Iterator[Launch]:
    """The run's :class:`Launch`: joins torchrun's process group for the block, if any."""
    rank, world_size = env_world()
    if world_size == 1:
        yield Launch(0, 1, device)
        return
    import torch.distributed as dist

    backend = args.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda" and device.index is None:  # one GPU per rank of this node
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout: expected a positive number, got {args.dist_timeout}")
    dist.init_process_group(backend, timeout=timedelta(seconds=args.dist_timeout))
    try:
        yield Launch(rank, world_size, device)
    finally:
        dist.destroy_process_group()


class RoundRobin:
    """Rank ``rank``'s share of ``data``: batches ``rank, rank + W, rank + 2W, …``.

    Re-iterable; ``max_samples`` cuts the whole sequence first (the last batch kept is
    truncated). Raises ``ValueError`` when ``data`` has fewer batches than ranks or shuffles.
    """

    def __init__(self, data: Any, rank: int, world_size: int, *, max_samples: int | None) -> None:
        if isinstance(data, torch.utils.data.DataLoader) and isinstance(
            data.sampler, torch.utils.data.RandomSampler
        ):
            raise ValueError(
                "--data: a shuffling DataLoader gives every rank another order, so ranks would "
                "share samples; pass shuffle=False or a factory taking rank and world_size"
            )
        self.data, self.rank, self.world_size = data, rank, world_size
        self.max_samples = max_samples
        try:  # a DataLoader over an IterableDataset has __len__ but may not know it
            total = len(data) if max_samples is None else -1
        except TypeError:
            total = -1
        if total < 0:
            total = sum(1 for _ in self._all())
        if total < world_size:
            raise ValueError(
                f"--data: {total} batch{'es' if total != 1 else ''} cannot be shared by "
                f"{world_size} ranks (batch i goes to rank i mod {world_size}, and every rank "
                "needs one); use smaller batches or fewer processes"
            )
        self.num_batches = total

    def _all(self) -> Iterator[Any]:
        seen = 0
        for batch in self.data:
            if self.max_samples is not None:
                n = batch_size(batch)
                if seen + n > self.max_samples:
                    n = self.max_samples - seen
                    batch = truncate(batch, n)
                seen += n
            yield batch
            if self.max_samples is not None and seen >= self.max_samples:
                return

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self._all()):
            if i % self.world_size == self.rank:
                yield batch


#: what gloo and NCCL say when a collective fails because another rank is gone
_PEER_GONE = ("closed by peer", "reset by peer", "remote worker", "remote process", "timed out")


def record_failure(exc: BaseException) -> None:
    """Under torchrun, hand ``exc`` to the agent, whose summary then names this rank's error.

    The agent takes the earliest error (to the second) as the root cause; a collective that
    failed because another rank died is recorded 2 s late, so that rank's error stays first.
    """
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        if any(s in str(exc).lower() for s in _PEER_GONE):
            time.sleep(2.0)
        ErrorHandler().record_exception(exc)
