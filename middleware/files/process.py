"""Folder processing: every chunk of every file through a (protected) client, results written atomically.

For each input file: read and chunk it through :class:`SafeReader` (refusals are reported with
their reason, never raised), skip it when ``<out>/<rel>.summary.json`` records the same key
(SHA-256 of the source bytes + prompt + model + chunk settings) and the summary exists, else send
each chunk to ``client.chat.completions.create`` (threads for a sync client, tasks for an async
one, at most ``concurrency`` calls at once) and write ``<out>/<rel>.summary.md`` then its
``.summary.json`` marker atomically. ``<out>/manifest.json`` records the run. A dry run reads and
chunks the files (to count chunks and detect finished ones) but calls nothing and writes nothing.
The prompt template's ``{chunk}``, ``{path}``, ``{part}`` and ``{parts}`` are substituted.

Every input ends in the report, whatever happens: folders that cannot be listed (no permission, a
path too long) are reported as refused with their reason; a file swapped while the run walks is
refused, and the run goes on; a progress callback that raises is counted (``progress_errors``),
never lets a file disappear. Outputs are private to the user: files 0600, folders created 0700 (the
inputs may be private, and a summary carries their content). The output folder is prepared (created,
checked writable) before anything is read or sent.

A run is one ``process_files`` span (INTERNAL, recorded by the protected client's recorder, else by ``events``
when that is a recorder): the chunk calls are its children (worker threads and tasks run in its context); it
carries the number of inputs, the model and a hash of the root folder (never a path) and ends ERROR with
``error.type`` when the run raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import glob
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FileOperationError
from ..telemetry import names as n
from .atomic import atomic_write
from .chunking import Chunk, iter_file_chunks
from .events import FileEvents
from .safe_read import DEFAULT_MAX_BYTES, SafeReader, TextStats

_log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
DEFAULT_PROMPT = "Summarize this part ({part}/{parts}) of the file {path}:\n\n{chunk}"


@dataclass
class FileOutcome:
    """What happened to one input: status done|skipped|refused|failed|planned and a reason code."""

    path: str
    status: str
    reason: str | None = None
    chunks: int = 0
    tokens: int = 0
    output: str | None = None


@dataclass
class ProcessReport:
    """The outcome of every input, in input order."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    progress_errors: int = 0
    """How many times the progress callback raised (the run went on)."""
    manifest_error: str | None = None
    """Why ``manifest.json`` could not be written (a reason code), or None."""

    def with_status(self, status: str) -> list[FileOutcome]:
        """The outcomes that have ``status``."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.with_status("failed")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the manifest)."""
        return {"dry_run": self.dry_run, "seconds": round(self.seconds, 3), "progress_errors": self.progress_errors,
                "files": [asdict(o) for o in self.outcomes]}


@dataclass(frozen=True)
class ProgressEvent:
    """Progress: kind is file_done|file_skipped|file_refused|file_failed|file_planned|chunk_done."""

    kind: str
    path: str
    chunks_done: int
    chunks_total: int
    files_done: int
    files_total: int


@dataclass
class _Job:
    rel: str
    chunks: list[Chunk]
    key: str
    out_path: Path
    meta_path: Path
    results: list[str | None] = field(default_factory=list)
    done: int = 0
    error: str | None = None


