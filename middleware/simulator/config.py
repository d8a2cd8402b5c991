"""``SimulatorConfig``: every knob of the simulator, buildable from CLI arguments or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..config import MAX_SECONDS, Choice, Flag, NoneOr, Number, Spec, Text, check_value, config_error
from ..errors import ConfigError

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
    # Counted faults, deterministic: ``((spec, N), ...)``, the first N generation requests get spec, then the next.
    fault_times: tuple[tuple[str, int], ...] = ()
    outages: tuple[tuple[float, float], ...] = ()
    outage_fault: str = "status=503"
    max_stored_responses: int = 1000
    access_log: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    def to_json(self) -> str:
        """Serialise to JSON (inverse of :meth:`from_json`)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimulatorConfig:
        """Build from :meth:`to_json` output; ConfigError when the text is not a valid configuration."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object")
            unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(f"unknown settings {', '.join(unknown)}")
            raw["models"] = tuple(raw.get("models", DEFAULT_MODELS))
            raw["outages"] = tuple((float(a), float(b)) for a, b in raw.get("outages", ()))
            raw["fault_rates"] = dict(raw.get("fault_rates", {}))
            raw["fault_times"] = tuple((str(spec), times) for spec, times in raw.get("fault_times", ()))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ConfigError(f"--config-json is not a valid simulator configuration: {exc}") from None
        return cls(**raw)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> SimulatorConfig:
        """Build from ``middleware simulate`` command-line arguments (ConfigError for values not allowed)."""
        ns = build_parser().parse_args(argv)
        if ns.config_json:
            return cls.from_json(ns.config_json)
        rates: dict[str, float] = {}
        if ns.fault_rate:
            rates[ns.fault_kind] = ns.fault_rate
        for item in ns.fault:
            spec, _, prob = item.rpartition("@")
            if not spec:
                raise ConfigError(f"--fault expects SPEC@PROBABILITY, got {item!r}")
            rates[spec] = _probability(f"--fault {spec}", prob)
        counted = tuple(_parse_fault_times(item) for item in ns.fault_times)
        try:
            return cls._from_namespace(ns, rates, counted)
        except ConfigError as exc:  # name the option the user typed, not the field
            flag = _FLAGS.get((exc.setting or "").removeprefix("SimulatorConfig."))
            if flag is None or exc.setting is None:
                raise
            raise ConfigError(str(exc).replace(exc.setting, flag, 1), setting=flag, value=exc.value,
                              allowed=exc.allowed) from None

    @classmethod
    def _from_namespace(cls, ns: argparse.Namespace, rates: dict[str, float],
                        counted: tuple[tuple[str, int], ...]) -> SimulatorConfig:
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
            fault_times=counted,
            outages=tuple(_parse_outage(o) for o in ns.outage),
            access_log=ns.access_log,
        )


_FLAGS = {"host": "--host", "port": "--port", "seed": "--seed", "rpm": "--rpm", "tpm": "--tpm", "window_s": "--window",
          "default_max_output_tokens": "--default-max-output-tokens", "output_tokens_min": "--output-tokens-min",
          "output_tokens_max": "--output-tokens-max", "embedding_dimensions": "--embedding-dimensions",
          "ttft_s": "--ttft", "tokens_per_s": "--tps", "jitter": "--jitter", "time_scale": "--time-scale"}


def _parse_outage(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(",")
    spec = Number(0, MAX_SECONDS, unit="seconds")
    try:
        if not sep:
            raise ValueError("no comma")
        bounds = (float(spec.parse(start.strip())), float(spec.parse(end.strip())))
    except ValueError as exc:
        raise ConfigError(f"--outage={text!r} is not allowed ({exc}): expected T0,T1 in seconds since start, "
                          "0 <= T0 < T1") from None
    return bounds


def _parse_fault_times(item: str) -> tuple[str, int]:
    """``--fault-times SPEC@N``: the spec and the count, each checked (ConfigError naming the option)."""
    from .faults import TIMES, FaultSyntaxError, parse_fault

    spec, _, count = item.rpartition("@")
    if not spec.strip():
        raise ConfigError(f"--fault-times={item!r} is not allowed: expected SPEC@N, e.g. status=503@2",
                          setting="--fault-times", value=item, allowed="SPEC@N")
    try:
        parse_fault(spec)
    except FaultSyntaxError as exc:
        raise ConfigError(f"--fault-times={item!r} is not allowed ({exc}): see the fault grammar in "
                          "docs/simulator.md", setting="--fault-times", value=item, allowed="SPEC@N") from None
    try:
        times: int = TIMES.parse(count.strip())
    except ValueError as exc:
        raise config_error(f"--fault-times {spec}", TIMES, count, str(exc)) from None
    return spec, times


_PROBABILITY = Number(0, 1)


def _probability(setting: str, text: str) -> float:
    try:
        value: float = _PROBABILITY.parse(text.strip())
    except ValueError as exc:
        raise config_error(setting, _PROBABILITY, text, str(exc)) from None
    return value


MAX_OUTPUT_TOKENS = 1_000_000
MAX_EMBEDDING_DIMENSIONS = 16_384


def _literal(name: str) -> Choice:
    """The allowed values of a ``Literal`` field (so that a value added to the Literal is accepted here too)."""
    hint = typing.get_type_hints(SimulatorConfig)[name]
    return Choice(tuple(str(v) for v in typing.get_args(hint)))


@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, Spec]:
    seconds = Number(0, MAX_SECONDS, unit="seconds")
    return {
        "host": Text(),
        "port": Number(0, 65535, integer=True),
        "seed": Number(-(2**63), 2**63 - 1, integer=True),
        "rpm": NoneOr(Number(0, 10**12, integer=True)),
        "tpm": NoneOr(Number(0, 10**15, integer=True)),
        "window_s": Number(0, MAX_SECONDS, exclusive_min=True, unit="seconds"),
        "limit_scope": _literal("limit_scope"),
        "charge_mode": _literal("charge_mode"),
        "default_max_output_tokens": Number(0, 10**9, integer=True),
        "quota_exhausted": Flag(),
        "output_tokens_min": Number(0, MAX_OUTPUT_TOKENS, integer=True),
        "output_tokens_max": Number(0, MAX_OUTPUT_TOKENS, integer=True),
        "embedding_dimensions": Number(1, MAX_EMBEDDING_DIMENSIONS, integer=True),
        "ttft_s": seconds,
        "tokens_per_s": Number(0, 1e9),
        "jitter": Number(0, 1),
        "time_scale": Number(0, 1e6),
        "max_stored_responses": Number(1, 10**7, integer=True),
        "access_log": Flag(),
    }


def _validate(config: SimulatorConfig) -> None:
    """Every field's type and range; ConfigError naming the field, the value and what is allowed."""
    for name, field_spec in _specs().items():
        check_value(f"SimulatorConfig.{name}", field_spec, getattr(config, name))
    if config.output_tokens_max < config.output_tokens_min:
        raise ConfigError(f"SimulatorConfig.output_tokens_max={config.output_tokens_max} is not allowed: "
                          f"expected >= output_tokens_min ({config.output_tokens_min})",
                          setting="SimulatorConfig.output_tokens_max", value=str(config.output_tokens_max),
                          allowed=f">= output_tokens_min ({config.output_tokens_min})")
    if not isinstance(config.models, tuple) or not config.models or not all(
            isinstance(m, str) and m.strip() for m in config.models):
        raise ConfigError(f"SimulatorConfig.models={config.models!r} is not allowed: "
                          "expected a non-empty tuple of model names")
    from .faults import FaultSyntaxError, parse_fault, parse_fault_times

    if not isinstance(config.fault_rates, dict):
        raise ConfigError("SimulatorConfig.fault_rates is not allowed: expected a {spec: probability} mapping")
    for spec, prob in config.fault_rates.items():
        try:
            parse_fault(str(spec))
        except FaultSyntaxError as exc:
            raise ConfigError(f"fault {spec!r} is not allowed ({exc}): see the fault grammar in docs/simulator.md"
                              ) from None
        check_value(f"probability of fault {spec!r}", _PROBABILITY, prob)
    if sum(config.fault_rates.values()) > 1.0 + 1e-9:
        raise ConfigError(f"fault probabilities add up to {sum(config.fault_rates.values()):g}: expected at most 1")
    if not isinstance(config.fault_times, tuple):
        raise ConfigError(f"SimulatorConfig.fault_times={config.fault_times!r} is not allowed: expected a tuple "
                          "of (spec, N) pairs")
    try:
        parse_fault_times(config.fault_times)
    except FaultSyntaxError as exc:
        raise ConfigError(f"SimulatorConfig.fault_times: {exc}; see the fault grammar in docs/simulator.md",
                          setting="SimulatorConfig.fault_times") from None
    for outage in config.outages:
        ok = (isinstance(outage, tuple) and len(outage) == 2
              and all(isinstance(x, int | float) and not isinstance(x, bool) for x in outage)
              and math.isfinite(outage[0]) and 0 <= outage[0] < outage[1])
        if not ok:
            raise ConfigError(f"outage {outage!r} is not allowed: expected (T0, T1) seconds since start, "
                              "0 <= T0 < T1")
    try:
        parse_fault(config.outage_fault)
    except (FaultSyntaxError, AttributeError) as exc:
        raise ConfigError(f"SimulatorConfig.outage_fault={config.outage_fault!r} is not allowed ({exc})") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``middleware simulate``."""
    from ..cli import ArgumentParser

    p = ArgumentParser(prog="middleware simulate", description="OpenAI-compatible simulator on 127.0.0.1.")
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
    p.add_argument("--fault-times", action="append", default=[], metavar="SPEC@N",
                   help="counted fault: the next N requests get SPEC (repeatable: in order), e.g. status=503@2")
    p.add_argument("--outage", action="append", default=[], metavar="T0,T1", help="503 between T0 and T1 seconds")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--config-json", default="", help=argparse.SUPPRESS)
    return p
