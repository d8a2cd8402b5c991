"""``middleware traces``: the slowest and the failed calls of the last run, and one trace as a waterfall.

Reads the local trace store that ``setup_telemetry()`` fills when no OTLP endpoint is configured
(``$MIDDLEWARE_TRACES_DIR``, else the user's state folder). ``middleware traces`` lists the last run's
calls (root spans); ``middleware traces show TRACE_ID`` draws one trace on a time axis: the call, each
attempt, and the call's events (estimate, throttle waits, backoffs, the first chunk, stalls,
interruptions, resumptions, checkpoints), each with its offset from the call's start and its duration.
Plain text; colour when ``rich`` (the ``cli`` extra) is installed and the output is a terminal.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .telemetry import names as n
from .telemetry.tracefiles import StoredSpan, read_store, resolve_traces_dir

Segment = tuple[str, str]  # (text, rich style; "" for none)

SPAN, WAIT, INSTANT = "span", "wait", "instant"
BAR_CHARS = {"utf": {SPAN: "█", WAIT: "░", INSTANT: "│", "axis": "─"},
             "ascii": {SPAN: "#", WAIT: ".", INSTANT: "|", "axis": "-"}}
LABEL_WIDTH = 40


@dataclass
class Row:
    """One line of the waterfall: a span or an event, placed on the call's time axis."""

    depth: int
    label: str
    start_ns: int
    end_ns: int
    shape: str  # SPAN, WAIT or INSTANT
    detail: str = ""
    style: str = ""
    at_ns: int | None = None
    """When it was recorded (orders the rows); the start when None."""

    @property
    def sort_ns(self) -> int:
        """The row's place in time order: when the span started or the event was recorded."""
        return self.start_ns if self.at_ns is None else self.at_ns

    @property
    def duration_ns(self) -> int:
        """Nanoseconds covered (0 for an instant)."""
        return max(0, self.end_ns - self.start_ns)


@dataclass
class Trace:
    """The spans of one trace and their tree."""

    trace_id: str
    spans: list[StoredSpan]
    children: dict[str, list[StoredSpan]] = field(default_factory=dict)
    roots: list[StoredSpan] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = {s.span_id for s in self.spans}
        for s in sorted(self.spans, key=lambda s: (s.start_ns, s.span_id)):
            if s.parent_span_id and s.parent_span_id in ids:
                self.children.setdefault(s.parent_span_id, []).append(s)
            else:
                self.roots.append(s)


# --------------------------------------------------------------------------- formatting helpers
def fmt_offset(ns: int) -> str:
    """An offset from the trace's start, e.g. ``+1.234s``."""
    return f"{ns / 1e9:+.3f}s"


def fmt_duration(ns: int) -> str:
    """A duration, e.g. ``0.450s``."""
    return f"{ns / 1e9:.3f}s"