@dataclass
class _Run:
    """Settings and shared state of one run (sync or async)."""

    reader: SafeReader
    prompt_template: str
    model: str
    out_dir: Path
    max_chunk_tokens: int
    overlap_tokens: int
    max_output_tokens: int | None
    dry_run: bool
    events: FileEvents | None
    progress: Callable[[ProgressEvent], None] | None
    files_total: int = 0
    files_done: int = 0
    progress_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, kind: str, path: str, done: int = 0, total: int = 0, *, file_end: bool = True) -> None:
        with self.lock:
            if file_end:
                self.files_done += 1
            if self.progress is not None:
                try:
                    self.progress(ProgressEvent(kind, path, done, total, self.files_done, self.files_total))
                except Exception:  # the caller's callback never costs a file its outcome
                    self.progress_errors += 1
                    if self.progress_errors == 1:
                        _log.warning("progress callback raised; the run goes on (counted in progress_errors)",
                                     exc_info=True)

    def refused(self, shown: str, reason: str) -> FileOutcome:
        """Report and return a refusal."""
        self.report("file_refused", shown)
        return FileOutcome(shown, "refused", reason)

    def plan(self, path: str) -> _Job | FileOutcome:
        """Read and chunk one file; a refusal, a finished file or (dry run) a plan ends here."""
        shown = os.path.relpath(path, self.reader.root)
        stats = TextStats()
        try:
            shown = self.reader.relpath(path)
            chunks = list(iter_file_chunks(self.reader, path, self.model, self.max_chunk_tokens, self.overlap_tokens,
                                           stats=stats, events=self.events))
        except FileOperationError as exc:
            return self.refused(shown, exc.reason)
        except OSError as exc:  # a guard of last resort: whatever the file system does, the run goes on
            return self.refused(shown, self.reader.os_refusal(exc, shown).reason)
        tokens = sum(c.tokens for c in chunks)
        key = hashlib.sha256(json.dumps([stats.sha256, self.prompt_template, self.model, self.max_chunk_tokens,
                                         self.overlap_tokens, self.max_output_tokens]).encode()).hexdigest()
        out_path, meta_path = self.out_dir / f"{shown}.summary.md", self.out_dir / f"{shown}.summary.json"
        if _is_done(meta_path, out_path, key):
            self.report("file_skipped", shown)
            return FileOutcome(shown, "skipped", "done", len(chunks), tokens, str(out_path))
        if not chunks:
            self.report("file_skipped", shown)
            return FileOutcome(shown, "skipped", "empty")
        if self.dry_run:
            self.report("file_planned", shown, 0, len(chunks))
            return FileOutcome(shown, "planned", None, len(chunks), tokens, str(out_path))
        return _Job(shown, chunks, key, out_path, meta_path, [None] * len(chunks))

    def request(self, job: _Job, i: int) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments for chunk ``i`` of ``job``."""
        content = (self.prompt_template.replace("{path}", job.rel).replace("{part}", str(i + 1))
                   .replace("{parts}", str(len(job.chunks))).replace("{chunk}", job.chunks[i].text))
        kwargs: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}]}
        if self.max_output_tokens is not None:
            kwargs["max_completion_tokens"] = self.max_output_tokens
        return kwargs

    def chunk_finished(self, job: _Job, i: int, response: Any, error: BaseException | None) -> bool:
        """Record one chunk's result; True when it was the file's last chunk."""
        with self.lock:
            if error is not None:
                job.error = job.error or type(error).__name__
            else:
                job.results[i] = _content(response)
            job.done += 1
            last = job.done == len(job.chunks)
        self.report("chunk_done", job.rel, job.done, len(job.chunks), file_end=False)
        return last

    def finish(self, job: _Job) -> FileOutcome:
        """Write the summary and its marker (atomically) unless a chunk failed."""
        tokens = sum(c.tokens for c in job.chunks)
        if job.error is None:
            try:
                _write_outputs(job)
            except FileOperationError as exc:
                job.error = f"write:{exc.reason}"
        if job.error is not None:
            self.report("file_failed", job.rel, job.done, len(job.chunks))
            return FileOutcome(job.rel, "failed", job.error, len(job.chunks), tokens)
        self.report("file_done", job.rel, job.done, len(job.chunks))
        return FileOutcome(job.rel, "done", None, len(job.chunks), tokens, str(job.out_path))


def _content(response: Any) -> str:
    try:
        return str(response.choices[0].message.content or "")
    except (AttributeError, IndexError, TypeError):
        return ""


def _is_done(meta_path: Path, out_path: Path, key: str) -> bool:
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("key") == key and out_path.is_file()


def _write_outputs(job: _Job) -> None:
    parts = [r or "" for r in job.results]
    if len(parts) == 1:
        text = parts[0]
    else:
        text = "\n\n".join(f"## Part {i + 1}/{len(parts)} (lines {c.line_start}-{c.line_end})\n\n{r}"
                           for i, (c, r) in enumerate(zip(job.chunks, parts)))
    atomic_write(job.out_path, text.rstrip("\n") + "\n", mode=FILE_MODE, make_parents=True, dir_mode=DIR_MODE)
    meta = {"key": job.key, "source": job.rel, "chunks": len(job.chunks),
            "tokens": sum(c.tokens for c in job.chunks), "written_at": time.time()}
    atomic_write(job.meta_path, json.dumps(meta, indent=1) + "\n", mode=FILE_MODE, make_parents=True,
                 dir_mode=DIR_MODE)


@dataclass(frozen=True)
class _Unlisted:
    """A folder that could not be listed (or an input that could not be looked at), with its reason."""

    path: str
    reason: str


def _walk_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission"
    if exc.errno == errno.ENAMETOOLONG:
        return "too_long"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "changed"  # listed by its parent, gone or swapped by the time it was opened
    if exc.errno == errno.ELOOP:
        return "escape"
    return "io_error"


def _expand(paths_or_globs: str | Sequence[str], root: str, exclude: str) -> list[str | _Unlisted]:
    items = [paths_or_globs] if isinstance(paths_or_globs, str) else list(paths_or_globs)
    found: list[str | _Unlisted] = []
    for item in items:
        full = os.path.join(root, item)
        if "\x00" in item:
            found.append(full)  # refused by the reader as invalid_path
        elif glob.has_magic(item):
            for match in sorted(glob.glob(full, recursive=True)):
                found.extend(_walk(match, exclude) if os.path.isdir(match) else [match])
        elif os.path.isdir(full) and not os.path.islink(full):
            found.extend(_walk(full, exclude))
        else:
            found.append(full)
    seen: set[str | _Unlisted] = set()
    unique = [p for p in found if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]
    return [p for p in unique if isinstance(p, _Unlisted) or not _under(_real(p), exclude)]


def expand_inputs(paths_or_globs: str | Sequence[str], root: str, exclude: str) -> list[str]:
    """Input files: globs (recursive ``**``) and directories (walked, hidden entries and ``exclude`` skipped)."""
    return [p for p in _expand(paths_or_globs, root, exclude) if isinstance(p, str)]


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _walk(top: str, exclude: str) -> list[str | _Unlisted]:
    out: list[str | _Unlisted] = []

    def unlisted(exc: OSError) -> None:
        out.append(_Unlisted(str(exc.filename or top), _walk_reason(exc)))

    for dirpath, dirnames, filenames in os.walk(top, onerror=unlisted):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _under(_real(os.path.join(dirpath, d)), exclude))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return out


def prepare_out_dir(out: Path) -> None:
    """Create the output folder (0700) and prove it writable, before anything is read or sent."""
    target = str(out)
    if out.exists() and not out.is_dir():
        raise FileOperationError(f"output folder is not a folder: {target}", path=target, reason="not_a_directory")
    try:
        out.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = {errno.ENOSPC: "no_space", errno.EDQUOT: "no_space", errno.ENOTDIR: "not_a_directory",
                  errno.EEXIST: "not_a_directory", errno.ENOENT: "not_found"}.get(
            exc.errno or 0, "permission" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "io_error")
        raise FileOperationError(f"cannot write into the output folder {target}: {exc.strerror or exc}",
                                 path=target, reason=reason) from None


@contextlib.contextmanager
def _run_span(client: Any, events: FileEvents | None, root: str | os.PathLike[str], model: str) -> Iterator[Any]:
    """The run's ``process_files`` span, current inside the block (no span without a recorder to record it)."""
    from ..sdk import pipeline_attached  # imported here: the sdk package imports files (atomic writes)

    recorder = getattr(pipeline_attached(client), "recorder", None) if client is not None else None
    if recorder is None and hasattr(events, "operation_span"):
        recorder = events
    if recorder is None:
        yield None
        return
    digest = hashlib.sha256(_real(os.path.abspath(os.fspath(root))).encode("utf-8", "surrogateescape")).hexdigest()
    with recorder.operation_span(n.SPAN_FILE_PROCESS, {n.A_FILE_ROOT_HASH: digest[:12], n.A_REQUEST_MODEL: model}) \
            as span:
        yield span


