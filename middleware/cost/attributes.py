"""Span attributes for a call's cost, usage details, tags and budget decision (names from ``names``).

Plain dicts: the recorder puts them on the call span; nothing here touches OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping

from middleware.telemetry import names as n

from .budgets import BudgetReservation
from .calc import Cost, Unpriced
from .errors import BudgetExceeded
from .usage import Usage

Attributes = dict[str, str | bool | int | float]


def cost_attributes(result: Cost | Unpriced) -> Attributes:
    """``llm_middleware.cost.*``: total and parts in USD and what it was priced as, or unpriced and why."""
    if isinstance(result, Unpriced):
        return {n.A_COST_UNPRICED: True, n.A_COST_UNPRICED_REASON: result.reason}
    attrs: Attributes = {
        n.A_COST_USD: result.total_usd,
        n.A_COST_INPUT_USD: result.input_usd,
        n.A_COST_OUTPUT_USD: result.output_usd,
        n.A_COST_PRICED_AS: result.priced_as,
    }
    # The parts most calls do not have are set only when they are there (fewer attributes on every span).
    if result.cached_input_usd:
        attrs[n.A_COST_CACHED_INPUT_USD] = result.cached_input_usd
    if result.reasoning_usd:
        attrs[n.A_COST_REASONING_USD] = result.reasoning_usd
    if result.cached_savings_usd:
        attrs[n.A_COST_SAVINGS_USD] = result.cached_savings_usd
    return attrs


def usage_attributes(usage: Usage) -> Attributes:
    """The usage details of the GenAI conventions (cached input and reasoning tokens)."""
    return {n.A_USAGE_CACHED_INPUT: usage.cached_input_tokens, n.A_USAGE_REASONING: usage.reasoning_tokens}


def tag_attributes(tags: Mapping[str, str]) -> Attributes:
    """``llm_middleware.tag.<key>`` per tag (sanitised values, not folded: spans are not metrics)."""
    return {n.A_TAG_PREFIX + key: value for key, value in tags.items()}


def budget_attributes(decision: BudgetReservation | BudgetExceeded) -> Attributes:
    """The budget decision of a call, for a span event (the first over-budget budget when there is one)."""
    if isinstance(decision, BudgetExceeded):
        return {
            n.A_BUDGET: decision.budget, n.A_BUDGET_PERIOD: decision.period, n.A_BUDGET_DECISION: n.DECISION_REFUSED,
            n.A_BUDGET_SPENT_USD: decision.spent_usd, n.A_BUDGET_LIMIT_USD: decision.limit_usd,
            n.A_BUDGET_RESERVED_USD: decision.requested_usd,
        }
    attrs: Attributes = {n.A_BUDGET_DECISION: decision.decision, n.A_BUDGET_RESERVED_USD: decision.amount_usd}
    if decision.over:
        first = decision.over[0]
        attrs.update({n.A_BUDGET: first.budget.name, n.A_BUDGET_PERIOD: first.budget.period,
                      n.A_BUDGET_SPENT_USD: first.spent_usd, n.A_BUDGET_LIMIT_USD: first.budget.limit_usd})
    else:
        attrs[n.A_BUDGET] = ",".join(c.budget.name + "/" + c.budget.period for c in decision.charges)
    return attrs
