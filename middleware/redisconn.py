"""One Redis configuration and one policy for every feature that shares state through Redis.

Four features keep state in Redis so that every process of a fleet shares it, each with a local fallback:

=================  ==========================================  ==============================================
feature            state in Redis                              while Redis is down or slow
=================  ==========================================  ==============================================
``limiter``        request/token buckets, cooldowns, peers     a local limiter holding 1/N of every limit
``retry``          retry budget, circuit breakers              this process's in-memory budget and breaker
``checkpoint``     stream checkpoints                          the checkpoint is skipped (counted)
``budget``         cost budgets (spend, holds)                 a local ledger seeded from the last shared state
=================  ==========================================  ==============================================

They all go through this module:

* :class:`RedisConfig`: the URL and the policy: connect and command timeouts, the back-off after a failure,
  and what a failure means (``fallback``).
* :func:`link_for`: one :class:`RedisLink` per URL and policy in a process: one client (one connection pool)
  and one health state, shared by every feature and every pipeline using that URL.
* :class:`RedisHandle` (``link.feature(name, events)``): what a feature holds. ``run`` is one bounded blocking
  operation; ``arun`` runs it in a worker thread so that an event loop never waits for Redis.
* :func:`detach`: a write nobody waits for (a settlement, a checkpoint delete) runs at once, or, on an event
  loop's thread, in that loop's default executor.

**The policy is fallback first.** An operation costs at most the connect and command timeouts (no client-side
retries). When it fails (refused, reset, timed out, any Redis error) the link opens a circuit: for a back-off
(``backoff_initial_seconds``, doubling up to ``backoff_max_seconds``, each drawn between half and all of that,
so that a fleet does not probe in step) every operation of every feature on that URL is answered at once by
the feature's local fallback, without touching the network. When the back-off expires, one caller probes;
the others keep skipping until its answer closes the circuit (or opens it again for a longer back-off). Every
operation that did not use Redis is counted (``llm_middleware.redis.fallbacks{feature, reason}``); one WARNING
is logged when Redis becomes unusable and one when it is back, whatever the number of operations between.

With ``fallback="fail"`` an admission decision (the limiter's reservation, the circuit breaker's permit, the
cost budget's reservation) raises :class:`~middleware.errors.RedisUnavailable` instead of deciding locally, so
a call that cannot be checked against the shared state is refused; everything after the fact (settlements,
breaker outcomes, retry-budget bookkeeping, checkpoints) is never worth failing a call and falls back as usual.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from .errors import RedisUnavailable
from .telemetry import names as n

log = logging.getLogger(__name__)
T = TypeVar("T")

Fallback = Literal["local", "fail"]
FALLBACKS: tuple[str, ...] = ("local", "fail")


@dataclass(frozen=True)
class RedisConfig:
    """The Redis every feature shares, and the one policy for using it (``Config.redis``).

    ``url`` is the Redis of the limiter, the retry state and the budgets unless a feature names its own
    (``LimitConfig.redis_url``, ``RetryConfig.redis_url``, ``CostConfig.redis_url``); checkpoints use Redis only
    when ``StreamConfig.checkpoint_redis_url`` is set. The timeouts, the back-off and the fallback apply to every
    feature, whichever URL it uses.
    """

    url: str | None = None
    connect_timeout_seconds: float = 0.25
    """Longest wait for a connection to be established."""
    timeout_seconds: float = 0.25
    """Longest wait for the answer to one command or script (a Redis that accepts connections and never answers
    costs this much once, then the back-off applies)."""
    backoff_initial_seconds: float = 1.0
    """After a failure, Redis is skipped this long (jittered) before one caller probes it; 0: never skipped."""
    backoff_max_seconds: float = 10.0
    """The back-off doubles with each failed probe up to this (so a Redis that comes back is used within it)."""
    fallback: Fallback = "local"
    """``local``: decide with the feature's local state; ``fail``: admission decisions raise RedisUnavailable."""

    def __post_init__(self) -> None:
        from .config import check_redis_config  # the shared value specifications (config.py imports this module)

        check_redis_config(self)

    def with_url(self, url: str | None) -> RedisConfig:
        """The same policy for another URL."""
        return self if url == self.url else replace(self, url=url)

    def backoff(self, failures: int, draw: float) -> float:
        """Seconds to skip Redis after ``failures`` consecutive failures; ``draw`` in [0, 1) picks the jitter."""
        if failures <= 0 or self.backoff_initial_seconds <= 0:
            return 0.0
        ceiling = min(self.backoff_max_seconds, self.backoff_initial_seconds * 2.0 ** min(failures - 1, 60))
        return ceiling * (0.5 + 0.5 * draw)


