"""deploy/: compose file, provisioning, local stack up/down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dashboards.render import DASHBOARDS_DIR, ROOT
from dashboards.stack import free_port

DEPLOY = ROOT / "deploy"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_wires_the_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"demo", "prometheus", "alertmanager", "grafana", "otel-collector", "tempo", "redis"} <= set(services)
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    assert services["grafana"]["image"].endswith(":11.6.0")
    for service in services.values():
        for volume in service.get("volumes", []):
            assert (DEPLOY / volume.split(":")[0]).exists(), volume


def test_grafana_datasources_link_exemplars_to_tempo() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text())["datasources"]
    by_type = {d["type"]: d for d in ds}
    dest = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]
    assert dest["datasourceUid"] == by_type["tempo"]["uid"]
    assert list((ROOT / DASHBOARDS_DIR).glob("*.json"))


@pytest.mark.skipif(not Path("/usr/bin/prometheus").exists(), reason="prometheus not installed")
def test_local_stack_up_and_down(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.run([sys.executable, "-m", "dashboards.stack", "up", "--dir", str(tmp_path), "--port", str(port)],
                        capture_output=True, text=True, timeout=90, cwd=ROOT)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"127.0.0.1:{port}" in up.stdout
        assert list((tmp_path / "rules").glob("*.yml"))
    finally:
        down = subprocess.run([sys.executable, "-m", "dashboards.stack", "down", "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert down.returncode == 0, down.stderr
