"""Log output of the ``middleware`` commands: ``--log-format json|text`` and ``--log-level LEVEL``.

The library installs no handler and sets no level (a ``NullHandler`` only, see ``middleware/__init__.py``);
only the commands call :func:`configure`, which writes the records of the ``middleware`` logger (and its
children) to stderr from the level asked. Without either option a command writes none, as before.

- ``json``: one JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and every
  field the record carries (``trace_id``, ``span_id``, ``llm_middleware.event`` and the span attribute names,
  see ``middleware/telemetry/logs.py``), ready for a log pipeline.
- ``text``: ``time level logger: message`` followed by the same fields as ``key=value``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

LOGGER_NAME = "middleware"
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_FORMAT = "text"
DEFAULT_LEVEL = "INFO"
# The attributes every LogRecord has: anything else on a record is a field given with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given to a record with ``extra=`` (its structured part), in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values JSON cannot hold are written as strings)."""
        data: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        data.update(record_fields(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` (values with spaces or quotes are JSON-quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text (plus the traceback, if any)."""
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"]
        for key, value in record_fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if not text or any(c in text for c in ' "=\n'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (told apart so that configuring again replaces it)."""


def _level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level: expected one of {', '.join(LOG_LEVELS)}")
    return level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format`` and ``--log-level`` to a command's parser (both default to None: no log output)."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help=f"write the middleware's log records to stderr as json lines or text "
                             f"(default {DEFAULT_FORMAT} when --log-level is given; none without either)")
    parser.add_argument("--log-level", type=_level, default=None, metavar="LEVEL",
                        help=f"lowest level written: {', '.join(LOG_LEVELS)} "
                             f"(default {DEFAULT_LEVEL} when --log-format is given)")


def configure(log_format: str | None, log_level: str | None, stream: TextIO | None = None) -> logging.Handler | None:
    """Write the ``middleware`` logger's records to ``stream`` (stderr) when a format or a level is given.

    Replaces a handler installed by an earlier call; returns the handler, or None when neither is given.
    """
    if log_format is None and log_level is None:
        return None
    fmt = log_format or DEFAULT_FORMAT
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    level = _level(log_level or DEFAULT_LEVEL)
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _CliHandler)]:
        logger.removeHandler(old)
    handler = _CliHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def split_global(argv: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """Take leading ``--log-format F`` / ``--log-level L`` (or ``--opt=value``) off a command line.

    Returns (format, level, the rest); raises ``ValueError`` with one line for a missing or wrong value.
    """
    values: dict[str, str | None] = {"--log-format": None, "--log-level": None}
    rest = list(argv)
    while rest and rest[0].split("=", 1)[0] in values:
        option, eq, value = rest.pop(0).partition("=")
        if not eq:
            if not rest or rest[0].startswith("-"):
                raise ValueError(f"{option} needs a value")
            value = rest.pop(0)
        values[option] = value
    fmt, level = values["--log-format"], values["--log-level"]
    if fmt is not None and fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    if level is not None:
        try:
            level = _level(level)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--log-level: {exc}") from None
    return fmt, level, rest
