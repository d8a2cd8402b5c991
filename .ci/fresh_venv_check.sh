#!/usr/bin/env bash
# Library etiquette, checked the way a user meets it: `pip install .` with no extras into a fresh virtual
# environment gives the runtime dependencies only (openai, tiktoken, prometheus-client, opentelemetry-api:
# no OTel SDK, no OTLP exporter, no rich), and an application whose OpenTelemetry providers are written
# against the API alone gets working protected calls whose spans and metrics reach those providers
# (tests/fixtures/api_only_app.py against the built-in simulator). setup_telemetry() and the rich-based
# commands name the extra they need. Exits non-zero on any failure.
#
# Usage: .ci/fresh_venv_check.sh   (PYTHON=python3.X to pick the interpreter; KEEP_VENV=DIR keeps it there)
# pip installs from the machine's configured package indexes, like any user install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
# Offline tokenizer data, as in scripts/bootstrap.sh: the shared cache beside the project unless one is set.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d "$ROOT/../shared/tiktoken_cache" ]; then
  TIKTOKEN_CACHE_DIR="$(cd "$ROOT/../shared/tiktoken_cache" && pwd)"
  export TIKTOKEN_CACHE_DIR
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="${KEEP_VENV:-$WORK/venv}"
t0=$(date +%s)

"$PY" -m venv "$VENV"
# A copy of the source tree (no .venv, no caches), so that the build never writes into the checkout.
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/src" 2>/dev/null) \
  || cp -r "$ROOT/middleware" "$ROOT/dashboards" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/src/"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WORK/src" >"$WORK/pip.log" 2>&1; then
  grep -v "is ignored" "$WORK/pip.log" >&2 || true
  echo "fresh-venv check: pip install . failed" >&2
  exit 1
fi
t1=$(date +%s)

# Run from an empty folder: the installed package is imported, never the checkout.
mkdir "$WORK/run"
cd "$WORK/run"
"$VENV/bin/python" -m pip list --format=json --disable-pip-version-check >"$WORK/pip-list.json" 2>/dev/null
MIDDLEWARE_TRACES_DIR="$WORK/traces" API_ONLY_BLOCK="" \
  "$VENV/bin/python" "$ROOT/tests/fixtures/api_only_app.py" >"$WORK/report.json"

"$VENV/bin/python" - "$WORK/pip-list.json" "$WORK/report.json" "$ROOT" <<'PY'
import json, sys

installed = {p["name"].lower().replace("_", "-") for p in json.load(open(sys.argv[1]))}
report = json.load(open(sys.argv[2]))
root = sys.argv[3]
checks = []

def check(name, ok):
    checks.append((name, bool(ok)))
    print(f"  {'ok  ' if ok else 'FAIL'} {name}")

for dist in ("openai", "tiktoken", "prometheus-client", "opentelemetry-api", "llm-middleware"):
    check(f"{dist} installed", dist in installed)
for dist in ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "rich", "redis"):
    check(f"{dist} not installed", dist not in installed)
import middleware
check("the installed package is imported, not the checkout", not middleware.__file__.startswith(root))
check("import middleware loads no SDK, exporter or rich", report["modules_after_import"] == [])
check("nothing of them loaded after the calls either", report["modules"] == [])
check("the application's providers are the global ones", report["app_providers_installed"])
check("a protected call returns the SDK's object", report["reply_is_chat_completion"])
spans = report["spans"]
calls = [s for s in spans if s["parent_id"] is None]
check("5 call spans reach the application's tracer provider", len(calls) == 5)
check("every call span has its attempt spans",
      all(any(s["parent_id"] == c["span_id"] for s in spans) for c in calls))
check("the retried call has two attempts and a backoff event",
      any("llm_middleware.backoff" in c["events"] and sum(s["parent_id"] == c["span_id"] for s in spans) == 2
          for c in calls))
points = report["points"]
check("5 durations reach the application's meter provider", len(points.get("gen_ai.client.operation.duration", [])) == 5)
check("token usage reaches it too", len(points.get("gen_ai.client.token.usage", [])) >= 8)
check("5 durations on the Prometheus side", sum(report["prometheus"].values()) == 5)
check("setup_telemetry() names the otel extra", "llm-middleware[otel]" in report["setup_telemetry"])
check("middleware demo names its extras in one line",
      report["demo"]["code"] == 2 and "llm-middleware[cli,otel]" in report["demo"]["stderr"]
      and len(report["demo"]["stderr"].strip().splitlines()) == 1)
check("middleware files names the cli extra",
      report["files"]["code"] == 2 and "llm-middleware[cli]" in report["files"]["stderr"])
check("middleware traces works without rich", report["traces"]["code"] == 0)
failed = sum(1 for _, ok in checks if not ok)
print(f"fresh-venv: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
t2=$(date +%s)
echo "fresh-venv check: install $((t1 - t0)) s, checks $((t2 - t1)) s"
