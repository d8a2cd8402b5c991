"""One request/response exchange: standard headers, JSON and error bodies, SSE framing."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any

from .httpserver import Connection, Request

_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to perform this request.", "invalid_request_error", None),
    404: ("Not found.", "invalid_request_error", None),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict.", "invalid_request_error", None),
    429: ("Rate limit reached (simulated).", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


def default_error(status: int) -> tuple[str, str, str | None]:
    """Default (message, type, code) of an error status."""
    return _DEFAULT_ERRORS.get(status, (f"Simulated error {status}.", "server_error", None))


def retry_after_headers(seconds: float) -> list[tuple[str, str]]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``."""
    seconds = max(0.0, seconds)
    return [("retry-after", str(math.ceil(seconds))), ("retry-after-ms", str(math.ceil(seconds * 1000)))]


class Exchange:
    """Writes the answer to one request, adding ``x-request-id`` and ``openai-processing-ms``."""

    def __init__(self, request: Request, conn: Connection, request_id: str) -> None:
        self.request = request
        self.conn = conn
        self.request_id = request_id
        self.started = time.perf_counter()
        self.headers: list[tuple[str, str]] = []

    def _base(self, content_type: str) -> list[tuple[str, str]]:
        elapsed_ms = int((time.perf_counter() - self.started) * 1000)
        return [
            ("content-type", content_type),
            ("x-request-id", self.request_id),
            ("openai-processing-ms", str(elapsed_ms)),
            ("openai-version", "2020-10-01"),
            *self.headers,
        ]

    def send_json(self, status: int, payload: Any, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Send a JSON response."""
        self.send_json_bytes(json.dumps(payload, separators=(",", ":")).encode(), status, extra)

    def send_json_bytes(self, body: bytes, status: int = 200, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Send ``body`` as an ``application/json`` response, whatever it holds."""
        self.conn.send(status, [*self._base("application/json"), *extra], body)

    def send_error(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None,
        extra: Iterable[tuple[str, str]] = (),
        param: str | None = None,
    ) -> None:
        """Send an OpenAI-shaped error body."""
        payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        self.send_json(status, payload, extra)

    async def send_truncated_json(self, payload: Any, *, whole_length: bool = True) -> None:
        """Send half of the JSON body. ``whole_length``: announce the full Content-Length and drop the connection
        (the client's read breaks); else a complete HTTP response of the half (the client gets cut-short JSON)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        if not whole_length:
            self.send_json_bytes(body[: len(body) // 2])
            return
        headers = [*self._base("application/json"), ("content-length", str(len(body)))]
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.conn.send_raw(head.encode("latin-1") + body[: len(body) // 2])
        await self.conn.drain(force=True)
        self.conn.abort()

    def start_sse(self) -> None:
        """Send the head of a ``text/event-stream`` response."""
        self.conn.start_chunked(200, [*self._base("text/event-stream; charset=utf-8"), ("cache-control", "no-cache")])

    def sse(self, data: bytes) -> None:
        """Send one already framed SSE event."""
        self.conn.write_chunk(data)

    def end_sse(self) -> None:
        """Terminate the chunked body."""
        self.conn.end_chunked()


def sse_data(payload: str) -> bytes:
    """Frame ``payload`` as ``data: ...\\n\\n``."""
    return b"data: " + payload.encode() + b"\n\n"


def sse_event(event: str, payload: str) -> bytes:
    """Frame ``payload`` as a named event."""
    return b"event: " + event.encode() + b"\ndata: " + payload.encode() + b"\n\n"
