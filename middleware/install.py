"""Process-wide protection: ``install()`` protects every ``openai`` client constructed from then on.

``protect(client)`` needs the code that builds the client. Frameworks and SDKs often build their own
``openai.OpenAI`` / ``openai.AsyncOpenAI`` from parameters, deep inside; ``install()`` reaches those too.
From the call on, every client constructed anywhere in the process (subclasses such as ``AzureOpenAI``
included) is protected, and all of them share one pipeline: one limiter (one budget per API key and model
across the process), one retry budget and circuit breaker, one output predictor, one recorder.

- Clients constructed *before* ``install()`` are left as they are; protect one with ``protect(client)``
  (``protect(client, pipeline=install())`` shares the installed pipeline). Clients they derive later with
  ``with_options()`` / ``copy()`` are new clients, and protected.
- ``uninstall()`` restores the ``openai`` classes exactly; clients constructed while installed keep their
  protection (a client cannot lose its limiter in the middle of a call).
- Without a config, ``install()`` reads ``MIDDLEWARE_*`` variables (``Config.from_env()``); an explicit config
  or pipeline wins. Both functions are idempotent and thread-safe. ``import middleware`` patches nothing.

How the SDK is hooked is the adapter's business (``middleware.sdk.install_protection``).
"""

from __future__ import annotations

import logging
import threading

from . import sdk
from .client import build_pipeline
from .config import Config
from .pipeline import Pipeline

log = logging.getLogger("middleware")

_LOCK = threading.Lock()


def install(config: Config | None = None, *, pipeline: Pipeline | None = None) -> Pipeline:
    """Protect every ``openai.OpenAI`` / ``openai.AsyncOpenAI`` constructed from now on; return their pipeline.

    ``pipeline`` wins over ``config``; without either the configuration comes from ``MIDDLEWARE_*``
    variables. Calling it again without arguments (or with the installed config or pipeline) changes
    nothing and returns the installed pipeline. With another config or pipeline, the new pipeline serves
    clients constructed from then on (a warning says so: clients constructed earlier keep the previous one).
    """
    with _LOCK:
        current = sdk.installed_pipeline()
        if isinstance(current, Pipeline) and (
            pipeline is current or (pipeline is None and (config is None or config == current.config))
        ):
            return current
        if pipeline is None:
            pipeline = build_pipeline(config)
        if current is not None:
            log.warning("middleware.install: already installed with another pipeline; clients constructed from "
                        "now on use the new one, clients constructed earlier keep theirs")
        sdk.install_protection(pipeline)
        return pipeline


def uninstall() -> None:
    """Stop protecting new clients and restore the ``openai`` client classes exactly (idempotent).

    Clients constructed while installed keep their protection; new ones are plain ``openai`` clients.
    """
    with _LOCK:
        if not sdk.uninstall_protection():
            log.warning("middleware.uninstall: another library wrapped an openai client's __init__ after "
                        "install(); the middleware's hook stays in its chain, inert")


def installed() -> Pipeline | None:
    """The pipeline of clients constructed now, None when ``install()`` is not in effect."""
    current = sdk.installed_pipeline()
    return current if isinstance(current, Pipeline) else None


__all__ = ["install", "installed", "uninstall"]
