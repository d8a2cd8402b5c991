"""Folder processing: every chunk of every file through a (protected) client, results written atomically.

For each input file: read and chunk it through :class:`SafeReader` (refusals are reported with
their reason, never raised), skip it when ``<out>/<rel>.summary.json`` records the same key
(SHA-256 of the source bytes + prompt + model + chunk settings) and the summary exists, else send
each chunk to ``client.chat.completions.create`` (threads for a sync client, tasks for an async
one, at most ``concurrency`` calls at once) and write ``<out>/<rel>.summary.md`` then its
``.summary.json`` marker atomically. ``<out>/manifest.json`` records the run. A dry run reads and
chunks the files (to count chunks and detect finished ones) but calls nothing and writes nothing.
The prompt template's ``{chunk}``, ``{path}``, ``{part}`` and ``{parts}`` are substituted.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FileOperationError
from .atomic import atomic_write
from .chunking import Chunk, iter_file_chunks
from .events import FileEvents
from .safe_read import DEFAULT_MAX_BYTES, SafeReader, TextStats

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

    def with_status(self, status: str) -> list[FileOutcome]:
        """The outcomes that have ``status``."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.with_status("failed")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the manifest)."""
        return {"dry_run": self.dry_run, "seconds": round(self.seconds, 3),
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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, kind: str, path: str, done: int = 0, total: int = 0, *, file_end: bool = True) -> None:
        with self.lock:
            if file_end:
                self.files_done += 1
            if self.progress is not None:
                self.progress(ProgressEvent(kind, path, done, total, self.files_done, self.files_total))

    def plan(self, path: str) -> _Job | FileOutcome:
        """Read and chunk one file; a refusal, a finished file or (dry run) a plan ends here."""
        shown = os.path.relpath(path, self.reader.root)
        stats = TextStats()
        try:
            shown = self.reader.relpath(path)
            chunks = list(iter_file_chunks(self.reader, path, self.model, self.max_chunk_tokens, self.overlap_tokens,
                                           stats=stats, events=self.events))
        except FileOperationError as exc:
            self.report("file_refused", shown)
            return FileOutcome(shown, "refused", exc.reason)
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
    atomic_write(job.out_path, text.rstrip("\n") + "\n", make_parents=True)
    meta = {"key": job.key, "source": job.rel, "chunks": len(job.chunks),
            "tokens": sum(c.tokens for c in job.chunks), "written_at": time.time()}
    atomic_write(job.meta_path, json.dumps(meta, indent=1) + "\n", make_parents=True)


def expand_inputs(paths_or_globs: str | Sequence[str], root: str, exclude: str) -> list[str]:
    """Input files: globs (recursive ``**``) and directories (walked, hidden entries and ``exclude`` skipped)."""
    items = [paths_or_globs] if isinstance(paths_or_globs, str) else list(paths_or_globs)
    found: list[str] = []
    for item in items:
        full = os.path.join(root, item)
        if glob.has_magic(item):
            for match in sorted(glob.glob(full, recursive=True)):
                found.extend(_walk(match, exclude) if os.path.isdir(match) else [match])
        elif os.path.isdir(full) and not os.path.islink(full):
            found.extend(_walk(full, exclude))
        else:
            found.append(full)
    seen: set[str] = set()
    unique = [p for p in found if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]
    return [p for p in unique if not _under(os.path.realpath(p), exclude)]


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _walk(top: str, exclude: str) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _under(os.path.realpath(os.path.join(dirpath, d)), exclude))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return out


def _start(paths_or_globs: str | Sequence[str], root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
           **settings: Any) -> tuple[_Run, list[str]]:
    reader = SafeReader(root, max_bytes=settings.pop("max_bytes"), events=settings["events"])
    out = Path(os.path.abspath(os.fspath(out_dir)))
    run = _Run(reader=reader, out_dir=out, **settings)
    paths = expand_inputs(paths_or_globs, reader.root, os.path.realpath(out))
    run.files_total = len(paths)
    return run, paths


def _manifest(run: _Run, report: ProcessReport) -> None:
    if not run.dry_run:
        atomic_write(run.out_dir / "manifest.json", json.dumps(report.to_dict(), indent=1) + "\n", make_parents=True)


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
) -> ProcessReport:
    """Process files with a sync client on ``concurrency`` threads (see module docs).

    ``progress`` is called with :class:`ProgressEvent` from worker threads, never concurrently.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    started = time.perf_counter()
    run, paths = _start(paths_or_globs, root, out_dir, prompt_template=prompt_template, model=model,
                        max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens,
                        max_output_tokens=max_output_tokens, dry_run=dry_run, events=events,
                        progress=progress, max_bytes=max_bytes)
    slots = threading.BoundedSemaphore(concurrency * 2)
    results: list[FileOutcome | None] = [None] * len(paths)

    def on_done(job: _Job, i: int, index: int, fut: Future[Any]) -> None:
        slots.release()
        error = fut.exception()
        if run.chunk_finished(job, i, None if error else fut.result(), error):
            results[index] = run.finish(job)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="middleware-files") as pool:
        for index, path in enumerate(paths):
            planned = run.plan(path)
            if isinstance(planned, FileOutcome):
                results[index] = planned
                continue
            for i in range(len(planned.chunks)):
                slots.acquire()
                fut = pool.submit(client.chat.completions.create, **run.request(planned, i))
                fut.add_done_callback(functools.partial(on_done, planned, i, index))
    report = ProcessReport([r for r in results if r is not None], dry_run, time.perf_counter() - started)
    _manifest(run, report)
    return report


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
) -> ProcessReport:
    """Process files with an async client (``AsyncOpenAI``); file I/O runs in worker threads."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    started = time.perf_counter()
    run, paths = _start(paths_or_globs, root, out_dir, prompt_template=prompt_template, model=model,
                        max_chunk_tokens=max_chunk_tokens, overlap_tokens=overlap_tokens,
                        max_output_tokens=max_output_tokens, dry_run=dry_run, events=events,
                        progress=progress, max_bytes=max_bytes)
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
            await asyncio.gather(*(one_chunk(job, i) for i in range(len(job.chunks))))
            return await asyncio.to_thread(run.finish, job)
        finally:
            files_in_flight.release()

    pending: list[asyncio.Task[FileOutcome] | FileOutcome] = []
    for path in paths:
        await files_in_flight.acquire()
        planned = await asyncio.to_thread(run.plan, path)
        if isinstance(planned, FileOutcome):
            files_in_flight.release()
            pending.append(planned)
        else:
            pending.append(asyncio.create_task(one_file(planned)))
    outcomes = [p if isinstance(p, FileOutcome) else await p for p in pending]
    report = ProcessReport(outcomes, dry_run, time.perf_counter() - started)
    await asyncio.to_thread(_manifest, run, report)
    return report
