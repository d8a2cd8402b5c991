"""One request at the SDK's funnel: what the pipeline may read of it, and the means to send it.

An :class:`SdkRequest` wraps the arguments of the SDK's ``request()`` funnel (``cast_to``, the
request options, ``stream``, ``stream_cls``) and the *unprotected* funnel of the client it came
from. The pipeline reads plain facts from it (route, body, model, stream, timeouts) and sends
attempts through it; derived requests (a forced stream, a chat continuation, a Responses resume)
are built here from the original options, so auth headers, query and security settings carry over.

Sending an attempt: the request is passed to the SDK's funnel with a :class:`Capture` in place of
``cast_to``; the protected client's response hook (``_process_response``) hands the raw HTTP
response to that capture instead of parsing it. The adapter then reads the headers and status and
lets the SDK parse the response exactly as it would have (same result objects, same stream
classes), with the stream class swapped for its guarded subclass when the call is observed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ..errors import MalformedResponse, MiddlewareError
from . import compat
from .streams import guarded_stream_class, plain_stream_class, put_observer

OPERATION_FOR_ROUTE: dict[str, str] = {
    "/chat/completions": "chat",
    "/responses": "responses",
    "/embeddings": "embeddings",
}
_EXCERPT_CHARS = 200
_RAW_HEADER = compat.RAW_RESPONSE_HEADER.lower()


def route_of(options: Any) -> str | None:
    """The routed endpoint of a funnel request ("/chat/completions", "/responses", "/embeddings"), else None."""
    method = getattr(options, "method", "")
    if not isinstance(method, str) or method.lower() != "post":
        return None
    url = getattr(options, "url", "")
    return url if isinstance(url, str) and url in OPERATION_FOR_ROUTE else None


class Capture:
    """Stands in for ``cast_to`` while an attempt passes through the SDK; receives the raw response."""

    __slots__ = ("options", "response", "retries_taken")

    def __init__(self) -> None:
        self.response: Any = None
        self.options: Any = None
        self.retries_taken = 0

    def take(self, *, options: Any, response: Any, retries_taken: int = 0, **_: Any) -> Capture:
        """Called by the protected client's response hook in place of parsing."""
        self.options = options
        self.response = response
        self.retries_taken = retries_taken
        return self


@dataclass(slots=True)
class Sent:
    """One successful attempt: the caller's result and what the response said."""

    result: Any
    headers: Mapping[str, str]
    status_code: int
    raw: Any
    """The HTTP response (its body is read for non-streamed calls)."""

    @property
    def request_id(self) -> str | None:
        """The upstream's ``x-request-id``."""
        value = self.headers.get("x-request-id")
        return value if isinstance(value, str) else None


