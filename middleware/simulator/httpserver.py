"""A minimal HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies.

Bodies are bounded by ``MAX_BODY_BYTES`` whichever way they arrive: a ``Content-Length`` above it, or
a chunked body whose declared chunk sizes add up past it, is answered ``413`` before the excess is
read (never buffered); the connection is then closed after a short, bounded drain of what the client
is still sending (so that it can read the answer). Malformed framing (a chunk size that is not plain
hex, a ``Content-Length`` that is not plain digits, an over-long line, endless trailers) is a ``400``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_TRAILER_LINES = 64
_HIGH_WATER = 256 * 1024
_DRAIN_SECONDS = 1.0
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")


class BadRequest(Exception):
    """The bytes on the wire are not a valid HTTP/1.1 request (``status`` 400, or 413 for a body too large)."""

    status = 400


class PayloadTooLarge(BadRequest):
    """The request body is larger than ``MAX_BODY_BYTES``."""

    status = 413


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
        """The body parsed as JSON (``{}`` when empty); ``ValueError`` when it is not JSON or nests too deep."""
        try:
            return json.loads(self.body) if self.body else {}
        except RecursionError as exc:  # nesting deeper than the parser's stack: a 400, as for any unparsable body
            raise ValueError("the JSON body nests too deeply") from exc


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


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("chunk framing line too long") from exc


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int = MAX_BODY_BYTES) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = (await _line(reader))[:-2].split(b";", 1)[0].strip()
            if not _HEX_RE.fullmatch(size_text):
                raise BadRequest(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_TRAILER_LINES):
                    if await _line(reader) == b"\r\n":
                        return b"".join(parts)
                raise BadRequest("too many trailer lines")
            total += size
            if total > limit:  # refused on the declared size: the excess is never read
                raise PayloadTooLarge(f"request body larger than {limit} bytes")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest("chunk not followed by CRLF")
    raw = headers.get("content-length", "0").strip() or "0"
    if not _DIGITS_RE.fullmatch(raw):
        raise BadRequest("bad content-length")
    length = int(raw)
    if length > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    return await reader.readexactly(length) if length else b""


async def _drain(reader: asyncio.StreamReader, seconds: float = _DRAIN_SECONDS) -> None:
    """Read and discard what the client still sends, for at most ``seconds`` (bounded memory)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with contextlib.suppress(Exception):
        while (remaining := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(256 * 1024), remaining):
                return


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
                status = exc.status if isinstance(exc, BadRequest) else 400
                body = json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}).encode()
                conn.send(status, [("content-type", "application/json")], body)
                await conn.drain(force=True)
                with contextlib.suppress(Exception):
                    writer.write_eof()
                await _drain(reader)
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
