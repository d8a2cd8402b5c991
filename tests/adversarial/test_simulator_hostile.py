"""Issue 12.10: the simulator bounds what a client sends, validates its options, and works without tokenizer data."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from middleware import ConfigError
from middleware.simulator import Simulator, SimulatorConfig, SimulatorProcess

MiB = 1024 * 1024
LIMIT = 64 * MiB  # the documented bound (docs/simulator.md)


def _head(path: str = "/v1/chat/completions", extra: str = "transfer-encoding: chunked\r\n") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer test\r\n"
            f"content-type: application/json\r\n{extra}\r\n").encode()


def _answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the peer closes or a complete response head and body arrived."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not part:
            return data
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                return data


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_declared_huge_chunk_is_refused_413_without_reading_it() -> None:
    """A chunk that declares 1 TiB: refused on its declared size at once (before, the server waited for it)."""
    with Simulator() as sim, socket.create_connection(("127.0.0.1", sim.port)) as sock:
        started = time.monotonic()
        sock.sendall(_head() + b"10000000000\r\n" + b"{" * 1000)
        answer = _answer(sock, timeout=5)
        assert _status(answer) == 413 and time.monotonic() - started < 3
        assert b"larger than" in answer
        assert sim.stats()["total"].get("served", 0) == 0


def test_content_length_over_the_limit_is_413(simulator: Simulator) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        sock.sendall(_head(extra=f"content-length: {LIMIT + 1}\r\n"))
        assert _status(_answer(sock)) == 413


def test_malformed_chunk_framing_is_400_and_the_server_lives_on(simulator: Simulator) -> None:
    """Only plain hex sizes: ``int(x, 16)`` alone also takes ``1_0``, ``0x10`` and `` 1``; lines are bounded."""
    for size_line in (b"1_0", b"0x10", b"1" * 70000, b"zz", b"-5", b"\xd9\xa1"):
        with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
            sock.sendall(_head() + size_line + b"\r\n" + b"{}" + b"\r\n0\r\n\r\n")
            assert _status(_answer(sock, timeout=5)) == 400, size_line[:10]
    assert "total" in simulator.stats()  # still serving


def test_malformed_content_length_is_refused(simulator: Simulator) -> None:
    for value in ("+5", "1_0", "-1", "5 5", "99999999999999999999999"):
        with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
            sock.sendall(_head(extra=f"content-length: {value}\r\n") + b"{}")
            assert _status(_answer(sock, timeout=5)) in (400, 413), value


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_200_mib_chunked_body_is_refused_with_bounded_memory() -> None:
    """The issue's probe: a 200 MiB chunked body. The server answers 413 past 64 MiB and never holds 200 MiB."""
    with SimulatorProcess() as sim:
        before = _peak_rss_bytes(sim.pid)
        sock = socket.create_connection(("127.0.0.1", sim.port))
        chunk = b"%x\r\n%s\r\n" % (MiB, b"a" * MiB)
        sent = [0]

        def send() -> None:
            try:
                sock.sendall(_head())
                for _ in range(200):
                    sock.sendall(chunk)
                    sent[0] += MiB
                sock.sendall(b"0\r\n\r\n")
            except OSError:  # the server stopped reading after its answer: expected
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = _answer(sock, timeout=60)
        sender.join(30)
        sock.close()
        growth = _peak_rss_bytes(sim.pid) - before
    assert _status(answer) == 413
    assert growth < 128 * MiB, f"peak memory grew by {growth / MiB:.0f} MiB"
    print(f"peak memory growth {growth / MiB:.0f} MiB")


BAD_OPTIONS: list[dict[str, Any]] = [
    {"rpm": -5}, {"tpm": -1}, {"window_s": 0}, {"window_s": math.inf}, {"ttft_s": -0.1}, {"ttft_s": math.nan},
    {"tokens_per_s": math.inf}, {"jitter": -1}, {"jitter": 2.0}, {"time_scale": math.nan}, {"port": 70000},
    {"port": -1}, {"output_tokens_min": 50, "output_tokens_max": 10}, {"embedding_dimensions": 0},
    {"fault_rates": {"bogus": 0.5}}, {"fault_rates": {"status=500": 1.5}},
    {"fault_rates": {"status=500": 0.7, "status=503": 0.7}}, {"outages": ((5.0, 1.0),)},
    {"outages": ((math.nan, 1.0),)}, {"outage_fault": "nonsense"}, {"charge_mode": "weird"}, {"models": ()},
    {"host": ""}, {"max_stored_responses": 0}, {"rpm": 2.5},
    {"fault_times": (("bogus", 1),)}, {"fault_times": (("status=500", 0),)}, {"fault_times": (("status=500", 2.0),)},
    {"fault_times": (("status=500", 10**7),)}, {"fault_times": (("status=500",),)},
    {"fault_times": [("status=500", 1)]},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=[",".join(o) for o in BAD_OPTIONS])
def test_bad_simulator_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        SimulatorConfig(**options)
    assert "allowed" in str(info.value) or "expected" in str(info.value)


@pytest.mark.parametrize("text", ["{bad", "[]", '{"rpm": -5}', '{"no_such_option": 1}', '{"outages": [[1]]}',
                                  '{"fault_times": [["status=500"]]}', '{"fault_times": [["status=500", -1]]}'])
def test_bad_config_json_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        SimulatorConfig.from_json(text)


def test_a_hostile_request_cannot_make_it_allocate_without_bound(simulator: Simulator) -> None:
    import openai

    client = openai.OpenAI(api_key="test", base_url=simulator.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=100_000)
    xs = {"type": "array", "minItems": 100_000, "items": {"type": "integer"}}
    schema: dict[str, Any] = {"type": "object", "properties": {"xs": xs}}
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    assert len(json.loads(reply.choices[0].message.content or "{}")["xs"]) <= 103


def test_without_tokenizer_data_or_network_it_answers_with_the_offline_fallback(tmp_path: Path) -> None:
    """A subprocess with an empty TIKTOKEN_CACHE_DIR and every proxy pointing at a closed port (no network)."""
    script = textwrap.dedent("""
        import json, math
        import openai
        from middleware.simulator import Simulator
        from middleware.tokens import count_request_prompt_tokens
        with Simulator() as sim:
            client = openai.OpenAI(api_key="test", base_url=sim.base_url, max_retries=0)
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something about rivers."}]}
            reply = client.chat.completions.create(**body)
            text = reply.choices[0].message.content
            chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            emb = client.embeddings.create(model="text-embedding-3-small", input="hello")
            resp = client.responses.create(model="gpt-4o-mini", input="hello")
            print(json.dumps({
                "prompt": reply.usage.prompt_tokens, "estimator": count_request_prompt_tokens("chat", body),
                "completion": reply.usage.completion_tokens, "bytes": len(text.encode()), "same": streamed == text,
                "stream_usage": chunks[-1].usage.completion_tokens, "emb": emb.usage.prompt_tokens,
                "resp": bool(resp.output_text)}))
    """)
    empty = tmp_path / "no-tiktoken"
    empty.mkdir()
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(empty), HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead,
               https_proxy=dead, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["prompt"] == got["estimator"]  # the same fallback as the middleware's estimator
    assert got["completion"] == math.ceil(got["bytes"] / 4) == got["stream_usage"]  # ceil(utf-8 bytes / 4)
    assert got["same"] and got["emb"] > 0 and got["resp"]
