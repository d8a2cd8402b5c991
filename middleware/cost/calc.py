"""Cost of a call from its reported usage, and the worst case used for budget admission.

Per token type, at the model's prices (USD per million tokens):

- input     = (input - cached) tokens x input price
- cached    = cached input tokens x cached-input price (the input price when none is published)
- output    = (output - reasoning) tokens x output price
- reasoning = reasoning tokens x reasoning price (the output price unless priced separately)

With ``batch=True`` every part is multiplied by ``1 - batch_discount``. A model missing from the table,
or output tokens for an input-only entry, give :class:`Unpriced`: never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from middleware.telemetry import names as n

from .prices import PER_MILLION, PriceTable
from .usage import Usage


@dataclass(frozen=True)
class Cost:
    """A priced call (or several, summed): the breakdown in USD and what it was priced as."""

    model: str
    priced_as: str
    input_usd: float = 0.0
    cached_input_usd: float = 0.0
    output_usd: float = 0.0
    reasoning_usd: float = 0.0
    cached_savings_usd: float = 0.0
    batch: bool = False

    @property
    def total_usd(self) -> float:
        """The sum of the parts."""
        return self.input_usd + self.cached_input_usd + self.output_usd + self.reasoning_usd

    def by_token_type(self) -> dict[str, float]:
        """USD per token type label (``input``, ``cached_input``, ``output``, ``reasoning``)."""
        return {
            n.TOKEN_INPUT: self.input_usd, n.TOKEN_CACHED_INPUT: self.cached_input_usd,
            n.TOKEN_OUTPUT: self.output_usd, n.TOKEN_REASONING: self.reasoning_usd,
        }

    def __add__(self, other: Cost | Unpriced) -> Cost | Unpriced:
        """Sum of two parts of one call (a stream and its resumptions); unpriced if either is."""
        if isinstance(other, Unpriced):
            return other
        return Cost(
            self.model, self.priced_as, self.input_usd + other.input_usd,
            self.cached_input_usd + other.cached_input_usd, self.output_usd + other.output_usd,
            self.reasoning_usd + other.reasoning_usd, self.cached_savings_usd + other.cached_savings_usd,
            self.batch and other.batch,
        )


@dataclass(frozen=True)
class Unpriced:
    """A call whose cost is unknown; ``reason`` is a closed code (``unknown_model``, ``no_output_price``,
    ``no_usage``)."""

    model: str
    reason: str

    def __add__(self, other: Cost | Unpriced) -> Unpriced:
        """Unpriced stays unpriced."""
        return self


def cost_of(prices: PriceTable, model: str, usage: Usage | None, *, batch: bool = False) -> Cost | Unpriced:
    """The cost of one call from its reported usage (``None``: usage not reported)."""
    if usage is None:
        return Unpriced(model, n.UNPRICED_NO_USAGE)
    price = prices.lookup(model)
    if price is None:
        return Unpriced(model, n.UNPRICED_UNKNOWN_MODEL)
    output_rate, reasoning_rate = price.output, price.reasoning_rate
    if usage.output_tokens and (output_rate is None or reasoning_rate is None):
        return Unpriced(model, n.UNPRICED_NO_OUTPUT_PRICE)
    factor = (1.0 - price.batch_discount) if batch else 1.0
    scale = factor / PER_MILLION
    return Cost(
        model=model,
        priced_as=price.name,
        input_usd=usage.uncached_input_tokens * price.input * scale,
        cached_input_usd=usage.cached_input_tokens * price.cached_input_rate * scale,
        output_usd=usage.visible_output_tokens * (output_rate or 0.0) * scale,
        reasoning_usd=usage.reasoning_tokens * (reasoning_rate or 0.0) * scale,
        cached_savings_usd=usage.cached_input_tokens * (price.input - price.cached_input_rate) * scale,
        batch=batch,
    )


def worst_case(
    prices: PriceTable, model: str, prompt_tokens: int, max_output_tokens: int | None, *,
    default_max_output_tokens: int | None = None, batch: bool = False,
) -> Cost | Unpriced:
    """The most a call can cost: the whole prompt uncached, every output token at the higher of the
    output and reasoning prices. The output ceiling is the request's, else the table's ``max_output_tokens``
    for the model, else ``default_max_output_tokens``; with none of them the call is :class:`Unpriced`."""
    price = prices.lookup(model)
    if price is None:
        return Unpriced(model, n.UNPRICED_UNKNOWN_MODEL)
    ceiling = max_output_tokens
    if ceiling is None:
        ceiling = price.max_output_tokens if price.output is not None else 0
    if ceiling is None:
        ceiling = default_max_output_tokens
    if ceiling is None:
        return Unpriced(model, n.UNPRICED_NO_CEILING)
    rates = [r for r in (price.output, price.reasoning_rate) if r is not None]
    if ceiling > 0 and not rates:
        return Unpriced(model, n.UNPRICED_NO_OUTPUT_PRICE)
    scale = ((1.0 - price.batch_discount) if batch else 1.0) / PER_MILLION
    return Cost(
        model=model, priced_as=price.name, input_usd=max(0, prompt_tokens) * price.input * scale,
        output_usd=max(0, ceiling) * max(rates, default=0.0) * scale, batch=batch,
    )
