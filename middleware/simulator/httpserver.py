"""A minimal HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_HIGH_WATER = 256 * 1024


class BadRequest(Exception):
    """The bytes on the wire are not a valid HTTP/1.1 request."""


@dataclass
class Request:
    """One parsed request; header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    version: str

    def json(self) -> Any:
        """The body parsed as JSON (``{}`` when empty)."""
        return json.loads(self.body) if self.body else {}


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; ``None`` on a clean end of stream between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("truncated request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    lines = head[:-4].decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    body = await _read_body(reader, headers)
    return Request(method.upper(), url.path, dict(parse_qsl(url.query)), headers, body, version)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > MAX_BODY_BYTES:
        raise BadRequest("bad content-length")
    return await reader.readexactly(length) if length else b""


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection:
    """The writing side of one client connection."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.keep_alive = True
        self.closed = False
        self.responded = False

    @property
    def client_gone(self) -> bool:
        """Whether the peer has closed or the connection was aborted."""
        return self.closed or self.writer.transport.is_closing()

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Write a complete response with a Content-Length body."""
        self.responded = True
        headers = [*headers, ("content-length", str(len(body)))]
        if not self.keep_alive:
            headers.append(("connection", "close"))
        self.writer.write(_head(status, headers) + body)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (fault injection)."""
        self.responded = True
        self.writer.write(data)

    def start_chunked(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Write the head of a ``Transfer-Encoding: chunked`` response."""
        self.responded = True
        headers = [*headers, ("transfer-encoding", "chunked")]
        if not self.keep_alive:
            headers.append(("connection", "close"))
        self.writer.write(_head(status, headers))

    def write_chunk(self, data: bytes) -> None:
        """Write one body chunk (non-empty)."""
        self.writer.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        """Write the terminating zero-length chunk."""
        self.writer.write(b"0\r\n\r\n")

    async def drain(self, force: bool = False) -> None:
        """Wait for the socket buffer to empty when it is large (or when ``force``)."""
        if force or self.writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection at once (RST where possible)."""
        self.closed = True
        self.writer.transport.abort()


Handler = Callable[[Request, Connection], Awaitable[None]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    """Serve requests on one connection until the peer or the handler closes it."""
    conn = Connection(writer)
    try:
        while not conn.closed:
            try:
                request = await read_request(reader)
            except (BadRequest, ValueError) as exc:
                conn.keep_alive = False
                body = json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}).encode()
                conn.send(400, [("content-type", "application/json")], body)
                break
            if request is None:
                break
            if request.headers.get("connection", "").lower() == "close" or request.version == "HTTP/1.0":
                conn.keep_alive = False
            conn.responded = False
            await handler(request, conn)
            if conn.closed:
                return
            await conn.drain(force=True)
            if not conn.keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        conn.closed = True
    finally:
        if not conn.closed:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()