class RedisSkipped(Exception):
    """This operation did not use Redis (it failed, or was skipped during the back-off): answer locally.

    Raised by :meth:`RedisLink.run` to the feature, which falls back; never reaches a caller of the middleware.
    """

    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"Redis not used by {feature}: {reason}")
        self.feature = feature
        self.reason = reason


@runtime_checkable
class RedisEvents(Protocol):
    """What the link reports (the telemetry Recorder implements it)."""

    def redis_fallback(self, feature: str, reason: str) -> None:
        """One operation of ``feature`` did not use Redis, for ``reason`` (``names.REDIS_REASONS``)."""


class NoopRedisEvents:
    """Report nothing."""

    def redis_fallback(self, feature: str, reason: str) -> None:
        """Ignore."""


def on_event_loop() -> bool:
    """True on a thread that is running an asyncio event loop (where a blocking call would hold every task)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass
class LinkStats:
    """Counters of one link (for tests and debugging; telemetry goes through :class:`RedisEvents`)."""

    operations: int = 0
    """Operations sent to Redis."""
    failures: int = 0
    skipped: int = 0
    """Operations answered locally without trying (back-off)."""
    outages: int = 0
    on_event_loop: int = 0
    """Operations sent from an event loop's thread: each held the loop for a round trip (should stay 0)."""


def _redact(url: str) -> str:
    from .config import RedisUrl

    return RedisUrl.redact(url)


def _reason(exc: BaseException) -> str:
    import redis

    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return n.REDIS_REASON_TIMEOUT
    if isinstance(exc, redis.ConnectionError | OSError):
        return n.REDIS_REASON_CONNECTION
    return n.REDIS_REASON_ERROR


