"""``setup_telemetry()`` fails before it installs anything, or not at all: never half a setup.

Each case runs in a fresh interpreter, because OpenTelemetry's global providers can be set once per
process. Failures are real: a port another socket holds, an invalid ``OTEL_*`` setting the SDK refuses
after the port was bound, a missing SDK (an import blocker), an invalid ``MIDDLEWARE_TRACES_LOCAL``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, os, socket, sys, threading, time, urllib.request
BLOCK = tuple(p for p in os.environ.get("SETUP_BLOCK", "").split(",") if p)

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in BLOCK):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
from opentelemetry import metrics, trace
import middleware
report = {}

def threads():
    return {t.name for t in threading.enumerate()}

def settle(before):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and threads() - before:
        time.sleep(0.05)
    return sorted(threads() - before)

def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

def globals_untouched():
    return (type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
            and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider")

def attempt(**kwargs):
    before = threads()
    try:
        handle = middleware.setup_telemetry(**kwargs)
        report["outcome"] = "installed"
        report["handle"] = {"installed_tracer": handle.installed_tracer, "traces_dir": str(handle.traces_dir)}
        handle.shutdown()
    except Exception as exc:
        report["outcome"] = f"{type(exc).__name__}: {exc}"
    report["new_threads"] = settle(before)
    report["globals_untouched"] = globals_untouched()
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def run(code: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MIDDLEWARE_"))}
    full_env.update(env, MIDDLEWARE_TRACES_DIR=str(tmp_path / "traces"))
    out = subprocess.run([sys.executable, "-c", PRELUDE + code + "\nprint(json.dumps(report))"],
                         capture_output=True, text=True, timeout=90, env=full_env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_busy_port_fails_first_then_a_second_setup_installs_everything(tmp_path: Path) -> None:
    r = run("""
busy = socket.socket(); busy.bind(("127.0.0.1", 0)); busy.listen(); port = busy.getsockname()[1]
attempt(metrics_port=port)
report["port"] = port
busy.close()
handle = middleware.setup_telemetry(metrics_port=0)
report["second"] = {"tracer": type(trace.get_tracer_provider()).__name__, "installed": handle.installed_tracer,
                    "status": urllib.request.urlopen(f"http://127.0.0.1:{handle.metrics_port}/metrics").status}
handle.shutdown()
""", tmp_path)
    assert r["outcome"].startswith("OSError") and f"127.0.0.1:{r['port']}" in r["outcome"]
    assert r["globals_untouched"] is True  # no tracer provider installed before the failure
    assert r["new_threads"] == []  # no exporter or server thread left behind
    assert r["second"] == {"tracer": "TracerProvider", "installed": True, "status": 200}


def test_failure_after_the_port_is_bound_releases_it_and_installs_nothing(tmp_path: Path) -> None:
    """The SDK refuses OTEL_BSP_SCHEDULE_DELAY=-5 when the span processor is built, after /metrics was bound."""
    port = free_port()
    r = run(f"""
attempt(metrics_port={port})
report["port_free"] = port_free({port})
""", tmp_path, OTEL_BSP_SCHEDULE_DELAY="-5")
    assert r["outcome"].startswith("ValueError") and "schedule_delay" in r["outcome"]
    assert r["globals_untouched"] is True
    assert r["port_free"] is True
    assert r["new_threads"] == []


def test_failure_after_the_tracer_provider_is_built_stops_its_threads(tmp_path: Path) -> None:
    """With OTLP on, the tracer provider (and its batch thread) exists when the metric reader is refused."""
    port = free_port()
    r = run(f"""
attempt(metrics_port={port})
report["port_free"] = port_free({port})
""", tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_METRIC_EXPORT_INTERVAL="-1")
    assert r["outcome"].startswith("ValueError") and "interval" in r["outcome"]
    assert r["globals_untouched"] is True
    assert r["port_free"] is True
    assert r["new_threads"] == []


def test_missing_sdk_is_a_clear_error_before_anything_is_bound(tmp_path: Path) -> None:
    port = free_port()
    r = run(f"""
attempt(metrics_port={port})
report["port_free"] = port_free({port})
""", tmp_path, SETUP_BLOCK="opentelemetry.sdk")
    assert r["outcome"] == ("MissingExtraError: setup_telemetry() needs the 'opentelemetry-sdk' package: "
                            "pip install 'llm-middleware[otel]'")
    assert r["globals_untouched"] is True and r["port_free"] is True and r["new_threads"] == []


def test_missing_otlp_exporter_names_the_extra_when_otlp_is_configured(tmp_path: Path) -> None:
    r = run("attempt(metrics_port=None)", tmp_path, SETUP_BLOCK="opentelemetry.exporter",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert r["outcome"].startswith("MissingExtraError")
    assert "opentelemetry-exporter-otlp-proto-http" in r["outcome"] and "llm-middleware[otel]" in r["outcome"]
    assert r["globals_untouched"] is True


def test_invalid_local_traces_setting_is_a_config_error_before_anything(tmp_path: Path) -> None:
    port = free_port()
    r = run(f"""
attempt(metrics_port={port})
report["port_free"] = port_free({port})
""", tmp_path, MIDDLEWARE_TRACES_LOCAL="sometimes")
    assert r["outcome"].startswith("ConfigError") and "MIDDLEWARE_TRACES_LOCAL" in r["outcome"]
    assert "'sometimes'" in r["outcome"]
    assert r["globals_untouched"] is True and r["port_free"] is True


def test_invalid_log_level_is_a_config_error_before_anything(tmp_path: Path) -> None:
    port = free_port()
    r = run(f"""
from opentelemetry import _logs
attempt(metrics_port={port}, log_level="LOUD")
report["port_free"] = port_free({port})
report["logger_provider"] = type(_logs.get_logger_provider()).__name__
""", tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert r["outcome"].startswith("ConfigError") and "log_level" in r["outcome"] and "'LOUD'" in r["outcome"]
    assert r["globals_untouched"] is True and r["port_free"] is True
    assert r["logger_provider"] in ("ProxyLoggerProvider", "NoOpLoggerProvider")


def test_an_application_provider_is_kept_and_no_local_store_is_added(tmp_path: Path) -> None:
    r = run("""
from opentelemetry.sdk.trace import TracerProvider
app = TracerProvider()
trace.set_tracer_provider(app)
handle = middleware.setup_telemetry(metrics_port=None)
report["kept"] = trace.get_tracer_provider() is app and handle.tracer_provider is app
report["installed_tracer"] = handle.installed_tracer
report["traces_dir"] = handle.traces_dir
""", tmp_path)
    assert r["kept"] is True and r["installed_tracer"] is False and r["traces_dir"] is None
