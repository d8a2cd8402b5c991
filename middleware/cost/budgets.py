"""Budget rules, the budgets a call is charged against, and the values the ledger hands out.

A rule is ``SCOPE=VALUE/PERIOD=USD``: the scope is ``api_key`` (the hashed API key) or an attribution
tag key; the value a specific key hash or tag value, or ``*`` for "each value its own budget"; the
period ``day`` or ``month`` (UTC). For one scope and period a specific rule wins over ``*``. A call is
charged against every budget whose rule matches it (e.g. its key's daily budget and its team's
monthly budget) and admitted only if all of them have room.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from middleware.errors import ConfigError

from .periods import PERIODS, Period

Mode = Literal["enforce", "wait", "warn"]
MODES: tuple[Mode, ...] = ("enforce", "wait", "warn")
API_KEY_SCOPE = "api_key"
ANY_VALUE = "*"
_RULE = re.compile(r"^\s*(?P<scope>[a-z_][a-z0-9_]*)(?:=(?P<value>[^/=\s]+))?\s*/\s*(?P<period>[a-z]+)\s*=\s*"
                   r"(?P<usd>[^\s]+)\s*$")


@dataclass(frozen=True)
class BudgetRule:
    """A budget of ``limit_usd`` per ``period`` for ``scope`` (``api_key`` or a tag key) = ``value``."""

    scope: str
    value: str
    period: Period
    limit_usd: float

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ConfigError(f"budget period must be 'day' or 'month', not {self.period!r}")
        if not self.limit_usd >= 0 or self.limit_usd == float("inf"):
            raise ConfigError(f"budget limit must be a non-negative number of USD, not {self.limit_usd!r}")

    @classmethod
    def parse(cls, text: str) -> BudgetRule:
        """``team=search/day=20``, ``team=*/month=300``, ``api_key/day=50`` (value ``*``)."""
        m = _RULE.match(text)
        if m is None:
            raise ConfigError(f"budget {text!r} must look like SCOPE[=VALUE]/PERIOD=USD, e.g. team=search/day=20")
        scope, value, period = m["scope"], m["value"], m["period"]
        if value is None:
            if scope != API_KEY_SCOPE:
                raise ConfigError(f"budget {text!r}: a tag budget needs a value ({scope}=VALUE or {scope}=*)")
            value = ANY_VALUE
        try:
            usd = float(m["usd"])
        except ValueError:
            raise ConfigError(f"budget {text!r}: {m['usd']!r} is not a number of USD") from None
        if period not in PERIODS:
            raise ConfigError(f"budget {text!r}: the period must be 'day' or 'month', not {period!r}")
        return cls(scope, value, period, usd)  # type: ignore[arg-type]


def parse_rules(text: str) -> tuple[BudgetRule, ...]:
    """Rules separated by commas or semicolons (``MIDDLEWARE_BUDGETS``)."""
    return tuple(BudgetRule.parse(part) for part in re.split(r"[,;]", text) if part.strip())


@dataclass(frozen=True)
class Budget:
    """One budget a call is charged against: ``name`` is ``scope=value`` (``api_key=<hash>``, ``team=search``)."""

    name: str
    period: Period
    limit_usd: float

    @property
    def key(self) -> str:
        """Storage key part: name and period."""
        return f"{self.name}:{self.period}"


def budgets_for(rules: Sequence[BudgetRule], api_key_hash: str, tags: Mapping[str, str]) -> tuple[Budget, ...]:
    """The budgets that apply to a call (specific rules win over ``*`` for the same scope and period)."""
    chosen: dict[tuple[str, str], tuple[bool, Budget]] = {}
    for rule in rules:
        value = api_key_hash if rule.scope == API_KEY_SCOPE else tags.get(rule.scope)
        if not value or rule.value not in (ANY_VALUE, value):
            continue
        specific = rule.value != ANY_VALUE
        slot = (rule.scope, rule.period)
        existing = chosen.get(slot)
        if existing is None or (specific and not existing[0]):
            chosen[slot] = (specific, Budget(f"{rule.scope}={value}", rule.period, rule.limit_usd))
    return tuple(b for _, b in chosen.values())


@dataclass(frozen=True)
class BudgetStatus:
    """A budget in its current period: settled spend, what calls in flight hold, seconds until it rolls over."""

    budget: Budget
    period_id: str
    spent_usd: float
    reserved_usd: float
    ends_in_seconds: float


@dataclass(frozen=True)
class BudgetCharge:
    """One budget's share of a reservation (the period it was charged in)."""

    budget: Budget
    period_id: str
    amount_usd: float


@dataclass
class BudgetReservation:
    """Worst-case USD held against every budget of a call until it settles (``closed`` afterwards).

    ``decision`` is ``admitted`` or ``warned`` (over budget, admitted in ``warn`` mode; ``over`` lists
    the budgets it exceeds).
    """

    id: str
    charges: tuple[BudgetCharge, ...]
    amount_usd: float
    backend: str
    decision: str
    over: tuple[BudgetStatus, ...] = ()
    closed: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class BudgetWait:
    """``wait`` mode: the call fits once ``status``'s period rolls over in ``seconds``; decide again then."""

    seconds: float
    status: BudgetStatus
