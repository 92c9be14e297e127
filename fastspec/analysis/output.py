"""Writing reports: JSON that numpy and torch values survive, and report directories.

A report directory appears only when complete: it is written next to the target under a
temporary name, then renamed into place. It carries a marker file listing the files fastspec
wrote, and ``overwrite`` replaces only such a directory with no other files in it (or an empty
one), never the working directory or one of its parents. Two writers of the same target never
both succeed: the rename refuses to replace a report that appeared meanwhile, and
:func:`claimed` makes a second run with the same target fail before its computation.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastspec.analysis.signals import deferred_signals

__all__ = [
    "MARKER",
    "atomic_dir",
    "check_target",
    "claimed",
    "plain",
    "read_json",
    "write_json",
]

MARKER = ".fastspec-report"
"""The file in every report directory fastspec writes, listing its files (JSON)."""


def plain(value: Any) -> Any:
    """``value`` made plain Python (lists, floats, ints, bools, str, None, dicts).

    Tensors, arrays, numpy scalars, tuples, dtypes and devices are converted, recursively.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.device):
        return str(value)
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON.

    NaN and inf are written as the JSON extensions ``NaN``, ``Infinity``, which Python's ``json``
    reads back.
    """
    path.write_text(json.dumps(plain(data), indent=1, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report's JSON."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"no report at {p}")
    data = json.loads(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p} does not hold a report (a JSON object)")
    return data


def check_target(target: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate a report directory before any work; raise ``ValueError`` saying why it cannot be.

    It may not exist unless ``overwrite``, and then it must be an empty directory or one fastspec
    wrote, holding no other files (:data:`MARKER` lists what fastspec wrote); it is never the
    working directory or one of its parents, nor a symbolic link; the nearest existing ancestor
    must be a writable directory.
    """
    if not str(target).strip():
        raise ValueError("out: expected a directory path, got an empty string")
    path = Path(target)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(
            f"out: {target} is the working directory or one of its parents; name a new directory"
        )
    if path.name in ("", ".", ".."):
        raise ValueError(f"out: expected a path ending in a directory name, got {str(target)!r}")
    if path.is_symlink():
        raise ValueError(f"out: {path} is a symbolic link; name the directory itself")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"out: {path} exists and is not a directory")
        if not overwrite:
            raise ValueError(f"out: {path} already exists; pass overwrite=True (--overwrite)")
        foreign = _foreign_files(path)
        if foreign is None:
            raise ValueError(
                f"out: {path} was not written by fastspec (it has no {MARKER} file) and is not "
                "empty; overwrite replaces only fastspec's reports: remove it yourself or name "
                "another directory"
            )
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ValueError(
                f"out: {path} holds files fastspec did not write ({', '.join(foreign[:3])}{more})"
                "; overwrite would delete them: move them out or name another directory"
            )
    _check_creatable(path)
    return path


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir())


def _foreign_files(path: Path) -> list[str] | None:
    """Files in ``path`` that fastspec did not write; None when ``path`` is not fastspec's."""
    marker = path / MARKER
    if not marker.is_file() or marker.is_symlink():
        return None if next(path.iterdir(), None) is not None else []
    try:
        written = set(json.loads(marker.read_text())["files"])
    except (ValueError, KeyError, TypeError):
        return None
    return [f for f in _files(path) if f not in written and f != MARKER]


def _check_creatable(path: Path) -> None:
    """The nearest existing ancestor of ``path`` is a directory this process can write into."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"out: cannot create {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"out: cannot create {path}: {ancestor} is not writable")


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new directory ``parent/<prefix><random>``, its mode from the umask (mkdtemp's is 0700)."""
    for _ in range(100):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"cannot create a temporary directory {prefix}* in {parent}")


