"""One Config object for the whole middleware; ``Config.from_env()`` reads the ``MIDDLEWARE_*`` variables.

Every variable is one row of :data:`ENV_VARS`: its name, the Config field(s) it sets, a value
specification (how the text is parsed, what is allowed), its default and a one-line doc. Adding a
variable is adding a row (and its line in ``docs/configuration.md``; a test checks that both agree).
The same specifications validate the dataclasses built in code (``__post_init__``), so a bad value
gives the same :class:`~middleware.errors.ConfigError` whichever way it arrives: it names the
setting, the value (credentials in URLs redacted) and what is allowed.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from .cost import CostConfig
from .errors import ConfigError
from .limits import LimitConfig
from .redisconn import FALLBACKS, RedisConfig
from .retry import RetryConfig
from .telemetry import names as n

_log = logging.getLogger(__name__)

ENV_PREFIX = "MIDDLEWARE_"
MAX_SECONDS = 30 * 86400.0
"""Upper bound of every duration setting (30 days): larger values overflow timers and mean "never" anyway."""
MAX_RATE = 1e15
"""Upper bound of request and token limits."""
MAX_TOKENS = 10**9
OFF_WORDS: tuple[str, ...] = ("off", "none")


# --- value specifications ---------------------------------------------------------------------------------------


class Spec(Protocol):
    """How a setting's text is parsed and which typed values are allowed."""

    @property
    def allowed(self) -> str:
        """What is allowed, as a phrase for error messages and docs."""
        ...

    def parse(self, text: str) -> Any:
        """The typed value of ``text`` (already stripped); raises ValueError when not allowed."""
        ...

    def check(self, value: Any) -> Any:
        """``value`` when allowed (possibly normalised); raises ValueError otherwise."""
        ...


_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?", re.ASCII)


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Number:
    """A finite number (``integer``: a whole number) within ``[minimum, maximum]`` (``minimum`` excluded if
    ``exclusive_min``). Text is plain ASCII decimal (``1e3`` for floats): no ``nan``, ``inf``, ``0x``,
    ``_`` or non-ASCII digits."""

    minimum: float
    maximum: float
    exclusive_min: bool = False
    integer: bool = False
    unit: str = ""

    @property
    def allowed(self) -> str:
        """E.g. "a number of seconds > 0 and <= 2.592e+06"."""
        kind = "an integer" if self.integer else "a number"
        unit = f" of {self.unit}" if self.unit else ""
        low = f"> {_fmt(self.minimum)}" if self.exclusive_min else f">= {_fmt(self.minimum)}"
        return f"{kind}{unit} {low} and <= {_fmt(self.maximum)}"

    def parse(self, text: str) -> Any:
        """Parse ASCII decimal text, then :meth:`check`."""
        if not (_INT_RE if self.integer else _FLOAT_RE).fullmatch(text):
            raise ValueError("not a plain decimal " + ("integer" if self.integer else "number"))
        if self.integer:
            if len(text.lstrip("+-")) > 30:
                raise ValueError("too many digits")
            return self.check(int(text))
        return self.check(float(text))

    def check(self, value: Any) -> Any:
        """Type, finiteness and range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"not a number ({type(value).__name__})")
        if self.integer and not isinstance(value, int):
            raise ValueError("not an integer")
        if not math.isfinite(value):
            raise ValueError("not finite")
        too_low = value <= self.minimum if self.exclusive_min else value < self.minimum
        if too_low or value > self.maximum:
            raise ValueError("out of range")
        return value


@dataclass(frozen=True)
class OrOff:
    """``inner``'s values, or None written as one of ``words`` (e.g. ``off``)."""

    inner: Spec
    words: tuple[str, ...] = OFF_WORDS

    @property
    def allowed(self) -> str:
        """The inner phrase plus the off words."""
        return f"{self.inner.allowed}, or {' / '.join(repr(w) for w in self.words)} (None)"

    def parse(self, text: str) -> Any:
        """None for an off word, else the inner parse."""
        return None if text.lower() in self.words else self.inner.parse(text)

    def check(self, value: Any) -> Any:
        """None, or an allowed inner value."""
        return None if value is None else self.inner.check(value)


