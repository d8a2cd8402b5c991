"""Optional dependencies (extras): a clear error naming the extra to install when one is missing.

The runtime needs only ``openai``, ``tiktoken``, ``prometheus-client`` and ``opentelemetry-api``.
``setup_telemetry()`` needs the ``otel`` extra (OpenTelemetry SDK, OTLP exporter); the CLI's tables,
live display and progress bars need the ``cli`` extra (``rich``).
"""

from __future__ import annotations

import importlib.util

DIST = "llm-middleware"
OTEL = "otel"
CLI = "cli"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, what: str, extras: tuple[str, ...], missing: str) -> None:
        self.extras = extras
        self.missing = missing
        spec = f"{DIST}[{','.join(extras)}]"
        self.detail = f"needs the {missing!r} package: pip install '{spec}'"
        super().__init__(f"{what} {self.detail}", name=missing)


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(what: str, modules: dict[str, str], extras: tuple[str, ...]) -> None:
    """Raise :class:`MissingExtraError` unless every module (name -> distribution) is importable."""
    for module, dist in modules.items():
        if not available(module):
            raise MissingExtraError(what, extras, dist)


def require_rich(command: str) -> str | None:
    """For a CLI command: the one-line error when ``rich`` is missing, else None."""
    try:
        require(f"middleware {command}", {"rich": "rich"}, (CLI,))
    except MissingExtraError as exc:
        return f"middleware {command}: {exc.detail}"
    return None
