"""The probe table (``benchmarks/probe_table.py``, issue 12's evidence) runs and judges: a few fast probes of
different kinds against this checkout, each met (the table exits 1 when one is not), observations kept as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "probe_table.py"
FAST = ("config_max_wait_zero", "atomic_symlink", "cli_sim_port", "body_tools_int")


def run_table(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_fast_probes_are_met_on_this_checkout(tmp_path: Path) -> None:
    out = tmp_path / "probes.json"
    run = run_table(tmp_path, "--only", ",".join(FAST), "--json", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(FAST), run.stdout
    assert all(row.rstrip(" |").endswith("yes") for row in rows), run.stdout
    saved = json.loads(out.read_text())
    assert saved  # the observations are kept for the note, not only printed


def test_the_list_names_every_class_of_the_issue(tmp_path: Path) -> None:
    run = run_table(tmp_path, "--list")
    assert run.returncode == 0, run.stderr[-2000:]
    classes = {line.split()[1] for line in run.stdout.splitlines() if line.strip() and line.split()[1].isdigit()}
    assert classes == {str(c) for c in range(1, 11)}