class SdkRequest:
    """One request at the funnel of a protected client (sync or async)."""

    __slots__ = (
        "_base_process",
        "_base_request",
        "body",
        "cast_to",
        "client",
        "is_async",
        "observe",
        "operation",
        "options",
        "route",
        "stream",
        "stream_cls",
    )

    def __init__(
        self,
        client: Any,
        base_request: Callable[..., Any],
        base_process: Callable[..., Any],
        cast_to: Any,
        options: Any,
        *,
        stream: bool,
        stream_cls: Any,
        route: str,
        is_async: bool,
        observe: bool = True,
    ) -> None:
        self.client = client
        self._base_request = base_request
        self._base_process = base_process
        self.cast_to = cast_to
        self.options = options
        self.stream = stream
        self.stream_cls = stream_cls
        self.route = route
        self.operation = OPERATION_FOR_ROUTE.get(route, route.strip("/").split("/", 1)[0] or "unknown")
        json_data = getattr(options, "json_data", None)
        body: dict[str, Any] = json_data if isinstance(json_data, dict) else {}
        extra = getattr(options, "extra_json", None)
        if isinstance(extra, dict) and extra:  # ``extra_body=``: sent merged into the JSON body
            body = {**body, **extra}
        self.body = body
        self.is_async = is_async
        self.observe = observe

    # ------------------------------------------------------------------ facts
    @property
    def method(self) -> str:
        """HTTP method, upper case."""
        return str(getattr(self.options, "method", "post")).upper()

    @property
    def api_key(self) -> str:
        """The client's API key ("" when it authenticates otherwise)."""
        key = getattr(self.client, "api_key", "")
        return key if isinstance(key, str) else ""

    @property
    def server(self) -> tuple[str | None, int | None]:
        """Host and port of the client's base URL (parsed once per URL object of the client)."""
        client = self.client
        try:
            url = client.base_url
        except Exception:
            return None, None
        cached = getattr(client, "_middleware_server", None)
        if cached is not None and cached[0] is url:
            return cached[1]  # type: ignore[no-any-return]
        try:
            server: tuple[str | None, int | None] = (url.host, url.port)
        except Exception:
            server = (None, None)
        try:
            client._middleware_server = (url, server)
        except Exception:
            pass
        return server

    @property
    def headers(self) -> dict[str, str]:
        """Extra request headers given for this request (never the client's default headers)."""
        headers = getattr(self.options, "headers", None)
        if not isinstance(headers, Mapping) or not headers:
            return {}
        return {k: v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)}

    def caller_chose_timeout(self) -> bool:
        """True when the caller set a timeout on the request or on the client."""
        timeout = getattr(self.options, "timeout", None)
        return not compat.is_not_given(timeout) or getattr(self.client, "timeout", None) != compat.DEFAULT_TIMEOUT

    def timeout(self) -> Any | None:
        """The request's own timeout, None when not given."""
        timeout = getattr(self.options, "timeout", None)
        return None if compat.is_not_given(timeout) else timeout

    @property
    def wants_raw_response(self) -> bool:
        """True on ``with_raw_response`` / ``with_streaming_response`` paths."""
        headers = getattr(self.options, "headers", None)
        if not isinstance(headers, Mapping) or not headers:
            return False
        raw = _RAW_HEADER
        return any(isinstance(k, str) and k.lower() == raw for k in headers)

    def can_force_stream(self) -> bool:
        """Only the plain ``create`` path of chat is sent as a stream (not raw-response paths, not ``parse()``)."""
        if self.operation != "chat" or self.stream or self.cast_to is not ChatCompletion:
            return False
        if not compat.is_not_given(getattr(self.options, "post_parser", None)):
            return False
        return not self.wants_raw_response

    # ------------------------------------------------------------------ derived requests
    def with_options(self, *, body: dict[str, Any] | None = None, idle_timeout: tuple[float, float] | None = None
                     ) -> Any:
        """Attempt options: the SDK's retries off (the pipeline's loop owns them), body and timeout changes."""
        update: dict[str, Any] = {"max_retries": 0}
        if body is not None:
            update["json_data"] = body
        if idle_timeout is not None:
            update["timeout"] = compat.idle_timeout(*idle_timeout)
        return self.options.model_copy(update=update)

    def as_forced_stream(self, body: dict[str, Any]) -> SdkRequest:
        """This non-streamed chat request sent as a stream (the pipeline reassembles the completion)."""
        stream_cls = plain_stream_class(ChatCompletionChunk, is_async=self.is_async)
        options = self.options.model_copy(update={"json_data": body})
        return self._derive(options, stream=True, stream_cls=stream_cls, cast_to=self.cast_to, observe=True)

    def continuation(self, body: dict[str, Any]) -> SdkRequest:
        """A chat request that continues a broken stream (observed by the original stream's guard)."""
        options = self.options.model_copy(update={"json_data": body, "headers": self._headers_without_raw(),
                                                  "method": "post", "url": "/chat/completions"})
        stream_cls = plain_stream_class(ChatCompletionChunk, is_async=self.is_async)
        return self._derive(options, stream=True, stream_cls=stream_cls, cast_to=ChatCompletion, observe=False,
                            route="/chat/completions")

    def responses_resume(self, response_id: str, starting_after: int) -> SdkRequest:
        """``GET /responses/{id}?stream=true&starting_after=N`` for a background Responses stream."""
        from openai.types.responses import Response, ResponseStreamEvent

        options = self.options.model_copy(update={
            "method": "get", "url": f"/responses/{response_id}", "json_data": None,
            "params": {"stream": True, "starting_after": starting_after}, "headers": self._headers_without_raw(),
        })
        stream_cls = plain_stream_class(ResponseStreamEvent, is_async=self.is_async)
        return self._derive(options, stream=True, stream_cls=stream_cls, cast_to=Response, observe=False,
                            route="/responses/{response_id}")

    def _headers_without_raw(self) -> dict[str, str]:
        raw = compat.RAW_RESPONSE_HEADER.lower()
        return {k: v for k, v in self.headers.items() if k.lower() != raw}

    def _derive(self, options: Any, *, stream: bool, stream_cls: Any, cast_to: Any, observe: bool,
                route: str | None = None) -> SdkRequest:
        return SdkRequest(
            self.client, self._base_request, self._base_process, cast_to, options, stream=stream,
            stream_cls=stream_cls, route=route or self.route, is_async=self.is_async, observe=observe,
        )

    # ------------------------------------------------------------------ sending
    def _stream_cls_for_result(self) -> Any:
        if not self.stream or not self.observe:
            return self.stream_cls
        guarded = guarded_stream_class(self.stream_cls, is_async=self.is_async)
        return guarded if guarded is not None else self.stream_cls

    def _finish(self, capture: Capture, observer: Any) -> Sent:
        response = capture.response
        if response is None:  # a subclass's response hook bypassed ours: nothing to parse
            raise MiddlewareError("the SDK handed no response to the middleware (a response hook bypassed it)")
        if observer is not None and self.stream:
            put_observer(response, observer)
        return Sent(None, response.headers, response.status_code, response)

    def _parse_error(self, exc: Exception, response: Any) -> MalformedResponse:
        try:
            text = response.text
        except Exception:
            text = ""
        key = self.api_key
        if len(key) >= 8 and key in text:  # some gateways echo the request's credentials: never in our errors
            text = text.replace(key, "***")
        excerpt = text[:_EXCERPT_CHARS]
        request_id = response.headers.get("x-request-id")
        return MalformedResponse(
            f"the upstream answered {response.status_code} with a body that could not be parsed "
            f"({type(exc).__name__}); {len(text)} characters, starting {excerpt[:60]!r}",
            request=response.request, status_code=response.status_code, request_id=request_id, excerpt=excerpt,
        )

    def send(self, options: Any, observer: Any = None) -> Sent:
        """Send one attempt (sync); the SDK's own exceptions propagate unchanged."""
        capture = Capture()
        self._base_request(capture, options, stream=self.stream, stream_cls=None)
        sent = self._finish(capture, observer)
        try:
            sent.result = self._base_process(
                cast_to=self.cast_to, options=capture.options, response=capture.response, stream=self.stream,
                stream_cls=self._stream_cls_for_result(), retries_taken=capture.retries_taken,
            )
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._parse_error(exc, capture.response) from exc
        return sent

    async def asend(self, options: Any, observer: Any = None) -> Sent:
        """Send one attempt (async)."""
        capture = Capture()
        await self._base_request(capture, options, stream=self.stream, stream_cls=None)
        sent = self._finish(capture, observer)
        try:
            sent.result = await self._base_process(
                cast_to=self.cast_to, options=capture.options, response=capture.response, stream=self.stream,
                stream_cls=self._stream_cls_for_result(), retries_taken=capture.retries_taken,
            )
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._parse_error(exc, capture.response) from exc
        return sent


def read_json_body(raw: Any) -> Mapping[str, Any] | None:
    """The JSON object of a response body already read, else None (never raises, never reads)."""
    try:
        data = json.loads(raw.content)  # raises when the body was not read (it belongs to the caller)
    except Exception:
        return None
    return data if isinstance(data, Mapping) else None
