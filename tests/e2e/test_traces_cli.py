"""``middleware traces`` after real runs: the last run's slowest and failed calls, and waterfalls of its traces.

The expectations come from the store's files read here with ``json`` alone, never from the command's
own reader or renderer: for every span of a trace, a waterfall row with its name (``#N`` for attempts),
its offset from the trace's start and its duration; for every event that marks a wait or a break
(throttle, backoff, stall, interruption, resumption, checkpoint, first chunk), a row at its time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from middleware.telemetry import names as n

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\s*([+-]\d+\.\d{3})s\s+(\d+\.\d{3}s|·)\s+(.*)$")


def env_for(traces: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_"))}
    env.pop("OPENAI_API_KEY", None)
    env.update(COLUMNS="220", MIDDLEWARE_TRACES_DIR=str(traces), **extra)
    return env


def middleware(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "middleware", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


# ----------------------------------------------------------------------------- the store, read independently
def _value(v: dict[str, Any]) -> Any:
    for key, cast in (("stringValue", str), ("boolValue", bool), ("intValue", int), ("doubleValue", float)):
        if key in v:
            return cast(v[key])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"]["values"]]
    return None


def read_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    files = [*sorted(folder.glob("spans.jsonl.*"), key=lambda p: -int(p.suffix[1:])), folder / "spans.jsonl"]
    for path in files:
        for line in path.read_text().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                run = json.dumps(rs["resource"]["attributes"], sort_keys=True)
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        spans.append({
                            "trace_id": s["traceId"], "span_id": s["spanId"], "parent": s.get("parentSpanId", ""),
                            "name": s["name"], "start": int(s["startTimeUnixNano"]),
                            "end": int(s["endTimeUnixNano"]), "error": s["status"].get("code") == 2, "run": run,
                            "attributes": {a["key"]: _value(a["value"]) for a in s["attributes"]},
                            "events": [{"name": e["name"], "t": int(e["timeUnixNano"]),
                                        "attributes": {a["key"]: _value(a["value"]) for a in e["attributes"]}}
                                       for e in s["events"]]})
    return spans


def roots(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if not s["parent"]]


def rows(output: str) -> list[tuple[float, str, str]]:
    """(offset seconds, duration text, rest of the line) of every waterfall row."""
    found = []
    for line in output.splitlines():
        m = ROW.match(line)
        if m:
            found.append((float(m.group(1)), m.group(2), m.group(3)))
    return found


def check_waterfall(output: str, spans: list[dict[str, Any]], trace_id: str) -> dict[str, int]:
    """Every span and every wait/break event of the trace is drawn at its time; returns rows seen per kind."""
    mine = [s for s in spans if s["trace_id"] == trace_id]
    t0 = min(s["start"] for s in mine)
    drawn = rows(output)
    assert output.splitlines()[0].startswith(f"trace {trace_id}")
    seen: dict[str, int] = {}
    for s in mine:
        label = s["name"] + (f" #{s['attributes'][n.A_ATTEMPT]}" if n.A_ATTEMPT in s["attributes"] else "")
        offset = f"{(s['start'] - t0) / 1e9:+.3f}"
        duration = f"{(s['end'] - s['start']) / 1e9:.3f}s"
        pattern = re.compile(rf"^\s*{re.escape(offset)}s\s+{re.escape(duration)}\s+{re.escape(label)}(\s|$)", re.M)
        assert pattern.search(output), f"no row for span {label} at {offset}s lasting {duration}\n{output}"
        seen["span"] = seen.get("span", 0) + 1
        kinds = {n.E_THROTTLE: "end", n.E_BACKOFF: "start", n.E_STALL: "end", n.E_RESUME: "end",
                 n.E_INTERRUPTION: "at", n.E_CHECKPOINT: "at"}
        for e in s["events"]:
            if e["name"] not in kinds:
                continue
            a = e["attributes"]
            at = (e["t"] - t0) / 1e9
            if e["name"] == n.E_THROTTLE and a.get(n.A_DECISION) != n.DECISION_REFUSED:
                at -= a.get(n.A_WAIT_SECONDS, 0.0)  # a wait ends when it is recorded
            elif e["name"] == n.E_STALL:
                at -= a.get(n.A_WAIT_SECONDS, 0.0)
            elif e["name"] == n.E_RESUME:
                at -= a.get(n.A_LOST_SECONDS, 0.0)
            candidates = [off for off, _, rest in drawn if rest.strip().startswith(e["name"] + " ")]
            assert any(abs(off - at) <= 0.0015 for off in candidates), f"no {e['name']} row at {at:.3f}s\n{output}"
            seen[e["name"]] = seen.get(e["name"], 0) + 1
        chunks = [e for e in s["events"] if e["name"] == n.E_CHUNK]
        if chunks:
            first = (chunks[0]["t"] - t0) / 1e9
            assert any(abs(off - first) <= 0.0015 and "first chunk" in rest for off, _, rest in drawn), output
            seen["first_chunk"] = seen.get("first_chunk", 0) + 1
    return seen


# ----------------------------------------------------------------------------- the demo, then the command
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    traces = tmp_path_factory.mktemp("demo") / "traces"
    out = middleware("demo", "--duration", "4", "--workers", "3", "--no-progress", "--metrics-port", "0",
                     env=env_for(traces), timeout=180)
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    assert "Summary after" in out.stdout
    return traces, out.stdout


@pytest.mark.slow
def test_demo_slow_trace_lines_name_the_command_that_opens_them(demo_run: tuple[Path, str]) -> None:
    traces, summary = demo_run
    named = re.findall(r"slow trace: .*?middleware traces show ([0-9a-f]{32})", summary)
    assert len(named) == 3
    stored = {s["trace_id"] for s in roots(read_spans(traces))}
    assert set(named) <= stored
    env = env_for(traces)
    for trace_id in named:
        shown = middleware("traces", "show", trace_id, env=env)
        assert shown.returncode == 0 and shown.stdout.startswith(f"trace {trace_id}")


@pytest.mark.slow
def test_traces_lists_the_slowest_and_failed_calls_of_the_last_run(demo_run: tuple[Path, str]) -> None:
    traces, _ = demo_run
    spans = read_spans(traces)
    calls = roots(spans)
    out = middleware("traces", "--limit", "5", env=env_for(traces))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    slowest_part, failed_part = text.split("slowest calls", 1)[1].split("failed calls", 1)
    slowest = sorted(calls, key=lambda s: s["end"] - s["start"], reverse=True)[:5]
    listed = re.findall(r"\b([0-9a-f]{32})\b", slowest_part)
    assert listed == [s["trace_id"] for s in slowest]
    for s, line in zip(slowest, [ln for ln in slowest_part.splitlines() if re.search(r"[0-9a-f]{32}", ln)]):
        assert f"{(s['end'] - s['start']) / 1e9:.3f}s" in line and s["name"] in line
    failed = [s for s in calls if s["error"]]
    assert set(re.findall(r"\b([0-9a-f]{32})\b", failed_part)) == {s["trace_id"] for s in failed[:5]} or (
        len(failed) > 5)
    assert f"{len(calls)} calls, {len(failed)} failed" in text


@pytest.mark.slow
def test_waterfall_of_the_slowest_trace_and_of_a_resumed_one(demo_run: tuple[Path, str]) -> None:
    traces, _ = demo_run
    spans = read_spans(traces)
    calls = roots(spans)
    env = env_for(traces)
    slowest = max(calls, key=lambda s: s["end"] - s["start"])
    out = middleware("traces", "show", slowest["trace_id"], env=env)
    assert out.returncode == 0, out.stderr
    seen = check_waterfall(out.stdout, spans, slowest["trace_id"])
    assert seen["span"] == len([s for s in spans if s["trace_id"] == slowest["trace_id"]])
    # The demo cuts one stream on purpose: its trace shows the break, the resumption and both requests.
    resumed = [c for c in calls if any(e["name"] == n.E_RESUME for e in c["events"])]
    assert resumed
    for call in resumed:
        out = middleware("traces", "show", call["trace_id"][:12], env=env)  # a unique prefix is enough
        assert out.returncode == 0, out.stderr
        seen = check_waterfall(out.stdout, spans, call["trace_id"])
        attempts = [s for s in spans if s["parent"] == call["span_id"]]
        assert seen["span"] == 1 + len(attempts) and len(attempts) >= 2
        assert seen[n.E_RESUME] >= 1 and seen[n.E_INTERRUPTION] >= 1
        assert "(resumption request)" in out.stdout


# ----------------------------------------------------------------------------- every kind of row
WORKLOAD = """
import os, sys
from pathlib import Path
import openai
import middleware
from middleware import Config, LimitConfig, StreamConfig
base_url, ckdir = sys.argv[1], sys.argv[2]
handle = middleware.setup_telemetry(metrics_port=None)
config = Config(limits=LimitConfig(requests_per_window=2, window_seconds=1.0, max_wait_seconds=10),
                streaming=StreamConfig(idle_timeout_seconds=0.3, checkpoint_dir=Path(ckdir),
                                       checkpoint_every_chunks=15))