def _num(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _attrs_text(attributes: dict[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    parts = []
    for key, label in keys:
        if key in attributes:
            value = attributes[key]
            parts.append(f"{label}={_num(value)}" if label else str(value))
    return " ".join(parts)


def _seconds_ns(value: Any) -> int:
    try:
        return max(0, int(float(value) * 1e9))
    except (TypeError, ValueError):
        return 0


def _short(value: Any) -> bool:
    """A number, a flag, or a short word (a type or a code), not free text."""
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, str) and 0 < len(value) <= 48 and not any(c.isspace() for c in value)


def _one_line(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- rows of a trace
def _span_row(span: StoredSpan, depth: int) -> Row:
    a = span.attributes
    details: list[str] = []
    style = "bold" if depth == 0 else ""
    if n.A_HTTP_STATUS in a:
        details.append(f"HTTP {a[n.A_HTTP_STATUS]}")
    if span.failed:
        details.append(f"ERROR {a.get(n.A_ERROR_TYPE) or _one_line(span.status_message, 60)}")
        style = "bold red" if depth == 0 else "red"
    elif depth > 0 and a.get(n.A_REASON) not in (None, "ok"):
        details.append(str(a[n.A_REASON]))
    if n.A_HTTP_RESEND_COUNT in a:
        details.append(f"resend {a[n.A_HTTP_RESEND_COUNT]}")
    details.append(_attrs_text(a, ((n.A_ATTEMPTS, "attempts"), (n.A_USAGE_INPUT, "in"), (n.A_USAGE_OUTPUT, "out"),
                                   (n.A_STREAM_END, "stream"), (n.A_CHUNKS, "chunks"), (n.A_TTFC, "ttfc"))))
    label = span.name
    if n.A_ATTEMPT in a:
        label = f"{span.name} #{a[n.A_ATTEMPT]}"
    return Row(depth, label, span.start_ns, span.end_ns, SPAN, " ".join(d for d in details if d), style)


def _event_rows(span: StoredSpan, depth: int, every_chunk: bool) -> list[Row]:
    rows: list[Row] = []
    chunks = [e for e in span.events if e.name == n.E_CHUNK]
    for e in span.events:
        a = e.attributes
        t = e.time_ns
        if e.name == n.E_CHUNK:
            if every_chunk and e is not chunks[0]:
                rows.append(Row(depth, e.name, t, t, INSTANT, f"chunk {a.get(n.A_CHUNK_INDEX, '')}", "dim"))
            continue
        if e.name == n.E_THROTTLE:
            wait = _seconds_ns(a.get(n.A_WAIT_SECONDS))
            detail = _attrs_text(a, ((n.A_DECISION, ""), (n.A_REASON, "reason"), (n.A_WAIT_SECONDS, "wait"),
                                     (n.A_RESERVED_TOKENS, "tokens")))
            refused = a.get(n.A_DECISION) == n.DECISION_REFUSED
            if refused:  # refused: the wait it would have needed is not a wait that happened
                rows.append(Row(depth, e.name, t, t, INSTANT, detail, "red"))
            else:  # recorded once admitted: the wait ends at the event
                rows.append(Row(depth, e.name, t - wait, t, WAIT if wait else INSTANT, detail, "yellow", t))
        elif e.name == n.E_BACKOFF:  # recorded before the sleep
            delay = _seconds_ns(a.get(n.A_DELAY_SECONDS))
            detail = _attrs_text(a, ((n.A_REASON, "reason"), (n.A_ATTEMPT, "after attempt"),
                                     (n.A_DELAY_SECONDS, "delay")))
            rows.append(Row(depth, e.name, t, t + delay, WAIT, detail, "yellow"))
        elif e.name == n.E_STALL:  # recorded when the idle timeout expired
            idle = _seconds_ns(a.get(n.A_WAIT_SECONDS))
            rows.append(Row(depth, e.name, t - idle, t, WAIT, _attrs_text(a, ((n.A_WAIT_SECONDS, "idle"),)),
                            "magenta", t))
        elif e.name == n.E_RESUME:  # recorded at the first chunk after the seam (success) or on failure
            lost = _seconds_ns(a.get(n.A_LOST_SECONDS))
            detail = _attrs_text(a, ((n.A_REASON, ""), (n.A_LOST_SECONDS, "lost"), (n.A_SEQUENCE, "sequence")))
            ok = a.get(n.A_REASON) == n.RESUME_SUCCESS
            rows.append(Row(depth, e.name, t - lost, t, WAIT if lost else INSTANT, detail, "green" if ok else "red", t))
        elif e.name == n.E_INTERRUPTION:
            rows.append(Row(depth, e.name, t, t, INSTANT,
                            _attrs_text(a, ((n.A_CAUSE, "cause"), (n.A_PARTIAL_CHARS, "partial chars"))), "red"))
        elif e.name == n.E_CHECKPOINT:
            rows.append(Row(depth, e.name, t, t, INSTANT, _attrs_text(a, ((n.A_CHECKPOINT_ID, "id"),)), "cyan"))
        elif e.name == n.E_ESTIMATE:
            rows.append(Row(depth, e.name, t, t, INSTANT, _attrs_text(
                a, ((n.A_EST_PROMPT_TOKENS, "prompt"), (n.A_EST_MAX_OUTPUT_TOKENS, "max output"),
                    (n.A_EST_PREDICTED_OUTPUT_TOKENS, "predicted"), (n.A_ESTIMATOR, "by"))), "dim"))
        elif e.name == n.E_STREAM_SUMMARY:
            rows.append(Row(depth, e.name, t, t, INSTANT, _attrs_text(
                a, ((n.A_STREAM_END, "end"), (n.A_CHUNKS, "chunks"), (n.A_CHUNKS_DROPPED, "chunk events dropped"))),
                "cyan"))
        else:  # another event (an exception, the application's own): short identifiers only, never message text
            shown = " ".join(f"{k}={v}" for k, v in a.items() if _short(v))
            rows.append(Row(depth, e.name, t, t, INSTANT, shown, ""))
    ttfc = span.attributes.get(n.A_TTFC)
    if chunks:
        first = chunks[0]
        detail = "first chunk" + (f", time to first chunk {_num(ttfc, 's')}" if ttfc is not None else "")
        rows.append(Row(depth, first.name, first.time_ns, first.time_ns, INSTANT, detail, "green"))
        if len(chunks) > 1 and not every_chunk:
            rows.append(Row(depth, f"{n.E_CHUNK} x{len(chunks) - 1}", chunks[1].time_ns, chunks[-1].time_ns, WAIT,
                            "the chunk events after the first", "dim"))
    elif ttfc is not None:
        at = span.start_ns + _seconds_ns(ttfc)
        rows.append(Row(depth, n.A_TTFC, at, at, INSTANT, f"first chunk after {_num(ttfc, 's')}", "green"))
    return rows


def trace_rows(tr: Trace, every_chunk: bool = False) -> list[Row]:
    """The waterfall's rows: each span, then its events and child spans in time order, depth first."""
    rows: list[Row] = []

    def walk(span: StoredSpan, depth: int, note: str = "") -> None:
        row = _span_row(span, depth)
        if note:
            row.detail = f"{row.detail} ({note})" if row.detail else f"({note})"
        rows.append(row)
        items: list[tuple[int, int, Row | StoredSpan]] = []
        for i, event_row in enumerate(_event_rows(span, depth + 1, every_chunk)):
            items.append((event_row.sort_ns, i, event_row))
        for j, child in enumerate(tr.children.get(span.span_id, [])):
            items.append((child.start_ns, 1_000_000 + j, child))
        interrupted = False
        for _, _, item in sorted(items, key=lambda x: (x[0], x[1])):
            if isinstance(item, Row):
                rows.append(item)
                interrupted = interrupted or item.label == n.E_INTERRUPTION
            else:  # a request sent after the stream broke is the resumption's
                walk(item, depth + 1, "resumption request" if interrupted else "")

    for root in tr.roots:
        walk(root, 0)
    return rows


# --------------------------------------------------------------------------- rendering
def _charset() -> dict[str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return BAR_CHARS["utf" if encoding.startswith("utf") else "ascii"]


def _bar(row: Row, t0: int, total: int, width: int, chars: dict[str, str]) -> str:
    cells = [" "] * width
    begin = min(width - 1, max(0, int((row.start_ns - t0) / total * width)))
    if row.shape == INSTANT:
        cells[begin] = chars[INSTANT]
    else:
        end = min(width, max(begin + 1, math.ceil((row.end_ns - t0) / total * width)))
        for i in range(begin, end):
            cells[i] = chars[row.shape]
    return "".join(cells)


def waterfall(tr: Trace, *, width: int | None = None, every_chunk: bool = False) -> list[list[Segment]]:
    """The trace drawn as lines of (text, style) segments."""
    rows = trace_rows(tr, every_chunk)
    t0 = min(s.start_ns for s in tr.spans)
    t1 = max([r.end_ns for r in rows] + [t0])
    total = max(1, t1 - t0)
    columns = width or shutil.get_terminal_size((120, 24)).columns
    bar_width = max(20, min(60, columns - LABEL_WIDTH - 24))
    chars = _charset()
    root = tr.roots[0]
    started = datetime.fromtimestamp(root.start_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    lines: list[list[Segment]] = [
        [(f"trace {tr.trace_id}", "bold"), (f"  {root.name}, started {started}, {len(tr.spans)} spans", "")],
        [(f"{'offset':>9} {'duration':>8}  {'':<{LABEL_WIDTH}} 0s", "dim"),
         (f"{fmt_duration(total):>{bar_width - 2}}", "dim")],
        [(f"{'':>9} {'':>8}  {'':<{LABEL_WIDTH}} ", ""), (chars["axis"] * bar_width, "dim")],
    ]
    for r in rows:
        label = ("  " * r.depth + r.label)
        if len(label) > LABEL_WIDTH:
            label = label[: LABEL_WIDTH - 1] + "…"
        duration = "·" if r.shape == INSTANT else fmt_duration(r.duration_ns)
        line: list[Segment] = [
            (f"{fmt_offset(r.start_ns - t0):>9} {duration:>8}  ", ""),
            (f"{label:<{LABEL_WIDTH}} ", r.style),
            (_bar(r, t0, total, bar_width, chars), r.style),
        ]
        if r.detail:
            line.append((f"  {r.detail}", ""))
        lines.append(line)
    return lines


class Output:
    """Prints segment lines: plain text, or coloured through rich when asked for and available."""

    def __init__(self, color: str) -> None:
        self.console: Any = None
        wanted = color == "always" or (color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        if wanted:
            try:
                from rich.console import Console

                self.console = Console(highlight=False, soft_wrap=True, force_terminal=color == "always")
            except ImportError:
                self.console = None

    def line(self, segments: Sequence[Segment]) -> None:
        """Print one line."""
        if self.console is None:
            print("".join(text for text, _ in segments))
            return
        from rich.text import Text

        self.console.print(Text.assemble(*[(text, style) if style else text for text, style in segments]))


# --------------------------------------------------------------------------- commands
@dataclass
class Run:
    """The spans one process wrote (one resource), with its calls (root spans)."""

    key: tuple[tuple[str, str], ...]
    spans: list[StoredSpan]
    calls: list[StoredSpan]

    @property
    def start_ns(self) -> int:
        """When the run's first span started."""
        return min(s.start_ns for s in self.spans)

    @property
    def end_ns(self) -> int:
        """When the run's last span ended."""
        return max(s.end_ns for s in self.spans)


def runs_of(spans: Sequence[StoredSpan]) -> list[Run]:
    """Spans grouped by the process that wrote them, oldest run first."""
    by_run: dict[tuple[tuple[str, str], ...], list[StoredSpan]] = {}
    for s in spans:
        by_run.setdefault(s.run, []).append(s)
    runs = []
    for key, members in by_run.items():
        ids = {(s.trace_id, s.span_id) for s in members}
        calls = [s for s in members if not s.parent_span_id or (s.trace_id, s.parent_span_id) not in ids]
        runs.append(Run(key, members, calls))
    return sorted(runs, key=lambda r: r.start_ns)


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S")


def _call_line(s: StoredSpan) -> list[Segment]:
    attempts = s.attributes.get(n.A_ATTEMPTS, "")
    status = f"ERROR {s.attributes.get(n.A_ERROR_TYPE) or ''}".strip() if s.failed else "ok"
    return [(f"  {fmt_duration(s.end_ns - s.start_ns):>9}  {_clock(s.start_ns)}  {attempts!s:>8}  ", ""),
            (f"{status:<24}", "red" if s.failed else "green"),
            (f"  {s.trace_id}  {s.name}", "")]


def list_command(ns: argparse.Namespace, out: Output) -> int:
    """``middleware traces``: the slowest and the failed calls of the last run (all runs with --all)."""
    directory = resolve_traces_dir(ns.dir)
    store = read_store(directory)
    if not store.spans:
        out.line([(f"no traces stored in {directory} (setup_telemetry() keeps them there when no OTLP endpoint "
                   f"is set; the demo does too)", "")])
        return 0
    runs = runs_of(store.spans)
    chosen = runs if ns.all else runs[-1:]
    calls = [c for r in chosen for c in r.calls]
    failed = [c for c in calls if c.failed]
    start, end = min(r.start_ns for r in chosen), max(r.end_ns for r in chosen)
    scope = f"{len(chosen)} runs" if ns.all else "last run"
    earlier = "" if ns.all or len(runs) == 1 else f"; {len(runs) - 1} earlier run(s): --all"
    out.line([(f"traces in {directory}", "bold"),
              (f": {scope} {datetime.fromtimestamp(start / 1e9):%Y-%m-%d %H:%M:%S} to {_clock(end)}, "
               f"{len(calls)} calls, {len(failed)} failed{earlier}", "")])
    if store.bad_lines:
        out.line([(f"({store.bad_lines} unreadable line(s) skipped)", "dim")])
    header = [(f"  {'duration':>9}  {'started':<8}  {'attempts':>8}  {'status':<24}  {'trace id':<32}  call", "dim")]
    out.line([("slowest calls", "bold")])
    out.line(header)
    for s in sorted(calls, key=lambda s: s.end_ns - s.start_ns, reverse=True)[: ns.limit]:
        out.line(_call_line(s))
    out.line([("failed calls", "bold")])
    if failed:
        out.line(header)
        for s in sorted(failed, key=lambda s: s.start_ns, reverse=True)[: ns.limit]:
            out.line(_call_line(s))
    else:
        out.line([("  none", "")])
    out.line([("open one: middleware traces show TRACE_ID", "dim")])
    return 0


def show_command(ns: argparse.Namespace, out: Output) -> int:
    """``middleware traces show TRACE_ID``: one trace as a terminal waterfall."""
    directory = resolve_traces_dir(ns.dir)
    wanted = ns.trace_id.strip().lower()
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        print(f"middleware traces show: not a trace id: {ns.trace_id!r} (32 hex digits, or a unique prefix)",
              file=sys.stderr)
        return 2
    store = read_store(directory)
    matching = {s.trace_id for s in store.spans if s.trace_id.startswith(wanted)}
    if not matching:
        print(f"middleware traces show: no trace {wanted} in {directory}", file=sys.stderr)
        return 1
    if len(matching) > 1:
        print(f"middleware traces show: {wanted} matches {len(matching)} traces; give more digits", file=sys.stderr)
        return 2
    trace_id = matching.pop()
    tr = Trace(trace_id, [s for s in store.spans if s.trace_id == trace_id])
    for line in waterfall(tr, width=ns.width, every_chunk=ns.chunks):
        out.line(line)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None,
                   help="the trace store (default: $MIDDLEWARE_TRACES_DIR, else ~/.local/state/llm-middleware/traces)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour through rich when installed (default: auto, on a terminal)")


def build_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parsers of ``middleware traces`` and ``middleware traces show``."""
    ls = argparse.ArgumentParser(prog="middleware traces", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="middleware traces show TRACE_ID [--chunks] draws one trace.")
    _common(ls)
    ls.add_argument("--limit", type=int, default=10, help="calls per table (default 10)")
    ls.add_argument("--all", action="store_true", help="every run in the store, not only the last")
    show = argparse.ArgumentParser(prog="middleware traces show", description="Draw one trace as a waterfall.")
    show.add_argument("trace_id", help="32 hex digits, or a unique prefix")
    _common(show)
    show.add_argument("--width", type=int, default=None, help="terminal columns (default: the terminal's)")
    show.add_argument("--chunks", action="store_true", help="one row per chunk event, not only the first")
    return ls, show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``middleware traces``; returns 0 done, 1 not found, 2 usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    ls, show = build_parsers()
    try:
        if args and args[0] == "show":
            ns = show.parse_args(args[1:])
            return show_command(ns, Output(ns.color))
        if args and args[0] == "list":
            args = args[1:]
        ns = ls.parse_args(args)
        if ns.limit < 1:
            ls.error("--limit must be at least 1")
        return list_command(ns, Output(ns.color))
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except OSError as exc:
        print(f"middleware traces: cannot read the trace store: {exc}", file=sys.stderr)
        return 1
