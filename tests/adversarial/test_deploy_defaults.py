"""Issue 12.9 (deploy part): nothing listens on other interfaces by default; no anonymous admin."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _resolved_compose(env: dict[str, str] | None = None) -> dict[str, object]:
    """The compose file as docker-compose resolves it (variables substituted), or the raw YAML without it."""
    if shutil.which("docker-compose") is None:
        return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))
    out = subprocess.run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return dict(yaml.safe_load(out.stdout))


def _published(compose: dict[str, object]) -> dict[str, list[str]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return {name: [str(p) for p in svc.get("ports", [])] for name, svc in services.items()}


def test_every_published_port_is_bound_to_localhost_by_default() -> None:
    published = _published(_resolved_compose())
    assert published["redis"] and published["grafana"] and published["prometheus"]
    for service, ports in published.items():
        for port in ports:
            host = port.split(":")[0]
            assert host in ("127.0.0.1", "${BIND_ADDRESS:-127.0.0.1}"), (service, port)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose resolves the variables")
def test_opening_up_never_publishes_redis_without_a_password() -> None:
    compose = _resolved_compose({"BIND_ADDRESS": "0.0.0.0"})
    published = _published(compose)
    assert all(p.startswith("0.0.0.0:") for p in published["grafana"])
    services = compose["services"]
    assert isinstance(services, dict)
    redis_protected = "requirepass" in str(services["redis"].get("command", ""))
    assert redis_protected or all(p.startswith("127.0.0.1:") for p in published["redis"])


def test_grafana_anonymous_users_are_not_admins() -> None:
    env = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["grafana"]["environment"]
    anonymous = str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true"
    assert not anonymous or env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_webhook_helper_listens_on_localhost_only_by_default() -> None:
    outward = _outward_address()
    if outward is None:
        pytest.skip("no non-loopback address to probe from")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dashboards.webhook", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _can_connect("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert not _can_connect(outward, port)
    finally:
        proc.terminate()
        proc.wait(10)
