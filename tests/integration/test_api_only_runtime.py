"""Without the OTel SDK, the OTLP exporter and rich, ``protect()`` works and reports into the application's providers.

The application (``tests/fixtures/api_only_app.py``) runs in a subprocess where a ``sys.meta_path`` finder
refuses ``opentelemetry.sdk``, ``opentelemetry.exporter`` and ``rich`` as if they were not installed; its
tracer and meter providers are written against the OpenTelemetry API alone. ``.ci/fresh_venv_check.sh``
runs the same application in a fresh virtual environment holding only the runtime dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from middleware.telemetry import names as n

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "fixtures" / "api_only_app.py"
BLOCKED = ("opentelemetry.sdk", "opentelemetry.exporter", "rich")


def run_app(block: tuple[str, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as traces:  # where setup_telemetry() would keep spans: not the user's
        env = dict(os.environ, API_ONLY_BLOCK=",".join(block), PYTHONPATH=str(ROOT), MIDDLEWARE_TRACES_DIR=traces)
        out = subprocess.run([sys.executable, str(APP)], capture_output=True, text=True, timeout=120, env=env,
                             cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_app(BLOCKED)


def test_nothing_of_the_sdk_or_rich_is_loaded_or_asked_for_by_the_middleware(report: dict[str, Any]) -> None:
    assert report["modules"] == []  # the blocker refused them; nothing got in another way
    # No middleware module even tried, on import or during calls (redis, if installed, probes the SDK itself).
    assert not [a for a in report["blocked_on_import"] if a["importer"].startswith("middleware")]
    assert report["blocked_during_calls"] == []


def test_calls_succeed_and_spans_reach_the_applications_tracer_provider(report: dict[str, Any]) -> None:
    assert report["app_providers_installed"] is True
    assert report["reply_is_chat_completion"] is True and report["stream_chunks"] > 1
    spans = report["spans"]
    calls = [s for s in spans if s["parent_id"] is None]
    assert sorted(s["name"] for s in calls) == sorted([
        n.SPAN_CALL.format(operation="chat", model="gpt-4o-mini")] * 3 + [
        n.SPAN_CALL.format(operation="embeddings", model="text-embedding-3-small"),
        n.SPAN_CALL.format(operation="responses", model="gpt-4o-mini")])
    for call in calls:
        attempts = [s for s in spans if s["parent_id"] == call["span_id"]]
        assert attempts and all(a["trace_id"] == call["trace_id"] for a in attempts)
        assert call["attributes"][n.A_OPERATION] in ("chat", "embeddings", "responses")
        assert n.E_ESTIMATE in call["events"] and n.E_THROTTLE in call["events"]
    retried = [c for c in calls if n.E_BACKOFF in c["events"]]
    assert len(retried) == 1
    tries = [s for s in spans if s["parent_id"] == retried[0]["span_id"]]
    assert [t["status"] for t in tries] == ["ERROR", "UNSET"]
    assert tries[1]["attributes"][n.A_HTTP_RESEND_COUNT] == 1
    streamed = [c for c in calls if n.E_STREAM_SUMMARY in c["events"]]
    assert len(streamed) == 1 and streamed[0]["attributes"][n.A_CHUNKS] >= 1


def test_metrics_reach_the_applications_meter_provider_and_prometheus(report: dict[str, Any]) -> None:
    points = report["points"]
    durations = points[n.OPERATION_DURATION.instrument_name]
    assert len(durations) == 5
    assert {p["attributes"][n.A_OPERATION] for p in durations} == {"chat", "embeddings", "responses"}
    assert {p["attributes"][n.OTEL_ATTRIBUTE_FOR_LABEL[n.L_TOKEN_TYPE]]
            for p in points[n.TOKEN_USAGE.instrument_name]} == {n.TOKEN_INPUT, n.TOKEN_OUTPUT}
    assert len(points[n.TIME_TO_FIRST_CHUNK.instrument_name]) == 1
    assert sum(report["prometheus"].values()) == 5


def test_sdk_and_rich_entry_points_name_their_extra(report: dict[str, Any]) -> None:
    assert report["setup_telemetry"].startswith("MissingExtraError")
    assert "pip install 'llm-middleware[otel]'" in report["setup_telemetry"]
    demo = report["demo"]
    assert demo["code"] == 2 and "llm-middleware[cli,otel]" in demo["stderr"]
    assert len(demo["stderr"].strip().splitlines()) == 1 and "Traceback" not in demo["stderr"]
    files = report["files"]
    assert files["code"] == 2 and "llm-middleware[cli]" in files["stderr"]
    assert len(files["stderr"].strip().splitlines()) == 1
    # the trace viewer needs neither: plain text
    assert report["traces"]["code"] == 0 and "no traces stored" in report["traces"]["stdout"]


def test_without_the_blocker_the_same_application_sees_the_sdk() -> None:
    """The blocker is what hides the SDK: with nothing blocked, setup_telemetry() installs providers."""
    full = run_app(())
    assert full["setup_telemetry"] == "installed"
    assert any(m.startswith("opentelemetry.sdk") for m in full["modules"])
