#!/usr/bin/env bash
# The compatibility matrix, each cell in its own virtual environment under .venv-matrix/:
#   - the SDK-facing tests (pytest -m sdk) against every supported openai release other than the
#     default venv's (the oldest admitted and the latest of each major: pyproject.toml states the range);
#   - the unit tests and one end-to-end call (pytest -m smoke) on Python 3.10 and 3.13 (pyenv's builds).
# Run by scripts/test.sh after the full suite; usable alone: scripts/matrix.sh [sdk|python]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHAT="${1:-all}"

# Keep in step with pyproject.toml ("openai>=1.66,<4") and the README's compatibility table.
SDK_RELEASES=(1.66.0 1.109.1 2.0.0 2.54.0 3.0.0)   # 3.57.0 is the default venv's (full suite)
PYTHONS=(3.10 3.13)
MATRIX_DIR="$ROOT/.venv-matrix"
mkdir -p "$MATRIX_DIR"

if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d "$ROOT/../shared/tiktoken_cache" ]; then
  TIKTOKEN_CACHE_DIR="$(cd "$ROOT/../shared/tiktoken_cache" && pwd)"
  export TIKTOKEN_CACHE_DIR
fi

# venv DIR PYTHON PIP-ARGS...: create (once per pyproject + arguments) and install.
venv() {
  local dir="$1" py="$2"; shift 2
  local stamp
  stamp="$dir/.installed-$( (sha256sum pyproject.toml; echo "$*") | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    rm -rf "$dir"
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$dir/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true
    "$dir/bin/python" -c 'import middleware, openai' || { echo "matrix: install failed in $dir" >&2; return 1; }
    touch "$stamp"
  fi
}

python_for() {
  local want="$1" root candidate
  root="${PYENV_ROOT:-$HOME/.pyenv}"
  for candidate in "$root"/versions/"$want".*/bin/python"$want"; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  command -v "python$want" 2>/dev/null && return 0
  return 1
}

failed=()
run() {  # run LABEL COMMAND...
  local label="$1"; shift
  local started=$SECONDS
  echo "== matrix: $label"
  if "$@"; then
    echo "== matrix: $label passed in $((SECONDS - started)) s"
  else
    echo "== matrix: $label FAILED" >&2
    failed+=("$label")
  fi
}

PYTEST_ARGS=(-q -p no:cacheprovider -o addopts="--strict-markers")
if [ "$WHAT" = "all" ] || [ "$WHAT" = "sdk" ]; then
  for release in "${SDK_RELEASES[@]}"; do
    dir="$MATRIX_DIR/openai-$release"
    venv "$dir" "${PYTHON:-python3}" -e ".[dev]" "openai==$release"
    run "openai $release: SDK-facing tests" "$dir/bin/python" -m pytest -m sdk "${PYTEST_ARGS[@]}"
  done
fi
if [ "$WHAT" = "all" ] || [ "$WHAT" = "python" ]; then
  for version in "${PYTHONS[@]}"; do
    if ! py="$(python_for "$version")"; then
      echo "matrix: Python $version not found (pyenv: ${PYENV_ROOT:-$HOME/.pyenv}/versions)" >&2
      failed+=("python $version (not found)")
      continue
    fi
    dir="$MATRIX_DIR/python-$version"
    venv "$dir" "$py" -e ".[test]"
    run "python $version: unit tests and one end-to-end call" \
      "$dir/bin/python" -m pytest tests/unit tests/e2e/test_smoke.py "${PYTEST_ARGS[@]}"
  done
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "matrix: failed: ${failed[*]}" >&2
  exit 1
fi
echo "== matrix: every cell passed"
