#!/usr/bin/env bash
# Set-up shared by scripts/demo.sh and scripts/test.sh: system packages, virtual environment, tokenizer data.
# Idempotent: a second run installs nothing new.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WITH_SYSTEM_PACKAGES="${1:-all}"   # "all" (tests) or "none" (demo)

need_apt=()
if [ "$WITH_SYSTEM_PACKAGES" = "all" ]; then
  command -v redis-server >/dev/null || need_apt+=(redis-server)
  command -v prometheus >/dev/null || need_apt+=(prometheus)
  command -v promtool >/dev/null || need_apt+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
  command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
  command -v docker-compose >/dev/null || need_apt+=(docker-compose)
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  uniq_pkgs=($(printf '%s\n' "${need_apt[@]}" | sort -u))
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing system packages: ${uniq_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${uniq_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${uniq_pkgs[*]}" >&2
    echo "bootstrap: install them (e.g. sudo apt-get install --no-install-recommends ${uniq_pkgs[*]}) and re-run" >&2
    exit 1
  fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: Python >= 3.11 is required (found $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the package and its development dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev,otel,cli,integrations]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c 'import middleware, openai, tiktoken, prometheus_client, redis, grafana_foundation_sdk, langchain_openai' 
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Offline tokenizer data: the shared cache beside the project unless the caller chose one.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d "$ROOT/../shared/tiktoken_cache" ]; then
  TIKTOKEN_CACHE_DIR="$(cd "$ROOT/../shared/tiktoken_cache" && pwd)"
  export TIKTOKEN_CACHE_DIR
fi