class RedisLink:
    """One Redis (URL and policy) in this process: its client, its connection pool and its health.

    ``client`` replaces the client built from the URL (tests, or an application's own client); ``clock`` and
    ``rng`` are injectable for tests.
    """

    def __init__(self, config: RedisConfig, *, client: Any = None, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] | None = None) -> None:
        import redis

        if client is None and not config.url:
            raise ValueError("a RedisLink needs a URL or a client")
        self.config = config
        self.url = _redact(config.url) if config.url else repr(client)
        self._client = client
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._clock = clock
        self._rng = rng or random.random
        self._lock = threading.Lock()
        self._failures = 0  # consecutive failed probes (0: healthy)
        self._generation = 0  # changes when the circuit opens or closes; stale outcomes are ignored
        self._retry_at = 0.0
        self._probing = False
        self._down_since = 0.0
        self._skipped_in_outage = 0
        self.stats = LinkStats()

    # ------------------------------------------------------------------ the client
    @property
    def client(self) -> Any:
        """The synchronous ``redis.Redis`` client (one connection pool, created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        cfg = self.config
        if not cfg.url:
            raise ValueError("no Redis URL")
        # No client-side retries: a failure is the policy's to handle (fallback at once, back-off, one probe).
        return redis.Redis.from_url(cfg.url, socket_connect_timeout=cfg.connect_timeout_seconds,
                                    socket_timeout=cfg.timeout_seconds, retry=Retry(NoBackoff(), 0),
                                    health_check_interval=0)

    def feature(self, name: str, events: RedisEvents | None = None) -> RedisHandle:
        """The handle through which feature ``name`` (``names.REDIS_FEATURES``) uses this Redis."""
        return RedisHandle(self, name, events)

    # ------------------------------------------------------------------ health
    @property
    def healthy(self) -> bool:
        """False from a failure until a probe succeeds."""
        return self._failures == 0

    def ready(self) -> bool:
        """True when an operation would try Redis now (healthy, or the back-off is over and nobody probes)."""
        if self._failures == 0:
            return True
        with self._lock:
            return self._failures == 0 or (not self._probing and self._clock() >= self._retry_at)

    def _enter(self) -> int | None:
        """The generation to report the outcome under, or None: skip Redis (back-off, or another caller probes)."""
        if self._failures == 0:
            return self._generation
        with self._lock:
            if self._failures == 0:
                return self._generation
            if self._probing or self._clock() < self._retry_at:
                return None
            self._probing = True
            return self._generation

    def _succeeded(self, generation: int) -> None:
        if self._failures == 0:
            return
        with self._lock:
            if self._failures == 0 or generation != self._generation:
                return  # an answer from before the outage says nothing about now
            self._failures = 0
            self._probing = False
            self._generation += 1
            down, skipped = self._clock() - self._down_since, self._skipped_in_outage
        log.warning("Redis %s is available again after %.1fs (%d operations answered locally meanwhile)",
                    self.url, down, skipped)

    def _failed(self, generation: int, feature: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.failures += 1
            if generation != self._generation:
                return  # failed alongside an operation that already opened the circuit: one failure, one back-off
            self._failures += 1
            self._probing = False
            self._generation += 1
            now = self._clock()
            delay = self.config.backoff(self._failures, self._rng())
            self._retry_at = now + delay
            first = self._failures == 1
            if first:
                self._down_since = now
                self._skipped_in_outage = 0
                self.stats.outages += 1
        if first:
            log.warning("Redis %s unavailable (%s, found by the %s: %s: %s); every feature using it falls back to "
                        "its local state, and Redis is tried again in %.2fs (back-off up to %gs)", self.url,
                        _reason(exc), feature, type(exc).__name__, exc, delay, self.config.backoff_max_seconds)
        else:
            log.debug("Redis %s still unavailable (%s: %s); next probe in %.2fs", self.url, type(exc).__name__,
                      exc, delay)

    def _release_probe(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._probing = False

    # ------------------------------------------------------------------ operations
    def run(self, feature: str, op: Callable[[Any], T], *, events: RedisEvents | None = None,
            admission: bool = False) -> T:
        """``op(client)`` within the policy: its result, or :class:`RedisSkipped` (fall back) when Redis failed or
        is being skipped; :class:`~middleware.errors.RedisUnavailable` instead for an ``admission`` decision
        with ``fallback="fail"``. Blocks for at most the timeouts; never call it on an event loop's thread
        (use :meth:`RedisHandle.arun` or :func:`detach`)."""
        generation = self._enter()
        if generation is None:
            self.stats.skipped += 1
            self._skipped_in_outage += 1
            raise self._skip(feature, n.REDIS_REASON_BACKOFF, events, admission)
        if on_event_loop():
            self.stats.on_event_loop += 1
        self.stats.operations += 1
        try:
            result = op(self.client)
        except BaseException as exc:
            if not isinstance(exc, self._errors):
                self._release_probe(generation)  # not Redis's doing (a bug, KeyboardInterrupt): no verdict
                raise
            self._failed(generation, feature, exc)
            raise self._skip(feature, _reason(exc), events, admission) from exc
        self._succeeded(generation)
        return result

    def skip(self, feature: str, events: RedisEvents | None = None, admission: bool = False) -> BaseException:
        """The error for an operation skipped during the back-off (counted), to raise."""
        self.stats.skipped += 1
        self._skipped_in_outage += 1
        return self._skip(feature, n.REDIS_REASON_BACKOFF, events, admission)

    def _skip(self, feature: str, reason: str, events: RedisEvents | None, admission: bool) -> BaseException:
        if events is not None:
            try:
                events.redis_fallback(feature, reason)
            except Exception:  # telemetry never raises into the call
                log.debug("redis_fallback event failed", exc_info=True)
        if admission and self.config.fallback == "fail":
            return RedisUnavailable(
                f"Redis {self.url} unavailable ({reason}) for the {feature}, and RedisConfig.fallback is 'fail'",
                feature=feature, reason=reason)
        return RedisSkipped(feature, reason)

    def close(self) -> None:
        """Close the connection pool (a later operation opens a new one)."""
        client = self._client
        if client is not None:
            client.close()


class RedisHandle:
    """What one feature holds: the shared link, the feature's name (a metric label) and where to report."""

    __slots__ = ("events", "feature", "link")

    def __init__(self, link: RedisLink, feature: str, events: RedisEvents | None = None) -> None:
        self.link = link
        self.feature = feature
        self.events = events

    @property
    def config(self) -> RedisConfig:
        """The link's policy."""
        return self.link.config

    @property
    def client(self) -> Any:
        """The link's synchronous client."""
        return self.link.client

    def ready(self) -> bool:
        """True when an operation would try Redis now."""
        return self.link.ready()

    def run(self, op: Callable[[Any], T], *, admission: bool = False) -> T:
        """:meth:`RedisLink.run` for this feature."""
        return self.link.run(self.feature, op, events=self.events, admission=admission)

    async def arun(self, op: Callable[[Any], T], *, admission: bool = False) -> T:
        """:meth:`run` without holding the event loop: skipped at once during the back-off, else in a worker
        thread (the loop's default executor)."""
        if not self.link.ready():
            raise self.link.skip(self.feature, self.events, admission)
        return await asyncio.to_thread(self.run, op, admission=admission)

    def script(self, source: str) -> Callable[..., Any]:
        """A Lua script run through :meth:`run`: ``call(keys, args, admission=False)`` (EVALSHA, loading the
        script when Redis does not have it)."""
        script = self.link.client.register_script(source)

        def call(keys: Sequence[str], args: Sequence[object], *, admission: bool = False) -> Any:
            return self.run(lambda client: script(keys=list(keys), args=list(args), client=client),
                            admission=admission)

        return call

    def with_events(self, events: RedisEvents | None) -> RedisHandle:
        """The same handle reporting to ``events``."""
        return RedisHandle(self.link, self.feature, events)


