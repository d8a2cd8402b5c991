"""The demo's cost story end to end: tagged calls, cached and reasoning tokens, budgets that do not bind,
spend per tag and the budget state in its summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from middleware.cost import parse_rules
from middleware.demo import FEATURES, SIM_BUDGETS, TEAMS
from middleware.telemetry import names as n

pytestmark = pytest.mark.slow


def _rows(text: str) -> dict[str, str]:
    """The summary table's rows, by their first cell (rich draws them as `│ name │ value │`)."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def _usd(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def test_demo_reports_spend_per_tag_and_budgets() -> None:
    env = dict(os.environ, COLUMNS="320")
    for name in ("OPENAI_API_KEY", "MIDDLEWARE_BUDGETS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "middleware", "demo", "--duration", "10", "--workers", "3",
                          "--no-progress", "--metrics-port", "0"], capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(out.stdout)
    total = _usd(rows["spend (USD, from reported usage)"])
    assert total > 0

    # Spend per team: every worker's team, and the parts add up to the total (rounded to 6 decimals).
    by_team = dict(re.findall(r"([\w.-]+) \$([\d.,]+)", rows["spend by team"]))
    assert set(TEAMS) <= set(by_team), rows["spend by team"]
    assert sum(_usd(v) for v in by_team.values()) == pytest.approx(total, rel=1e-3, abs=1e-5)
    by_feature = dict(re.findall(r"([\w.-]+) \$([\d.,]+)", rows["spend by feature"]))
    assert {FEATURES["cached"], FEATURES["reasoning"]} <= set(by_feature)

    # The mix exercises the prompt cache and a reasoning model: both token types, their cost and savings.
    cached, reasoning = (int(x) for x in rows["cached input / reasoning tokens (reported)"].split(" / "))
    assert cached >= 1024 and reasoning > 0
    types = dict(re.findall(r"(\w+) \$([\d.,]+)", rows["spend by token type"]))
    assert _usd(types[n.TOKEN_CACHED_INPUT]) > 0 and _usd(types[n.TOKEN_REASONING]) > 0
    assert _usd(rows["saved by cached input tokens"]) > 0

    # The budgets are checked and reported, and none binds: every decision admitted, far from the limits.
    budgets = {k: v for k, v in rows.items() if k.startswith("budget ") and " per " in k}
    limits = {(r.scope, r.period): r.limit_usd for r in parse_rules(SIM_BUDGETS)}
    assert {f"budget team={t} per month" for t in TEAMS} <= set(budgets)
    assert any(k.startswith("budget api_key=") and k.endswith(" per day") for k in budgets)
    for name, value in budgets.items():
        scope, period = name.removeprefix("budget ").split("=")[0], name.rsplit(" ", 1)[1]
        spent, limit = (_usd(x) for x in re.findall(r"\$[\d.,]+", value))
        assert limit == limits[(scope, period)] and 0 < spent < limit / 100, (name, value)
    assert re.fullmatch(r"admitted \d+", rows["budget decisions"]), rows["budget decisions"]
    assert rows["errors seen by the caller"].startswith("0")
