"""Checkpoints: a process killed mid-stream (kill -9) is resumed by another from its checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from middleware import Config, StreamConfig
from middleware.streaming import DirectoryStore, Progress, aresume, progress, resume
from middleware.telemetry import names as n

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Write the whole manual."}]
HEADERS = {"x-sim-output-tokens": "1500"}

CHILD = f"""
import sys
import openai
from pathlib import Path
from middleware import Config, StreamConfig, protect
base, ckdir = sys.argv[1], sys.argv[2]
cfg = Config(streaming=StreamConfig(checkpoint_dir=Path(ckdir), checkpoint_every_chunks=25,
                                    checkpoint_replay_headers=("x-sim-output-tokens",)))
client = protect(openai.OpenAI(base_url=base, api_key="k"), cfg)
stream = client.chat.completions.create(model={MODEL!r}, messages={MESSAGES!r}, stream=True, seed=5,
                                        extra_headers={HEADERS!r})
print(stream.checkpoint_id, flush=True)
for chunk in stream:
    pass
print("finished", flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _uninterrupted(base_url: str) -> str:
    raw: Any = openai.OpenAI(base_url=base_url, api_key="k")
    stream = raw.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, seed=5, extra_headers=HEADERS)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_kill_9_mid_stream_then_resume_in_a_new_process(make_simulator: Callable[..., Any], tmp_path: Path) -> None:
    sim = make_simulator(tokens_per_s=500.0)
    ckdir = tmp_path / "checkpoints"
    child = subprocess.Popen([sys.executable, "-c", CHILD, sim.base_url, str(ckdir)], stdout=subprocess.PIPE,
                             text=True, env=_env(), cwd=ROOT)
    assert child.stdout is not None
    checkpoint_id = child.stdout.readline().strip()
    path = ckdir / f"{checkpoint_id}.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists() and json.loads(path.read_text())["tokens"] >= 300:
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    saved = json.loads(path.read_text())
    assert 300 <= saved["tokens"] < 1500 and saved["chars"] == len(saved["text"])
    out = tmp_path / "resumed.txt"
    done = subprocess.run(
        [sys.executable, "-m", "middleware", "resume", checkpoint_id, "--base-url", sim.base_url,
         "--checkpoint-dir", str(ckdir), "--no-progress", "-o", str(out)],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = _uninterrupted(sim.base_url)
    assert out.read_text() == expected
    assert out.read_text().startswith(saved["text"])
    assert not path.exists()  # removed after completion


def test_resume_in_process_sync_and_async(
    simulator: Any, protect_with: Callable[..., Any], telemetry: Any, tmp_path: Path
) -> None:
    cfg = Config(streaming=StreamConfig(checkpoint_dir=tmp_path, checkpoint_every_chunks=40, resume=False,
                                        checkpoint_replay_headers=("x-sim-output-tokens",)))
    expected = _uninterrupted(simulator.base_url)
    for mode in ("sync", "async"):
        fault = {**HEADERS, "x-sim-fault": "cut_after=250", "x-sim-fault-once": f"ckpt-{mode}"}
        client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"), cfg)
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, seed=5,
                                                extra_headers=fault)
        try:
            for _ in stream:
                pass
        except Exception as exc:
            checkpoint_id = exc.checkpoint_id  # type: ignore[attr-defined]
        assert checkpoint_id == stream.checkpoint_id
        assert DirectoryStore(tmp_path).load(checkpoint_id).chars > 0
        if mode == "sync":
            result = resume(client, checkpoint_id)
        else:
            aclient = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k"), cfg)
            result = asyncio.run(aresume(aclient, checkpoint_id))
        assert result.text == expected
        assert result.result.choices[0].message.content == expected
        assert DirectoryStore(tmp_path).ids() == []
    assert telemetry.sample(n.CHECKPOINTS_WRITTEN.prom_name, backend="directory") >= 2


def test_twenty_minute_operation_reports_progress(make_simulator: Callable[..., Any],
                                                  protect_with: Callable[..., Any]) -> None:
    """6,000 tokens at 5 tokens/s after a 2 s first token: 20 minutes, run at time_scale 0.008 (~10 s)."""
    sim = make_simulator(ttft_s=2.0, tokens_per_s=5.0, time_scale=0.008)
    client = protect_with(openai.OpenAI(base_url=sim.base_url, api_key="k"))
    reports: list[Progress] = []
    with progress(reports.append):
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, max_tokens=6000,
                                                extra_headers={"x-sim-output-tokens": "6000"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    assert len(reports) >= 10
    assert reports[-1].done and reports[-1].tokens == 6000 and reports[-1].fraction == 1.0
    tokens = [r.tokens for r in reports]
    assert tokens == sorted(tokens)
    middle = reports[len(reports) // 2]
    assert middle.expected_tokens == 6000 and middle.estimated_remaining_seconds is not None
    assert 0 < middle.estimated_remaining_seconds < 20
    assert 200 < middle.tokens_per_second < 2000  # 5 tokens/s scaled by 1/0.008 = 625 tokens/s