def _count_inputs(span: Any, paths: Sequence[object]) -> None:
    if span is not None and span.is_recording():
        span.set_attribute(n.A_FILES, len(paths))


def _start(paths_or_globs: str | Sequence[str], root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
           **settings: Any) -> tuple[_Run, list[str | _Unlisted]]:
    reader = SafeReader(root, max_bytes=settings.pop("max_bytes"), events=settings["events"],
                        allow_hard_links=settings.pop("allow_hard_links"))
    out = Path(os.path.abspath(os.fspath(out_dir)))
    if not settings["dry_run"]:
        prepare_out_dir(out)
    run = _Run(reader=reader, out_dir=out, **settings)
    paths = _expand(paths_or_globs, reader.root, _real(str(out)))
    run.files_total = len(paths)
    return run, paths


def _plan(run: _Run, item: str | _Unlisted) -> _Job | FileOutcome:
    if isinstance(item, _Unlisted):
        shown = os.path.relpath(item.path, run.reader.root)
        run.reader.events.file_refused(item.reason)
        return run.refused(shown if shown == "." else shown + os.sep, item.reason)
    return run.plan(item)


def _manifest(run: _Run, report: ProcessReport) -> None:
    report.progress_errors = run.progress_errors
    if run.dry_run:
        return
    try:
        atomic_write(run.out_dir / "manifest.json", json.dumps(report.to_dict(), indent=1) + "\n", mode=FILE_MODE,
                     make_parents=True, dir_mode=DIR_MODE)
    except FileOperationError as exc:  # the work is done and its outputs written: report, do not raise
        report.manifest_error = exc.reason
        _log.warning("manifest.json not written: %s", exc.reason)


