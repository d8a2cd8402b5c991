"""``middleware demo``: a realistic mixed workload through a protected client, observed live.

Without ``--live`` it starts the built-in simulator (in its own process) with limits that bind and a
few injected faults, then runs short and long calls, streams, embeddings, Responses calls, calls that
repeat a long prompt prefix (cached input tokens), calls to a reasoning model (reasoning tokens) and a
burst that hits the limits, for about a minute. Every call is tagged with a team and a feature, and
budgets that do not bind (``MIDDLEWARE_BUDGETS`` when set) are checked and reported. It serves
``/metrics`` on 127.0.0.1, exports traces (a console summary, or OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), shows live progress and ends with a summary table, with the
spend per team and feature and the state of each budget. With ``--live`` and ``OPENAI_API_KEY`` the same
workload, scaled down, runs against the real API.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import openai
from prometheus_client import REGISTRY

from . import Config, protect
from .cli import ArgumentParser
from .config import MAX_SECONDS, Number, read_env
from .cost import parse_rules, tags
from .cost.budgets import ANY_VALUE, API_KEY_SCOPE
from .errors import ConfigError, MiddlewareError
from .logconfig import add_arguments as add_log_arguments
from .logconfig import configure as configure_logging
from .telemetry import names as n
from .telemetry.setup import setup_telemetry

if TYPE_CHECKING:  # rich is the ``cli`` extra: imported when the demo runs, not when this module loads
    from rich.console import Console
    from rich.table import Table

SIM_MODEL = "gpt-4o-mini"
LIVE_MODEL = "gpt-4o-mini"
REASONING_MODEL = "o4-mini"  # bills reasoning tokens (as output): the cost panels' reasoning share
EMBEDDING_MODEL = "text-embedding-3-small"

TOPICS = ("rate limits", "token buckets", "exponential backoff", "stream resumption", "exemplars",
          "burn-rate alerts", "tiktoken", "circuit breakers", "atomic writes", "OpenTelemetry")

# Attribution: each worker works for a team; each kind of call is a feature of it.
TEAMS = ("search", "support", "growth")
FEATURES = {"chat": "assistant", "chat-long": "research", "stream": "assistant", "responses": "summaries",
            "embeddings": "indexing", "cached": "handbook-qa", "reasoning": "planning"}
BURST_TAGS = {"team": "growth", "feature": "bulk-import"}
CHECK_TAGS = {"team": "platform", "feature": "resumption-check"}
# Budgets that do not bind (MIDDLEWARE_BUDGETS replaces them): the API key's daily budget and a monthly budget
# per team. Against the simulator the demo spends about $0.002 a second ($180 a day, $80 a day for its
# biggest team) when it runs until stopped (the compose stack): these stay above what the budget burn
# alerts project. Against the real API (a minute, scaled down: cents) they cap what a mistake could cost.
SIM_BUDGETS = "api_key/day=1000, team=*/month=10000"
LIVE_BUDGETS = "api_key/day=5, team=*/day=2"


def _handbook() -> str:
    """A fixed system prompt of more than 1024 tokens: calls that start with it are served from the prompt
    cache (cached input tokens, at the cached-input price) once it has been seen."""
    sections = [f"Section {i + 1}, {topic}: how our platform handles {topic}, what to monitor, which alert "
                f"fires first, and the runbook step that fixes it without paging anyone at night."
                for i, topic in enumerate(TOPICS * 6)]
    return "You answer questions from the platform handbook below.\n" + "\n".join(sections)


HANDBOOK = _handbook()


@dataclass
class Tally:
    """What the demo's own workers saw (the summary also reads the middleware's metrics)."""

    calls: int = 0
    errors: int = 0
    streams: int = 0
    chunks: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, chunks: int = 0) -> None:
        with self.lock:
            self.calls += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if chunks:
                self.streams += 1
                self.chunks += chunks

    def failed(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.calls += 1
            self.errors += 1
            name = type(exc).__name__
            self.error_kinds[name] = self.error_kinds.get(name, 0) + 1


def _samples(metric: n.MetricDef) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of a metric's samples in the default registry (a histogram's ``_sum``)."""
    out: list[tuple[dict[str, str], float]] = []
    for family in REGISTRY.collect():
        if family.name not in (metric.name, metric.name.removesuffix("_total")):
            continue
        wanted = metric.prom_name if metric.type != "histogram" else metric.name + "_sum"
        out += [(dict(s.labels), s.value) for s in family.samples if s.name == wanted]
    return out


