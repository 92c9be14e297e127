"""Checkpoints of long runs: atomic files, fingerprints of what a run computes, safe loading.

A resumable computation (``eigsh``, ``slq``, ``trace``, a pipeline stage) owns one directory::

    DIR/manifest.json                             written last, by rank 0: format, world size,
                                                  sequence number, fingerprint, each shard's
                                                  size and CRC-32
    DIR/state-<seq>.rank<r>-of-<W>.safetensors    rank r's tensors and plain values

A save writes every rank's shard under a new sequence number (temporary file, fsync, rename),
then the manifest the same way, then removes the shards of the previous sequence: a kill at any
moment leaves a manifest whose shards exist and are whole. Shards use the safetensors layout
(an 8-byte header length, a JSON header, raw little-endian tensor bytes) and are read without
unpickling anything; the manifest is JSON.

While a checkpointed computation runs (:func:`guard`), SIGINT, SIGTERM and SIGHUP handled by
Python code (``signals_as_exceptions`` of the CLI, Python's own SIGINT) are held until the next
save point (a block step): the state is saved there, then the held handler runs (and raises).

A checkpoint is refused on resume when its fingerprint (model parameters and a hash of their
values, data counts and a hash of a sample, parameter subset, dtype and the solver's settings)
differs from the run's: the error names every entry that differs. A truncated or corrupted file
is an error too; nothing restarts from zero unless the caller asked for it (``resume=False``
on an empty directory, or ``resume="if-present"`` without a manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch

from fastspec._checks import check_choice, check_float, check_int, to_plain

__all__ = [
    "DEFAULT_EVERY_SECONDS",
    "Checkpoint",
    "CheckpointError",
    "Resume",
    "Store",
    "as_checkpoint",
    "check_resume",
    "data_fingerprint",
    "guard",
    "model_data_fingerprint",
    "read_record",
    "tensor_digest",
    "tensors_fingerprint",
    "write_record",
]

#: the default spacing of saves; a save is also never closer than ``1 / _WRITE_SHARE`` times its
#: own duration to the previous one, so writing costs at most ``_WRITE_SHARE`` of the run
#: (benchmarks/results/checkpoint_overhead.md)
DEFAULT_EVERY_SECONDS = 300.0
_WRITE_SHARE = 0.02
FORMAT = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 24  # bytes per write / CRC step
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_CODE = {v: k for k, v in _DTYPES.items()}

Resume = Union[bool, Literal["if-present"]]
CheckpointArg = Union[None, str, os.PathLike, "Checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: another run's, corrupted, truncated or incomplete."""


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often a computation saves its state.

    Args:
        directory: the checkpoint directory (created when needed).
        every_seconds: save when this many seconds passed since the last save (``None``: no
            time rule). Default 300 s; saves are also spaced by at least 50 times their own
            duration, so they cost at most 2 % of the run.
        every_products: save when this many operator products were made since the last save
            (``None``, the default: no product rule).
        fingerprint: what the caller knows about the operator (model, data, parameters, ...),
            added to the solver's own fingerprint.
    """

    directory: Path
    every_seconds: float | None = DEFAULT_EVERY_SECONDS
    every_products: int | None = None
    fingerprint: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the fields."""
        if not isinstance(self.directory, (str, os.PathLike)):
            raise TypeError(
                f"checkpoint directory must be a path, got {type(self.directory).__name__}"
            )
        object.__setattr__(self, "directory", Path(self.directory))
        check_float("every_seconds", self.every_seconds, minimum=0.0, none_ok=True)
        check_int("every_products", self.every_products, minimum=1, none_ok=True)
        if not isinstance(self.fingerprint, Mapping):
            raise TypeError("fingerprint must be a mapping")

    def sub(self, name: str, **fingerprint: Any) -> Checkpoint:
        """The checkpoint of one stage: ``directory / name``, the same rules, more fingerprint."""
        return replace(
            self, directory=self.directory / name, fingerprint={**self.fingerprint, **fingerprint}
        )

    def with_fingerprint(self, **fingerprint: Any) -> Checkpoint:
        """The same checkpoint with more fingerprint entries."""
        return replace(self, fingerprint={**self.fingerprint, **fingerprint})


def as_checkpoint(checkpoint: Any) -> Checkpoint | None:
    """``None``, a directory (str or path) or a :class:`Checkpoint` → a :class:`Checkpoint`."""
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return Checkpoint(Path(checkpoint))
    raise TypeError(
        f"checkpoint must be a directory path, a Checkpoint or None, got {type(checkpoint).__name__}"
    )


