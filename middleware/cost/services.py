"""``CostServices``: the one object the pipeline calls for tags, budget admission and cost at settlement.

Per call::

    tags = cost.tags_for(body)                          # begin: context tags + allow-listed metadata
    decision = cost.decide(key_hash, model, tags, prompt_tokens, max_output_tokens)
    #   BudgetReservation | None (no budget applies / unpriced) -> go on
    #   BudgetWait -> yield Sleep(decision.seconds) and decide again; BudgetExceeded -> the call fails
    ...
    cost.release(reservation)                           # the request never reached upstream
    result = cost.settle(reservation, model, usage, tags=tags)   # Cost | Unpriced, counted once

``admit`` / ``admit_async`` wrap ``decide`` with the sleeping, for callers without an effect loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from .attribution import TagFolder, current_tags, select_tags
from .budgets import BudgetReservation, BudgetWait, budgets_for
from .calc import Cost, Unpriced, cost_of, worst_case
from .config import CostConfig
from .events import CostEvents, NoopCostEvents, SafeCostEvents
from .ledger import BudgetLedger
from .prices import PriceTable, load_prices
from .usage import Usage


def hash_api_key(api_key: str) -> str:
    """The 12-hex-digit SHA-256 prefix that names an API key (as the limiter's keys do); never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


class CostServices:
    """Prices, attribution and budgets behind one facade; thread-safe, one per protected client.

    ``redis``: the budgets' Redis as a ``middleware.redisconn`` handle (the pipeline's, under ``Config.redis``);
    default ``config.redis_url`` under the default policy.
    """

    def __init__(
        self, config: CostConfig | None = None, events: CostEvents | None = None, *,
        prices: PriceTable | None = None, ledger: BudgetLedger | None = None, folder: TagFolder | None = None,
        clock: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep, redis: Any = None,
    ) -> None:
        cfg = config or CostConfig()
        self.config = cfg
        self.events = SafeCostEvents(events or NoopCostEvents())
        self.prices = prices or load_prices(cfg.prices_file, cfg.prices)
        self.folder = folder or TagFolder.shared(cfg.tags.value_cap, cfg.tags.combination_cap)
        if ledger is None and cfg.budgets:
            ledger = BudgetLedger(
                cfg.budget_mode, cfg.budget_max_wait_seconds, redis=redis if redis is not None else cfg.redis_url,
                prefix=cfg.redis_prefix,
                events=events, fallback_fraction=cfg.fallback_fraction, clock=clock, label=self.budget_label,
            )
        self.ledger = ledger
        self._sleep = sleep

    # ------------------------------------------------------------------ attribution
    def tags_for(self, body: Mapping[str, Any] | None) -> dict[str, str]:
        """The call's tags: the enclosing ``tags()`` blocks, overridden by allow-listed ``body["metadata"]``."""
        return select_tags(self.config.tags, current_tags(), body)

    def labels_for(self, tags: Mapping[str, str]) -> tuple[str, ...]:
        """Bounded metric label values for ``names.TAG_LABELS``."""
        return self.folder.labels(tags, on_fold=self.events.tag_folded)

    def budget_label(self, name: str) -> str:
        """A bounded label for a budget name (``scope=value``: the value folded per scope)."""
        scope, _, value = name.partition("=")
        return f"{scope}={self.folder.fold(scope, value, self.events.tag_folded)}"

    # ------------------------------------------------------------------ admission
    def worst_case(self, model: str, prompt_tokens: int, max_output_tokens: int | None) -> Cost | Unpriced:
        """The most the call can cost (prompt uncached, the whole output ceiling at the output price)."""
        return worst_case(self.prices, model, prompt_tokens, max_output_tokens,
                          default_max_output_tokens=self.config.default_max_output_tokens)

    def decide(
        self, api_key_hash: str, model: str, tags: Mapping[str, str], prompt_tokens: int,
        max_output_tokens: int | None,
    ) -> BudgetReservation | BudgetWait | None:
        """One budget decision, never sleeping: a reservation, a wait, or None when no budget applies or
        the call cannot be priced (it is then admitted unbudgeted). Raises ``BudgetExceeded``."""
        if self.ledger is None:
            return None
        budgets = budgets_for(self.config.budgets, api_key_hash, tags)
        if not budgets:
            return None
        bound = self.worst_case(model, prompt_tokens, max_output_tokens)
        if isinstance(bound, Unpriced):
            return None
        return self.ledger.reserve(budgets, bound.total_usd)

    def admit(
        self, api_key_hash: str, model: str, tags: Mapping[str, str], prompt_tokens: int,
        max_output_tokens: int | None,
    ) -> BudgetReservation | None:
        """``decide``, sleeping through waits (blocking)."""
        while True:
            decision = self.decide(api_key_hash, model, tags, prompt_tokens, max_output_tokens)
            if not isinstance(decision, BudgetWait):
                return decision
            self._sleep(decision.seconds)

    async def admit_async(
        self, api_key_hash: str, model: str, tags: Mapping[str, str], prompt_tokens: int,
        max_output_tokens: int | None,
    ) -> BudgetReservation | None:
        """``decide`` for asyncio: Redis decisions run in a worker thread, waits use ``asyncio.sleep``."""
        shared = self.ledger is not None and self.ledger.shared
        while True:
            if shared:
                decision = await asyncio.to_thread(
                    self.decide, api_key_hash, model, tags, prompt_tokens, max_output_tokens)
            else:
                decision = self.decide(api_key_hash, model, tags, prompt_tokens, max_output_tokens)
            if not isinstance(decision, BudgetWait):
                return decision
            await asyncio.sleep(decision.seconds)

    def release(self, reservation: BudgetReservation | None) -> None:
        """Give a reservation back: its request never reached upstream."""
        if reservation is not None and self.ledger is not None:
            self.ledger.release(reservation)

    # ------------------------------------------------------------------ settlement
    def settle(
        self, reservation: BudgetReservation | None, model: str, usage: Usage | None, *,
        tags: Mapping[str, str], batch: bool = False,
    ) -> Cost | Unpriced:
        """Price one request from its reported usage, settle its reservation, report the cost once.

        Without a price the reservation stays charged at its worst case (the money may have been spent).
        ``model`` should be the response's model when known (a snapshot may be priced apart).
        """
        result = cost_of(self.prices, model, usage, batch=batch)
        if reservation is not None and self.ledger is not None:
            actual = result.total_usd if isinstance(result, Cost) else reservation.amount_usd
            self.ledger.settle(reservation, actual)
        labels = self.labels_for(tags)
        if isinstance(result, Cost):
            self.events.call_cost(model, labels, result)
        else:
            self.events.call_unpriced(model, labels, result.reason)
        return result
