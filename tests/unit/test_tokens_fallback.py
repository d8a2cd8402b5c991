"""Fallback when tokenizer data is missing: run in a fresh process with an empty / corrupt cache dir."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import tiktoken

_ROOT = pathlib.Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import json, logging, socket, sys

attempts = []
def no_network(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled in this test")
socket.socket.connect = no_network
socket.getaddrinfo = no_network

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="WARN %(name)s %(message)s")
from middleware.tokens import TokenEstimator

class Events:
    def __init__(self):
        self.reasons = []
    def tokenizer_fallback(self, reason):
        self.reasons.append(reason)

events = Events()
est = TokenEstimator(events=events)
body = json.loads(sys.argv[1])
first = est.estimate("chat", "gpt-4o", body)
second = est.estimate("chat", "gpt-4o-mini", body)
other = TokenEstimator().estimate("chat", "gpt-4o", body)
print(json.dumps({
    "prompt": first.prompt_tokens, "again": second.prompt_tokens, "other": other.prompt_tokens,
    "estimator": first.estimator, "encoding": first.encoding, "events": events.reasons,
    "text": est.count_text("gpt-4o", "x" * 40), "network_attempts": len(attempts),
    "encoder": est.encoding_for("gpt-4o") is None,
}))
"""

_BODY = {
    "messages": [
        {"role": "system", "content": "You are a careful assistant who answers questions about the weather."},
        {"role": "user", "content": "Will it rain in Lisbon tomorrow afternoon, and should I bring an umbrella?"},
    ]
}


def _run(cache_dir: pathlib.Path) -> tuple[dict[str, object], str, float]:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(_ROOT)}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(_BODY)], env=env, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr, elapsed


def _exact_count() -> int:
    enc = tiktoken.get_encoding("o200k_base")
    return sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in _BODY["messages"]) + 3


def _assert_fallback(result: dict[str, object], stderr: str, elapsed: float) -> None:
    assert result["estimator"] == "fallback"
    assert result["encoding"] == "o200k_base"
    assert result["encoder"] is True
    assert result["network_attempts"] == 0
    assert result["text"] == 10  # ceil(40 bytes / 4)
    events = result["events"]
    assert isinstance(events, list) and len(events) == 1 and "o200k_base" in events[0]
    assert result["prompt"] == result["again"] == result["other"]
    prompt = result["prompt"]
    assert isinstance(prompt, int)
    exact = _exact_count()
    assert 0.8 * exact <= prompt <= 1.5 * exact, (prompt, exact)
    assert len([line for line in stderr.splitlines() if line.startswith("WARN")]) == 1, stderr
    assert elapsed < 20


@pytest.mark.timeout(60)
def test_fallback_with_empty_cache_dir(tmp_path: pathlib.Path) -> None:
    _assert_fallback(*_run(tmp_path))


@pytest.mark.timeout(60)
def test_fallback_with_corrupt_cache_file_keeps_file(tmp_path: pathlib.Path) -> None:
    corrupt = tmp_path / "fb374d419588a4632f3f557e76b4b70aebbca790"  # sha1 of the o200k_base URL
    corrupt.write_bytes(b"not a bpe file\n")
    result, stderr, elapsed = _run(tmp_path)
    _assert_fallback(result, stderr, elapsed)
    assert "sha256" in str(result["events"])
    assert corrupt.read_bytes() == b"not a bpe file\n"  # tiktoken was never asked (it would delete and re-download)