def check_resume(resume: Any) -> Resume:
    """``resume``: ``True`` (a checkpoint must exist), ``False`` or ``"if-present"``."""
    if isinstance(resume, (bool, np.bool_)):
        return bool(resume)
    if isinstance(resume, str):
        return check_choice("resume", resume, ("if-present",))  # type: ignore[return-value]
    raise TypeError(f"resume must be True, False or 'if-present', got {resume!r}")


# --- fingerprints -------------------------------------------------------------------------


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of a tensor's dtype, shape and values."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    a = t.detach().cpu().contiguous()
    if a.dtype in (torch.bfloat16, torch.float16):
        a = a.float()
    h.update(_bytes(a) if a.numel() else b"")
    return h.hexdigest()[:16]


def tensors_fingerprint(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, Any]:
    """Names, shapes and dtypes of named tensors (a model's parameters) and a hash of values."""
    h = hashlib.sha256()
    shapes = {}
    for name, t in named:
        shapes[name] = f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return {"shapes": shapes, "values": h.hexdigest()[:16]}


def data_fingerprint(sample: Any, num_samples: int) -> dict[str, Any]:
    """The sample count and a hash of every tensor in ``sample`` (a batch, nested)."""
    h = hashlib.sha256()
    for t in _tensors(sample):
        h.update(tensor_digest(t).encode())
    return {"num_samples": int(num_samples), "sample": h.hexdigest()[:16]}


def model_data_fingerprint(
    model: Any, names: Iterable[str], sample: Any, num_samples: int
) -> dict[str, Any]:
    """The fingerprint of a model's selected parameters (``names``) and of its data.

    Args:
        model: an ``nn.Module`` (anything with ``named_parameters()``).
        names: the parameters a run differentiates (its subset).
        sample: the data's first batch, hashed.
        num_samples: the data's sample count.
    """
    wanted = set(names)
    named = [(n, p) for n, p in model.named_parameters() if n in wanted]
    return {
        "model": tensors_fingerprint(model.named_parameters()),
        "params": sorted(wanted),
        "data": data_fingerprint(sample, num_samples),
        "selected": tensors_fingerprint(named)["values"],
    }


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key])
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)


def differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Readable lines naming each fingerprint entry that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                out.append(f"{where}: absent in the checkpoint, {current[key]!r} now")
            elif key not in current:
                out.append(f"{where}: {saved[key]!r} in the checkpoint, absent now")
            else:
                out.extend(differences(saved[key], current[key], where))
        return out
    if saved != current:
        return [f"{prefix}: {_short(saved)} in the checkpoint, {_short(current)} now"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- files ---------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any) -> Any:
    """``write(file)`` into a temporary file next to ``path``, fsync, rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            out = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return out


def write_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """A small JSON record next to a checkpoint, written atomically."""
    text = json.dumps(to_plain(dict(record))).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(Path(path), lambda f: f.write(text))


def read_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A record written by :func:`write_record` (``None`` when absent).

    Raises:
        CheckpointError: the file is not such a record.
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted or truncated ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: corrupted (not a record)")
    return data


def _write_shard(f: Any, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> int:
    """Tensors in the safetensors layout; returns the CRC-32 of everything written."""
    header: dict[str, Any] = {"__metadata__": {"fastspec": json.dumps(to_plain(dict(meta)))}}
    arrays = []
    offset = 0
    for name, t in tensors.items():
        a = t.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        a = a.contiguous()
        nbytes = a.numel() * a.element_size()
        header[name] = {
            "dtype": _DTYPES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        arrays.append(a)
        offset += nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    first = len(head).to_bytes(8, "little") + head
    crc = zlib.crc32(first)
    f.write(first)
    for a in arrays:
        if a.numel() == 0:
            continue
        raw = _bytes(a)
        for i in range(0, len(raw), _CHUNK):
            chunk = raw[i : i + _CHUNK]
            crc = zlib.crc32(chunk, crc)
            f.write(chunk)
    return crc


def _read_shard(
    path: Path, size: int, crc: int, out: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a shard; tensors named in ``out`` are read into those (their leading rows).

    Raises:
        CheckpointError: a missing, truncated or corrupted file (the message names it).
    """
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (the manifest names it)") from None
    if actual != size:
        raise CheckpointError(f"{path}: truncated or overwritten ({actual} bytes, {size} expected)")
    tensors: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        first = f.read(8)
        n = int.from_bytes(first, "little")
        if n <= 0 or n > size - 8:
            raise CheckpointError(f"{path}: not a checkpoint shard (bad header length)")
        head = f.read(n)
        c = zlib.crc32(first + head)
        try:
            header = json.loads(head)
            meta = json.loads(header.pop("__metadata__")["fastspec"])
            entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
            for name, e in entries:
                dtype = _FROM_CODE[e["dtype"]]
                shape = [int(d) for d in e["shape"]]
                lo, hi = (int(x) for x in e["data_offsets"])
                target = out.get(name) if out is not None else None
                if (
                    target is not None
                    and list(target.shape[1:]) == shape[1:]
                    and (target.dtype == dtype and target.shape[0] >= (shape[0] if shape else 0))
                ):
                    t = target[: shape[0]] if shape else target
                else:
                    t = torch.empty(shape, dtype=dtype)
                if t.numel() * t.element_size() != hi - lo:
                    raise ValueError(f"tensor {name}: shape and byte range disagree")
                c = _read_into(f, t, c)
                tensors[name] = t
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: malformed checkpoint shard ({exc})") from None
    if c != crc:
        raise CheckpointError(f"{path}: corrupted (CRC-32 mismatch)")
    return tensors, meta


