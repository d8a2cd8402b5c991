"""Issue 12.8 (and 12.1, files part): hostile trees, races and careless calls never abort a run or lose a file.

Everything here is a real file system object (hard links, symlink loops, sockets, FIFOs, folders without
permission, paths longer than PATH_MAX, a full tmpfs); races are made deterministic by doing the swap, for
real, inside the window the reader has to survive.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from middleware import protect
from middleware.errors import FileOperationError
from middleware.files import ProgressEvent, SafeReader, aprocess_files, atomic_write, process_files
from middleware.files.safe_read import TextStream
from middleware.simulator import Simulator

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


def dry(root: Path, tmp: Path, items: Any = "", **kw: Any) -> dict[str, tuple[str, str | None]]:
    report = process_files(items, "{chunk}", None, model="gpt-4o-mini", root=root, out_dir=tmp / "out",
                           dry_run=True, **kw)
    return {o.path: (o.status, o.reason) for o in report.outcomes}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "a.txt").write_text("first file\n")
    (r / "z.txt").write_text("last file\n")
    return r


def as_nobody(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child as uid/gid 65534 when we are root (root ignores mode bits); JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 0
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.write(write_end, json.dumps(fn()).encode())
        except BaseException as exc:  # report anything, including a raw OSError, to the parent
            os.write(write_end, json.dumps({"raised": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while data := os.read(read_end, 65536):
        chunks.append(data)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


# --- hard links ------------------------------------------------------------------------------------------------


def test_hard_link_to_a_file_outside_the_root_is_refused_unless_allowed(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    os.link(secret, root / "innocent.txt")
    with pytest.raises(FileOperationError) as info:
        SafeReader(root).read_text("innocent.txt")
    assert info.value.reason == "hard_link" and "top secret" not in str(info.value)
    assert dry(root, tmp_path)["innocent.txt"] == ("refused", "hard_link")
    assert dry(root, tmp_path, allow_hard_links=True)["innocent.txt"] == ("planned", None)
    assert SafeReader(root, allow_hard_links=True).read_text("innocent.txt").text == "top secret\n"


# --- swapped while the run walks ---------------------------------------------------------------------------------


def _bind_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def test_socket_swapped_in_between_check_and_open_is_refused_and_the_run_goes_on(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "m.txt").write_text("will become a socket\n")
    sockets: list[socket.socket] = []
    real_check = SafeReader.check

    def check_then_swap(self: SafeReader, path: Any) -> os.stat_result:
        st = real_check(self, path)  # the genuine stat saw a regular file...
        if str(path).endswith("m.txt"):
            os.unlink(root / "m.txt")  # ...then, before the open, a socket takes its place
            sockets.append(_bind_socket(root / "m.txt"))
        return st

    monkeypatch.setattr(SafeReader, "check", check_then_swap)
    try:
        outcomes = dry(root, tmp_path)
    finally:
        for s in sockets:
            s.close()
    assert outcomes == {"a.txt": ("planned", None), "m.txt": ("refused", "special"), "z.txt": ("planned", None)}


def test_symlink_loop_fifo_and_dangling_links_are_refused_and_the_run_goes_on(root: Path, tmp_path: Path) -> None:
    (root / "loop").symlink_to("loop")  # a symlink swapped into a loop
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    (root / "dangling").symlink_to(tmp_path / "gone")
    os.mkfifo(root / "pipe")
    outcomes = dry(root, tmp_path)
    assert outcomes["a.txt"] == outcomes["z.txt"] == ("planned", None)
    assert outcomes["loop"][0] == outcomes["ping"][0] == outcomes["pong"][0] == "refused"
    assert outcomes["pipe"] == ("refused", "special")
    assert outcomes["dangling"][0] == "refused"


def test_file_growing_and_folder_swapped_during_the_run(root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder swapped for a symlink to the outside, and a socket swapped for a file, in the middle of a walk."""
    (root / "sub").mkdir()
    (root / "sub" / "s.txt").write_text("inside\n")
    (root / "grow.txt").write_text("line of text\n" * 20_000)  # several read blocks
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "s.txt").write_text("outside secret\n")
    sockets: list[socket.socket] = []
    real_check = SafeReader.check

    def check_then_swap(self: SafeReader, path: Any) -> os.stat_result:
        st = real_check(self, path)
        name = str(path)
        if name.endswith(os.path.join("sub", "s.txt")):
            (root / "sub").rename(root / "sub.old")
            (root / "sub").symlink_to(outside)
        if name.endswith("a.txt"):
            os.unlink(root / "a.txt")
            sockets.append(_bind_socket(root / "a.txt"))
        return st

    real_read = TextStream._read

    def read_then_grow(self: TextStream, n: int) -> bytes:
        data = real_read(self, n)
        if self.path.endswith("grow.txt") and self.stats.bytes_read == len(data):
            with open(root / "grow.txt", "a") as fh:  # another writer appends while the first block is in hand
                fh.write("appended while read\n" * 100)
        return data

    monkeypatch.setattr(SafeReader, "check", check_then_swap)
    monkeypatch.setattr(TextStream, "_read", read_then_grow)
    try:
        outcomes = dry(root, tmp_path)
    finally:
        for s in sockets:
            s.close()
    assert outcomes["grow.txt"] == ("refused", "changed")
    assert outcomes["sub/s.txt"] == ("refused", "escape")  # never the outside file
    assert outcomes["a.txt"] == ("refused", "special")
    assert outcomes["z.txt"] == ("planned", None)


