"""Unit tests of the streaming building blocks: stores, continuation, adaptive threshold, causes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import openai
import pytest

from middleware.config import StreamConfig
from middleware.errors import CheckpointNotFound
from middleware.streaming import Checkpoint, DirectoryStore, RedisStore
from middleware.streaming.forced import AdaptiveThreshold, force_reason
from middleware.streaming.progress import snapshot
from middleware.streaming.resumption import continuation_body, interruption_cause
from tests.http import http as httpx2


def _cp(i: int = 0, text: str = "abc") -> Checkpoint:
    return Checkpoint(id="c1", operation="chat", model="m", body={"messages": [], "i": i}, text=text)


def test_directory_store_roundtrip_ttl_and_delete(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "ck")
    store.save(_cp(text="héllo"), ttl_seconds=60)
    loaded = store.load("c1")
    assert loaded.text == "héllo" and loaded.chars == 5
    assert json.loads((tmp_path / "ck" / "c1.json").read_text())["chars"] == 5
    store.save(_cp(), ttl_seconds=-1)  # already expired
    with pytest.raises(CheckpointNotFound):
        store.load("c1")
    assert store.sweep() == 1 and store.ids() == []
    store.delete("c1")  # missing: no error
    with pytest.raises(CheckpointNotFound):
        store.load("../etc/passwd")


def test_directory_store_concurrent_writers_never_tear(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        for i in range(40):
            store.save(_cp(i=n * 1000 + i, text="x" * (n * 500 + i)), ttl_seconds=60)

    def reader() -> None:
        for _ in range(200):
            try:
                cp = store.load("c1")
                assert cp.chars == len(cp.text)
            except CheckpointNotFound:
                pass
            except BaseException as exc:  # a torn file would fail to parse
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list(tmp_path.glob(".*tmp")) == []


def test_redis_store_roundtrip_and_ttl(redis_url: str) -> None:
    store = RedisStore(redis_url)
    store.save(_cp(text="partial"), ttl_seconds=1)
    assert store.load("c1").text == "partial"
    time.sleep(1.2)
    with pytest.raises(CheckpointNotFound):
        store.load("c1")
    store.save(_cp(), ttl_seconds=30)
    store.delete("c1")
    with pytest.raises(CheckpointNotFound):
        store.load("c1")


def test_continuation_body() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 100}
    new = continuation_body(body, "partial answer", 30)
    assert new is not None
    assert new["messages"][-1] == {"role": "assistant", "content": "partial answer"}
    assert new["max_tokens"] == 70 and new["stream"] is True and new["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "q"}]  # the original is untouched
    assert continuation_body({**body, "n": 2}, "x", 1) is None
    assert continuation_body({**body, "prediction": {"type": "content"}}, "x", 1) is None


def test_interruption_causes() -> None:
    req = httpx2.Request("POST", "http://x")
    assert interruption_cause(openai.APITimeoutError(request=req)) == "stall"
    assert interruption_cause(openai.APIConnectionError(request=req)) == "connection"
    assert interruption_cause(openai.APIError("boom", request=req, body=None)) == "server_error"
    assert interruption_cause(json.JSONDecodeError("x", "doc", 0)) == "malformed"
    assert interruption_cause(KeyError("x")) is None


def test_adaptive_threshold_and_force_reason() -> None:
    adaptive = AdaptiveThreshold(target_seconds=60.0)
    body = {"messages": [], "max_tokens": 3000}
    static = StreamConfig(force_stream_above_tokens=4096, adaptive_threshold=True)
    assert force_reason(static, adaptive, "m", body) is None  # nothing learned: the static threshold
    adaptive.observe("m", ttfc=0.0, tokens_per_second=40.0)  # 60 s * 40 tok/s = 2400
    assert adaptive.threshold("m") == 2400
    assert force_reason(static, adaptive, "m", body) == "adaptive"
    adaptive.observe("m", ttfc=10.0, tokens_per_second=40.0)  # moving average: ttfc 2 s
    assert adaptive.threshold("m") == int((60 - 2.0) * 40)
    assert force_reason(StreamConfig(), adaptive, "m", {**body, "max_tokens": 5000}) == "threshold"
    assert force_reason(StreamConfig(), adaptive, "m", {**body, "stream": True, "max_tokens": 5000}) is None


def test_progress_snapshot() -> None:
    p = snapshot(tokens=100, chunks=102, elapsed=12.0, generating=10.0, expected=400)
    assert p.tokens_per_second == 10.0 and p.estimated_remaining_seconds == 30.0 and p.fraction == 0.25
    assert snapshot(5, 5, 1.0, 0.0, None).estimated_remaining_seconds is None