def _read_into(f: Any, t: torch.Tensor, crc: int) -> int:
    if t.numel() == 0:
        return crc
    if t.device.type != "cpu" or not t.is_contiguous():
        host = torch.empty(t.shape, dtype=t.dtype)
        crc = _read_into(f, host, crc)
        t.copy_(host)
        return crc
    raw = _bytes(t)
    for i in range(0, len(raw), _CHUNK):
        chunk = raw[i : i + _CHUNK]
        got = f.readinto(chunk)
        if got != len(chunk):
            raise ValueError("file ends inside a tensor")
        crc = zlib.crc32(chunk, crc)
    return crc


def _bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    flat = t.reshape(-1)
    if flat.dtype in (torch.bool, torch.bfloat16, torch.float16):
        flat = flat.view(torch.uint8 if flat.dtype == torch.bool else torch.int16)
    return memoryview(flat.numpy()).cast("B")  # type: ignore[arg-type]


def _shard_name(seq: int, rank: int, world_size: int) -> str:
    return f"state-{seq}.rank{rank}-of-{world_size}.safetensors"


_SHARD = re.compile(r"state-(\d+)\.rank(\d+)-of-(\d+)\.safetensors")


class Store:
    """One computation's checkpoint directory: timed atomic saves and checked loads.

    Args:
        checkpoint: where and how often.
        fingerprint: the solver's settings (with ``checkpoint.fingerprint`` added).
        resume: ``True``: continue from the checkpoint, which must exist; ``"if-present"``:
            continue when there is one, else start; ``False``: start, and refuse a directory
            that already holds a checkpoint (remove it, or resume it).
        group: a ``torch.distributed`` process group (``None``: one process). Every rank
            writes its shard; rank 0 writes the manifest.

    Raises:
        CheckpointError: ``resume=False`` and the directory holds a checkpoint.
        FileNotFoundError: ``resume=True`` and there is none.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        fingerprint: Mapping[str, Any],
        *,
        resume: Resume,
        group: Any = None,
    ) -> None:
        self.cp = checkpoint
        self.dir = checkpoint.directory
        self.fingerprint = to_plain({**dict(checkpoint.fingerprint), **dict(fingerprint)})
        self.group = group
        if group is None:
            self.rank, self.world_size = 0, 1
        else:
            import torch.distributed as dist

            self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.resume = check_resume(resume)
        self.manifest = self._read_manifest()
        if self.manifest is not None and self.resume is False:
            raise CheckpointError(
                f"{self.dir} already holds a checkpoint: resume it (resume=True, --resume) or "
                "remove it to start again"
            )
        if self.manifest is None and self.resume is True:
            raise FileNotFoundError(f"no checkpoint to resume in {self.dir} (no {MANIFEST})")
        if self.manifest is not None:
            self._check_manifest(self.manifest)
        self.seq = 0 if self.manifest is None else int(self.manifest["seq"])
        self.last_time = time.monotonic()
        self.last_products = 0
        self.write_seconds = 0.0
        self.num_saves = 0

    # -- reading --

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.dir / MANIFEST
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise CheckpointError(f"{path}: a directory, not a checkpoint manifest") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            missing = {"format", "seq", "world_size", "fingerprint", "shards"} - set(data)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupted or truncated manifest ({exc})") from None
        return data

    def _check_manifest(self, m: dict[str, Any]) -> None:
        if m["format"] != FORMAT:
            raise CheckpointError(
                f"{self.dir}: checkpoint format {m['format']!r}, this fastspec reads {FORMAT}"
            )
        if int(m["world_size"]) != self.world_size:
            raise CheckpointError(
                f"{self.dir}: checkpoint written by {m['world_size']} ranks, this run has "
                f"{self.world_size}: resume with the same world size"
            )
        diff = differences(m["fingerprint"], self.fingerprint)
        if diff:
            raise CheckpointError(
                f"{self.dir}: the checkpoint is of another computation; it differs in "
                + "; ".join(diff)
            )

    @property
    def exists(self) -> bool:
        """Whether there is a checkpoint to resume."""
        return self.manifest is not None

    def load(
        self, out: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """This rank's tensors and plain values, or ``None`` when there is nothing to resume.

        Args:
            out: preallocated tensors to read into (their leading rows), by name.

        Raises:
            CheckpointError: a missing, truncated or corrupted shard.
        """
        if self.manifest is None:
            return None
        name = _shard_name(self.seq, self.rank, self.world_size)
        self.last_products = int(self.manifest.get("products", 0))
        entry = self.manifest["shards"].get(name)
        if entry is None:
            raise CheckpointError(f"{self.dir / MANIFEST}: names no shard for rank {self.rank}")
        return _read_shard(self.dir / name, int(entry["bytes"]), int(entry["crc32"]), out)

    # -- writing --

    def due(self, products: int) -> bool:
        """Whether a save is due after ``products`` products (the same answer on every rank).

        A held signal (see :func:`guard`) makes a save due.
        """
        cp = self.cp
        due = bool(_held) or (
            cp.every_products is not None and products - self.last_products >= cp.every_products
        )
        if not due and cp.every_seconds is not None:
            spacing = max(cp.every_seconds, self.write_seconds / _WRITE_SHARE)
            due = time.monotonic() - self.last_time >= spacing
        if self.group is not None:
            import torch.distributed as dist

            flag = torch.tensor([int(due)])
            dist.broadcast(flag, 0, group=self.group)
            due = bool(flag.item())
        return due

    def save(
        self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], products: int
    ) -> None:
        """Write this rank's shard and (rank 0) the manifest, atomically; drop the old ones."""
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        seq = self.seq + 1
        name = _shard_name(seq, self.rank, self.world_size)
        crc = _atomic_write(self.dir / name, lambda f: _write_shard(f, tensors, meta))
        entry = {name: {"bytes": (self.dir / name).stat().st_size, "crc32": crc}}
        entries = [entry]
        if self.group is not None:
            import torch.distributed as dist

            entries = [{}] * self.world_size
            dist.all_gather_object(entries, entry, group=self.group)
        if self.rank == 0:
            shards: dict[str, Any] = {}
            for e in entries:
                shards.update(e)
            manifest = {
                "format": FORMAT,
                "seq": seq,
                "world_size": self.world_size,
                "products": int(products),
                "fingerprint": self.fingerprint,
                "shards": shards,
            }
            text = json.dumps(manifest, indent=1).encode()
            _atomic_write(self.dir / MANIFEST, lambda f: f.write(text))
        if self.group is not None:
            import torch.distributed as dist

            dist.barrier(group=self.group)
        self.manifest = None  # written; loads go through a new Store
        for old in self.dir.iterdir():
            match = _SHARD.fullmatch(old.name)
            if match and int(match[1]) != seq and int(match[2]) == self.rank:
                old.unlink(missing_ok=True)
        self.seq = seq
        self.num_saves += 1
        self.last_products = int(products)
        self.last_time = time.monotonic()
        self.write_seconds = self.last_time - t0
        _release()


