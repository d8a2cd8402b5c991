"""promtool and amtool on the generated rules, rule tests and the Alertmanager config."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboards.render import ROOT
from dashboards.rules import groups
from dashboards.rules.model import Group
from dashboards.rules.render import RULES_DIR, TESTS_DIR, render, rule_file

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_check_rules() -> None:
    files = sorted(str(p) for p in (ROOT / RULES_DIR).glob("*.yml"))
    assert files
    result = _run(str(PROMTOOL), "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_scaled_rules(tmp_path: Path) -> None:
    for g in groups(scale=60):
        (tmp_path / g.file).write_text(rule_file(g))
    result = _run(str(PROMTOOL), "check", "rules", *map(str, sorted(tmp_path.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", sorted(p.name for p in (ROOT / TESTS_DIR).glob("*_test.yml")))
def test_promtool_test_rules(test_file: str) -> None:
    result = _run(str(PROMTOOL), "test", "rules", test_file, cwd=ROOT / TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def _shifted(gs: list[Group], minutes: int) -> list[Group]:
    """The same groups with every scenario's start moved by `minutes` (so the expectations are wrong)."""
    out = []
    for g in gs:
        alerts = tuple(
            dataclasses.replace(a, scenarios=tuple(
                dataclasses.replace(s, starts=f"{int(s.starts[:-1]) + minutes}m")
                for s in a.scenarios if int(s.starts[:-1]) + minutes >= 0))
            for a in g.alerts)
        out.append(dataclasses.replace(g, alerts=alerts))
    return out


def expected_cases(gs: list[Group], test_name: str) -> int:
    """Scenarios rendered into `test_name`."""
    return sum(len(a.scenarios) for g in gs if g.file.replace(".yml", "_test.yml") == test_name for a in g.alerts)


@pytest.mark.parametrize("minutes", [-1, 1])
def test_rule_tests_pin_the_start_of_each_condition(tmp_path: Path, minutes: int) -> None:
    """Every scenario fails when its start is off by one interval: the cases really test timing."""
    gs = [g for g in _shifted(groups(), minutes) if not g.recordings]
    files = render([*[g for g in groups() if g.recordings], *gs], tmp_path)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tests_dir = tmp_path / TESTS_DIR
    for test in sorted(tests_dir.glob("*_test.yml")):
        result = _run(str(PROMTOOL), "test", "rules", test.name, cwd=tests_dir)
        if expected_cases(gs, test.name):
            assert result.returncode != 0, test.name
        # One failure report per alert scenario of the file.
        expected = expected_cases(gs, test.name)
        assert result.stdout.count("alertname:") + result.stderr.count("alertname:") >= expected, test.name


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed")
def test_amtool_check_config() -> None:
    result = _run(str(AMTOOL), "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_prometheus_config() -> None:
    result = _run(str(PROMTOOL), "check", "config", "--syntax-only", str(ROOT / "deploy/prometheus/prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