# --- folders and paths that cannot be read ------------------------------------------------------------------------


def test_unreadable_folder_is_reported_not_silently_dropped() -> None:
    base = Path(tempfile.mkdtemp(prefix="adv-unreadable-"))  # pytest's tmp folders are 0700: nobody cannot enter
    try:
        os.chmod(base, 0o755)
        (base / "a.txt").write_text("first\n")
        (base / "locked").mkdir()
        (base / "locked" / "f.txt").write_text("x\n")
        (base / "z.txt").write_text("last\n")
        os.chmod(base / "locked", 0)

        def run() -> Any:
            return sorted([k, *v] for k, v in dry(base, base).items())

        result = as_nobody(run)
    finally:
        os.chmod(base / "locked", 0o755)
        shutil.rmtree(base)
    assert result == [["a.txt", "planned", None], ["locked/", "refused", "permission"],
                      ["z.txt", "planned", None]], result


def _nest(fd: int, names: list[str]) -> int:
    for name in names:
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _write_at(fd: int, name: str, data: bytes) -> None:
    out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, data)
    os.close(out)


def test_paths_longer_than_path_max_are_reported(root: Path, tmp_path: Path) -> None:
    """A file whose full path passes PATH_MAX, and a folder past it: both refused ``too_long``, none dropped."""
    segment = "d" * 200
    depth = (PATH_MAX - 40 - len(str(root))) // (len(segment) + 1)
    last = PATH_MAX - 40 - len(str(root)) - depth * (len(segment) + 1) - 1  # the folder path ends 40 short of PATH_MAX
    fd = _nest(os.open(root, os.O_RDONLY | os.O_DIRECTORY), [segment] * depth + ["e" * last])
    _write_at(fd, "n" * 200 + ".txt", b"past PATH_MAX\n")  # its folder can be listed, the file path cannot be used
    fd = _nest(fd, [segment] * 3)
    _write_at(fd, "deep.txt", b"in a folder past PATH_MAX\n")
    os.close(fd)
    outcomes = dry(root, tmp_path)
    long_ones = {k: v for k, v in outcomes.items() if len(k) > 1000}
    assert len(long_ones) == 2, outcomes.keys()
    assert all(v == ("refused", "too_long") for v in long_ones.values()), long_ones
    assert outcomes["a.txt"] == outcomes["z.txt"] == ("planned", None)


def test_nul_dotdot_and_absolute_inputs_are_refused_not_raised(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret\n")
    items = ["a.txt", "bad\x00name.txt", "../outside.txt", str(tmp_path / "outside.txt"), "sub/../../outside.txt",
             "x" * 300 + ".txt"]
    report = process_files(items, "{chunk}", None, model="gpt-4o-mini", root=root, out_dir=tmp_path / "out",
                           dry_run=True)
    assert [(o.status, o.reason) for o in report.outcomes] == [
        ("planned", None), ("refused", "invalid_path"), ("refused", "escape"), ("refused", "escape"),
        ("refused", "escape"), ("refused", "too_long")]


# --- callbacks ---------------------------------------------------------------------------------------------------


def _tree_for_calls(root: Path) -> None:
    for i in range(5):
        (root / f"doc{i}.txt").write_text(f"Document {i} has one short paragraph.\n")


def test_raising_progress_callback_loses_no_file_sync(simulator: Simulator, root: Path, tmp_path: Path) -> None:
    _tree_for_calls(root)
    calls: list[str] = []

    def hostile(ev: ProgressEvent) -> None:
        calls.append(ev.kind)
        raise RuntimeError("progress display crashed")

    client = protect(openai.OpenAI(api_key="test", base_url=simulator.base_url))
    report = process_files("", "{chunk}", client, model="gpt-4o-mini", root=root, out_dir=tmp_path / "out",
                           concurrency=3, progress=hostile)
    assert sorted(o.path for o in report.outcomes) == sorted(p.name for p in root.iterdir())
    assert {o.status for o in report.outcomes} == {"done"}
    assert report.progress_errors == len(calls) > 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["files"]) == 7 and manifest["progress_errors"] == len(calls)