def _metric_sum(metric: n.MetricDef, match: dict[str, str] | None = None) -> float:
    """Sum of a metric's samples in the default registry whose labels (names from ``names``) match."""
    match = match or {}
    return sum(v for labels, v in _samples(metric) if all(labels.get(k) == val for k, val in match.items()))


def _metric_by(metric: n.MetricDef, *keys: str) -> dict[tuple[str, ...], float]:
    """A metric's samples summed by the values of some labels (an empty value: the label is absent)."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in _samples(metric):
        key = tuple(labels.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + value
    return out


def _usd(value: float) -> str:
    return f"${value:.6f}" if value < 1 else f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _spend_by(label: str) -> str:
    """``search $0.0123, support $0.0045`` from the cost counter, highest first ("untagged" for none)."""
    by = _metric_by(n.COST_USD, label)
    ranked = sorted(by.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k[0] or 'untagged'} {_usd(v)}" for k, v in ranked if v > 0) or "none"


def cost_rows() -> list[tuple[str, str]]:
    """Summary rows about money: spend (total, by team, feature, model and token type), cached savings,
    unpriced calls, each budget's spend against its limit and the budget decisions."""
    by_type = _metric_by(n.COST_USD, n.L_TOKEN_TYPE)
    rows = [
        ("spend (USD, from reported usage)", _usd(_metric_sum(n.COST_USD))),
        ("spend by team", _spend_by(n.L_TEAM)),
        ("spend by feature", _spend_by(n.L_FEATURE)),
        ("spend by model", _spend_by(n.L_MODEL)),
        ("spend by token type", ", ".join(f"{k[0]} {_usd(v)}" for k, v in sorted(by_type.items())) or "none"),
        ("cached input / reasoning tokens (reported)",
         f"{_metric_sum(n.TOKEN_USAGE, {n.L_TOKEN_TYPE: n.TOKEN_CACHED_INPUT}):.0f} / "
         f"{_metric_sum(n.TOKEN_USAGE, {n.L_TOKEN_TYPE: n.TOKEN_REASONING}):.0f}"),
        ("saved by cached input tokens", _usd(_metric_sum(n.COST_SAVINGS_USD))),
        ("unpriced calls", f"{_metric_sum(n.UNPRICED_CALLS):.0f}"),
    ]
    limits = _metric_by(n.BUDGET_LIMIT_USD, n.L_BUDGET, n.L_PERIOD)
    for (name, period), spent in sorted(_metric_by(n.BUDGET_SPEND_USD, n.L_BUDGET, n.L_PERIOD).items()):
        limit = limits.get((name, period), 0.0)
        used = f" ({spent / limit:.2%} used)" if limit else ""
        rows.append((f"budget {name} per {period}", f"{_usd(spent)} of {_usd(limit)}{used}"))
    decisions = _metric_by(n.BUDGET_DECISIONS, n.L_BUDGET_DECISION)
    if decisions:
        rows.append(("budget decisions", ", ".join(f"{k[0]} {v:.0f}" for k, v in sorted(decisions.items()))))
    return rows


def _messages(rng: random.Random, long: bool) -> Any:
    topic = rng.choice(TOPICS)
    system = "You are a concise assistant for platform engineers."
    if long:
        system += " Context: " + " ".join(rng.choice(TOPICS) for _ in range(200))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explain {topic} in a few sentences."}]


def _workload(client: openai.OpenAI, model: str, tally: Tally, stop: threading.Event, worker: int,
              scale: float) -> None:
    rng = random.Random(worker)
    kinds: list[tuple[str, Callable[[], int]]] = []
    team = TEAMS[worker % len(TEAMS)]

    def chat_short() -> int:
        client.chat.completions.create(model=model, messages=_messages(rng, False), max_tokens=int(120 * scale))
        return 0

    def chat_long() -> int:
        client.chat.completions.create(model=model, messages=_messages(rng, True), max_tokens=int(400 * scale))
        return 0

    def chat_stream() -> int:
        chunks = 0
        with client.chat.completions.create(model=model, messages=_messages(rng, False),
                                            max_tokens=int(300 * scale), stream=True) as stream:
            for _ in stream:
                chunks += 1
        return chunks

    def responses_call() -> int:
        client.responses.create(model=model, input=f"Summarise {rng.choice(TOPICS)}.",
                                max_output_tokens=int(150 * scale))
        return 0

    def embeddings() -> int:
        client.embeddings.create(model=EMBEDDING_MODEL, input=[rng.choice(TOPICS) for _ in range(4)])
        return 0

    def cached() -> int:
        # The same long system prompt every time: from the second call on it is read from the prompt cache.
        client.chat.completions.create(model=model, max_tokens=int(120 * scale), messages=[
            {"role": "system", "content": HANDBOOK},
            {"role": "user", "content": f"What does the handbook say about {rng.choice(TOPICS)}?"}])
        return 0

    def reasoning() -> int:
        client.chat.completions.create(model=REASONING_MODEL, reasoning_effort="low",
                                       max_completion_tokens=int(600 * scale),
                                       messages=[{"role": "user", "content": f"Plan a rollout of "
                                                  f"{rng.choice(TOPICS)} in three steps."}])
        return 0

    kinds = [("chat", chat_short), ("chat", chat_short), ("chat-long", chat_long), ("stream", chat_stream),
             ("stream", chat_stream), ("responses", responses_call), ("embeddings", embeddings),
             ("cached", cached), ("reasoning", reasoning)]
    while not stop.is_set():
        kind, fn = rng.choice(kinds)
        try:
            with tags(team=team, feature=FEATURES[kind]):
                chunks = fn()
            tally.ok(kind, chunks)
        except (openai.OpenAIError, MiddlewareError) as exc:
            tally.failed(kind, exc)