def _safe_finish(run: _Run, job: _Job) -> FileOutcome:
    try:
        return run.finish(job)
    except Exception as exc:  # never lose a file's outcome to an unexpected error
        _log.exception("finishing a file failed")
        return FileOutcome(job.rel, "failed", f"internal:{type(exc).__name__}", len(job.chunks),
                           sum(c.tokens for c in job.chunks))


def process_files(
    paths_or_globs: str | Sequence[str],
    prompt_template: str,
    client: Any,
    *,
    model: str,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    max_chunk_tokens: int = 2000,
    overlap_tokens: int = 0,
    concurrency: int = 4,
    progress: Callable[[ProgressEvent], None] | None = None,
    dry_run: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_output_tokens: int | None = None,
    events: FileEvents | None = None,
    allow_hard_links: bool = False,
) -> ProcessReport:
    """Process files with a sync client on ``concurrency`` threads (see module docs).

    ``progress`` is called with :class:`ProgressEvent` from worker threads, never concurrently.
    Files with more than one hard link are refused (``hard_link``) unless ``allow_hard_links``.
    Raises :class:`~middleware.errors.FileOperationError` before any work when ``out_dir`` cannot be written.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    with _run_span(client, events, root, model) as span:
        return _process_sync(span, paths_or_globs, prompt_template, client, model=model, root=root, out_dir=out_dir,
                             max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens, concurrency=concurrency,
                             progress=progress, dry_run=dry_run, max_bytes=max_bytes,
                             max_output_tokens=max_output_tokens, events=events, allow_hard_links=allow_hard_links)


def _process_sync(span: Any, paths_or_globs: str | Sequence[str], prompt_template: str, client: Any, *, model: str,
                  root: str | os.PathLike[str], out_dir: str | os.PathLike[str], max_chunk_tokens: int,
                  overlap_tokens: int, concurrency: int, progress: Callable[[ProgressEvent], None] | None,
                  dry_run: bool, max_bytes: int, max_output_tokens: int | None, events: FileEvents | None,
                  allow_hard_links: bool) -> ProcessReport:
    started = time.perf_counter()
    run, paths = _start(paths_or_globs, root, out_dir, prompt_template=prompt_template, model=model,
                        max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens,
                        max_output_tokens=max_output_tokens, dry_run=dry_run, events=events,
                        progress=progress, max_bytes=max_bytes, allow_hard_links=allow_hard_links)
    _count_inputs(span, paths)
    slots = threading.BoundedSemaphore(concurrency * 2)
    results: list[FileOutcome | None] = [None] * len(paths)

    def on_done(job: _Job, i: int, index: int, fut: Future[Any]) -> None:
        slots.release()
        error = fut.exception()
        try:
            last = run.chunk_finished(job, i, None if error else fut.result(), error)
        except Exception as exc:  # never lose the file: it fails with the error's type
            _log.exception("recording a chunk failed")
            with run.lock:
                job.error = job.error or f"internal:{type(exc).__name__}"
                last = job.done == len(job.chunks)
        if last:
            results[index] = _safe_finish(run, job)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="middleware-files") as pool:
        for index, path in enumerate(paths):
            planned = _plan(run, path)
            if isinstance(planned, FileOutcome):
                results[index] = planned
                continue
            for i in range(len(planned.chunks)):
                slots.acquire()
                # Each call runs in a copy of this context: its span is a child of the run's span.
                fut = pool.submit(functools.partial(contextvars.copy_context().run, client.chat.completions.create,
                                                    **run.request(planned, i)))
                fut.add_done_callback(functools.partial(on_done, planned, i, index))
    outcomes = [r if r is not None else FileOutcome(_shown(run, paths[k]), "failed", "internal:lost")
                for k, r in enumerate(results)]
    report = ProcessReport(outcomes, dry_run, time.perf_counter() - started)
    _manifest(run, report)
    return report


def _shown(run: _Run, item: str | _Unlisted) -> str:
    return os.path.relpath(item.path if isinstance(item, _Unlisted) else item, run.reader.root)


async def aprocess_files(
    paths_or_globs: str | Sequence[str],
    prompt_template: str,
    client: Any,
    *,
    model: str,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    max_chunk_tokens: int = 2000,
    overlap_tokens: int = 0,
    concurrency: int = 4,
    progress: Callable[[ProgressEvent], None] | None = None,
    dry_run: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_output_tokens: int | None = None,
    events: FileEvents | None = None,
    allow_hard_links: bool = False,
) -> ProcessReport:
    """Process files with an async client (``AsyncOpenAI``); file I/O runs in worker threads (see process_files)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    with _run_span(client, events, root, model) as span:
        return await _process_async(
            span, paths_or_globs, prompt_template, client, model=model, root=root, out_dir=out_dir,
            max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens, concurrency=concurrency,
            progress=progress, dry_run=dry_run, max_bytes=max_bytes, max_output_tokens=max_output_tokens,
            events=events, allow_hard_links=allow_hard_links)


