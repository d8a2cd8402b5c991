"""The HTTP library the installed openai SDK is built on (httpx2 from 3.x, httpx before), for tests
that talk HTTP next to the SDK (event hooks, raw requests)."""

from __future__ import annotations

import importlib
from typing import Any

import openai

SDK_MAJOR = int(openai.__version__.split(".", 1)[0])
http: Any = importlib.import_module("httpx2" if SDK_MAJOR >= 3 else "httpx")


def default_http_client(**kwargs: Any) -> Any:
    """The SDK's default HTTP client (``DefaultHttpx2Client`` on 3.x, ``DefaultHttpxClient`` before)."""
    cls = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
    return cls(**kwargs)