@dataclass(frozen=True)
class Choice:
    """One of a closed set of strings (text is matched case-insensitively)."""

    values: tuple[str, ...]

    @property
    def allowed(self) -> str:
        """The choices."""
        return "one of " + ", ".join(repr(v) for v in self.values)

    def parse(self, text: str) -> Any:
        """Lower-cased text, checked."""
        return self.check(text.lower())

    def check(self, value: Any) -> Any:
        """Membership."""
        if not isinstance(value, str) or value not in self.values:
            raise ValueError("not one of the choices")
        return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Flag:
    """A boolean: ``1/true/yes/on`` or ``0/false/no/off``."""

    @property
    def allowed(self) -> str:
        """The words."""
        return "true or false (1/0, yes/no, on/off)"

    def parse(self, text: str) -> Any:
        """The word's truth value."""
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("not a boolean word")

    def check(self, value: Any) -> Any:
        """A real bool."""
        if not isinstance(value, bool):
            raise ValueError(f"not a bool ({type(value).__name__})")
        return value


@dataclass(frozen=True)
class NoneOr:
    """None, or an allowed value of ``inner`` (for dataclass fields; from the environment, unset means None)."""

    inner: Spec

    @property
    def allowed(self) -> str:
        """The inner phrase, or None."""
        return f"{self.inner.allowed}, or None"

    def parse(self, text: str) -> Any:
        """The inner parse."""
        return self.inner.parse(text)

    def check(self, value: Any) -> Any:
        """None, or the inner check."""
        return None if value is None else self.inner.check(value)


REDIS_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")


def _bad_text(value: str) -> bool:
    return not value or any(ord(c) < 33 or ord(c) == 127 for c in value)


