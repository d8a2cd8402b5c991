"""Run Prometheus and Alertmanager from the system packages, without Docker.

    python -m dashboards.stack up [--target 127.0.0.1:9464] [--dir .stack] [--scale 1]
    python -m dashboards.stack down [--dir .stack]

`up` renders the rules, writes configs into --dir, starts both servers in the background and
records their pids; `down` stops exactly those pids. The test fixtures use the same functions.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
ALERTMANAGER = os.environ.get("ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")
LOG_LEVEL = os.environ.get("PROM_STACK_LOG_LEVEL", "warn")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A started server process and its base URL."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (then kill) this process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    """Poll `/-/ready` until it answers 200, or raise with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} not ready at {server.url}:\n{server.log.read_text(errors='replace')[-3000:]}")


def prometheus_config(targets: Sequence[str], rules_dir: Path | None, alertmanager_url: str | None,
                      scrape_interval: str = "1s", evaluation_interval: str = "1s", job: str = "demo") -> str:
    """Prometheus YAML scraping `targets` (OpenMetrics is negotiated, so exemplars are kept)."""
    cfg: dict[str, object] = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                   "evaluation_interval": evaluation_interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    if rules_dir is not None:
        cfg["rule_files"] = [str(Path(rules_dir).resolve() / "*.yml")]
    if alertmanager_url:
        host = alertmanager_url.split("://", 1)[-1].rstrip("/")
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    return yaml.safe_dump(cfg, sort_keys=False)


def alertmanager_config(webhook_url: str) -> str:
    """Alertmanager YAML sending everything to `webhook_url` at once (for tests and local runs)."""
    cfg = {
        "route": {"receiver": "webhook", "group_by": ["alertname"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _spawn(name: str, argv: list[str], workdir: Path, url: str) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    return Server(name, proc, url, log)


def start_prometheus(workdir: Path, targets: Sequence[str], rules_dir: Path | None = None,
                     alertmanager_url: str | None = None, port: int | None = None,
                     scrape_interval: str = "1s", evaluation_interval: str = "1s") -> Server:
    """Start Prometheus with exemplar storage, its TSDB in `workdir`, on 127.0.0.1; wait until ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(targets, rules_dir, alertmanager_url, scrape_interval, evaluation_interval))
    port = port or free_port()
    server = _spawn("prometheus", [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
        "--web.enable-lifecycle", f"--log.level={LOG_LEVEL}",
        # Resend soon: the first notification is dropped if it precedes Alertmanager discovery.
        f"--rules.alert.resend-delay={evaluation_interval}",
    ], workdir, f"http://127.0.0.1:{port}")
    wait_ready(server)
    return server


def start_alertmanager(workdir: Path, webhook_url: str, port: int | None = None,
                       config_text: str | None = None) -> Server:
    """Start Alertmanager (no clustering) sending to `webhook_url`; wait until ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(config_text or alertmanager_config(webhook_url))
    port = port or free_port()
    server = _spawn("alertmanager", [
        ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn",
    ], workdir, f"http://127.0.0.1:{port}")
    wait_ready(server)
    return server


def _up(args: argparse.Namespace) -> int:
    from dashboards.render import render_rules

    workdir = Path(args.dir).resolve()
    rules = workdir / "rules"
    render_rules(rules, args.scale)
    # The webhook runs as its own small process so that `up` can return.
    hook_port = free_port()
    hook = _spawn("webhook", [sys.executable, "-m", "dashboards.webhook", "--host", "127.0.0.1",
                              "--port", str(hook_port)], workdir, f"http://127.0.0.1:{hook_port}")
    am = start_alertmanager(workdir / "alertmanager", f"{hook.url}/local")
    prom = start_prometheus(workdir / "prometheus", args.target, rules, am.url, port=args.port,
                            scrape_interval="5s", evaluation_interval="5s")
    (workdir / "pids").write_text("\n".join(str(s.process.pid) for s in (prom, am, hook)))
    print(f"Prometheus   {prom.url}\nAlertmanager {am.url}\nWebhook log  {hook.log}\nstop with: "
          f"python -m dashboards.stack down --dir {args.dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    pids = Path(args.dir) / "pids"
    if not pids.exists():
        print("nothing to stop", file=sys.stderr)
        return 1
    for pid in map(int, pids.read_text().split()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pids.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`up` or `down` the local stack."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", default=".stack", help="working directory for configs, data, logs and pids")
    parser.add_argument("--target", action="append", default=None, help="scrape target (default 127.0.0.1:9464)")
    parser.add_argument("--port", type=int, default=9090, help="Prometheus port")
    parser.add_argument("--scale", type=float, default=1.0, help="divide rule windows and for: by this")
    args = parser.parse_args(argv)
    args.target = args.target or ["127.0.0.1:9464"]
    return _up(args) if args.command == "up" else _down(args)


if __name__ == "__main__":
    sys.exit(main())