def _burst(client: openai.OpenAI, model: str, tally: Tally, size: int) -> None:
    """Many calls at once: the limiter makes them wait instead of collecting 429s."""
    threads = []
    rng = random.Random(99)

    def one() -> None:
        try:
            with tags(**BURST_TAGS):
                client.chat.completions.create(model=model, messages=_messages(rng, True), max_tokens=300)
            tally.ok("burst")
        except (openai.OpenAIError, MiddlewareError) as exc:
            tally.failed("burst", exc)

    for _ in range(size):
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=120)


def show_resumption(client: openai.OpenAI, model: str, console: Console) -> bool:
    """Cut one stream mid-way (simulator fault) and show that the caller still gets the whole text."""
    kw: Any = {"model": model, "max_tokens": 200, "seed": 42, "stream": True,
               "messages": [{"role": "user", "content": "Explain stream resumption."}]}
    whole = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw) if c.choices)
    once = f"demo-cut-{time.time_ns()}"  # the fault hits the first request only, not the continuation
    cut = client.chat.completions.create(**kw, extra_headers={"x-sim-fault": "cut_after=30", "x-sim-fault-once": once})
    stitched = "".join(c.choices[0].delta.content or "" for c in cut if c.choices)
    same = stitched == whole
    console.print(f"stream cut by the server after 30 chunks, resumed by continuation: "
                  f"{len(stitched)} characters, identical to the uninterrupted stream: {same}")
    return same


