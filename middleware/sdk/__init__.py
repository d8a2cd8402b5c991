"""The SDK adapter: the ONLY code that names private parts of ``openai``, ``httpx`` or ``httpx2``.

Supported: ``openai`` 1.x (from 1.66), 2.x and 3.x. Where the majors differ (the funnel's
signature, ``Stream`` constructors, ``httpx`` vs ``httpx2`` and their exceptions, the default
HTTP client class) the adapter hides the difference behind this small interface:

- :func:`protected_copy`, :func:`protected_class`, :func:`unprotected_class`, :func:`pipeline_attached`,
  :func:`is_client`, :func:`is_async_client`, :func:`new_request` — protected clients and requests;
- :func:`install_protection`, :func:`uninstall_protection`, :func:`installed_pipeline` — every client
  constructed while installed is protected (``middleware.install``);
- :class:`SdkRequest` and :class:`Sent` — one request at the funnel, sent attempt by attempt;
- :func:`is_guarded`, :func:`observer_of` — guarded streams;
- ``compat`` — version facts, exception classes, timeouts.

A test (``tests/unit/test_sdk_boundary.py``) fails when any other module names a private SDK
attribute or imports a private SDK module.
"""

from . import compat
from .compat import SDK_MAJOR, SDK_VERSION
from .funnel import (
    PIPELINE_ATTR,
    CallRunner,
    install_protection,
    installed_pipeline,
    is_async_client,
    is_client,
    new_request,
    pipeline_attached,
    protected_class,
    protected_copy,
    uninstall_protection,
    unprotected_class,
)
from .requests import OPERATION_FOR_ROUTE, SdkRequest, Sent, read_json_body, route_of
from .streams import StreamDriver, is_guarded, observer_of

__all__ = [
    "OPERATION_FOR_ROUTE",
    "PIPELINE_ATTR",
    "SDK_MAJOR",
    "SDK_VERSION",
    "CallRunner",
    "SdkRequest",
    "Sent",
    "StreamDriver",
    "compat",
    "install_protection",
    "installed_pipeline",
    "is_async_client",
    "is_client",
    "is_guarded",
    "new_request",
    "observer_of",
    "pipeline_attached",
    "protected_class",
    "protected_copy",
    "read_json_body",
    "route_of",
    "uninstall_protection",
    "unprotected_class",
]
