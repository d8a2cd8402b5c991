"""The standard OpenTelemetry-to-Prometheus name translation, as one pure function per name kind.

This is what a metric sent as OTLP is called once it reaches Prometheus through the
OpenTelemetry Collector (``prometheus`` / ``prometheusremotewrite`` exporters) or Prometheus's own
OTLP receiver, with suffixes on (the default ``UnderscoreEscapingWithSuffixes`` strategy). Both
use ``github.com/prometheus/otlptranslator``, which implements the OpenTelemetry specification
"Prometheus and OpenMetrics Compatibility" (OTLP metric points to Prometheus):

Metric names (:func:`prometheus_metric_name`):

1. The name is split into tokens at every character outside ``[a-zA-Z0-9:]`` (so dots, dashes and
   runs of underscores all become one ``_``).
2. The unit is split at its first ``/``. Each side is trimmed; a side containing ``{`` or ``}``
   (an annotation such as ``{token}``) is dropped. The main side is mapped to its Prometheus word
   (``s`` -> ``seconds``, ``By`` -> ``bytes``, ``1`` -> nothing, ``%`` -> ``percent``; unknown
   units are kept), the per side to ``per_<singular>`` (``/s`` -> ``per_second``). Invalid
   characters in a unit become ``_``. ``{token}/s`` therefore gives ``per_second``.
3. The main unit is appended unless it already is one of the name's tokens (no ``_seconds_seconds``);
   the per unit is appended likewise.
4. Monotonic counters: every ``total`` token is removed and ``total`` appended.
5. Gauges whose unit is exactly ``1``: every ``ratio`` token is removed and ``ratio`` appended.
   Histograms, counters and up-down counters with unit ``1`` get no ``_ratio`` (otlptranslator's
   rule; the spec's general "1 -> ratio" is applied to gauges only).
6. Tokens are joined with ``_``; a name starting with a digit gets a leading ``_``.

Label names (:func:`prometheus_label_name`): every character outside ``[a-zA-Z0-9_]`` becomes ``_``
(one each: the translators do not collapse runs, although the spec text says they should); a
leading digit gets ``key_``, a single leading ``_`` gets ``key`` (``__`` is kept).
"""

from __future__ import annotations

import re
from typing import Literal

MetricKind = Literal["counter", "updowncounter", "histogram", "gauge"]

# UCUM units -> Prometheus words (otlptranslator's unitMap).
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tebibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
# The denominator of "x/y" units, singular (otlptranslator's perUnitMap).
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

_NAME_SEPARATORS = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_UNIT_CHARS = re.compile(r"[^a-zA-Z0-9:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def _clean_unit(unit: str) -> str:
    return re.sub(r"__+", "_", _INVALID_UNIT_CHARS.sub("_", unit)).removeprefix("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """(main, per) Prometheus unit words of an OTel unit, e.g. ``By/s`` -> ("bytes", "per_second")."""
    main_otel, _, per_otel = unit.partition("/")
    main_otel, per_otel = main_otel.strip(), per_otel.strip()
    main = _UNITS.get(main_otel, main_otel) if main_otel and not set("{}") & set(main_otel) else ""
    per = _PER_UNITS.get(per_otel, per_otel) if per_otel and not set("{}") & set(per_otel) else ""
    return _clean_unit(main), _clean_unit("per_" + per) if per else ""


def prometheus_unit(unit: str) -> str:
    """The Prometheus unit (UNIT metadata) of an OTel unit: ``s`` -> ``seconds``, ``{token}`` -> ``""``."""
    main, per = _unit_suffixes(unit)
    return "_".join(part for part in (main, per) if part).strip("_")


def prometheus_metric_name(name: str, unit: str, kind: MetricKind) -> str:
    """The Prometheus metric name of an OTel metric (for counters, with its ``_total``)."""
    tokens = [t for t in _NAME_SEPARATORS.split(name) if t]
    main, per = _unit_suffixes(unit)
    if main in tokens:
        main = ""
    per = "" if per == "per_" else per.removesuffix("_")
    if per in tokens:
        per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [suffix for suffix in (main, per) if suffix]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    if out[:1].isdigit():
        out = "_" + out
    if not out.strip("_"):
        raise ValueError(f"metric name {name!r} translates to nothing")
    return out


def prometheus_label_name(key: str) -> str:
    """The Prometheus label name of an OTel attribute key, e.g. ``gen_ai.request.model`` -> ``gen_ai_request_model``."""
    label = _INVALID_LABEL_CHARS.sub("_", key)
    if label[:1].isdigit():
        label = "key_" + label
    elif label.startswith("_") and not label.startswith("__"):
        label = "key" + label
    if not label.strip("_"):
        raise ValueError(f"attribute key {key!r} translates to no valid label name")
    return label
