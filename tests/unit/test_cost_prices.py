"""The price table: shipped figures against OpenAI's published prices, snapshot aliases, user files, errors."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from middleware.cost import CostConfig, CostServices, Usage, load_prices, shipped_prices
from middleware.errors import ConfigError

# OpenAI's published standard-tier list prices, USD per 1M tokens: (input, cached input, output).
# Written out here from the pricing page and the model pages, independently of prices.json.
PUBLISHED: dict[str, tuple[float, float | None, float | None]] = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o1": (15.00, 7.50, 60.00),
    "o3": (2.00, 0.50, 8.00),
    "o3-mini": (1.10, 0.55, 4.40),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "text-embedding-3-small": (0.02, None, None),
    "text-embedding-3-large": (0.13, None, None),
    "text-embedding-ada-002": (0.10, None, None),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_shipped_prices_match_the_published_figures(model: str) -> None:
    price = shipped_prices().lookup(model)
    assert price is not None, f"{model} is unpriced"
    inp, cached, out = PUBLISHED[model]
    assert (price.input, price.cached_input, price.output) == (inp, cached, out)
    # OpenAI bills reasoning tokens as output tokens
    assert price.reasoning_rate == out


def test_shipped_table_is_reviewed_versioned_and_sourced() -> None:
    raw = json.loads((Path(__file__).parents[2] / "middleware" / "cost" / "prices.json").read_text())
    assert raw["schema_version"] == 1
    assert date.fromisoformat(raw["reviewed"]) <= date.today()
    assert any("openai.com" in s for s in raw["source"])
    assert raw["batch_discount"] == 0.5  # the Batch API halves input and output prices


@pytest.mark.parametrize(("model", "family"), [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-11-20", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # never gpt-4o by prefix
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("o3-2025-04-16", "o3"),
    ("o1-2024-12-17", "o1"),
    ("o1-preview-2024-09-12", "o1"),  # dated suffix, then an explicit alias
    ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
    ("gpt-5-chat-latest", "gpt-5"),
    ("gpt-4-0613", "gpt-4"),  # four-digit snapshot suffix
    ("gpt-4-1106-preview", "gpt-4-turbo"),
    ("GPT-4o ", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with its own price is not its family
    ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106"),
])
def test_snapshots_resolve_to_their_family(model: str, family: str) -> None:
    assert shipped_prices().resolve(model) == family


@pytest.mark.parametrize("model", [
    "gpt-4o-mini-tts", "gpt-4o-audio-preview", "gpt-4.1-turbo", "o3-pro", "gpt-4o-realtime-preview-2024-12-17",
    "ft:gpt-4o-mini-2024-07-18:acme::abc123", "chatgpt-4o-latest", "claude-3-opus", "", "gpt-5-mini-pro",
])
def test_unknown_models_are_never_guessed(model: str) -> None:
    assert shipped_prices().lookup(model) is None


def test_an_old_snapshot_priced_apart_is_not_billed_at_the_family_price() -> None:
    prices = shipped_prices()
    may_2024, family = prices.lookup("gpt-4o-2024-05-13"), prices.lookup("gpt-4o")
    assert may_2024 is not None and family is not None
    assert (may_2024.input, may_2024.output) == (5.00, 15.00)  # published price of that snapshot
    assert (family.input, family.output) == (2.50, 10.00)


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_user_file_from_the_environment_overrides_one_model_and_adds_another(tmp_path: Path) -> None:
    path = _write(tmp_path / "prices.json", {
        "reviewed": "2026-11-01",
        "models": {
            "gpt-4o-mini": {"input": 0.20, "cached_input": 0.05, "output": 0.80},  # negotiated price
            "my-finetune": {"input": 3.00, "output": 12.00},
        },
        "aliases": {"ft:gpt-4o-mini:acme::v1": "my-finetune"},
    })
    services = CostServices(CostConfig.from_env({"MIDDLEWARE_PRICES_FILE": str(path)}))
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cached_input_tokens=4_096)
    cost = services.settle(None, "gpt-4o-mini-2024-07-18", usage, tags={})
    # by hand at the override: 5,904 x $0.20 + 4,096 x $0.05 + 2,000 x $0.80 per 1M
    assert cost.total_usd == pytest.approx((5_904 * 0.20 + 4_096 * 0.05 + 2_000 * 0.80) / 1e6, rel=1e-12)
    assert cost.total_usd != pytest.approx((5_904 * 0.15 + 4_096 * 0.075 + 2_000 * 0.60) / 1e6)
    fine = services.settle(None, "ft:gpt-4o-mini:acme::v1", Usage(1_000, 100), tags={})
    assert fine.total_usd == pytest.approx((1_000 * 3.00 + 100 * 12.00) / 1e6, rel=1e-12)
    # untouched entries keep the shipped prices; the user's review date and origin are recorded
    assert services.prices.lookup("gpt-4o") == shipped_prices().lookup("gpt-4o")
    assert services.prices.reviewed == "2026-11-01"
    assert services.prices.origins[-1] == str(path)


def test_user_yaml_file_and_in_code_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  o3:\n    input: 1.0\n    output: 4.0\n    reasoning: 6.0\nbatch_discount: 0.25\n")
    table = load_prices(path, {"models": {"gpt-5": {"input": 1.0, "output": 9.0}}})
    o3, gpt5 = table.lookup("o3-2025-04-16"), table.lookup("gpt-5")
    assert o3 is not None and gpt5 is not None
    assert (o3.input, o3.output, o3.reasoning_rate, o3.cached_input_rate) == (1.0, 4.0, 6.0, 1.0)
    assert o3.batch_discount == 0.25
    assert (gpt5.input, gpt5.output) == (1.0, 9.0)


@pytest.mark.parametrize(("content", "problem"), [
    ('{"models": {"gpt-4o": {"input": 2.5,}}}', "not valid JSON"),
    ('[1, 2]', "must be a mapping at the top level"),
    ('{"models": {"gpt-4o": {"input": -1}}}', "models.gpt-4o.input must be a non-negative number"),
    ('{"models": {"gpt-4o": {"input": "2.50"}}}', "models.gpt-4o.input must be a non-negative number"),
    ('{"models": {"gpt-4o": {"input": 2.5, "ouput": 10}}}', "unknown field(s) ouput"),
    ('{"models": {"gpt-4o": {"output": 10}}}', "'input' is required"),
    ('{"models": {"x": {"input": 1, "max_output_tokens": 0}}}', "max_output_tokens must be a positive integer"),
    ('{"schema_version": 2, "models": {}}', "schema_version 2 is not supported"),
    ('{"reviewed": "last week"}', "reviewed must be a date"),
    ('{"aliases": {"gpt-x": "no-such-model"}}', "alias 'gpt-x' points to 'no-such-model'"),
    ('{"batch_discount": 1.5}', "batch_discount must be a fraction"),
    ('{"modles": {}}', "unknown top-level key(s) modles"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad-prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_prices(path)
    assert str(path) in str(err.value)
    assert problem in str(err.value)


def test_missing_and_unparsable_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the price file"):
        load_prices(tmp_path / "absent.json")
    bad = tmp_path / "bad.yml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: not valid YAML"):
        load_prices(bad)
