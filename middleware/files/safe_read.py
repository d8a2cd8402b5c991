"""Confined, bounded, race-aware reading of text files below one root directory.

Defences, in order: the path is resolved with ``os.path.realpath`` and refused when it leaves the
root (``..``, absolute paths, symlinks); ``os.stat`` refuses directories, devices, FIFOs and sockets
before anything is opened, and files larger than ``max_bytes`` (a sparse 5 GB file is refused by
its size, unread); the file is then opened component by component from a descriptor of the root
with ``O_NOFOLLOW`` (a symlink swapped in after the check is refused, not followed) and
``O_NONBLOCK`` (a FIFO swapped in never blocks the open), and ``fstat`` on the open descriptor must
show the same regular file; a file with more than one hard link is refused unless allowed (a hard
link can name a file outside the root that no path check would see). The first block is sniffed for
binary content; text is decoded incrementally (see :mod:`.textcodec`). Size, mtime, ctime and inode
are compared before and after reading: a file that changed while it was read is refused with reason
``"changed"`` (a streaming consumer gets that error after the blocks already delivered, and must
discard them). Every operating-system error becomes a :class:`~middleware.errors.FileOperationError`
with a reason code (a path too long, a loop of symlinks, a socket swapped in, an I/O error): never a
bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from ..errors import FileOperationError
from .events import FileEvents, SafeEvents
from .textcodec import MAX_BOM, SNIFF_BYTES, Decoder, detect_bom, looks_binary

REASONS: frozenset[str] = frozenset(
    {"escape", "not_found", "special", "too_large", "binary", "decode", "changed", "permission", "is_directory",
     "hard_link", "too_long", "invalid_path", "io_error"}
)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_BLOCK_SIZE = 64 * 1024


@dataclass
class TextStats:
    """What reading a file found: codec, BOM, replacements (U+FFFD inserted), bytes, SHA-256 of the raw bytes."""

    encoding: str = "utf-8"
    bom_bytes: int = 0
    replacements: int = 0
    bytes_read: int = 0
    size: int = 0
    sha256: str = ""
    complete: bool = False


@dataclass(frozen=True)
class ReadResult:
    """A whole decoded text file and its :class:`TextStats`."""

    text: str
    stats: TextStats


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class SafeReader:
    """Reads text files confined to ``root`` with a size cap, binary refusal and change detection."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
        errors: str = "replace",
        events: FileEvents | None = None,
        allow_hard_links: bool = False,
    ) -> None:
        if errors not in ("replace", "strict"):
            raise ValueError("errors must be 'replace' or 'strict'")
        if max_bytes < 0 or block_size < 1:
            raise ValueError("max_bytes must be >= 0 and block_size >= 1")
        self.root = os.path.realpath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FileOperationError(f"root is not a directory: {self.root}", path=self.root, reason="not_found")
        self.max_bytes = max_bytes
        self.block_size = block_size
        self.strict = errors == "strict"
        self.allow_hard_links = allow_hard_links
        self.events = SafeEvents(events)

    def refuse(self, reason: str, path: str, message: str) -> FileOperationError:
        """Build the error for a refusal and report the reason (never the path) to telemetry."""
        self.events.file_refused(reason)
        return FileOperationError(f"{message}: {path}", path=path, reason=reason)

    def os_refusal(self, exc: OSError, given: str, *, opening: bool = False) -> FileOperationError:
        """The refusal for an operating-system error on ``given`` (``opening``: while opening beneath the root)."""
        code = exc.errno
        if code in (errno.ELOOP, errno.ENOTDIR) and opening:
            return self.refuse("escape", given, "a symlink appeared in the path while opening")
        if code in (errno.EACCES, errno.EPERM):
            return self.refuse("permission", given, "permission denied")
        if code == errno.ENOENT:
            return self.refuse("changed" if opening else "not_found", given,
                               "file disappeared while opening" if opening else "no such file")
        if code == errno.ENOTDIR:
            return self.refuse("not_found", given, "a path component is not a directory")
        if code == errno.ELOOP:
            return self.refuse("escape", given, "too many levels of symlinks")
        if code == errno.ENAMETOOLONG:
            return self.refuse("too_long", given, "path or file name too long")
        if code in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP, errno.ETXTBSY):
            return self.refuse("special", given, "not a regular file (device, FIFO or socket)")
        if code == errno.EISDIR:
            return self.refuse("is_directory", given, "is a directory")
        return self.refuse("io_error", given, f"cannot read ({errno.errorcode.get(code or 0, code)})")

    def resolve(self, path: str | os.PathLike[str]) -> str:
        """The real absolute path of ``path`` (relative to the root), refused when it escapes the root."""
        given = os.fspath(path)
        if "\x00" in given:
            raise self.refuse("invalid_path", given.replace("\x00", "\\0"), "NUL byte in the path")
        try:
            real = os.path.realpath(os.path.join(self.root, given))
        except OSError as exc:
            raise self.os_refusal(exc, given) from None
        if os.path.commonpath([self.root, real]) != self.root:
            raise self.refuse("escape", given, "path resolves outside the root")
        return real

    def relpath(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the root (after resolving it)."""
        return os.path.relpath(self.resolve(path), self.root)

    def check(self, path: str | os.PathLike[str]) -> os.stat_result:
        """Resolve and stat ``path`` without opening it: refuses escapes, non-regular files and oversize files."""
        given = os.fspath(path)
        real = self.resolve(given)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise self.os_refusal(exc, given) from None
        self._check_stat(st, given)
        return st

    def _check_stat(self, st: os.stat_result, given: str) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise self.refuse("is_directory", given, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise self.refuse("special", given, "not a regular file (device, FIFO or socket)")
        if st.st_size > self.max_bytes:
            raise self.refuse("too_large", given, f"file has {st.st_size} bytes, the limit is {self.max_bytes}")
        if st.st_nlink > 1 and not self.allow_hard_links:
            raise self.refuse("hard_link", given, f"file has {st.st_nlink} hard links (one may be outside the root)")

    def _open_beneath(self, real: str, given: str) -> int:
        """Open ``real`` walking from the root with O_NOFOLLOW on every component (no TOCTOU symlink swap)."""
        parts = os.path.relpath(real, self.root).split(os.sep)
        dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        file_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        fds: list[int] = []
        try:
            fds.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for part in parts[:-1]:
                fds.append(os.open(part, dir_flags, dir_fd=fds[-1]))
            return os.open(parts[-1], file_flags, dir_fd=fds[-1])
        except OSError as exc:
            raise self.os_refusal(exc, given, opening=True) from None
        finally:
            for fd in fds:
                os.close(fd)

    def open_text(self, path: str | os.PathLike[str]) -> TextStream:
        """Check and open ``path``; iterate the result for decoded text blocks (see :class:`TextStream`)."""
        given = os.fspath(path)
        st = self.check(given)
        fd = self._open_beneath(self.resolve(given), given)
        try:
            fst = os.fstat(fd)
            self._check_stat(fst, given)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise self.refuse("changed", given, "file was replaced while opening")
        except OSError as exc:
            os.close(fd)
            raise self.os_refusal(exc, given) from None
        except BaseException:
            os.close(fd)
            raise
        return TextStream(self, fd, given, fst)

    def read_text(self, path: str | os.PathLike[str]) -> ReadResult:
        """Read a whole text file (bounded by ``max_bytes``)."""
        with self.open_text(path) as stream:
            text = "".join(stream)
            return ReadResult(text, stream.stats)


class TextStream:
    """Decoded text blocks of one open file; ``stats`` is complete once iteration ends without error."""

    def __init__(self, reader: SafeReader, fd: int, path: str, st: os.stat_result) -> None:
        self._reader = reader
        self._fd: int | None = fd
        self.path = path
        self._start = _identity(st)
        self.stats = TextStats(size=st.st_size)
        self._hash = hashlib.sha256()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _read(self, n: int) -> bytes:
        assert self._fd is not None
        try:
            data = os.read(self._fd, n)
        except OSError as exc:
            raise self._reader.os_refusal(exc, self.path) from None
        self.stats.bytes_read += len(data)
        self._hash.update(data)
        if self.stats.bytes_read > self.stats.size:
            raise self._reader.refuse("changed", self.path, "file grew while it was read")
        return data

    def _read_head(self) -> bytes:
        want = max(SNIFF_BYTES, MAX_BOM)
        parts: list[bytes] = []
        got = 0
        while got < want:
            data = self._read(want - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._blocks()
        finally:
            self.close()

    def _blocks(self) -> Iterator[str]:
        reader = self._reader
        head = self._read_head()
        codec, bom = detect_bom(head)
        self.stats.encoding, self.stats.bom_bytes = codec, bom
        if looks_binary(head[bom:], codec):
            raise reader.refuse("binary", self.path, "binary content in the first block")
        decoder = Decoder(codec, strict=reader.strict)
        try:
            data = head[bom:]
            while True:
                text = decoder.decode(data, final=not data)
                self.stats.replacements = decoder.replacements
                if text:
                    yield text
                if not data:
                    break
                data = self._read(reader.block_size)
        except UnicodeDecodeError as exc:
            raise reader.refuse("decode", self.path, f"invalid {codec} ({exc.reason})") from None
        assert self._fd is not None
        try:
            end = _identity(os.fstat(self._fd))
        except OSError as exc:
            raise reader.os_refusal(exc, self.path) from None
        if self.stats.bytes_read != self.stats.size or end != self._start:
            raise reader.refuse("changed", self.path, "file changed while it was read")
        self.stats.sha256 = self._hash.hexdigest()
        self.stats.complete = True
