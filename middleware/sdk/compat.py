"""What differs between the ``openai`` majors (1.x, 2.x, 3.x) that the rest of the code may need.

The SDK is built on ``httpx`` up to 2.x and on ``httpx2`` from 3.x (which also accepts a legacy
``httpx`` client). Exception classes of whichever HTTP libraries are loaded are looked up when
needed, so a library imported after the middleware is still recognised.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

import openai
from openai import _constants as _sdk_constants

SDK_VERSION: str = openai.__version__


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


SDK_VERSION_INFO: tuple[int, ...] = _version_tuple(SDK_VERSION)
SDK_MAJOR: int = SDK_VERSION_INFO[0]

# The HTTP library the SDK is built on (httpx2 from 3.x, httpx before).
_http: Any = importlib.import_module("httpx2" if SDK_MAJOR >= 3 else "httpx")

HTTP_LIBRARY: str = _http.__name__
RAW_RESPONSE_HEADER: str = _sdk_constants.RAW_RESPONSE_HEADER
OVERRIDE_CAST_TO_HEADER: str = _sdk_constants.OVERRIDE_CAST_TO_HEADER
DEFAULT_TIMEOUT: Any = _sdk_constants.DEFAULT_TIMEOUT


def _loaded_http_modules() -> tuple[Any, ...]:
    mods = [_http]
    for name in ("httpx", "httpx2"):
        mod = sys.modules.get(name)
        if mod is not None and mod not in mods:
            mods.append(mod)
    return tuple(mods)


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for mod in _loaded_http_modules():
        for name in names:
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
                found.append(cls)
    return tuple(found)


def timeout_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "no bytes in time": the SDK's, the HTTP libraries' and the builtin."""
    return (openai.APITimeoutError, TimeoutError, *_classes("TimeoutException"))


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "could not reach the server or the connection failed"."""
    return (openai.APIConnectionError, ConnectionError, *_classes("ConnectError", "CloseError"))


def broken_stream_errors() -> tuple[type[BaseException], ...]:
    """HTTP-library exceptions raised when a response body breaks off mid-way (1.x/2.x do not wrap them)."""
    return _classes("RemoteProtocolError", "ReadError", "WriteError")


def transport_errors() -> tuple[type[BaseException], ...]:
    """Any HTTP-library transport failure."""
    return _classes("TransportError")


def http_status_errors() -> tuple[type[BaseException], ...]:
    """The HTTP libraries' status errors (``raise_for_status``)."""
    return _classes("HTTPStatusError")


def is_sdk_headers(value: object) -> bool:
    """True for an HTTP library's ``Headers`` (``multi_items()`` yields lower-cased names in one pass)."""
    cls = type(value)
    return cls.__name__ == "Headers" and cls.__module__.split(".", 1)[0] in ("httpx", "httpx2")


def header_items_with_prefix(headers: object, prefix: str) -> list[tuple[str, str]] | None:
    """``(lower-case name, value)`` of the HTTP library's headers whose name starts with ``prefix`` (lower case),
    decoding only those; ``None`` when ``headers`` is not the library's ``Headers``.

    ``multi_items()`` decodes every name and value of the response; this runs on every response and wants
    six of them, so it reads the library's ``(raw name, lower-case name, value)`` list directly.
    """
    if not is_sdk_headers(headers):
        return None
    items = getattr(headers, "_list", None)
    if not isinstance(items, list):
        return [(k, v) for k, v in headers.multi_items() if k.startswith(prefix)]  # type: ignore[attr-defined]
    wanted = prefix.encode("ascii")
    encoding: str = headers.encoding  # type: ignore[attr-defined]
    return [(name.decode(encoding), value.decode(encoding)) for _, name, value in items if name.startswith(wanted)]


def idle_timeout(read_seconds: float, connect_seconds: float) -> Any:
    """A timeout of the SDK's HTTP library: ``read_seconds`` without bytes counts as a stall."""
    return _http.Timeout(read_seconds, connect=connect_seconds)


def is_not_given(value: object) -> bool:
    """True for the SDK's "argument not given" sentinel."""
    return isinstance(value, openai.NotGiven)


def default_http_client(**kwargs: Any) -> Any:
    """The SDK's default HTTP client class (``DefaultHttpx2Client`` on 3.x, ``DefaultHttpxClient`` before)."""
    cls = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
    return cls(**kwargs)


def response_of(exc: BaseException) -> Any | None:
    """The HTTP response an exception carries (SDK status errors, HTTP-library status errors), else None."""
    if isinstance(exc, openai.APIStatusError):
        return exc.response
    if isinstance(exc, http_status_errors()):
        return getattr(exc, "response", None)
    return None


def headers_of(exc: BaseException) -> Mapping[str, str] | None:
    """Response headers carried by an exception, else None."""
    response = response_of(exc)
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None
