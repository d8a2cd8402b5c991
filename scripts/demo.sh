#!/usr/bin/env bash
# The main job: the demo workload against the built-in simulator (or the real API: scripts/demo.sh --live).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
source "$ROOT/scripts/bootstrap.sh" none
cd "$ROOT"
exec .venv/bin/middleware demo "$@"