@dataclass(frozen=True)
class RedisUrl:
    """A Redis URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path``."""

    @property
    def allowed(self) -> str:
        """The URL forms."""
        return "a redis://host[:port][/db], rediss://... or unix:///path URL"

    def parse(self, text: str) -> Any:
        """The URL, checked."""
        return self.check(text)

    def check(self, value: Any) -> Any:
        """Scheme, host, port and database number."""
        if not isinstance(value, str) or _bad_text(value):
            raise ValueError("empty, or contains spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme.lower() not in REDIS_SCHEMES:
            raise ValueError("not a redis://, rediss:// or unix:// URL")
        if parts.scheme.lower() == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs a socket path")
            return value
        if not parts.hostname:
            raise ValueError("no host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("bad port") from None
        db = parts.path.lstrip("/")
        if db and not (db.isascii() and db.isdigit()):
            raise ValueError("the path must be a database number")
        return value

    @staticmethod
    def redact(value: str) -> str:
        """``value`` with the credentials of a URL's user info replaced by ``***`` (the user name is kept)."""
        scheme, sep, rest = value.partition("://")
        if not sep:
            return f"***@{value.rsplit('@', 1)[1]}" if "@" in value else value
        netloc, slash, path = rest.partition("/")
        if "@" not in netloc:
            return value
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        return f"{scheme}://{user + ':' if colon else ''}***@{host}{slash}{path}"


@dataclass(frozen=True)
class PathSpec:
    """A file-system path (no NUL byte, not empty)."""

    @property
    def allowed(self) -> str:
        """A path."""
        return "a non-empty path without NUL bytes"

    def parse(self, text: str) -> Any:
        """A Path, checked."""
        return self.check(Path(text)) if text else self.check(text)

    def check(self, value: Any) -> Any:
        """str or PathLike, not empty, no NUL."""
        if not isinstance(value, str | os.PathLike):
            raise ValueError(f"not a path ({type(value).__name__})")
        text = os.fspath(value)
        if not isinstance(text, str) or not text or "\x00" in text:
            raise ValueError("empty or contains a NUL byte")
        return value


@dataclass(frozen=True)
class Names:
    """A comma-separated list of names (letters, digits, ``_``, ``-``), parsed to a tuple."""

    @property
    def allowed(self) -> str:
        """Comma-separated names."""
        return "comma-separated names of letters, digits, '_' or '-'"

    def parse(self, text: str) -> Any:
        """A tuple of the names, checked."""
        return self.check(tuple(part.strip() for part in text.split(",") if part.strip()))

    def check(self, value: Any) -> Any:
        """A tuple of valid names."""
        if not isinstance(value, tuple):
            raise ValueError(f"not a tuple of names ({type(value).__name__})")
        for name in value:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(f"{name!r} is not a name")
        return value


class BudgetRules:
    """Budget rules ``SCOPE[=VALUE]/PERIOD=USD`` separated by ``,`` or ``;`` (see docs/cost.md)."""

    @property
    def allowed(self) -> str:
        """The rule grammar."""
        return "rules SCOPE[=VALUE]/PERIOD=USD separated by ',' (e.g. api_key/day=50,team=*/month=300)"

    def parse(self, text: str) -> Any:
        """The parsed rules."""
        from .cost import parse_rules

        return parse_rules(text)

    def check(self, value: Any) -> Any:
        """A tuple of BudgetRule."""
        from .cost import BudgetRule

        if not isinstance(value, tuple) or not all(isinstance(v, BudgetRule) for v in value):
            raise ValueError("not a tuple of budget rules")
        return value


@dataclass(frozen=True)
class HostPort:
    """``host:port`` (``[v6]:port``); port 0-65535 (0: any free port). Parsed to ``(host, port)``."""

    @property
    def allowed(self) -> str:
        """The form."""
        return "host:port with a port from 0 to 65535 (e.g. 127.0.0.1:9464)"

    def parse(self, text: str) -> Any:
        """Split at the last colon."""
        host, sep, port = text.rpartition(":")
        if not sep or not _INT_RE.fullmatch(port) or port.startswith(("+", "-")):
            raise ValueError("not host:port")
        return self.check((host.removeprefix("[").removesuffix("]"), int(port)))

    def check(self, value: Any) -> Any:
        """A (host, port) pair."""
        if not (isinstance(value, tuple) and len(value) == 2):
            raise ValueError("not a (host, port) pair")
        host, port = value
        if not isinstance(host, str) or _bad_text(host):
            raise ValueError("empty host or spaces/control characters in it")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port out of range")
        return value


@dataclass(frozen=True)
class Text:
    """A non-empty string without spaces or control characters."""

    @property
    def allowed(self) -> str:
        """A word."""
        return "a non-empty name without spaces"

    def parse(self, text: str) -> Any:
        """The text, checked."""
        return self.check(text)

    def check(self, value: Any) -> Any:
        """Non-empty, no blanks."""
        if not isinstance(value, str) or _bad_text(value):
            raise ValueError("empty or contains spaces or control characters")
        return value


@dataclass(frozen=True)
class CallableOrNone:
    """A callable, or None."""

    @property
    def allowed(self) -> str:
        """A callable."""
        return "a callable or None"

    def parse(self, text: str) -> Any:
        """Never from text."""
        raise ValueError("cannot be set from text")

    def check(self, value: Any) -> Any:
        """callable() or None."""
        if value is not None and not callable(value):
            raise ValueError("not callable")
        return value


@dataclass(frozen=True)
class InstanceOf:
    """An instance of ``cls``."""

    cls: type

    @property
    def allowed(self) -> str:
        """The class."""
        return f"a {self.cls.__name__}"

    def parse(self, text: str) -> Any:
        """Never from text."""
        raise ValueError("cannot be set from text")

    def check(self, value: Any) -> Any:
        """isinstance."""
        if not isinstance(value, self.cls):
            raise ValueError(f"not a {self.cls.__name__}")
        return value


_SHOWN_CHARS = 60


_SECRET_PREFIXES = ("sk-", "sess-", "bearer ", "basic ", "xox", "ghp_", "gho_", "github_pat_", "glpat-", "eyj")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-+/=.]{24,}")


def looks_secret(text: str) -> bool:
    """True for a value that may be a credential pasted into the wrong variable (an API key, a bearer token,
    a JWT, a long unbroken token with letters and digits): error messages never show it."""
    stripped = text.strip()
    if stripped.lower().startswith(_SECRET_PREFIXES):
        return True
    return bool(_TOKEN_LIKE.fullmatch(stripped)) and any(c.isdigit() for c in stripped) \
        and any(c.isalpha() for c in stripped) and "/" not in stripped.strip("/")


def _shown(value: Any) -> str:
    """``value`` for a message: credentials in URLs redacted, what looks like a credential not shown at all,
    long values cut."""
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        text = text if isinstance(text, str) else repr(text)
        if looks_secret(text):
            return f"<{len(text)} characters, not shown: it looks like a credential>"
        if "@" in text:
            text = RedisUrl.redact(text)
        if len(text) > _SHOWN_CHARS:
            text = f"{text[:_SHOWN_CHARS]}...({len(text)} characters)"
        return repr(text)
    shown = repr(value)
    return shown if len(shown) <= _SHOWN_CHARS else f"{shown[:_SHOWN_CHARS]}...({type(value).__name__})"


def config_error(setting: str, spec: Spec, value: Any, why: str = "") -> ConfigError:
    """The one error format: ``SETTING=VALUE is not allowed (why): expected ALLOWED``."""
    shown = _shown(value)
    if isinstance(value, str) and value and looks_secret(value):
        why = why.replace(value, "***").replace(value.strip(), "***")
    detail = f" ({why})" if why else ""
    return ConfigError(f"{setting}={shown} is not allowed{detail}: expected {spec.allowed}",
                       setting=setting, value=shown, allowed=spec.allowed)


def check_value(setting: str, spec: Spec, value: Any) -> Any:
    """``spec.check(value)``, or a :class:`ConfigError` naming ``setting``."""
    try:
        return spec.check(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise config_error(setting, spec, value, str(exc)) from None


def _check_fields(owner: Any, specs: Mapping[str, Spec]) -> None:
    prefix = type(owner).__name__
    for name, spec in specs.items():
        check_value(f"{prefix}.{name}", spec, getattr(owner, name))


# Shared specifications (env rows and dataclass checks use the same objects).
SECONDS_POSITIVE = Number(0, MAX_SECONDS, exclusive_min=True, unit="seconds")
SECONDS_OR_ZERO = Number(0, MAX_SECONDS, unit="seconds")
RATE = Number(0, MAX_RATE, exclusive_min=True)
TOKENS_OR_OFF = OrOff(Number(0, MAX_TOKENS, integer=True, unit="tokens"))
ATTEMPTS = Number(1, 100, integer=True)
SCOPES = Choice(("model", "shared"))
RESERVE = Choice(("max", "predicted"))


# --- the dataclasses ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """Streaming behaviour: forced streaming, stall detection, resumption and checkpoints."""

    force_stream_above_tokens: int | None = 4096
    """Non-streaming calls whose max output tokens exceed this are sent as streams (None: never)."""
    adaptive_threshold: bool = False
    """Learn the threshold per model from observed time to first token and output rate."""
    adaptive_target_seconds: float = 60.0
    """With the adaptive threshold: stream calls expected to take longer than this."""
    idle_timeout_seconds: float = 120.0
    """No chunk for this long: the stream counts as stalled (broken) and is resumed."""
    resume: bool = True
    max_resumptions: int = 3
    return_partial: bool = False
    """On an unrecoverable interruption return the partial result instead of raising StreamInterrupted."""
    checkpoint_dir: Path | None = None
    checkpoint_redis_url: str | None = None
    checkpoint_every_chunks: int = 200
    checkpoint_ttl_seconds: float = 24 * 3600.0
    checkpoint_replay_headers: tuple[str, ...] = ("openai-beta", "openai-organization", "openai-project")
    """Request headers a checkpoint stores to replay (an allow-list; never put credentials here)."""
    force_background: bool = False
    """Send streaming Responses calls with ``background: true`` so that a broken stream can be resumed."""
    on_progress: Callable[[Any], None] | None = None
    """Called with a ``middleware.streaming.Progress`` about every ``progress_interval_seconds``."""
    progress_interval_seconds: float = 0.5

    def __post_init__(self) -> None:
        _check_fields(self, _STREAM_SPECS)


_STREAM_SPECS: dict[str, Spec] = {
    "force_stream_above_tokens": TOKENS_OR_OFF,
    "adaptive_threshold": Flag(),
    "adaptive_target_seconds": SECONDS_POSITIVE,
    "idle_timeout_seconds": SECONDS_POSITIVE,
    "resume": Flag(),
    "max_resumptions": Number(0, 1000, integer=True),
    "return_partial": Flag(),
    "checkpoint_dir": NoneOr(PathSpec()),
    "checkpoint_redis_url": NoneOr(RedisUrl()),
    "checkpoint_every_chunks": Number(1, 10**9, integer=True, unit="chunks"),
    "checkpoint_ttl_seconds": SECONDS_POSITIVE,
    "force_background": Flag(),
    "on_progress": CallableOrNone(),
    "progress_interval_seconds": SECONDS_OR_ZERO,
}


_REDIS_SPECS: dict[str, Spec] = {
    "url": NoneOr(RedisUrl()),
    "connect_timeout_seconds": Number(0, 60, exclusive_min=True, unit="seconds"),
    "timeout_seconds": Number(0, 60, exclusive_min=True, unit="seconds"),
    "backoff_initial_seconds": Number(0, 3600, unit="seconds"),
    "backoff_max_seconds": Number(0, 3600, unit="seconds"),
    "fallback": Choice(FALLBACKS),
}


def check_redis_config(config: RedisConfig) -> None:
    """Validate a :class:`~middleware.redisconn.RedisConfig` (its ``__post_init__`` calls this)."""
    _check_fields(config, _REDIS_SPECS)
    if config.backoff_max_seconds < config.backoff_initial_seconds:
        raise ConfigError(
            f"RedisConfig.backoff_max_seconds={_fmt(config.backoff_max_seconds)} is not allowed: expected a number "
            f"of seconds >= backoff_initial_seconds ({_fmt(config.backoff_initial_seconds)})",
            setting="RedisConfig.backoff_max_seconds", value=_fmt(config.backoff_max_seconds),
            allowed=f">= backoff_initial_seconds ({_fmt(config.backoff_initial_seconds)})")


REDIS_FEATURE_URLS: dict[str, str] = {
    n.REDIS_FEATURE_LIMITER: "limits.redis_url", n.REDIS_FEATURE_RETRY: "retry.redis_url",
    n.REDIS_FEATURE_BUDGET: "cost.redis_url", n.REDIS_FEATURE_CHECKPOINT: "streaming.checkpoint_redis_url",
}
"""The per-feature URL fields (``names.REDIS_FEATURES``): they override ``Config.redis.url`` for one feature."""


@dataclass(frozen=True)
class Config:
    """Everything the protected client needs; every field has a safe default."""

    limits: LimitConfig = field(default_factory=LimitConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    streaming: StreamConfig = field(default_factory=StreamConfig)
    limiter_scope: Literal["model", "shared"] = "model"
    """"model": one budget per API key and model; "shared": one budget per API key (an organisation's limit)."""
    reserve_output: Literal["max", "predicted"] = "max"
    """Reserve the request's max output tokens, or the learned prediction when history justifies less."""
    default_encoding: str = "o200k_base"
    capture_content: bool | None = None
    """Record message content in spans; None reads OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT."""
    model_label_cap: int = 50
    cost: CostConfig = field(default_factory=CostConfig)
    """Prices, attribution tags and budgets (``middleware.cost``)."""
    redis: RedisConfig = field(default_factory=RedisConfig)
    """The Redis shared by the limiter, the retry state and the budgets, and the one policy (timeouts, back-off,
    fallback) of every feature using Redis (``middleware.redisconn``)."""

    def __post_init__(self) -> None:
        _check_fields(self, _CONFIG_SPECS)
        # The LimitConfig / RetryConfig fields that from_env sets, with the same rules as the variables.
        for row in ENV_VARS:
            for target in row.targets:
                section, _, name = target.partition(".")
                if section in ("limits", "retry") and name:
                    owner = getattr(self, section)
                    check_value(f"{type(owner).__name__}.{name}", _field_spec(row), getattr(owner, name))
        for target in REDIS_FEATURE_URLS.values():  # a feature's own Redis URL, as MIDDLEWARE_REDIS_URL's
            section, _, name = target.partition(".")
            owner = getattr(self, section)
            check_value(f"{type(owner).__name__}.{name}", _REDIS_SPECS["url"], getattr(owner, name))

    def redis_for(self, feature: str) -> RedisConfig | None:
        """The Redis of ``feature`` (``limiter``, ``retry``, ``budget``, ``checkpoint``) under the shared policy,
        or None when it keeps its state in this process.

        The feature's own URL field wins (``limits.redis_url``, ``retry.redis_url``, ``cost.redis_url``,
        ``streaming.checkpoint_redis_url``); else ``redis.url``, except for checkpoints, which hold prompts and
        are written to Redis only when ``checkpoint_redis_url`` says so.
        """
        section, _, name = REDIS_FEATURE_URLS[feature].partition(".")
        shared = self.redis.url if feature != n.REDIS_FEATURE_CHECKPOINT else None
        url = getattr(getattr(self, section), name) or shared
        return self.redis.with_url(url) if url else None

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from the ``MIDDLEWARE_*`` variables of :data:`ENV_VARS` (see docs/configuration.md).

        Unset or empty variables keep their default; surrounding whitespace is ignored; any other value that
        is not allowed raises :class:`ConfigError` naming the variable, the value and what is allowed.
        Unknown ``MIDDLEWARE_*`` names are logged (a typo would otherwise be silently ignored).
        """
        e = os.environ if env is None else env
        _warn_unknown(e)
        sections: dict[str, dict[str, Any]] = {}
        explicit: set[str] = set()
        for row in ENV_VARS:
            if not row.targets:
                continue
            value = row.read(e)
            given = (e.get(row.name) or "").strip() != ""
            for target in row.targets:
                if not given and target in explicit:
                    continue  # another variable already set it (MIDDLEWARE_REDIS_URL for the budgets' Redis)
                section, _, name = target.rpartition(".")
                sections.setdefault(section, {})[name] = value
                if given:
                    explicit.add(target)
        built: Config = _build(cls(), "", sections)
        return built


def _build(obj: Any, path: str, sections: Mapping[str, Mapping[str, Any]]) -> Any:
    """``obj`` with the fields of ``sections[path]`` replaced, nested sections (``cost.tags``) first."""
    changes: dict[str, Any] = dict(sections.get(path, {}))
    prefix = f"{path}." if path else ""
    for section in sections:
        if section.startswith(prefix) and section != path and "." not in section[len(prefix):]:
            name = section[len(prefix):]
            changes[name] = _build(getattr(obj, name), section, sections)
    if not changes:
        return obj
    try:
        return replace(obj, **changes)
    except ConfigError as exc:  # a rule across fields of a section: name the variables that set them
        targets = {f"{prefix}{name}" for name in sections.get(path, {})}
        rows = [row for row in ENV_VARS if targets & set(row.targets)]
        named = [row for row in rows if any(t.rpartition(".")[2] in str(exc) for t in row.targets)]
        names = [row.name for row in named or rows]
        raise ConfigError(f"{' / '.join(names) or path}: {exc}") from None


_CONFIG_SPECS: dict[str, Spec] = {
    "limits": InstanceOf(LimitConfig),
    "retry": InstanceOf(RetryConfig),
    "streaming": InstanceOf(StreamConfig),
    "limiter_scope": SCOPES,
    "reserve_output": RESERVE,
    "default_encoding": Text(),
    "capture_content": NoneOr(Flag()),
    "model_label_cap": Number(1, 100_000, integer=True),
    "redis": InstanceOf(RedisConfig),
}


def _field_spec(row: EnvVar) -> Spec:
    """The spec of the dataclass field a variable sets: None is allowed where the variable's default is None."""
    return NoneOr(row.spec) if row.default is None else row.spec


# --- the environment table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """One ``MIDDLEWARE_*`` variable: the Config field(s) it sets, its value specification, default and doc."""

    name: str
    targets: tuple[str, ...]
    """Dotted Config fields (``limits.redis_url``); empty for variables read by a command, not by Config."""
    spec: Spec
    default: Any
    doc: str

    def read(self, env: Mapping[str, str]) -> Any:
        """The variable's value in ``env`` (``default`` when unset or empty); ConfigError when not allowed."""
        raw = env.get(self.name)
        if raw is None or raw.strip() == "":
            return self.default
        text = raw.strip()
        try:
            return self.spec.parse(text)
        except (ValueError, TypeError, OverflowError) as exc:
            raise config_error(self.name, self.spec, raw, str(exc)) from None

    @property
    def default_text(self) -> str:
        """The default as docs/configuration.md shows it."""
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple) and isinstance(self.spec, HostPort):
            return f"{self.default[0]}:{self.default[1]}"
        if isinstance(self.default, tuple):
            return ",".join(str(v) for v in self.default) or "unset"
        return _fmt(self.default)


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("MIDDLEWARE_RPM", ("limits.requests_per_window",), RATE, None,
           "requests per window; unset: learned from the x-ratelimit-* headers"),
    EnvVar("MIDDLEWARE_TPM", ("limits.tokens_per_window",), RATE, None,
           "tokens per window; unset: learned from the x-ratelimit-* headers"),
    EnvVar("MIDDLEWARE_WINDOW_SECONDS", ("limits.window_seconds",), SECONDS_POSITIVE, None,
           "refill window of the requests/tokens budgets; unset: 60 s until learned from the reset headers"),
    EnvVar("MIDDLEWARE_RPD", ("limits.requests_per_day",), RATE, None, "requests per day; unset: none"),
    EnvVar("MIDDLEWARE_TPD", ("limits.tokens_per_day",), RATE, None, "tokens per day; unset: none"),
    EnvVar("MIDDLEWARE_MAX_WAIT_SECONDS", ("limits.max_wait_seconds",), SECONDS_OR_ZERO, 60.0,
           "longest wait for capacity before ThrottleTimeout; 0 fails fast"),
    EnvVar("MIDDLEWARE_REDIS_URL", ("redis.url",), RedisUrl(), None,
           "Redis shared by the limiter, the retry budget and breaker, and the cost budgets (a feature's own URL "
           "wins); unset: in-process state"),
    EnvVar("MIDDLEWARE_REDIS_CONNECT_TIMEOUT", ("redis.connect_timeout_seconds",), _REDIS_SPECS[
        "connect_timeout_seconds"], 0.25, "longest wait for a Redis connection (every feature using Redis)"),
    EnvVar("MIDDLEWARE_REDIS_TIMEOUT", ("redis.timeout_seconds",), _REDIS_SPECS["timeout_seconds"], 0.25,
           "longest wait for one Redis command's answer; then the feature falls back"),
    EnvVar("MIDDLEWARE_REDIS_BACKOFF_INITIAL", ("redis.backoff_initial_seconds",),
           _REDIS_SPECS["backoff_initial_seconds"], 1.0,
           "after a Redis failure, skip Redis this long (jittered) before one caller probes it; 0: never skip"),
    EnvVar("MIDDLEWARE_REDIS_BACKOFF_MAX", ("redis.backoff_max_seconds",), _REDIS_SPECS["backoff_max_seconds"], 10.0,
           "the back-off doubles with each failed probe up to this"),
    EnvVar("MIDDLEWARE_REDIS_FALLBACK", ("redis.fallback",), _REDIS_SPECS["fallback"], "local",
           "Redis down or slow: local (decide with this process's state) or fail (admission raises "
           "RedisUnavailable)"),
    EnvVar("MIDDLEWARE_MAX_ATTEMPTS", ("retry.max_attempts",), ATTEMPTS, 4,
           "attempts per call, the first included"),
    EnvVar("MIDDLEWARE_MAX_RETRY_AFTER", ("retry.max_retry_after",), SECONDS_OR_ZERO, 60.0,
           "longest retry-after honoured; above it RetryAfterTooLong"),
    EnvVar("MIDDLEWARE_BREAKER_MAX_WAIT", ("retry.breaker_max_wait_seconds",), SECONDS_OR_ZERO, 30.0,
           "longest wait for an open circuit before CircuitOpenError; 0 fails fast"),
    EnvVar("MIDDLEWARE_FORCE_STREAM_ABOVE", ("streaming.force_stream_above_tokens",), TOKENS_OR_OFF, 4096,
           "non-streaming calls whose max output tokens exceed this are streamed; off: never"),
    EnvVar("MIDDLEWARE_ADAPTIVE_STREAMING", ("streaming.adaptive_threshold",), Flag(), False,
           "learn the forced-streaming threshold per model from observed speed"),
    EnvVar("MIDDLEWARE_STREAM_IDLE_TIMEOUT", ("streaming.idle_timeout_seconds",), SECONDS_POSITIVE, 120.0,
           "no chunk for this long: the stream is stalled and resumed"),
    EnvVar("MIDDLEWARE_CHECKPOINT_DIR", ("streaming.checkpoint_dir",), PathSpec(), None,
           "directory of stream checkpoints; unset: no checkpoints (unless a checkpoint Redis is set)"),
    EnvVar("MIDDLEWARE_CHECKPOINT_REDIS_URL", ("streaming.checkpoint_redis_url",), RedisUrl(), None,
           "Redis holding stream checkpoints (wins over the directory; MIDDLEWARE_REDIS_URL alone never enables them)"),
    EnvVar("MIDDLEWARE_LIMITER_SCOPE", ("limiter_scope",), SCOPES, "model",
           "model: one budget per API key and model; shared: one per API key"),
    EnvVar("MIDDLEWARE_RESERVE_OUTPUT", ("reserve_output",), RESERVE, "max",
           "reserve max output tokens at admission, or the learned prediction"),
    EnvVar("MIDDLEWARE_PRICES_FILE", ("cost.prices_file",), PathSpec(), None,
           "a price file (JSON or YAML) extending or overriding the shipped price table"),
    EnvVar("MIDDLEWARE_TAG_KEYS", ("cost.tags.keys",), Names(), ("team", "feature", "end_user"),
           "attribution tag keys allowed (from tags() blocks and request metadata)"),
    EnvVar("MIDDLEWARE_TAG_VALUE_CAP", ("cost.tags.value_cap",), Number(1, 100_000, integer=True), 50,
           "distinct values per tag key on metrics before folding into 'other'"),
    EnvVar("MIDDLEWARE_TAG_COMBINATION_CAP", ("cost.tags.combination_cap",), Number(1, 1_000_000, integer=True),
           250, "distinct tag combinations on metrics before folding into 'other'"),
    EnvVar("MIDDLEWARE_BUDGETS", ("cost.budgets",), BudgetRules(), (),
           "USD budgets per day or month, per API key or tag value; unset: none"),
    EnvVar("MIDDLEWARE_BUDGET_MODE", ("cost.budget_mode",), Choice(("enforce", "wait", "warn")), "enforce",
           "over budget: refuse (BudgetExceeded), wait for the next period, or only warn"),
    EnvVar("MIDDLEWARE_BUDGET_MAX_WAIT", ("cost.budget_max_wait_seconds",), SECONDS_OR_ZERO, 60.0,
           "longest wait for a budget period to roll over (mode wait)"),
    EnvVar("MIDDLEWARE_BUDGET_REDIS_URL", ("cost.redis_url",), RedisUrl(), None,
           "Redis sharing the budgets; unset: MIDDLEWARE_REDIS_URL, else in-process"),
    EnvVar("MIDDLEWARE_BUDGET_DEFAULT_MAX_OUTPUT", ("cost.default_max_output_tokens",), TOKENS_OR_OFF, 32768,
           "output ceiling of a call's worst-case cost when neither request nor price table sets one; off: none"),
    EnvVar("MIDDLEWARE_METRICS_ADDR", (), HostPort(), ("127.0.0.1", 9464),
           "address of /metrics: the demo's (default 127.0.0.1:9464); under opentelemetry-instrument served only "
           "when set (not a Config field)"),
    EnvVar("MIDDLEWARE_TRACES_DIR", (), PathSpec(), None,
           "folder of the local trace store (setup_telemetry, middleware traces); unset: the user's state folder"),
    EnvVar("MIDDLEWARE_TRACES_LOCAL", (), Choice(("auto", "always", "never", "true", "false", "1", "0")), "auto",
           "keep finished spans locally: auto (when no OTLP endpoint), always, never"),
    EnvVar("MIDDLEWARE_LOG_SLOW_THROTTLE_SECONDS", (), SECONDS_OR_ZERO, 1.0,
           "limiter waits from this long get an INFO log record (throttle_wait); 0: every wait (read by the "
           "Recorder when not given slow_throttle_seconds; not a Config field)"),
)
"""Every ``MIDDLEWARE_*`` variable. docs/configuration.md lists the same names (tests/unit/test_config.py)."""

_BY_NAME: dict[str, EnvVar] = {row.name: row for row in ENV_VARS}


def env_var(name: str) -> EnvVar:
    """The row of variable ``name`` (KeyError when unknown)."""
    return _BY_NAME[name]


def read_env(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The parsed value of one table variable (for commands reading variables that are not Config fields)."""
    return _BY_NAME[name].read(os.environ if env is None else env)


_warned: set[str] = set()


def _warn_unknown(env: Mapping[str, str]) -> None:
    for key in env:
        if key.startswith(ENV_PREFIX) and key not in _BY_NAME and key not in _warned:
            _warned.add(key)
            close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            _log.warning("unknown variable %s ignored%s", key, hint)


def env_var_names() -> Sequence[str]:
    """Names of every variable of the table, in table order."""
    return [row.name for row in ENV_VARS]


def config_fields() -> list[str]:
    """Names of the top-level config fields (for docs)."""
    return [f.name for f in fields(Config)]