def test_raising_progress_callback_loses_no_file_async_or_dry(simulator: Simulator, root: Path,
                                                              tmp_path: Path) -> None:
    _tree_for_calls(root)

    def hostile(ev: ProgressEvent) -> None:
        raise KeyError(ev.path)

    client = protect(openai.AsyncOpenAI(api_key="test", base_url=simulator.base_url))
    report = asyncio.run(aprocess_files("", "{chunk}", client, model="gpt-4o-mini", root=root,
                                        out_dir=tmp_path / "out", progress=hostile))
    assert len(report.outcomes) == 7 and {o.status for o in report.outcomes} == {"done"}
    assert report.progress_errors > 0
    assert len(dry(root, tmp_path, progress=hostile)) == 7


# --- atomic_write --------------------------------------------------------------------------------------------------


def test_atomic_write_rejects_data_that_is_not_text_or_bytes(tmp_path: Path) -> None:
    """``bytes(5)`` is five NUL bytes, ``bytes(True)`` one, ``bytes([104, 105])`` is b"hi": none is text or bytes."""
    for data in (5, True, [104, 105], range(3), (1, 2), None, 3.5, {"a": 1}):
        with pytest.raises(TypeError):
            atomic_write(tmp_path / "out.bin", data)
        assert os.listdir(tmp_path) == [], data
    atomic_write(tmp_path / "ok.bin", bytearray(b"bytes-like is fine"))
    assert (tmp_path / "ok.bin").read_bytes() == b"bytes-like is fine"


def test_atomic_write_refuses_to_replace_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "target.txt").write_text("original\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    for name in ("link.txt", "dirlink"):
        with pytest.raises(FileOperationError) as info:
            atomic_write(tmp_path / name, "new\n")
        assert info.value.reason == "symlink"
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "target.txt").read_text() == "original\n"
    assert sorted(os.listdir(tmp_path)) == ["dirlink", "link.txt", "target.txt"]


def test_atomic_write_calls_a_full_disk_no_space(tmp_path: Path) -> None:
    """On a real 64 KiB tmpfs (mounted in a private mount namespace of a child process)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        import os
        from middleware.errors import FileOperationError
        from middleware.files import atomic_write
        (open({str(mnt / 'old.txt')!r}, 'w')).write('old')
        try:
            atomic_write({str(mnt / 'old.txt')!r}, b'x' * 200_000)
        except FileOperationError as exc:
            print(exc.reason, sorted(os.listdir({str(mnt)!r})), open({str(mnt / 'old.txt')!r}).read())
    """)
    mount = f"mount -t tmpfs -o size=64k tmpfs {mnt} && exec {sys.executable} -c \"$0\""
    out = subprocess.run(["unshare", "-m", "sh", "-c", mount, script], capture_output=True, text=True, timeout=60)
    if "mount:" in out.stderr or "unshare:" in out.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    assert out.stdout.split() == ["no_space", "['old.txt']", "old"], out.stdout + out.stderr


# --- outputs for private inputs --------------------------------------------------------------------------------------


def test_outputs_are_private_to_the_user(simulator: Simulator, root: Path, tmp_path: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "private.txt").write_text("my diary\n")
    os.chmod(root / "sub" / "deeper" / "private.txt", 0o600)
    old = os.umask(0o022)
    try:
        client = protect(openai.OpenAI(api_key="test", base_url=simulator.base_url))
        report = process_files("", "{chunk}", client, model="gpt-4o-mini", root=root, out_dir=tmp_path / "out")
    finally:
        os.umask(old)
    assert report.ok and len(report.with_status("done")) == 3
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {p.name for p in files} >= {"manifest.json", "private.txt.summary.md", "private.txt.summary.json"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o700}


def test_output_folder_that_cannot_be_written_fails_before_any_call(simulator: Simulator, root: Path,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    client = protect(openai.OpenAI(api_key="test", base_url=simulator.base_url))
    for out, reason in ((tmp_path / "a-file", "not_a_directory"), (tmp_path / "a-file" / "sub", "not_a_directory"),
                        (Path("/proc/no-such-folder"), "not_found")):
        with pytest.raises(FileOperationError) as info:
            process_files("", "{chunk}", client, model="gpt-4o-mini", root=root, out_dir=out)
        assert info.value.reason == reason, (out, info.value.reason)
    assert simulator.stats()["total"]["served"] == 0  # nothing was sent


def test_errno_of_a_socket_open_is_what_the_race_produces(root: Path) -> None:
    """Anchor for the race tests: opening a socket fails with ENXIO on this kernel (what the swap triggers)."""
    sock = _bind_socket(root / "s")
    try:
        with pytest.raises(OSError) as info:
            os.open(root / "s", os.O_RDONLY | os.O_NONBLOCK)
        assert info.value.errno == errno.ENXIO
        with pytest.raises(FileOperationError) as refused:
            SafeReader(root)._open_beneath(str(root / "s"), "s")
        assert refused.value.reason == "special"
    finally:
        sock.close()
