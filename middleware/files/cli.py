"""``middleware files summarize DIR``: summarize every text file of a folder through a protected client."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._extras import require_rich
from .process import DEFAULT_PROMPT, ProcessReport, ProgressEvent, process_files

if TYPE_CHECKING:
    from rich.table import Table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="middleware files", description="Safe file operations.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="summarize every text file under DIR (re-runs skip finished files)")
    s.add_argument("dir", help="the folder to read (nothing outside it is read)")
    s.add_argument("--out", default="summaries", help="output folder (default: ./summaries)")
    s.add_argument("--model", default="gpt-4o-mini")
    s.add_argument("--max-chunk-tokens", type=int, default=2000)
    s.add_argument("--overlap-tokens", type=int, default=0)
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--prompt", default=DEFAULT_PROMPT, help="template with {chunk}, {path}, {part}, {parts}")
    s.add_argument("--dry-run", action="store_true", help="list what would be read, skipped and refused")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (e.g. the simulator)")
    return parser


def _table(report: ProcessReport) -> Table:
    from rich.table import Table

    table = Table(title="dry run" if report.dry_run else "files")
    for col in ("file", "status", "reason", "chunks", "tokens"):
        table.add_column(col, justify="right" if col in ("chunks", "tokens") else "left")
    for o in report.outcomes:
        table.add_row(o.path, o.status, o.reason or "", str(o.chunks), str(o.tokens))
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
    if "{chunk}" not in args.prompt:
        err.print("--prompt must contain {chunk}")
        return 2
    if not os.path.isdir(args.dir):
        err.print(f"not a directory: {args.dir}")
        return 2
    client = None
    if not args.dry_run:
        import openai

        from .. import protect

        key = os.environ.get("OPENAI_API_KEY") or ("unused" if args.base_url else None)
        if key is None:
            err.print("set OPENAI_API_KEY (or pass --base-url for a local endpoint)")
            return 2
        client = protect(openai.OpenAI(api_key=key, base_url=args.base_url))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("files", total=None)

        def on_progress(ev: ProgressEvent) -> None:
            detail = f" {ev.path} chunk {ev.chunks_done}/{ev.chunks_total}" if ev.kind == "chunk_done" else ""
            bar.update(task, total=ev.files_total, completed=ev.files_done, description=f"files{detail}")

        try:
            report = process_files(
                "", args.prompt, client, model=args.model, root=args.dir, out_dir=args.out,
                max_chunk_tokens=args.max_chunk_tokens, overlap_tokens=args.overlap_tokens,
                concurrency=args.concurrency, progress=on_progress, dry_run=args.dry_run,
            )
        except ValueError as exc:
            err.print(str(exc))
            return 2
    console.print(_table(report))
    counts = {s: len(report.with_status(s)) for s in ("done", "skipped", "refused", "failed", "planned")}
    console.print(", ".join(f"{k}: {v}" for k, v in counts.items() if v) or "no files")
    return 0 if report.ok else 1
