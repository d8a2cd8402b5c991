"""Atomic file replacement: readers see the old file or the new one, never a half-written one.

Steps: a temporary file in the target's directory, write, flush, ``fsync``, ``os.replace`` onto the
target, ``fsync`` of the directory (so the rename survives a crash). The temporary file is removed
on any error. A directory that cannot be written (read-only, no permission, read-only file system)
gives :class:`~middleware.errors.FileOperationError` with reason ``"permission"``; a missing parent
(or a parent that is a file) gives ``"not_found"``; a target that is a directory ``"is_directory"``;
a full disk or quota ``"no_space"``; a file-size limit ``"too_large"``; any other I/O error
``"io_error"``. A target that is a symbolic link is refused (``"symlink"``): replacing it would turn
the link into a regular file, and writing through it would write wherever it points. Only ``str``
and bytes-like data are written (anything else is a ``TypeError``: ``bytes(5)`` would be five NULs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from ..errors import FileOperationError

_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
_NOT_FOUND = (errno.ENOENT, errno.ENOTDIR)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _error(exc: OSError, path: str) -> FileOperationError:
    if exc.errno in _PERMISSION or isinstance(exc, PermissionError):
        reason = "permission"
    elif exc.errno in _NOT_FOUND:
        reason = "not_found"
    elif exc.errno == errno.EISDIR:
        reason = "is_directory"
    elif exc.errno in _NO_SPACE:
        reason = "no_space"
    elif exc.errno == errno.EFBIG:
        reason = "too_large"
    elif exc.errno == errno.ENAMETOOLONG:
        reason = "too_long"
    else:
        reason = "io_error"
    return FileOperationError(f"cannot write {path}: {exc.strerror or exc}", path=path, reason=reason)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _make_parents(directory: str, mode: int) -> None:
    """Create ``directory`` and its missing parents, every one with ``mode`` (``os.makedirs`` gives ``mode`` to the
    last folder only)."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write(
    path: str | os.PathLike[str],
    data: str | bytes | bytearray | memoryview,
    *,
    encoding: str = "utf-8",
    mode: int | None = None,
    make_parents: bool = False,
    fsync: bool = True,
    dir_mode: int = 0o777,
) -> Path:
    """Atomically replace ``path`` with ``data`` (``str`` is encoded with ``encoding``); returns the path.

    ``mode`` defaults to the existing file's mode, else ``0o666`` minus the umask. With ``make_parents``,
    missing parent folders are created with ``dir_mode`` (minus the umask; ``0o700`` for private output).
    """
    if isinstance(data, str):
        payload = data.encode(encoding)
    elif isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
    else:
        raise TypeError(f"atomic_write data must be str or bytes-like, not {type(data).__name__}")
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    try:
        existing: os.stat_result | None = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        existing = None
    except OSError as exc:
        raise _error(exc, target) from exc
    if existing is not None and stat.S_ISLNK(existing.st_mode):
        raise FileOperationError(f"cannot write {target}: is a symbolic link (refused, not replaced or followed)",
                                 path=target, reason="symlink")
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise FileOperationError(f"cannot write {target}: is a directory", path=target, reason="is_directory")
    try:
        if make_parents:
            _make_parents(directory, dir_mode)
        if mode is None:
            mode = existing.st_mode & 0o7777 if existing is not None else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except FileExistsError as exc:  # makedirs over a file
        raise FileOperationError(f"cannot write {target}: parent is not a directory", path=target,
                                 reason="not_found") from exc
    except OSError as exc:
        raise _error(exc, target) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _error(exc, target) from exc
        raise
    if fsync:
        _fsync_dir(directory)
    return Path(target)
