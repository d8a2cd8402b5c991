"""Price table used to estimate cost, in USD per million tokens.

List prices of the OpenAI API (standard tier, no cached-input discount) as
published when this table was last reviewed; edit it and re-render
(``python -m dashboards``) when prices change. A model missing from the table
has no cost series: the Overview cost panel then under-reports, it never guesses.
The table is exported to Prometheus as one recording rule per (model, token type),
``PRICE_RECORD{model=..., token_type=...}``, which the cost queries join on.
"""

from __future__ import annotations

from middleware.telemetry.names import PREFIX, TOKEN_INPUT, TOKEN_OUTPUT

PRICE_RECORD = f"{PREFIX}:token_price_usd"
REVIEWED = "2025-06"

# model -> (input, output) USD per 1M tokens.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
}


def price_per_token() -> list[tuple[str, str, float]]:
    """(model, token type, USD per token) for every entry of the table."""
    out: list[tuple[str, str, float]] = []
    for model, (inp, outp) in sorted(PRICES_PER_MILLION.items()):
        out.append((model, TOKEN_INPUT, inp / 1e6))
        out.append((model, TOKEN_OUTPUT, outp / 1e6))
    return out
