#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), pytest (unit, integration with real
# Redis/Prometheus/Alertmanager/promtool/amtool, end to end), then the compatibility matrix
# (scripts/matrix.sh: the SDK-facing tests on every supported openai release, the unit tests and one
# end-to-end call on Python 3.10 and 3.13, each in its own venv). Extra arguments go to the main pytest run;
# MIDDLEWARE_SKIP_MATRIX=1 skips the matrix (for a quick local run; CI runs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
source "$ROOT/scripts/bootstrap.sh" all
cd "$ROOT"
started=$SECONDS
echo "== ruff"
.venv/bin/ruff check middleware dashboards tests benchmarks
echo "== mypy --strict middleware"
.venv/bin/mypy middleware
echo "== pytest"
.venv/bin/python -m pytest "$@"
echo "== main suite done in $((SECONDS - started)) s"
if [ "${MIDDLEWARE_SKIP_MATRIX:-0}" != "1" ]; then
  ./scripts/matrix.sh
fi
echo "== all done in $((SECONDS - started)) s"
