"""Atomic file replacement: readers see the old file or the new one, never a half-written one.

Steps: a temporary file in the target's directory, write, flush, ``fsync``, ``os.replace`` onto the
target, ``fsync`` of the directory (so the rename survives a crash). The temporary file is removed
on any error. A directory that cannot be written (read-only, no permission, read-only file system)
gives :class:`~middleware.errors.FileOperationError` with reason ``"permission"``; a missing parent
(or a parent that is a file) gives ``"not_found"``; a target that is a directory ``"is_directory"``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from ..errors import FileOperationError

_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
_NOT_FOUND = (errno.ENOENT, errno.ENOTDIR)


def _error(exc: OSError, path: str) -> FileOperationError:
    if exc.errno in _PERMISSION:
        reason = "permission"
    elif exc.errno in _NOT_FOUND:
        reason = "not_found"
    elif exc.errno == errno.EISDIR:
        reason = "is_directory"
    else:
        reason = "permission" if isinstance(exc, PermissionError) else "not_found"
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


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    encoding: str = "utf-8",
    mode: int | None = None,
    make_parents: bool = False,
    fsync: bool = True,
) -> Path:
    """Atomically replace ``path`` with ``data`` (``str`` is encoded with ``encoding``); returns the path.

    ``mode`` defaults to the existing file's mode, else ``0o666`` minus the umask.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    if os.path.isdir(target):
        raise FileOperationError(f"cannot write {target}: is a directory", path=target, reason="is_directory")
    try:
        if make_parents:
            os.makedirs(directory, exist_ok=True)
        if mode is None:
            try:
                mode = os.stat(target).st_mode & 0o7777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
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
