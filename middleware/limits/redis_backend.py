"""Redis backend: one atomic Lua script call per decision, on Redis server time.

Any number of processes on any hosts that use the same URL, prefix and key share one budget and
one cooldown. Each key is one hash that expires after twice its longest window (longer while a
cooldown lasts); an expired key starts full again, which is what an idle period would give anyway.

``peers`` keeps a sorted set of the live processes (member: a random peer id, score: the expiry time
on the server's clock): each heartbeat drops the expired members, refreshes ours and counts them. The
limiter uses the count to size its share of the budget while Redis is down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from middleware.limits.redis_script import LUA, PEERS_LUA
from middleware.limits.types import (
    BUCKETS,
    DAY_SECONDS,
    REASON_COOLDOWN,
    REASON_NO_LIMITS,
    REASON_WITHIN_LIMIT,
    BackendDecision,
    Charge,
    Debit,
    LearnedLimits,
    LimitConfig,
    LimiterKey,
    LimitState,
)
from middleware.redisconn import RedisConfig, RedisEvents, RedisHandle, handle_for
from middleware.telemetry import names as n

_REASONS = {"within": REASON_WITHIN_LIMIT, "none": REASON_NO_LIMITS, "cooldown": REASON_COOLDOWN}
_INDEX = {name: str(i + 1) for i, name in enumerate(BUCKETS)}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bucket(index: Any) -> str:
    return BUCKETS[int(_s(index)) - 1]


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


_DEBIT = len(Debit._fields)  # values per debit in the script's answers and arguments


def _flat(charge: Charge) -> list[str]:
    return [v for d in charge.debits for v in (_INDEX[d.bucket], *(repr(float(x)) for x in d[1:]))]


class RedisBackend:
    """Shared limits in Redis, through the shared Redis policy (``middleware.redisconn``).

    Raises ``redisconn.RedisSkipped`` when Redis fails or is skipped during the policy's back-off (the router
    falls back to the local limiter), or ``RedisUnavailable`` for a reservation with ``fallback="fail"``.
    ``redis``: a ``redisconn`` handle or link (the pipeline's, under ``Config.redis``), else ``client`` (a
    ``redis.Redis``), else ``config.redis_url`` under ``policy`` (default ``RedisConfig()``). ``clock`` replaces
    Redis server time; only tests use it, to compare decisions with the memory backend.
    """

    name = "redis"

    def __init__(
        self, config: LimitConfig, *, client: Any = None, clock: Callable[[], float] | None = None,
        redis: Any = None, policy: RedisConfig | None = None, events: RedisEvents | None = None,
    ) -> None:
        target = redis if redis is not None else client if client is not None else config.redis_url
        if target is None:
            raise ValueError("RedisBackend needs config.redis_url, a client or a redisconn handle")
        self.handle: RedisHandle = handle_for(target, n.REDIS_FEATURE_LIMITER, events=events, config=policy)
        self._script = self.handle.script(LUA)
        self._peers = self.handle.script(PEERS_LUA)
        self._prefix = config.redis_prefix
        self._clock = clock
        configured = config.configured()
        self._limits = [_arg(configured[b]) for b in BUCKETS]
        longest = DAY_SECONDS if config.requests_per_day or config.tokens_per_day else config.base_window
        window = ("~" if config.learns_window else "") + repr(float(config.base_window))
        window += f":{float(config.jitter_margin_seconds)!r}:{float(config.held_initially)!r}"
        self._common = [*self._limits, window, str(math.ceil(2 * longest))]

    def _key(self, key: LimiterKey) -> str:
        return f"{self._prefix}:limiter:{{{key.id}}}"

    def ready(self) -> bool:
        """True when an operation would try Redis now (the router asks before a probe while it is down)."""
        return self.handle.ready()

    def offline(self) -> _Offline:
        """This backend while the router skips Redis: every operation raises at once, counted as a fallback
        (``RedisUnavailable`` for a reservation under ``fallback="fail"``), without touching the network."""
        return _Offline(self.handle)

    def _call(self, op: str, key: LimiterKey, *args: str) -> Any:
        now = "" if self._clock is None else repr(self._clock())
        return self._script([self._key(key)], [op, *self._common, now, *args], admission=op == "reserve")

    def reserve(self, key: LimiterKey, tokens: int, max_wait: float) -> BackendDecision:
        """Commit or refuse one reservation (one script call)."""
        out = [_s(v) for v in self._call("reserve", key, str(tokens), repr(float(max_wait)))]
        status, wait, reason, now, limit, epoch = out[:6]
        debits = tuple(
            Debit(_bucket(int(float(out[i]))), *(float(v) for v in out[i + 1:i + _DEBIT]))
            for i in range(6, len(out), _DEBIT)
        )
        charge = Charge(float(now), float(now) + float(wait), epoch, debits) if debits else None
        why = _REASONS.get(reason) or _bucket(reason)
        return BackendDecision(status, float(wait), why, float(now), charge, float(limit))  # type: ignore[arg-type]

    def adjust(
        self, key: LimiterKey, requests: int, tokens: int, charge: Charge, raw_tokens: int | None = None,
    ) -> None:
        """Give back (positive, bounded) or charge extra (negative) on the charged buckets."""
        raw = tokens if raw_tokens is None else raw_tokens
        self._call(
            "adjust", key, str(requests), str(tokens), repr(charge.at), charge.epoch, repr(charge.admit_at),
            str(raw), *_flat(charge),
        )

    def learn(self, key: LimiterKey, seen: LearnedLimits, charge: Charge | None = None) -> dict[str, LimitState]:
        """Adopt limits, window (and bias) from headers and correct the levels (``buckets.learn_shaped``)."""
        args = [_arg(m.get(b)) for b in BUCKETS[:2] for m in (seen.limits, seen.remaining)]
        args += [_arg(seen.window), _arg(seen.bias)]
        args += ["", "", "", ""] if charge is None else [
            charge.epoch, repr(charge.at), repr(charge.admit_at), repr(charge.delay), *_flat(charge)]
        return self._states(self._call("learn", key, *args), 0.0)

    def peers(self, peer_id: str, ttl: float, present: bool = True) -> int:
        """Refresh (or, ``present=False``, remove) this process in the peers set; the live peers counted."""
        args = [peer_id, repr(float(ttl)), "1" if present else "0"]
        return int(self._peers([f"{self._prefix}:peers"], args))

    def cooldown(self, key: LimiterKey, seconds: float, resources: tuple[str, ...], empty: bool = True) -> None:
        """Block the key for ``seconds`` in every process and (``empty``) empty the named buckets."""
        self._call("cooldown", key, repr(float(seconds)), ",".join(_INDEX[b] for b in resources) if empty else "")

    def cooldown_left(self, key: LimiterKey) -> float:
        """Seconds the key's cooldown still lasts."""
        return float(_s(self._call("snapshot", key)[0]))

    def recheck(self, key: LimiterKey, charge: Charge | None, tokens: int) -> tuple[float, float]:
        """For a call waking at its admission: (cooldown left, ``buckets.shift`` of its charge)."""
        args = [] if charge is None else [str(tokens), charge.epoch, repr(charge.at), repr(charge.admit_at),
                                          *_flat(charge)]
        out = self._call("recheck", key, *args)
        return float(_s(out[0])), float(_s(out[1]))

    def snapshot(self, key: LimiterKey) -> dict[str, LimitState]:
        """Limit and level per known bucket (read only)."""
        out = self._call("snapshot", key)
        return self._states(out[1:], float(_s(out[0])))

    @staticmethod
    def _states(flat: Sequence[Any], cooldown: float) -> dict[str, LimitState]:
        return {
            _bucket(flat[i]): LimitState(float(_s(flat[i + 1])), float(_s(flat[i + 2])), cooldown,
                                         float(_s(flat[i + 3])), float(_s(flat[i + 4])), _s(flat[i + 5]) == "1")
            for i in range(0, len(flat), 6)
        }

    def ping(self) -> None:
        """Raise (``RedisSkipped``) if Redis is unreachable."""
        self.handle.run(lambda client: client.ping())

    def close(self) -> None:
        """Nothing to release: the connection pool is the shared link's (other features and pipelines use it)."""


class _Offline:
    """The Redis backend's operations during the back-off: each one refused at once (see ``RedisBackend.offline``)."""

    name = "redis"

    def __init__(self, handle: RedisHandle) -> None:
        self._handle = handle

    def __getattr__(self, op: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise self._handle.link.skip(self._handle.feature, self._handle.events, admission=op == "reserve")

        return refuse