_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_held: list[tuple[Any, int]] = []  # (the handler held back, its signal)
_guards = 0


def _hold(signum: int, frame: Any) -> None:
    handler = _previous.get(signum)
    if _held or handler is None:  # a second signal: stop now
        if callable(handler):
            handler(signum, frame)
        return
    _held.append((handler, signum))


_previous: dict[int, Any] = {}


def _release() -> None:
    """Run the held signal's handler (after a save: it raises, the run stops there)."""
    if _held:
        handler, signum = _held.pop()
        _held.clear()
        handler(signum, None)


@contextmanager
def guard(store: Store | None) -> Iterator[None]:
    """While the block runs, hold SIGINT/SIGTERM/SIGHUP until the next save (see module doc).

    Only Python-level handlers are held (a signal with the default action still kills the
    process; the last save is then what a resume finds). No-op for ``store=None`` and outside
    the main thread.
    """
    global _guards
    if store is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if _guards == 0:
        for signum in _SIGNALS:
            old = signal.getsignal(signum)
            if callable(old):
                _previous[signum] = old
                signal.signal(signum, _hold)
    _guards += 1
    try:
        yield
    finally:
        _guards -= 1
        if _guards == 0:
            for signum, old in _previous.items():
                signal.signal(signum, old)
            _previous.clear()
            _release()  # a signal held after the last save point still stops the run
