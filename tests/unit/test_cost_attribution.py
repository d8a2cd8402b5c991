"""Attribution tags: the context manager, metadata, the allow-list, and the caps that bound labels."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from middleware.cost import CostConfig, CostServices, TagConfig, TagFolder, current_tags, sanitize, select_tags, tags
from middleware.errors import ConfigError
from middleware.telemetry import names as n
from middleware.telemetry.instruments import Instruments


class Folds:
    """Collects tag_folded events (the rest of the events protocol is not exercised here)."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()

    def tag_folded(self, key: str) -> None:
        self.keys[key] += 1

    def call_cost(self, *args: object) -> None: ...
    def call_unpriced(self, *args: object) -> None: ...
    def budget_decision(self, *args: object) -> None: ...
    def budget_state(self, *args: object) -> None: ...
    def budget_fallback(self, *args: object) -> None: ...


def test_tags_nest_inner_wins_and_are_restored() -> None:
    assert dict(current_tags()) == {}
    with tags(team="search", feature="autocomplete"):
        with tags(feature="ranking", end_user="u-17") as inner:
            assert dict(inner) == {"team": "search", "feature": "ranking", "end_user": "u-17"}
            with tags(team=None):
                assert dict(current_tags()) == {"feature": "ranking", "end_user": "u-17"}
        assert dict(current_tags()) == {"team": "search", "feature": "autocomplete"}
    assert dict(current_tags()) == {}


def test_tags_follow_asyncio_tasks_and_stay_out_of_other_threads() -> None:
    seen: dict[str, object] = {}

    async def task(name: str) -> None:
        with tags(feature=name):
            await asyncio.sleep(0.01)
            seen[name] = dict(current_tags())

    async def main() -> None:
        with tags(team="search"):
            await asyncio.gather(task("a"), task("b"))

    asyncio.run(main())
    assert seen == {"a": {"team": "search", "feature": "a"}, "b": {"team": "search", "feature": "b"}}
    with tags(team="search"):
        thread = threading.Thread(target=lambda: seen.update(thread=dict(current_tags())))
        thread.start()
        thread.join()
    assert seen["thread"] == {}


def test_select_tags_allow_list_metadata_and_sanitising() -> None:
    config = TagConfig()
    body = {"model": "gpt-4o", "metadata": {"feature": "checkout flow ✓", "order_id": "o-99", "team": ""}}
    selected = select_tags(config, {"team": "search", "secret": "x", "end_user": "u" * 100}, body)
    # metadata wins over the context; keys outside the allow-list are dropped; values sanitised and truncated
    assert selected == {"team": "search", "feature": "checkout_flow", "end_user": "u" * 64}
    assert select_tags(TagConfig(from_metadata=False), {}, body) == {}
    assert select_tags(config, {"team": "a"}, {"metadata": "not a mapping"}) == {"team": "a"}
    assert sanitize("  Team/Search:EU @ 2  ") == "Team/Search:EU_@_2"
    assert sanitize("%%%") is None


def test_tag_config_validates_keys_and_caps() -> None:
    with pytest.raises(ConfigError):
        TagConfig(keys=("Team",))
    with pytest.raises(ConfigError):
        TagConfig(value_cap=0)


def test_ten_thousand_tag_values_keep_the_label_cap() -> None:
    """10,000 distinct values per key through the real instruments: the series count stays bounded."""
    folds = Folds()
    services = CostServices(CostConfig(tags=TagConfig(value_cap=50, combination_cap=250)), events=folds,
                            folder=TagFolder(50, 250))
    registry = CollectorRegistry()
    provider = MeterProvider()
    instruments = Instruments(registry, provider, provider.get_meter("test"), explicit_provider=True)
    cost = instruments[n.COST_USD]
    for i in range(10_000):
        labels = services.labels_for(services.tags_for({"metadata": {"team": f"team-{i}", "feature": f"f-{i % 7}"}}))
        cost.add(("gpt-4o", n.TOKEN_INPUT, *labels), 0.001)
    samples = [s for metric in registry.collect() for s in metric.samples
               if s.name == n.COST_USD.prom_name]
    teams = {s.labels[n.L_TEAM] for s in samples}
    assert len(teams) == 51 and n.OTHER_TAG in teams  # 50 kept + other
    assert len(samples) <= 250 + 1
    assert sum(s.value for s in samples) == pytest.approx(10.0)  # nothing lost, only folded
    assert services.folder.size("team") == 50
    assert folds.keys["team"] == 10_000 - 50


def test_combination_cap_folds_new_combinations() -> None:
    folder = TagFolder(value_cap=100, combination_cap=10)
    out = {folder.labels({"team": f"t{i % 5}", "feature": f"f{i}"}) for i in range(40)}
    assert len(out) == 11
    assert (n.OTHER_TAG, n.OTHER_TAG) in out
    assert folder.labels({}) == ("", "")
    assert folder.labels({"team": "t0", "feature": "f0"}) == ("t0", "f0")  # kept combinations stay


def test_folder_is_thread_safe_and_process_wide() -> None:
    folder = TagFolder(value_cap=50, combination_cap=10_000)

    def push(start: int) -> None:
        for i in range(start, start + 2_000):
            folder.fold("team", f"t{i}")

    threads = [threading.Thread(target=push, args=(k * 2_000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert folder.size("team") == 50
    assert folder.folded == 16_000 - 50
    assert TagFolder.shared(50, 250) is TagFolder.shared(50, 250)
    assert CostServices().folder is TagFolder.shared(50, 250)