# ---------------------------------------------------------------------- one link per URL and policy
_links: dict[RedisConfig, RedisLink] = {}
_links_lock = threading.Lock()


def link_for(config: RedisConfig) -> RedisLink:
    """The process's link for ``config.url`` under ``config``'s policy (made on first use, then shared)."""
    if not config.url:
        raise ValueError("link_for needs RedisConfig.url")
    link = _links.get(config)
    if link is None:
        with _links_lock:
            link = _links.get(config)
            if link is None:
                link = _links[config] = RedisLink(config)
    return link


def reset_links() -> None:
    """Forget every shared link, closing its connection pool: the next use starts healthy (tests)."""
    with _links_lock:
        links = list(_links.values())
        _links.clear()
    for link in links:
        try:
            link.close()
        except Exception:
            pass


def handle_for(target: Any, feature: str, *, events: RedisEvents | None = None,
               config: RedisConfig | None = None) -> RedisHandle:
    """A handle for ``feature`` on ``target``: a :class:`RedisHandle` (kept, given ``events`` if it has none), a
    :class:`RedisLink`, a URL (the shared link of that URL under ``config``'s policy, default
    :class:`RedisConfig`), or a ``redis.Redis`` client (a link of its own)."""
    if isinstance(target, RedisHandle):
        return target if target.events is not None or events is None else target.with_events(events)
    if isinstance(target, RedisLink):
        return target.feature(feature, events)
    policy = config or RedisConfig()
    if isinstance(target, str):
        return link_for(policy.with_url(target)).feature(feature, events)
    return RedisLink(policy.with_url(None), client=target).feature(feature, events)


# ---------------------------------------------------------------------- writes nobody waits for
_detached: set[Any] = set()


def detach(fn: Callable[[], object]) -> None:
    """Run ``fn`` now, or, on an event loop's thread, in that loop's default executor (fire and forget).

    For writes whose answer nobody waits for (a settlement, a refund, a checkpoint delete) reached from code that
    cannot await (a stream's end, a cancellation): the event loop never waits for Redis. ``fn`` handles its own
    failures (the link counts them); ``asyncio.run`` waits for the default executor, so a program that ends its
    loop normally loses none of them.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _quietly(fn)
        return
    try:
        future = loop.run_in_executor(None, _quietly, fn)
    except RuntimeError:  # the loop's executor is shut down (the loop is closing): run it here, bounded
        _quietly(fn)
        return
    _detached.add(future)
    future.add_done_callback(_detached.discard)


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        log.debug("a detached Redis write failed", exc_info=True)


__all__ = [
    "FALLBACKS",
    "LinkStats",
    "NoopRedisEvents",
    "RedisConfig",
    "RedisEvents",
    "RedisHandle",
    "RedisLink",
    "RedisSkipped",
    "detach",
    "handle_for",
    "link_for",
    "on_event_loop",
    "reset_links",
]
