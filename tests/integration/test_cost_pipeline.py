"""Cost through the protected client, end to end: span, /metrics and an OTel metric reader agree with a cost
computed independently, from OpenAI's published prices (USD per 1M tokens, written out here) and the usage the
server reported.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from middleware import Config, StreamConfig, protect, tags
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder

M = 1_000_000
# Published standard-tier prices, USD per 1M tokens: (input, cached input, output).
PRICES = {
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "o4-mini": (1.10, 0.275, 4.40),
    "text-embedding-3-small": (0.02, None, None),
}


def expected_cost(model: str, usage: Any) -> float:
    """Cost by hand: uncached input, cached input and output (reasoning is output, billed at the output rate)."""
    inp, cached_price, out = PRICES[model]
    prompt = getattr(usage, "prompt_tokens", None) or getattr(usage, "input_tokens", 0)
    details = getattr(usage, "prompt_tokens_details", None) or getattr(usage, "input_tokens_details", None)
    cached = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    output = getattr(usage, "completion_tokens", None) or getattr(usage, "output_tokens", 0) or 0
    return ((prompt - cached) * inp + cached * (cached_price or inp) + output * (out or 0)) / M


class Kit:
    def __init__(self, config: Config) -> None:
        self.spans = InMemorySpanExporter()
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.registry = CollectorRegistry()
        recorder = Recorder(registry=self.registry, tracer_provider=tracer,
                            meter_provider=MeterProvider(metric_readers=[self.reader]))
        self.pipeline = Pipeline(config, recorder)

    def client(self, sim: Any) -> openai.OpenAI:
        return protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-cost"), pipeline=self.pipeline)

    def span_costs(self) -> list[float]:
        return [s.attributes[n.A_COST_USD] for s in self.spans.get_finished_spans()
                if s.parent is None and n.A_COST_USD in (s.attributes or {})]

    def prometheus_total(self, **labels: str) -> float:
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == n.COST_USD.prom_name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def otel_total(self, **attributes: str) -> float:
        total = 0.0
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == n.COST_USD.instrument_name:
                        for point in metric.data.data_points:
                            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                                total += point.value
        return total


def test_cost_of_every_kind_of_call_matches_published_prices(simulator: Any) -> None:
    kit = Kit(Config(streaming=StreamConfig(force_stream_above_tokens=None)))
    client = kit.client(simulator)
    expected: list[float] = []
    context = f"Context {uuid.uuid4().hex}: " + "the river carries stone and light " * 420  # > 1024 tokens

    # chat, twice with a long shared prefix: the second reports cached input tokens
    messages = [{"role": "system", "content": context}, {"role": "user", "content": "Summarise."}]
    for _ in range(2):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=40)
        expected.append(expected_cost("gpt-4o-mini", reply.usage))
    assert reply.usage is not None and reply.usage.prompt_tokens_details.cached_tokens >= 1024
    # a reasoning model: reasoning tokens are part of the output
    reasoning = client.chat.completions.create(model="o4-mini", messages=[{"role": "user", "content": "Think."}],
                                               max_completion_tokens=400)
    assert reasoning.usage.completion_tokens_details.reasoning_tokens > 0
    expected.append(expected_cost("o4-mini", reasoning.usage))
    # Responses
    response = client.responses.create(model="gpt-4.1-mini", input="Tell me about bridges.", max_output_tokens=60)
    expected.append(expected_cost("gpt-4.1-mini", response.usage))
    # embeddings
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a bridge", "a river"])
    expected.append(expected_cost("text-embedding-3-small", emb.usage))
    # a stream cut after 25 chunks and resumed: the broken request is charged its prompt and the 25 tokens it
    # delivered (the server reports no usage for it); the continuation its reported usage
    body: dict[str, Any] = {"model": "gpt-4.1-mini", "max_tokens": 200,
                            "messages": [{"role": "user", "content": f"Describe a bridge {uuid.uuid4().hex}."}]}
    plain = openai.OpenAI(base_url=simulator.base_url, api_key="k").chat.completions.create(
        **body, extra_headers={"x-sim-output-tokens": "60"})
    once = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-sim-output-tokens": "60", "x-sim-fault": "cut_after=25", "x-sim-fault-once": once}))
    usage_chunk = chunks[-1].usage
    assert usage_chunk is not None and usage_chunk.completion_tokens == 60 - 25
    broken = (plain.usage.prompt_tokens * 0.40 + 25 * 1.60) / M
    expected.append(broken + expected_cost("gpt-4.1-mini", usage_chunk))

    spans = kit.span_costs()
    assert spans == pytest.approx(expected, rel=1e-9)
    assert kit.prometheus_total() == pytest.approx(sum(expected), rel=1e-9)
    assert kit.otel_total() == pytest.approx(sum(expected), rel=1e-9)
    # by model as well
    mini = sum(expected[:2])
    assert kit.prometheus_total(**{n.L_MODEL: "gpt-4o-mini"}) == pytest.approx(mini, rel=1e-9)
    assert kit.otel_total(**{n.K_MODEL: "gpt-4o-mini"}) == pytest.approx(mini, rel=1e-9)


def test_tags_reach_the_cost_metric_and_the_span(simulator: Any) -> None:
    kit = Kit(Config())
    client = kit.client(simulator)
    with tags(team="search", feature="autocomplete"):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=20)
    cost = expected_cost("gpt-4o-mini", reply.usage)
    assert kit.prometheus_total(**{n.L_TEAM: "search", n.L_FEATURE: "autocomplete"}) == pytest.approx(cost)
    (span,) = [s for s in kit.spans.get_finished_spans() if s.parent is None]
    assert span.attributes[n.A_TAG_PREFIX + "team"] == "search"


def test_a_user_price_file_overrides_one_model(simulator: Any, tmp_path: Path, monkeypatch: Any) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"schema_version": 1, "reviewed": "2026-11-30", "models": {
        "gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0}}}))
    monkeypatch.setenv("MIDDLEWARE_PRICES_FILE", str(prices))
    kit = Kit(Config.from_env())
    client = kit.client(simulator)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=20)
    usage = reply.usage
    assert kit.span_costs() == pytest.approx([(usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / M])


def test_an_unknown_model_is_counted_unpriced_never_guessed(simulator: Any) -> None:
    kit = Kit(Config())
    client = kit.client(simulator)
    client.chat.completions.create(model="my-own-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    (span,) = [s for s in kit.spans.get_finished_spans() if s.parent is None]
    assert span.attributes[n.A_COST_UNPRICED] is True and n.A_COST_USD not in span.attributes
    unpriced = sum(s.value for f in kit.registry.collect() for s in f.samples
                   if s.name == n.UNPRICED_CALLS.prom_name)
    assert unpriced == 1
