"""Atomic writes: complete replacement, cleanup on error, clear errors for unwritable targets."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from middleware.errors import FileOperationError
from middleware.files import atomic_write


def test_writes_and_replaces_keeping_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write(target, "first")
    os.chmod(target, 0o640)
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind


def test_error_during_write_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(FileOperationError):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_parent_is_a_file_or_missing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileOperationError) as info:
        atomic_write(tmp_path / "file" / "out.txt", "data")
    assert info.value.reason == "not_found"
    with pytest.raises(FileOperationError) as info:
        atomic_write(tmp_path / "file" / "out.txt", "data", make_parents=True)
    assert info.value.reason == "not_found"
    with pytest.raises(FileOperationError) as info:
        atomic_write(tmp_path, "data")
    assert info.value.reason == "is_directory"


def test_read_only_folder_gives_permission_error() -> None:
    """Root ignores mode bits, so the write runs in a forked child that dropped to uid 65534 (nobody).

    The child first writes into a writable sibling (proving it reaches the folder), then into a 0555 one.
    """
    base = Path(tempfile.mkdtemp(prefix="atomic-ro-"))
    os.chmod(base, 0o755)
    ro, rw = base / "ro", base / "rw"
    ro.mkdir(mode=0o555)
    rw.mkdir()
    os.chmod(rw, 0o777)
    os.chmod(ro, 0o555)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 3
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            atomic_write(rw / "out.txt", "data")
            atomic_write(ro / "out.txt", "data")
            code = 0
        except FileOperationError as exc:
            os.write(write_end, exc.reason.encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    message = os.read(read_end, 100).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 1
    assert message == "permission"
    assert os.listdir(ro) == [] and os.listdir(rw) == ["out.txt"]
    shutil.rmtree(base)
