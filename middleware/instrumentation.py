"""The OpenTelemetry instrumentor: ``opentelemetry-instrument python app.py`` protects and observes an unmodified app.

Registered under the ``opentelemetry_instrumentor`` entry point as ``llm_middleware``, so the
``opentelemetry-instrument`` command (with ``opentelemetry-distro``, which configures the SDK providers and
exporters from the ``OTEL_*`` variables) turns it on with every other installed instrumentation, and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=llm_middleware`` leaves it off. Turned on, it calls
:func:`middleware.install`: every ``openai`` client the program constructs afterwards is protected, with one
pipeline recording into the global OpenTelemetry providers.

Settings come from the environment: ``MIDDLEWARE_*`` (``Config.from_env()``); ``/metrics`` is served only when
``MIDDLEWARE_METRICS_ADDR`` is set (a port bound in every instrumented process, workers included, would surprise:
the OTel exporters already carry the metrics). ``instrument(config=..., pipeline=..., tracer_provider=...,
meter_provider=...)`` overrides them in code. A setting that is not allowed is logged as an error and leaves the
program unprotected rather than stopping it or the other instrumentations; a ``/metrics`` port that cannot be
bound is logged and protection stays on.

This is the only module that imports ``opentelemetry.instrumentation`` (the ``otel`` extra); ``import middleware``
does not load it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from prometheus_client import start_http_server

from .client import build_pipeline
from .config import Config, read_env
from .errors import ConfigError
from .install import install, uninstall
from .pipeline import Pipeline
from .telemetry.recorder import Recorder

log = logging.getLogger("middleware")

ENTRY_POINT = "llm_middleware"
"""The instrumentor's name for ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
OPENAI_REQUIREMENT = "openai>=1.66,<4"
"""The supported ``openai`` releases, as ``pyproject.toml`` requires them."""
METRICS_ADDR_ENV = "MIDDLEWARE_METRICS_ADDR"


class MiddlewareInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Protection and telemetry for every ``openai`` client constructed after ``instrument()``."""

    pipeline: Pipeline | None = None
    """The installed pipeline while instrumented."""
    metrics_port: int | None = None
    """The port ``/metrics`` is served on (when ``MIDDLEWARE_METRICS_ADDR`` is set)."""
    _metrics_server: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The ``openai`` releases the middleware supports."""
        return (OPENAI_REQUIREMENT,)

    def _instrument(self, **kwargs: Any) -> None:
        pipeline: Pipeline | None = kwargs.get("pipeline")
        try:
            if pipeline is None:
                given: Config | None = kwargs.get("config")
                config = given if given is not None else Config.from_env()
                recorder = Recorder(tracer_provider=kwargs.get("tracer_provider"),
                                    meter_provider=kwargs.get("meter_provider"),
                                    capture_content=config.capture_content, model_label_cap=config.model_label_cap)
                pipeline = build_pipeline(config, recorder=recorder)
            address = read_env(METRICS_ADDR_ENV) if os.environ.get(METRICS_ADDR_ENV, "").strip() else None
        except ConfigError as exc:
            _report(f"llm_middleware instrumentation left off (openai clients are not protected): {exc}")
            return
        self.pipeline = install(pipeline=pipeline)
        if address is not None:
            host, port = address
            try:
                self._metrics_server, _thread = start_http_server(port, addr=host,
                                                                  registry=self.pipeline.recorder.registry)
                self.metrics_port = int(self._metrics_server.server_address[1])
            except OSError as exc:
                log.error("llm_middleware: cannot serve /metrics on %s:%s (%s); protection and OTel telemetry "
                          "stay on", host, port, exc.strerror or exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()
        self.pipeline = None
        server, self._metrics_server, self.metrics_port = self._metrics_server, None, None
        if server is not None:
            server.shutdown()
            server.server_close()


__all__ = ["ENTRY_POINT", "OPENAI_REQUIREMENT", "MiddlewareInstrumentor"]


def _report(message: str) -> None:
    """A start-up error of the instrumentor: logged, and on stderr too when no handler of the application would
    show it (the ``middleware`` logger has only a NullHandler; a program run by ``opentelemetry-instrument``
    would otherwise start unprotected without a word)."""
    log.error(message)
    shown = False
    logger: logging.Logger | None = log
    while logger is not None and not shown:
        shown = any(not isinstance(h, logging.NullHandler) for h in logger.handlers)
        logger = logger.parent if logger.propagate else None
    if not shown:
        print(message, file=sys.stderr)
