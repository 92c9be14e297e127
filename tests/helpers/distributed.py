"""Run a function on W gloo ranks in fresh processes and collect what each rank returns."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(
    rank: int, world_size: int, init: str, fn: Callable[..., Any], args: tuple, q: Any
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
        try:
            q.put((rank, True, fn(rank, world_size, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # report any failure to the parent
        q.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_ranks(
    fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0
) -> list[Any]:
    """``[fn(rank, world_size, *args) for each rank]``, each in its own gloo process.

    ``fn`` must be a module-level function (it is pickled into spawned processes). A rank that
    raises fails the call with that rank's traceback; a run past ``timeout`` seconds is killed.
    """
    # the spawned ranks unpickle fn by its module name (tests.<...>): the repository root must be
    # on their path, appended after site-packages so that an installed fastspec is not shadowed
    # by the source tree (spawned processes take the parent's sys.path before unpickling)
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/store"
        procs = [
            ctx.Process(target=_entry, args=(r, world_size, init, fn, args, q), daemon=True)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        while len(results) + len(errors) < world_size and time.monotonic() < deadline:
            if q.empty():
                if all(not p.is_alive() for p in procs) and q.empty():
                    break
                time.sleep(0.05)
                continue
            rank, ok, value = q.get()
            (results if ok else errors)[rank] = value
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
            if p.is_alive():
                p.kill()
        if errors:
            raise RuntimeError(
                "\n".join(f"rank {r} failed:\n{e}" for r, e in sorted(errors.items()))
            )
        if len(results) < world_size:
            missing = sorted(set(range(world_size)) - set(results))
            raise TimeoutError(f"ranks {missing} returned nothing within {timeout} s")
        return [results[r] for r in range(world_size)]
