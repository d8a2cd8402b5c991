"""The drop-in facade: ``protect(client)`` returns a client that *is* an ``OpenAI`` / ``AsyncOpenAI``.

The protected client is a copy of the caller's client (sharing its HTTP connection pool) whose
class is a subclass of the caller's class; its routed requests (chat completions, Responses,
embeddings) run through a :class:`~middleware.pipeline.Pipeline`, on every path (``create``,
``with_raw_response``, ``with_streaming_response``, ``stream()``, ``parse()``) and on clients
derived with ``with_options()`` / ``copy()``. Everything else passes through untouched. How the
SDK is hooked is the adapter's business (``middleware.sdk``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from openai import AsyncOpenAI, OpenAI

from . import sdk
from .config import Config
from .pipeline import Pipeline
from .telemetry.recorder import Recorder

ClientT = TypeVar("ClientT", OpenAI, AsyncOpenAI)


def build_pipeline(config: Config | None = None, *, recorder: Recorder | None = None) -> Pipeline:
    """A pipeline for ``config`` (``Config.from_env()`` when None) recording to ``recorder`` (a new one when None)."""
    cfg = config if config is not None else Config.from_env()
    rec = recorder or Recorder(capture_content=cfg.capture_content, model_label_cap=cfg.model_label_cap)
    return Pipeline(cfg, rec)


def protect(
    client: ClientT,
    config: Config | None = None,
    *,
    recorder: Recorder | None = None,
    pipeline: Pipeline | None = None,
) -> ClientT:
    """Return a protected client that behaves like ``client`` for every attribute.

    ``isinstance(protect(c), type(c))`` holds. The original client is not modified; the protected
    one shares its HTTP connection pool. Without ``config`` the configuration is read from the
    ``MIDDLEWARE_*`` environment variables (``Config.from_env()``). Pass one ``pipeline`` to several
    clients to share one limiter, retry budget and predictor between them.
    """
    if not sdk.is_client(client):
        raise TypeError(f"protect() takes an openai.OpenAI or openai.AsyncOpenAI client, not {type(client).__name__}")
    if pipeline is None:
        pipeline = build_pipeline(config, recorder=recorder)
    protected: ClientT = sdk.protected_copy(client, pipeline)
    return protected


def pipeline_of(client: Any) -> Pipeline:
    """The pipeline of a protected client (raises TypeError for an unprotected one)."""
    pipeline = sdk.pipeline_attached(client)
    if not isinstance(pipeline, Pipeline):
        raise TypeError("not a protected client: use middleware.protect(client)")
    return pipeline


__all__ = ["build_pipeline", "pipeline_of", "protect"]
