#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), then pytest (unit, integration with real
# Redis/Prometheus/Alertmanager/promtool/amtool, end to end). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
source "$ROOT/scripts/bootstrap.sh" all
cd "$ROOT"
echo "== ruff"
.venv/bin/ruff check middleware dashboards tests benchmarks
echo "== mypy --strict middleware"
.venv/bin/mypy middleware
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