client = middleware.protect(openai.OpenAI(api_key="sk-waterfall", base_url=base_url), config)
msgs = [{"role": "user", "content": "Explain backoff."}]
for _ in range(2):  # fill the window: the next call waits in the limiter
    client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=5)
client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=5,
                               extra_headers={"x-sim-fault": "status=503", "x-sim-fault-once": os.urandom(6).hex()})
stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=msgs, max_tokens=60, stream=True, seed=3,
    extra_headers={"x-sim-fault": "stall_after=20;stall_s=3", "x-sim-fault-once": os.urandom(6).hex()})
print(len([c for c in stream]), flush=True)
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=5,
                                   extra_headers={"x-sim-fault": "insufficient_quota"})
except openai.RateLimitError:
    pass
handle.shutdown()
"""


@pytest.mark.slow
def test_waterfall_draws_throttle_waits_backoffs_stalls_resumptions_and_checkpoints(
        simulator: Any, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    env = env_for(traces)
    run = subprocess.run([sys.executable, "-c", WORKLOAD, simulator.base_url, str(tmp_path / "ck")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    spans = read_spans(traces)
    calls = roots(spans)
    assert len(calls) == 5
    totals: dict[str, int] = {}
    for call in calls:
        out = middleware("traces", "show", call["trace_id"], env=env)
        assert out.returncode == 0, out.stderr
        for kind, count in check_waterfall(out.stdout, spans, call["trace_id"]).items():
            totals[kind] = totals.get(kind, 0) + count
    waited = [e for c in calls for e in c["events"]
              if e["name"] == n.E_THROTTLE and e["attributes"][n.A_DECISION] == n.DECISION_WAITED]
    assert waited, "the limiter made a call wait"
    for kind in (n.E_THROTTLE, n.E_BACKOFF, n.E_STALL, n.E_INTERRUPTION, n.E_RESUME, n.E_CHECKPOINT, "first_chunk"):
        assert totals.get(kind, 0) >= 1, kind
    listing = middleware("traces", env=env).stdout
    [failed] = [c for c in calls if c["error"]]
    failed_part = listing.split("failed calls", 1)[1]
    assert failed["trace_id"] in failed_part and "ERROR" in failed_part


def test_plain_text_without_rich_and_clear_errors(simulator: Any, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    env = env_for(traces)
    block = ("import sys\n"
             "class B:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'rich' or name.startswith('rich.'):\n"
             "            raise ModuleNotFoundError(name, name=name)\n"
             "sys.meta_path.insert(0, B())\n"
             "from middleware.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    app = ("import openai, middleware\n"
           "h = middleware.setup_telemetry(metrics_port=None)\n"
           f"c = middleware.protect(openai.OpenAI(api_key='k', base_url={simulator.base_url!r}))\n"
           "c.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}],"
           " max_tokens=5)\n"
           "h.shutdown()\n")
    assert subprocess.run([sys.executable, "-c", app], env=env, cwd=ROOT, timeout=60).returncode == 0
    [call] = roots(read_spans(traces))
    for color in ("never", "always"):  # "always" falls back to plain text when rich is missing
        out = subprocess.run([sys.executable, "-c", block, "traces", "show", call["trace_id"], "--color", color],
                             capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert "\x1b[" not in out.stdout
        check_waterfall(out.stdout, read_spans(traces), call["trace_id"])
    missing = middleware("traces", "show", "0" * 32, env=env)
    assert missing.returncode == 1 and "no trace" in missing.stderr and "Traceback" not in missing.stderr
    bad = middleware("traces", "show", "not-hex", env=env)
    assert bad.returncode == 2 and "not a trace id" in bad.stderr
    coloured = middleware("traces", "show", call["trace_id"], "--color", "always", env=env)
    assert coloured.returncode == 0 and "\x1b[" in coloured.stdout  # rich installed: colour on request
    empty = middleware("traces", env=env_for(tmp_path / "nothing-here"))
    assert empty.returncode == 0 and "no traces stored" in empty.stdout
