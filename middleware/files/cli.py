"""``middleware files summarize DIR``: summarize every text file of a folder through a protected client.

Every name printed is shown literally: rich markup in file names (``[red]``, ``[/bold]``) is escaped,
and control or bidirectional-override characters (terminal escapes, newlines) are shown as ``\\xNN`` /
``\\uNNNN``. User errors end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._extras import require_rich
from ..errors import FileOperationError, MiddlewareError
from .process import DEFAULT_PROMPT, ProcessReport, ProgressEvent, prepare_out_dir, process_files


def printable(name: str) -> str:
    """``name`` with control, format (bidi overrides) and surrogate characters written as escapes."""
    out: list[str] = []
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def shown(name: str) -> str:
    """``name`` safe to print through rich: escaped markup, visible control characters."""
    from rich.markup import escape

    return escape(printable(name))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value

if TYPE_CHECKING:
    from rich.table import Table


def _parser() -> argparse.ArgumentParser:
    from ..cli import ArgumentParser

    parser = ArgumentParser(prog="middleware files", description="Safe file operations.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="summarize every text file under DIR (re-runs skip finished files)")
    s.add_argument("dir", help="the folder to read (nothing outside it is read; files with several hard links "
                              "are refused unless --allow-hard-links)")
    s.add_argument("--out", default="summaries", help="output folder (default: ./summaries; created 0700, "
                                                      "files written 0600)")
    s.add_argument("--model", default="gpt-4o-mini")
    s.add_argument("--max-chunk-tokens", type=_positive, default=2000)
    s.add_argument("--overlap-tokens", type=_non_negative, default=0)
    s.add_argument("--concurrency", type=_positive, default=4)
    s.add_argument("--prompt", default=DEFAULT_PROMPT, help="template with {chunk}, {path}, {part}, {parts}")
    s.add_argument("--dry-run", action="store_true", help="list what would be read, skipped and refused")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (e.g. the simulator)")
    s.add_argument("--allow-hard-links", action="store_true",
                   help="read files that have more than one hard link (one may be outside DIR)")
    return parser


def _table(report: ProcessReport) -> Table:
    from rich.table import Table

    table = Table(title="dry run" if report.dry_run else "files")
    for col in ("file", "status", "reason", "chunks", "tokens"):
        table.add_column(col, justify="right" if col in ("chunks", "tokens") else "left")
    for o in report.outcomes:
        table.add_row(shown(o.path), o.status, shown(o.reason or ""), str(o.chunks), str(o.tokens))
    return table


def files_cli_main(argv: Sequence[str] | None = None) -> int:
    """Run ``files`` subcommands; returns 0 on success, 1 when a file failed, 2 on usage errors."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    missing = require_rich("files")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console, err = Console(), Console(stderr=True)

    def fail(message: str) -> int:
        err.print(f"middleware files: {shown(message)}", soft_wrap=True)
        return 2

    if "{chunk}" not in args.prompt:
        return fail("--prompt must contain {chunk}")
    if not os.path.isdir(args.dir):
        return fail(f"not a directory: {args.dir}")
    client = None
    if not args.dry_run:
        import openai

        from .. import Config, protect

        key = os.environ.get("OPENAI_API_KEY") or ("unused" if args.base_url else None)
        if key is None:
            return fail("set OPENAI_API_KEY (or pass --base-url for a local endpoint)")
        try:
            config = Config.from_env()
        except MiddlewareError as exc:
            return fail(str(exc))
        client = protect(openai.OpenAI(api_key=key, base_url=args.base_url), config)
    if not args.dry_run:
        try:  # before the progress display: a bad --out is one line, before any work
            prepare_out_dir(Path(os.path.abspath(args.out)))
        except FileOperationError as exc:
            return fail(str(exc))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("files", total=None)
        error = ""

        def on_progress(ev: ProgressEvent) -> None:
            detail = f" {shown(ev.path)} chunk {ev.chunks_done}/{ev.chunks_total}" if ev.kind == "chunk_done" else ""
            bar.update(task, total=ev.files_total, completed=ev.files_done, description=f"files{detail}")

        try:
            report: ProcessReport | None = process_files(
                "", args.prompt, client, model=args.model, root=args.dir, out_dir=args.out,
                max_chunk_tokens=args.max_chunk_tokens, overlap_tokens=args.overlap_tokens,
                concurrency=args.concurrency, progress=on_progress, dry_run=args.dry_run,
                allow_hard_links=args.allow_hard_links,
            )
        except (FileOperationError, ValueError) as exc:
            report, error = None, str(exc)
    if report is None:  # after the progress display has gone: one line
        return fail(error)
    console.print(_table(report))
    counts = {s: len(report.with_status(s)) for s in ("done", "skipped", "refused", "failed", "planned")}
    console.print(", ".join(f"{k}: {v}" for k, v in counts.items() if v) or "no files")
    if report.manifest_error:
        err.print(f"middleware files: manifest.json not written ({shown(report.manifest_error)})")
    return 0 if report.ok and not report.manifest_error else 1
