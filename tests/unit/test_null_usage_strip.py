"""The ``"usage": null`` members the middleware's own ``include_usage`` adds are taken out of a chat stream's bytes
however the network splits them, and nothing else is touched (``middleware.sdk.streams.strip_null_usage``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.sdk.streams import astrip_null_usage, strip_null_usage

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
# Content that looks like the pattern: inside a JSON string its quotes are escaped, so it must survive untouched.
TRICKY = st.sampled_from([',"usage":null', ', "usage": null', '"usage"', ",", "null", "usage"])


@st.composite
def events(draw: st.DrawFn) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(draw(st.integers(1, 6))):
        content = "".join(draw(st.lists(st.one_of(TEXT, TRICKY), max_size=4)))
        event: dict[str, object] = {"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]}
        if draw(st.booleans()):
            event["usage"] = None
        if i == 0 and draw(st.booleans()):
            event["usage"] = {"prompt_tokens": 3, "completion_tokens": 1}
        out.append(event)
    return out


def encode(evts: list[dict[str, object]], spaced: bool) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return b"".join(b"data: " + json.dumps(e, separators=separators).encode() + b"\n\n" for e in evts) \
        + b"data: [DONE]\n\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if a != b]


def decoded(data: bytes) -> list[object]:
    return [json.loads(line[6:]) for line in data.split(b"\n\n") if line.startswith(b"data: {")]


def without_null_usage(evts: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in e.items() if not (k == "usage" and v is None)} for e in evts]


@settings(max_examples=300, deadline=None)
@given(events(), st.booleans(), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_gives_the_events_without_null_usage(evts: list[dict[str, object]], spaced: bool,
                                                       cuts: list[int]) -> None:
    data = encode(evts, spaced)
    out = list(strip_null_usage(iter(split(data, cuts))))
    assert decoded(b"".join(out)) == without_null_usage(evts)
    assert all(out)  # never an empty read


@settings(max_examples=200, deadline=None)
@given(events(), st.booleans(), st.lists(st.integers(1, 3), max_size=8))
def test_reads_along_event_ends_give_the_events_without_null_usage(
        evts: list[dict[str, object]], spaced: bool, per_read: list[int]) -> None:
    # What a server that flushes each event gives (one read per event, or a few): the usual reads, the
    # filter's short path for an event whose only "usage" is its last member, and the general one for the rest.
    pieces = [piece + b"\n\n" for piece in encode(evts, spaced).split(b"\n\n") if piece]
    reads, i = [], 0
    for n in [*per_read, len(pieces)]:
        if i < len(pieces):
            reads.append(b"".join(pieces[i:i + n]))
            i += n
    out = list(strip_null_usage(iter(reads)))
    assert decoded(b"".join(out)) == without_null_usage(evts)
    assert len(out) == len(reads)  # each read that ends an event is passed on at once


@settings(max_examples=100, deadline=None)
@given(events(), st.lists(st.integers(0, 10_000), max_size=30))
def test_async_twin_agrees(evts: list[dict[str, object]], cuts: list[int]) -> None:
    data = encode(evts, False)

    async def run() -> bytes:
        async def source() -> AsyncIterator[bytes]:
            for piece in split(data, cuts):
                yield piece

        return b"".join([piece async for piece in astrip_null_usage(source())])

    assert asyncio.run(run()) == b"".join(strip_null_usage(iter(split(data, cuts))))


def test_a_read_that_ends_an_event_is_passed_on_whole_and_at_once() -> None:
    # An event's end is never held back (the stall detector and time-to-first-chunk see it when it arrives).
    first = b'data: {"id":"c1","usage":null}\n\n'
    it = strip_null_usage(iter([first, b'data: {"id":"c2"}\n\n']))
    assert next(it) == b'data: {"id":"c1"}\n\n'


def test_a_read_cut_inside_the_member_holds_back_only_its_start() -> None:
    it = strip_null_usage(iter([b'data: {"id":"c1","us', b'age":null}\n\n']))
    assert next(it) == b'data: {"id":"c1"'
    assert next(it) == b"}\n\n"
