"""Report directories: only fastspec's own may be replaced, never the working directory or its
parents; a report that appears meanwhile is never lost; an unwritable target fails before any
work; directories honour the umask; SIGINT/SIGTERM are held during the final rename."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from fastspec.analysis.output import MARKER, atomic_dir, check_target
from fastspec.analysis.signals import (
    Terminated,
    deferred_signals,
    exit_code,
    signals_as_exceptions,
)


def _write(target: Path, text: str, *, overwrite: bool = False) -> None:
    with atomic_dir(target, overwrite=overwrite) as tmp:
        (tmp / "report.json").write_text(text)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_overwrite_replaces_a_report_fastspec_wrote(tmp_path: Path) -> None:
    _write(tmp_path / "rep", "first")
    assert (tmp_path / "rep" / MARKER).is_file()
    _write(tmp_path / "rep", "second", overwrite=True)
    assert (tmp_path / "rep" / "report.json").read_text() == "second"
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_directory_of_the_users_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not written by fastspec"):
        _write(mine, "report", overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert _leftovers(tmp_path) == []
    _write(tmp_path / "rep", "report")
    (tmp_path / "rep" / "notes.txt").write_text("my reading of the report")
    with pytest.raises(ValueError, match=r"holds files fastspec did not write \(notes\.txt\)"):
        _write(tmp_path / "rep", "again", overwrite=True)
    assert (tmp_path / "rep" / "notes.txt").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty, "report", overwrite=True)  # nothing to lose in an empty directory
    assert (empty / "report.json").read_text() == "report"


@pytest.mark.parametrize("spec", [".", "CWD", "..", "../work", "/", "sub/.."])
def test_never_the_working_directory_or_a_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / MARKER).write_text("")  # even a directory that looks like a report
    monkeypatch.chdir(work)
    target = str(work) if spec == "CWD" else spec
    with pytest.raises(ValueError, match="working directory or one of its parents"):
        check_target(target, overwrite=True)
    assert sorted(p.name for p in work.iterdir()) == [MARKER]


def test_a_report_that_appears_meanwhile_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "rep"
    with pytest.raises(FileExistsError, match="appeared while this report was being written"):
        with atomic_dir(target) as tmp:  # a long run starts first ...
            (tmp / "report.json").write_text("slow")
            _write(target, "fast")  # ... and another run with the same target finishes first
    assert (target / "report.json").read_text() == "fast"
    assert _leftovers(tmp_path) == []


def test_unwritable_targets_fail_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="afile is not a directory"):
        check_target(tmp_path / "afile" / "sub" / "rep", overwrite=False)
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_target(tmp_path / "afile", overwrite=True)
    with pytest.raises(ValueError, match="ending in a directory name"):
        check_target(tmp_path / "afile" / "..", overwrite=True)
    with pytest.raises(ValueError, match="empty string"):
        check_target("", overwrite=False)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="symbolic link"):
        check_target(tmp_path / "link", overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent_fails_before_any_work(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            check_target(ro / "new" / "rep", overwrite=False)
    finally:
        ro.chmod(0o755)


def test_report_directories_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _write(tmp_path / "rep", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "rep").stat().st_mode) == 0o755


def test_signals_are_held_during_a_critical_section() -> None:
    with signals_as_exceptions():
        with pytest.raises(Terminated) as exc:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                done = True  # reached: the signal waits for the end of the section
        assert done and exc.value.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10  # the handler runs at the next bytecode boundary
            while time.monotonic() < deadline:
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_failed_write_leaves_no_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_dir(tmp_path / "a" / "b" / "c" / "rep") as tmp:
            (tmp / "report.json").write_text("{")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a"]


def test_exit_codes_follow_the_shell() -> None:
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(Terminated(signal.SIGTERM)) == 143
    assert exit_code(Terminated(signal.SIGHUP)) == 129
