"""The price table: data shipped in ``prices.json``, extended or overridden by a user file or mapping.

Shape (JSON or YAML; the user file has the same shape, every top-level key optional)::

    {"schema_version": 1, "reviewed": "2026-11-30", "batch_discount": 0.5,
     "models": {"gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00, "max_output_tokens": 16384}},
     "aliases": {"o1-preview": "o1"}}

Prices are USD per million tokens. ``cached_input`` defaults to ``input``, ``reasoning`` to ``output``
(OpenAI bills reasoning tokens as output); a model without ``output`` is input-only (embeddings).
A user entry replaces the shipped entry of the same name as a whole; aliases are merged.

Lookup (:meth:`PriceTable.resolve`): the exact name, then an explicit alias, then the same two for the
name without a dated snapshot suffix (``-2024-08-06`` or ``-0613``). Nothing else: no prefix matching,
so ``gpt-4o-mini-tts`` is unpriced rather than priced as ``gpt-4o-mini``, and an unknown model is never
guessed.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from middleware.errors import ConfigError

SCHEMA_VERSION = 1
PER_MILLION = 1_000_000.0
_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
_ENTRY_KEYS = frozenset({"input", "cached_input", "output", "reasoning", "max_output_tokens", "batch_discount", "note"})
_TOP_KEYS = frozenset({"schema_version", "reviewed", "currency", "unit", "source", "batch_discount", "models",
                       "aliases"})
_RESOLVE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class ModelPrice:
    """Prices of one model entry, USD per million tokens."""

    name: str
    input: float
    cached_input: float | None = None
    output: float | None = None
    reasoning: float | None = None
    max_output_tokens: int | None = None
    batch_discount: float = 0.5

    @property
    def cached_input_rate(self) -> float:
        """Cached input price (the input price when none is published)."""
        return self.input if self.cached_input is None else self.cached_input

    @property
    def reasoning_rate(self) -> float | None:
        """Reasoning price (the output price unless priced separately)."""
        return self.output if self.reasoning is None else self.reasoning


@dataclass(frozen=True)
class PriceTable:
    """Model prices and aliases; ``origins`` lists where they came from (shipped file first)."""

    models: Mapping[str, ModelPrice]
    aliases: Mapping[str, str]
    reviewed: str
    batch_discount: float
    origins: tuple[str, ...]
    sources: tuple[str, ...] = ()
    _cache: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def resolve(self, model: str) -> str | None:
        """The entry a model name is priced as, or None (unpriced)."""
        cached = self._cache.get(model, "")
        if cached != "":
            return cached
        found = self._resolve(model)
        with self._lock:
            if len(self._cache) < _RESOLVE_CACHE_SIZE:
                self._cache[model] = found
        return found

    def _resolve(self, model: str) -> str | None:
        name = model.strip().lower()
        dated = _DATED.match(name)
        for candidate in (name, dated.group("base") if dated else None):
            if candidate is None:
                continue
            if candidate in self.models:
                return candidate
            target = self.aliases.get(candidate)
            if target is not None:
                return target
        return None

    def lookup(self, model: str) -> ModelPrice | None:
        """The prices of a model, or None when it is unpriced."""
        name = self.resolve(model)
        return None if name is None else self.models[name]

    def merged(self, data: Mapping[str, Any], origin: str) -> PriceTable:
        """This table extended or overridden by ``data`` (a user file's content); raises ConfigError."""
        over = _parse(data, origin, shipped=False)
        discount = over.batch_discount if "batch_discount" in data else self.batch_discount
        models = dict(self.models)
        for name, entry in over.models.items():
            models[name] = entry if "batch_discount" in _entry_data(data, name) else _with_discount(entry, discount)
        aliases = {**self.aliases, **over.aliases}
        _check_aliases(aliases, models, origin)
        return PriceTable(models, aliases, over.reviewed or self.reviewed, discount, (*self.origins, origin),
                          self.sources + over.sources)


def _entry_data(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    models = data.get("models") or {}
    for key, value in models.items():
        if isinstance(key, str) and key.strip().lower() == name and isinstance(value, Mapping):
            return value
    return {}


def _with_discount(entry: ModelPrice, discount: float) -> ModelPrice:
    return ModelPrice(entry.name, entry.input, entry.cached_input, entry.output, entry.reasoning,
                      entry.max_output_tokens, discount)


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a non-negative number of USD per million tokens, not {value!r}")
    return float(value)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{where} must be a fraction in [0, 1) (0.5 = half price), not {value!r}")
    return float(value)


def _parse_entry(name: str, raw: Any, origin: str, discount: float) -> ModelPrice:
    where = f"{origin}: models.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of prices, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} "
                          f"(allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    if "input" not in raw:
        raise ConfigError(f"{where}: 'input' is required")
    optional = {k: _price(raw[k], f"{where}.{k}") if raw.get(k) is not None else None
                for k in ("cached_input", "output", "reasoning")}
    if optional["output"] is None and optional["reasoning"] is not None:
        raise ConfigError(f"{where}: 'reasoning' needs an 'output' price")
    max_out = raw.get("max_output_tokens")
    if max_out is not None and (isinstance(max_out, bool) or not isinstance(max_out, int) or max_out <= 0):
        raise ConfigError(f"{where}.max_output_tokens must be a positive integer, not {max_out!r}")
    own = raw.get("batch_discount")
    return ModelPrice(
        name, _price(raw["input"], f"{where}.input"), optional["cached_input"], optional["output"],
        optional["reasoning"], max_out, discount if own is None else _fraction(own, f"{where}.batch_discount"),
    )


def _parse(data: Any, origin: str, *, shipped: bool) -> PriceTable:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: a price file must be a mapping at the top level, not {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(_TOP_KEYS))})")
    version = data.get("schema_version", None if not shipped else "missing")
    if version is not None and version != SCHEMA_VERSION:
        raise ConfigError(f"{origin}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    reviewed = data.get("reviewed", "")
    if reviewed or shipped:
        try:
            date.fromisoformat(str(reviewed))
        except ValueError:
            raise ConfigError(f"{origin}: reviewed must be a date (YYYY-MM-DD), not {reviewed!r}") from None
    discount = _fraction(data.get("batch_discount", 0.5), f"{origin}: batch_discount")
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigError(f"{origin}: models must be a mapping of model name to prices")
    models: dict[str, ModelPrice] = {}
    for raw_name, raw in raw_models.items():
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise ConfigError(f"{origin}: model names must be non-empty strings, not {raw_name!r}")
        name = raw_name.strip().lower()
        models[name] = _parse_entry(name, raw, origin, discount)
    raw_aliases = data.get("aliases", {})
    if not isinstance(raw_aliases, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip() for k, v in raw_aliases.items()
    ):
        raise ConfigError(f"{origin}: aliases must map model names to model names (strings)")
    aliases = {k.strip().lower(): v.strip().lower() for k, v in raw_aliases.items()}
    source = data.get("source", ())
    sources = (source,) if isinstance(source, str) else tuple(str(s) for s in source or ())
    return PriceTable(models, aliases, str(reviewed), discount, (origin,), sources)


def _check_aliases(aliases: Mapping[str, str], models: Mapping[str, ModelPrice], origin: str) -> None:
    for alias, target in aliases.items():
        if target not in models:
            raise ConfigError(f"{origin}: alias {alias!r} points to {target!r}, which has no price entry")


def read_price_file(path: str | Path) -> dict[str, Any]:
    """The content of a JSON or YAML price file; ConfigError naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the price file: {exc.strerror or exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{p}: YAML price files need PyYAML (pip install pyyaml), or use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a price file must be a mapping at the top level, not {type(data).__name__}")
    return data


_SHIPPED: PriceTable | None = None
_SHIPPED_LOCK = threading.Lock()


def shipped_prices() -> PriceTable:
    """The table shipped in the package (parsed once per process)."""
    global _SHIPPED
    with _SHIPPED_LOCK:
        if _SHIPPED is None:
            origin = "middleware/cost/prices.json"
            data = json.loads(resources.files("middleware.cost").joinpath("prices.json").read_text("utf-8"))
            table = _parse(data, origin, shipped=True)
            _check_aliases(table.aliases, table.models, origin)
            _SHIPPED = table
        return _SHIPPED


def load_prices(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> PriceTable:
    """The shipped table, then a user file (JSON or YAML), then an in-code mapping of the same shape."""
    table = shipped_prices()
    if path is not None and str(path) != "":
        table = table.merged(read_price_file(path), str(path))
    if overrides:
        table = table.merged(overrides, "CostConfig.prices")
    return table
