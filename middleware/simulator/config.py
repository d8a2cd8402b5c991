"""``SimulatorConfig``: every knob of the simulator, buildable from CLI arguments or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "o3-mini",
    "o4-mini",
    "gpt-4",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """Configuration of one simulator server. Limits of ``None`` or ``0`` mean unlimited."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    # Rate limits: token buckets of capacity ``limit`` refilled continuously at ``limit / window_s``.
    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 60.0
    limit_scope: Literal["model", "shared"] = "model"
    charge_mode: Literal["admission", "usage"] = "admission"
    default_max_output_tokens: int = 0
    quota_exhausted: bool = False
    # Rate-limit accounting that may disagree with the middleware's (see ``counting.rate_limit_charge``):
    # the prompt as counted by ``accounting`` ("exact" = ours, "legacy" = the cookbook's gpt-3.5-turbo-0301
    # rule, "chars" = characters / 4), times ``charge_factor`` plus ``charge_offset``, plus
    # ``n * max_tokens`` when ``charge_per_choice``; headers rounded as ``ratelimit.HeaderRounding``.
    accounting: Literal["exact", "legacy", "chars"] = "exact"
    charge_factor: float = 1.0
    charge_offset: int = 0
    charge_per_choice: bool = False
    remaining_rounding: Literal["down", "nearest"] = "down"
    reset_resolution_s: float = 0.001
    reset_rounding: Literal["up", "down", "nearest"] = "up"
    # Deterministic output.
    output_tokens_min: int = 20
    output_tokens_max: int = 200
    embedding_dimensions: int = 1536
    # Latency model (seconds); ``tokens_per_s`` of 0 is unlimited. ``time_scale`` multiplies every delay.
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    jitter: float = 0.0
    time_scale: float = 1.0
    # Faults: ``{spec: probability}`` (see :mod:`.faults`) and outages in seconds since server start.
    fault_rates: dict[str, float] = field(default_factory=dict)
    outages: tuple[tuple[float, float], ...] = ()
    outage_fault: str = "status=503"
    max_stored_responses: int = 1000
    access_log: bool = False

    def to_json(self) -> str:
        """Serialise to JSON (inverse of :meth:`from_json`)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimulatorConfig:
        """Build from :meth:`to_json` output."""
        raw: dict[str, Any] = json.loads(text)
        raw["models"] = tuple(raw.get("models", DEFAULT_MODELS))
        raw["outages"] = tuple((float(a), float(b)) for a, b in raw.get("outages", ()))
        return cls(**raw)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> SimulatorConfig:
        """Build from ``middleware simulate`` command-line arguments."""
        ns = build_parser().parse_args(argv)
        if ns.config_json:
            return cls.from_json(ns.config_json)
        rates: dict[str, float] = {}
        if ns.fault_rate:
            rates[ns.fault_kind] = ns.fault_rate
        for item in ns.fault:
            spec, _, prob = item.rpartition("@")
            if not spec:
                raise SystemExit(f"--fault expects SPEC@PROBABILITY, got {item!r}")
            rates[spec] = float(prob)
        return cls(
            host=ns.host,
            port=ns.port,
            seed=ns.seed,
            rpm=ns.rpm or None,
            tpm=ns.tpm or None,
            window_s=ns.window,
            limit_scope=ns.limit_scope,
            charge_mode=ns.charge_mode,
            default_max_output_tokens=ns.default_max_output_tokens,
            quota_exhausted=ns.quota_exhausted,
            accounting=ns.accounting,
            charge_factor=ns.charge_factor,
            charge_offset=ns.charge_offset,
            charge_per_choice=ns.charge_per_choice,
            remaining_rounding=ns.remaining_rounding,
            reset_resolution_s=ns.reset_resolution,
            reset_rounding=ns.reset_rounding,
            output_tokens_min=ns.output_tokens_min,
            output_tokens_max=ns.output_tokens_max,
            embedding_dimensions=ns.embedding_dimensions,
            ttft_s=ns.ttft,
            tokens_per_s=ns.tps,
            jitter=ns.jitter,
            time_scale=ns.time_scale,
            fault_rates=rates,
            outages=tuple(_parse_outage(o) for o in ns.outage),
            access_log=ns.access_log,
        )


def _parse_outage(text: str) -> tuple[float, float]:
    start, _, end = text.partition(",")
    return float(start), float(end)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``middleware simulate``."""
    p = argparse.ArgumentParser(prog="middleware simulate", description="OpenAI-compatible simulator on 127.0.0.1.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port, 0 picks a free one (default 8000)")
    p.add_argument("--seed", type=int, default=0, help="server seed for outputs without a request seed")
    p.add_argument("--rpm", type=int, default=0, help="requests per window per key (0 = unlimited)")
    p.add_argument("--tpm", type=int, default=0, help="tokens per window per key (0 = unlimited)")
    p.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds (default 60)")
    p.add_argument("--limit-scope", choices=("model", "shared"), default="model", help="budget per model or shared")
    p.add_argument("--charge-mode", choices=("admission", "usage"), default="admission")
    p.add_argument("--default-max-output-tokens", type=int, default=0, help="charged when a request sets no max")
    p.add_argument("--quota-exhausted", action="store_true", help="answer every request with insufficient_quota")
    p.add_argument("--accounting", choices=("exact", "legacy", "chars"), default="exact",
                   help="prompt count the rate limiter charges: exact (the middleware's), legacy (cookbook "
                        "gpt-3.5-turbo-0301 rule), chars (characters / 4)")
    p.add_argument("--charge-factor", type=float, default=1.0, help="multiplies the charged prompt tokens")
    p.add_argument("--charge-offset", type=int, default=0, help="tokens added to every request's charge")
    p.add_argument("--charge-per-choice", action="store_true", help="charge n * max_tokens for the output")
    p.add_argument("--remaining-rounding", choices=("down", "nearest"), default="down",
                   help="rounding of x-ratelimit-remaining-*")
    p.add_argument("--reset-resolution", type=float, default=0.001,
                   help="resolution of x-ratelimit-reset-* in seconds (default 0.001)")
    p.add_argument("--reset-rounding", choices=("up", "down", "nearest"), default="up",
                   help="rounding of x-ratelimit-reset-* to its resolution")
    p.add_argument("--output-tokens-min", type=int, default=20)
    p.add_argument("--output-tokens-max", type=int, default=200)
    p.add_argument("--embedding-dimensions", type=int, default=1536)
    p.add_argument("--ttft", type=float, default=0.0, help="time to first token, seconds")
    p.add_argument("--tps", type=float, default=0.0, help="output tokens per second (0 = unlimited)")
    p.add_argument("--jitter", type=float, default=0.0, help="relative latency jitter, e.g. 0.2")
    p.add_argument("--time-scale", type=float, default=1.0, help="factor applied to every delay")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of injecting --fault-kind")
    p.add_argument("--fault-kind", default="status=500", help="fault spec used by --fault-rate")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC@P", help="extra fault with probability")
    p.add_argument("--outage", action="append", default=[], metavar="T0,T1", help="503 between T0 and T1 seconds")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--config-json", default="", help=argparse.SUPPRESS)
    return p
