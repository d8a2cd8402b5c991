"""Cost: a price table as data, cost per call from reported usage, attribution tags, budgets that hold.

``CostServices`` is the facade the pipeline calls; ``tags(team=..., feature=...)`` tags the calls made
inside a block. See ``docs/cost.md``.
"""

from .attributes import budget_attributes, cost_attributes, tag_attributes, usage_attributes
from .attribution import TagConfig, TagFolder, current_tags, sanitize, select_tags, tags
from .budgets import (
    Budget,
    BudgetCharge,
    BudgetReservation,
    BudgetRule,
    BudgetStatus,
    BudgetWait,
    Mode,
    budgets_for,
    parse_rules,
)
from .calc import Cost, Unpriced, cost_of, worst_case
from .config import CostConfig
from .errors import BudgetExceeded
from .events import CostEvents, NoopCostEvents, SafeCostEvents
from .ledger import BudgetLedger
from .prices import ModelPrice, PriceTable, load_prices, read_price_file, shipped_prices
from .services import CostServices, hash_api_key
from .usage import Usage, read_usage, usage_from

__all__ = [
    "Budget",
    "BudgetCharge",
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetReservation",
    "BudgetRule",
    "BudgetStatus",
    "BudgetWait",
    "Cost",
    "CostConfig",
    "CostEvents",
    "CostServices",
    "Mode",
    "ModelPrice",
    "NoopCostEvents",
    "PriceTable",
    "SafeCostEvents",
    "TagConfig",
    "TagFolder",
    "Unpriced",
    "Usage",
    "budget_attributes",
    "budgets_for",
    "cost_attributes",
    "cost_of",
    "current_tags",
    "hash_api_key",
    "load_prices",
    "parse_rules",
    "read_price_file",
    "read_usage",
    "sanitize",
    "select_tags",
    "shipped_prices",
    "tag_attributes",
    "tags",
    "usage_attributes",
    "usage_from",
    "worst_case",
]
