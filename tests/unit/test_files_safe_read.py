"""Bad inputs for confined reads: each gives its documented reason code and nothing else breaks."""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

import pytest

from middleware.errors import FileOperationError
from middleware.files import REASONS, SafeReader, TextStats, iter_file_chunks


class Recorded:
    """A FileEvents receiver that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def file_read(self, bytes_read: int, tokens: int) -> None:
        self.calls.append(("read", (bytes_read, tokens)))

    def file_refused(self, reason: str) -> None:
        self.calls.append(("refused", reason))

    def chunks_produced(self, sizes_tokens: list[int], seconds: float) -> None:
        self.calls.append(("chunks", tuple(sizes_tokens)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "ok.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    return r


def reason(reader: SafeReader, path: str) -> str:
    with pytest.raises(FileOperationError) as info:
        reader.read_text(path)
    assert info.value.reason in REASONS
    return info.value.reason


def test_traversal_absolute_and_symlink_escapes(root: Path) -> None:
    reader = SafeReader(root)
    (root / "link").symlink_to(root.parent / "secret.txt")
    (root / "dirlink").symlink_to(root.parent)
    (root / "inner").symlink_to(root / "ok.txt")
    for p in ["../secret.txt", str(root.parent / "secret.txt"), "link", "dirlink/secret.txt", "/etc/passwd"]:
        assert reason(reader, p) == "escape"
    assert reader.read_text("inner").text == "hello\n"  # symlinks that stay inside are fine


def test_symlink_swapped_in_after_resolution_is_not_followed(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "f.txt").write_text("inside")
    reader = SafeReader(root)
    real = reader.resolve("sub/f.txt")
    (root / "sub" / "f.txt").rename(root / "moved")
    (root / "sub").rename(root / "sub_old")
    (root / "sub").symlink_to(root.parent)  # the checked path now leads outside
    with pytest.raises(FileOperationError) as info:
        reader._open_beneath(real, "sub/f.txt")
    assert info.value.reason == "escape"


def test_missing_directory_and_devices(root: Path) -> None:
    reader = SafeReader(root)
    assert reason(reader, "nope.txt") == "not_found"
    (root / "d").mkdir()
    assert reason(reader, "d") == "is_directory"
    assert reason(SafeReader("/dev"), "zero") == "special"
    assert reason(SafeReader("/dev"), "null") == "special"


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    reader = SafeReader(root)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(reason(reader, "pipe")), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and result == ["special"]


@pytest.mark.timeout(10)
def test_fifo_swapped_in_after_stat_does_not_block(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(root / "pipe")
    reader = SafeReader(root)
    regular = os.stat(root / "ok.txt")
    monkeypatch.setattr(reader, "check", lambda path: regular)  # the stat saw a regular file
    with pytest.raises(FileOperationError) as info:
        reader.open_text("pipe")  # O_NONBLOCK open returns; fstat refuses
    assert info.value.reason == "special"


def test_sparse_5gb_file_refused_by_size_without_reading(root: Path) -> None:
    big = root / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(5 * 1024**3)
    events = Recorded()
    reader = SafeReader(root, max_bytes=10 * 1024**2, events=events)
    assert reason(reader, "big.txt") == "too_large"
    assert events.calls == [("refused", "too_large")]  # reasons only: no path, no content


def test_binary_file_refused(root: Path) -> None:
    (root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (root / "ctl.bin").write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 65]) * 100)
    reader = SafeReader(root)
    assert reason(reader, "img.png") == "binary"
    assert reason(reader, "ctl.bin") == "binary"


def test_invalid_utf8_replaced_and_counted_or_refused_in_strict_mode(root: Path) -> None:
    (root / "bad.txt").write_bytes(b"ok \xff\xfe bad \xc3( end \xef\xbf\xbd")  # last one is a real U+FFFD
    got = SafeReader(root).read_text("bad.txt")
    assert got.text == "ok \ufffd\ufffd bad \ufffd( end \ufffd"
    assert got.stats.replacements == 3
    assert reason(SafeReader(root, errors="strict"), "bad.txt") == "decode"


@pytest.mark.parametrize("codec,bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                                       ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-32-be", codecs.BOM_UTF32_BE),
                                       ("utf-8", codecs.BOM_UTF8)])
def test_bom_detection(root: Path, codec: str, bom: bytes) -> None:
    text = "Grüße, 世界 😀\r\nline two\n"
    (root / "b.txt").write_bytes(bom + text.encode(codec))
    got = SafeReader(root, block_size=3).read_text("b.txt")
    assert got.text == text
    assert (got.stats.encoding, got.stats.bom_bytes, got.stats.replacements) == (codec, len(bom), 0)


def test_file_truncated_while_read_is_detected(root: Path) -> None:
    path = root / "long.txt"
    path.write_text("0123456789\n" * 5000)
    stream = SafeReader(root, block_size=1024).open_text("long.txt")
    it = iter(stream)
    next(it)
    os.truncate(path, 100)  # another process truncates the file between two blocks
    with pytest.raises(FileOperationError) as info:
        list(it)
    assert info.value.reason == "changed"


def test_file_rewritten_in_place_is_detected(root: Path) -> None:
    path = root / "same.txt"
    path.write_text("a" * 20000)
    it = iter(SafeReader(root, block_size=4096).open_text("same.txt"))
    next(it)
    with open(path, "r+b") as fh:  # same size, different content
        fh.write(b"b" * 20000)
    with pytest.raises(FileOperationError) as info:
        list(it)
    assert info.value.reason == "changed"


def test_chunking_a_file_reports_events_and_stats(root: Path) -> None:
    events = Recorded()
    (root / "doc.txt").write_text("Some words here.\n\n" * 50)
    stats = TextStats()
    chunks = list(iter_file_chunks(SafeReader(root), "doc.txt", "gpt-4o", 40, stats=stats, events=events))
    assert stats.complete and stats.bytes_read == 900 and len(stats.sha256) == 64
    kinds = [k for k, _ in events.calls]
    assert kinds == ["read", "chunks"]
    assert events.calls[0][1] == (900, sum(c.tokens for c in chunks))
    assert events.calls[1][1] == tuple(c.tokens for c in chunks)


def test_a_failing_events_receiver_never_breaks_reading(root: Path) -> None:
    class Broken(Recorded):
        def file_refused(self, reason: str) -> None:
            raise RuntimeError("exporter down")

    assert reason(SafeReader(root, events=Broken()), "missing") == "not_found"
