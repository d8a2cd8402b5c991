"""`pip install .` without extras into a fresh virtual environment protects calls (about 20 s here).

Runs `.ci/fresh_venv_check.sh`: the venv holds only the runtime dependencies (no OTel SDK, no OTLP
exporter, no rich), and an application with API-only OpenTelemetry providers gets its spans and metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pip_install_without_extras_gives_a_working_protect() -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", str(ROOT / ".ci" / "fresh_venv_check.sh")], capture_output=True, text=True,
                         timeout=600, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "0 failed" in out.stdout and "FAIL" not in out.stdout
    assert "opentelemetry-sdk not installed" in out.stdout and "rich not installed" in out.stdout