@contextmanager
def claimed(target: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Hold the right to write ``target`` for a whole run, and validate it (:func:`check_target`).

    A second run naming the same target while this one computes fails at once, before its own
    computation, instead of at the end. The claim is an ``flock`` on ``.<name>.lock`` next to the
    target, removed afterwards (the kernel releases it if the process is killed); where there is
    no ``flock`` or no parent directory yet, the final rename alone keeps reports from being lost.
    """
    path = check_target(target, overwrite=overwrite)
    fd = _acquire(path.absolute().parent / f".{path.name}.lock", path)
    try:
        check_target(target, overwrite=overwrite)  # a run that held the claim may have finished
        yield path
    finally:
        if fd is not None:
            with deferred_signals():
                try:
                    os.unlink(path.absolute().parent / f".{path.name}.lock")
                except OSError:
                    pass
                os.close(fd)


def _acquire(lock: Path, path: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``lock`` (None where unsupported)."""
    try:
        import fcntl
    except ImportError:
        return None
    if not lock.parent.is_dir():
        return None
    for _ in range(100):
        with deferred_signals():
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ValueError(
                    f"out: another fastspec run is writing {path}; wait for it or name another "
                    "directory"
                ) from None
            except OSError:
                os.close(fd)
                return None
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # the previous holder removed the file meanwhile: take the new one
    return None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` (where the platform has one): swaps serialised."""
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: the rename alone still never replaces
            pass
        yield
    finally:
        os.close(fd)


def _rename_new(src: Path, dst: Path) -> None:
    """Rename the directory ``src`` to ``dst`` unless ``dst`` holds something.

    A directory's rename fails over a non-empty directory or a file (POSIX, and Windows over
    anything), so a report that appeared at ``dst`` meanwhile is never replaced.
    """
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(
                f"out: {dst} appeared while this report was being written (another run with the "
                "same output?); this report was not written"
            ) from None
        raise


def _install(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``path``, replacing a report there only when ``overwrite``."""
    with _locked(path.parent):
        if not (overwrite and path.exists()):
            _rename_new(tmp, path)
            return
        if path.is_symlink() or not path.is_dir() or _foreign_files(path) != []:
            raise FileExistsError(f"out: {path} changed while this report was being written")
        old = _fresh_dir(path.parent, f".{path.name}.old-")
        os.rename(path, old / path.name)
        try:
            _rename_new(tmp, path)
        except BaseException:
            os.rename(old / path.name, path)  # put the previous report back
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on success it becomes ``target``.

    An existing ``target`` is replaced only when ``overwrite`` (see :func:`check_target`); on any
    error, SIGINT or SIGTERM (under :func:`fastspec.analysis.signals.signals_as_exceptions`) the
    temporary directory is removed, so no finished-looking or partial report is left behind.
    The rename and the cleanup run with signals deferred.
    """
    path = check_target(target, overwrite=overwrite)
    parent = path.absolute().parent
    missing = [d for d in (parent, *parent.parents) if not d.exists()]  # removed on failure
    with deferred_signals():
        parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_dir(parent, f".{path.name}.tmp-")
    try:
        yield tmp
        with deferred_signals():
            note = "written by fastspec; overwrite=True (--overwrite) may replace these files"
            write_json(tmp / MARKER, {"note": note, "files": _files(tmp)})
            _install(tmp, path, overwrite=overwrite)
    except BaseException:
        with deferred_signals():
            shutil.rmtree(tmp, ignore_errors=True)
            for d in missing:
                try:
                    d.rmdir()
                except OSError:
                    break
        raise


def save_report(report: Any, directory: str | os.PathLike[str], overwrite: bool, **kw: Any) -> Path:
    """``report.write_into(tmp, **kw)`` inside :func:`atomic_dir`: every report's ``save``."""
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        report.write_into(tmp, **kw)
    return Path(directory)


def write_report_files(directory: Path, report: Any) -> None:
    """``report.json`` (``report.to_dict()``) and ``summary.txt`` (``report.summary()``)."""
    write_json(directory / "report.json", report.to_dict())
    (directory / "summary.txt").write_text(report.summary() + "\n")