def _status_table(tally: Tally, started: float, metrics_url: str) -> Table:
    from rich.table import Table

    table = Table(title=f"middleware demo — {time.monotonic() - started:5.1f}s — metrics at {metrics_url}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("calls", str(tally.calls))
    table.add_row("errors seen by the caller", str(tally.errors))
    table.add_row("streams / chunks", f"{tally.streams} / {tally.chunks}")
    table.add_row("throttled (waited)", f"{_metric_sum(n.THROTTLE_DECISIONS, {n.L_DECISION: n.DECISION_WAITED}):.0f}")
    retries = _metric_sum(n.ATTEMPTS) - _metric_sum(n.ATTEMPTS, {n.L_OUTCOME: n.ATTEMPT_SUCCESS})
    table.add_row("retries", f"{retries:.0f}")
    table.add_row("429s received", f"{_metric_sum(n.RATE_LIMITED_RESPONSES):.0f}")
    table.add_row("spend so far (USD)", _usd(_metric_sum(n.COST_USD)))
    return table


def summary_table(tally: Tally, elapsed: float, sim_stats: dict[str, Any] | None, span_stats: Any,
                  traces_stored: bool = False) -> Table:
    """The final summary: calls, tokens, throttled waits, retries, streams, errors, then spend (by team,
    feature, model and token type), cached savings, unpriced calls and each budget's state.

    With the local trace store on, each slow trace names the command that draws it.
    """
    from rich.table import Table

    table = Table(title=f"Summary after {elapsed:.1f}s")
    table.add_column("metric")
    table.add_column("value", justify="right")
    attempts = _metric_sum(n.ATTEMPTS)
    successes = _metric_sum(n.ATTEMPTS, {n.L_OUTCOME: n.ATTEMPT_SUCCESS})
    rows = [
        ("calls made", f"{tally.calls}"),
        ("calls by kind", ", ".join(f"{k}={v}" for k, v in sorted(tally.by_kind.items()))),
        ("errors seen by the caller", f"{tally.errors} {dict(tally.error_kinds) if tally.error_kinds else ''}"),
        ("input tokens (reported)", f"{_metric_sum(n.TOKEN_USAGE, {n.L_TOKEN_TYPE: n.TOKEN_INPUT}):.0f}"),
        ("output tokens (reported)", f"{_metric_sum(n.TOKEN_USAGE, {n.L_TOKEN_TYPE: n.TOKEN_OUTPUT}):.0f}"),
        ("throttle decisions: admitted / waited",
         f"{_metric_sum(n.THROTTLE_DECISIONS, {n.L_DECISION: n.DECISION_ADMITTED}):.0f} / "
         f"{_metric_sum(n.THROTTLE_DECISIONS, {n.L_DECISION: n.DECISION_WAITED}):.0f}"),
        ("seconds waited in the limiter", f"{_metric_sum(n.THROTTLE_WAIT):.1f}"),
        ("HTTP attempts / retries", f"{attempts:.0f} / {attempts - successes:.0f}"),
        ("429s received", f"{_metric_sum(n.RATE_LIMITED_RESPONSES):.0f}"),
        ("streams / chunks", f"{tally.streams} / {tally.chunks}"),
        ("stream interruptions / resumptions",
         f"{_metric_sum(n.STREAM_INTERRUPTIONS):.0f} / {_metric_sum(n.STREAM_RESUMPTIONS):.0f}"),
        *cost_rows(),
    ]
    if span_stats is not None:
        rows.append(("spans finished", f"{span_stats.finished}"))
        for seconds, name, trace_id in span_stats.slowest[:3]:
            where = f"middleware traces show {trace_id}" if traces_stored else f"trace_id={trace_id}"
            rows.append((f"slow trace: {name}", f"{seconds:.2f}s {where}"))
    if sim_stats:
        total = sim_stats.get("total", {})
        rows.append(("simulator: admitted / refused (429) / faults injected",
                     " / ".join(str(total.get(k, "?")) for k in ("admitted", "refused_total", "faults_total"))))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _stop_on_sigterm() -> None:
    """SIGTERM (a container stopping) ends the workload like Ctrl-C: summary printed, simulator stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _ranged(kind: type[int] | type[float], low: float, high: float, *, exclusive_low: bool = False
            ) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` within the range (one clear message otherwise)."""
    spec = Number(low, high, exclusive_min=exclusive_low, integer=kind is int)

    def parse(text: str) -> Any:
        try:
            return spec.parse(text.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed ({exc}): expected {spec.allowed}") from None

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``middleware demo`` (ConfigError when MIDDLEWARE_METRICS_ADDR is not allowed)."""
    p = ArgumentParser(prog="middleware demo", description=__doc__)
    p.add_argument("--duration", type=_ranged(float, 0, MAX_SECONDS), default=60.0,
                   help="seconds of workload (default 60; 0 = until interrupted, with a burst every minute)")
    p.add_argument("--workers", type=_ranged(int, 1, 256), default=6)
    host, port = read_env("MIDDLEWARE_METRICS_ADDR")
    p.add_argument("--metrics-host", default=host,
                   help="/metrics address (default 127.0.0.1; env MIDDLEWARE_METRICS_ADDR=host:port)")
    p.add_argument("--metrics-port", type=_ranged(int, 0, 65535), default=port,
                   help="/metrics port (0: any free port)")
    p.add_argument("--live", action="store_true", help="run against the real API (needs OPENAI_API_KEY)")
    p.add_argument("--no-progress", action="store_true", help="no live display (for logs and CI)")
    p.add_argument("--window", type=_ranged(float, 0, MAX_SECONDS, exclusive_low=True), default=10.0,
                   help="simulator rate-limit window in seconds")
    p.add_argument("--rpm", type=_ranged(int, 1, 10**9), default=60, help="simulator requests per window")
    p.add_argument("--tpm", type=_ranged(int, 1, 10**12), default=40_000, help="simulator tokens per window")
    add_log_arguments(p)
    return p


def _start_simulator(args: argparse.Namespace) -> Any:
    from .simulator import SimulatorConfig, start_subprocess

    config = SimulatorConfig(
        rpm=args.rpm, tpm=args.tpm, window_s=args.window, ttft_s=0.05, tokens_per_s=400.0, jitter=0.2,
        fault_rates={"status=503": 0.03, "status=500": 0.02, "cut_after=30": 0.05},
    )
    return start_subprocess(config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when the workload completed without errors reaching the caller.

    User errors (options, ``MIDDLEWARE_*`` variables, a /metrics port that cannot be bound) print one line
    on stderr and return 2 (1 for the port), never a traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        env_config = Config.from_env()
    except ConfigError as exc:
        print(f"middleware demo: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)  # stderr; the library itself installs no handler
    from ._extras import CLI, OTEL, MissingExtraError, require

    try:
        require("middleware demo", {"rich": "rich", "opentelemetry.sdk": "opentelemetry-sdk"}, (CLI, OTEL))
    except MissingExtraError as exc:
        print(f"middleware demo: {exc.detail}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.live import Live

    console = Console()
    live = args.live
    if live and not os.environ.get("OPENAI_API_KEY"):
        console.print("[red]--live needs OPENAI_API_KEY[/red]")
        return 2
    try:
        telemetry = setup_telemetry(metrics_port=args.metrics_port, metrics_host=args.metrics_host, span_stats=True)
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"middleware demo: cannot serve /metrics on {args.metrics_host}:{args.metrics_port}: {reason}",
              file=sys.stderr)
        return 1
    metrics_url = f"http://{args.metrics_host}:{telemetry.metrics_port}/metrics"
    sim = None
    try:
        # Budgets that do not bind unless MIDDLEWARE_BUDGETS sets others.
        demo_budgets = parse_rules(LIVE_BUDGETS if live else SIM_BUDGETS)
        cost = replace(env_config.cost, budgets=env_config.cost.budgets or demo_budgets)
        if live:
            raw = openai.OpenAI()
            model, scale, workers = LIVE_MODEL, 0.25, max(1, args.workers // 3)
            config = Config(cost=cost)
        else:
            sim = _start_simulator(args)
            raw = openai.OpenAI(api_key="sk-demo-not-a-real-key", base_url=sim.base_url)
            model, scale, workers = SIM_MODEL, 1.0, args.workers
            # Nothing about the limits is configured: the middleware learns them, and the simulator's
            # shortened window, from the x-ratelimit-* headers within a few calls.
            env = env_config  # MIDDLEWARE_REDIS_URL etc. still apply
            config = env.with_(limits=replace(env.limits, max_wait_seconds=120.0),
                               retry=replace(env.retry, max_attempts=6), cost=cost)
        client = protect(raw, config)
        target = "real API" if sim is None else f"simulator at {sim.base_url}"
        console.print(f"[bold]middleware demo[/bold]: {target}, "
                      f"{workers} workers for {f'{args.duration:.0f}s' if args.duration > 0 else 'ever'}; "
                      f"Prometheus metrics at {metrics_url}")
        if telemetry.otlp_endpoint:
            console.print(f"traces exported over OTLP to {telemetry.otlp_endpoint}")
        budgets = ", ".join(f"{r.scope}{'' if r.scope == API_KEY_SCOPE and r.value == ANY_VALUE else '=' + r.value}"
                            f"/{r.period}=${r.limit_usd:g}" for r in cost.budgets)
        console.print(f"calls tagged by team and feature; budgets: {budgets} ({cost.budget_mode} mode)")
        if sim is not None:
            with tags(**CHECK_TAGS):
                show_resumption(client, model, console)
        tally = Tally()
        stop = threading.Event()
        started = time.monotonic()
        threads = [threading.Thread(target=_workload, args=(client, model, tally, stop, i, scale), daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        forever = args.duration <= 0
        # One burst at 40% of the run; running forever (a long-lived stack), one a minute.
        burst_every = 60.0 if forever else float("inf")
        next_burst = started + (20.0 if forever else args.duration * 0.4)

        def tick() -> None:
            nonlocal next_burst
            if time.monotonic() >= next_burst:
                next_burst = time.monotonic() + burst_every
                threading.Thread(target=_burst, args=(client, model, tally, 30 if not live else 5),
                                 daemon=True).start()

        def running() -> bool:
            return bool(forever or time.monotonic() - started < args.duration)

        _stop_on_sigterm()
        try:
            if args.no_progress:
                while running():
                    tick()
                    time.sleep(0.25)
            else:
                with Live(_status_table(tally, started, metrics_url), console=console, refresh_per_second=4) as view:
                    while running():
                        tick()
                        time.sleep(0.25)
                        view.update(_status_table(tally, started, metrics_url))
        except KeyboardInterrupt:
            console.print("interrupted: stopping the workload")
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - started
        sim_stats = None
        if sim is not None:
            try:
                sim_stats = sim.stats()
            except Exception:
                sim_stats = None
        if telemetry.tracer_provider is not None and hasattr(telemetry.tracer_provider, "force_flush"):
            telemetry.tracer_provider.force_flush()
        console.print(summary_table(tally, elapsed, sim_stats, telemetry.span_stats,
                                    traces_stored=telemetry.traces_dir is not None))
        return 0 if tally.errors == 0 else 1
    finally:
        if sim is not None:
            sim.stop()
        telemetry.shutdown()