async def _process_async(span: Any, paths_or_globs: str | Sequence[str], prompt_template: str, client: Any, *,
                         model: str, root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                         max_chunk_tokens: int, overlap_tokens: int, concurrency: int,
                         progress: Callable[[ProgressEvent], None] | None, dry_run: bool, max_bytes: int,
                         max_output_tokens: int | None, events: FileEvents | None,
                         allow_hard_links: bool) -> ProcessReport:
    started = time.perf_counter()
    run, paths = _start(paths_or_globs, root, out_dir, prompt_template=prompt_template, model=model,
                        max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens,
                        max_output_tokens=max_output_tokens, dry_run=dry_run, events=events,
                        progress=progress, max_bytes=max_bytes, allow_hard_links=allow_hard_links)
    _count_inputs(span, paths)
    calls = asyncio.Semaphore(concurrency)
    files_in_flight = asyncio.Semaphore(concurrency * 2)

    async def one_chunk(job: _Job, i: int) -> None:
        async with calls:
            try:
                response = await client.chat.completions.create(**run.request(job, i))
            except Exception as exc:
                run.chunk_finished(job, i, None, exc)
                return
        run.chunk_finished(job, i, response, None)

    async def one_file(job: _Job) -> FileOutcome:
        try:
            results = await asyncio.gather(*(one_chunk(job, i) for i in range(len(job.chunks))),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                job.error = job.error or f"internal:{type(errors[0]).__name__}"
            return await asyncio.to_thread(_safe_finish, run, job)
        finally:
            files_in_flight.release()

    pending: list[asyncio.Task[FileOutcome] | FileOutcome] = []
    for path in paths:
        await files_in_flight.acquire()
        planned = await asyncio.to_thread(_plan, run, path)
        if isinstance(planned, FileOutcome):
            files_in_flight.release()
            pending.append(planned)
        else:
            pending.append(asyncio.create_task(one_file(planned)))
    outcomes = [p if isinstance(p, FileOutcome) else await p for p in pending]
    report = ProcessReport(outcomes, dry_run, time.perf_counter() - started)
    await asyncio.to_thread(_manifest, run, report)
    return report
