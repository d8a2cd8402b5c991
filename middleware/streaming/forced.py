"""Forced streaming: send long non-streaming chat calls as streams and reassemble the ChatCompletion.

A non-streamed call holds one HTTP read open until the whole output exists; long generations then
die on proxies' and load balancers' idle limits and leave nothing behind. Streamed, the same call
keeps the connection busy, is watched for stalls, can be resumed, and is reassembled here into the
exact ``ChatCompletion`` the caller asked for (content, refusal, tool calls, logprobs, usage).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..config import StreamConfig
from ..tokens import max_output_tokens

_ALPHA = 0.2  # weight of the newest observation in the per-model moving averages
MAX_MODELS = 512  # models come from callers: the least recently observed beyond this are forgotten


class AdaptiveThreshold:
    """Per-model threshold (max output tokens) above which a call is expected to outlast the target.

    Learned from finished streams: exponentially weighted time to first chunk and output tokens/s;
    threshold = (target_seconds - ttfc) * tokens_per_second.
    """

    def __init__(self, target_seconds: float, events: Any = None) -> None:
        self.target_seconds = target_seconds
        self._events = events
        self._stats: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, model: str, ttfc: float, tokens_per_second: float) -> None:
        """Learn from one finished stream."""
        if ttfc < 0 or tokens_per_second <= 0:
            return
        with self._lock:
            old = self._stats.get(model)
            if old is not None:
                ttfc = old[0] + _ALPHA * (ttfc - old[0])
                tokens_per_second = old[1] + _ALPHA * (tokens_per_second - old[1])
            self._stats[model] = (ttfc, tokens_per_second)
            self._stats.move_to_end(model)
            while len(self._stats) > MAX_MODELS:
                self._stats.popitem(last=False)
        value = self.threshold(model)
        if value is not None and self._events is not None:
            self._events.adaptive_threshold(model, float(value))

    def threshold(self, model: str) -> int | None:
        """The learned threshold for ``model`` (None before the first observation)."""
        stats = self._stats.get(model)
        if stats is None:
            return None
        ttfc, rate = stats
        return max(0, int((self.target_seconds - ttfc) * rate))


def force_reason(config: StreamConfig, adaptive: AdaptiveThreshold, model: str, body: dict[str, Any]) -> str | None:
    """Why this non-streaming chat body should be streamed ("adaptive", "threshold"), or None."""
    if body.get("stream") is True or body.get("n") not in (None, 1):
        return None
    if not isinstance(body.get("stream_options"), dict | None):  # a shape the API refuses: sent as it is
        return None
    max_out = max_output_tokens("chat", body)
    if max_out is None:
        return None
    if config.adaptive_threshold:
        learned = adaptive.threshold(model)
        if learned is not None:
            return "adaptive" if max_out > learned else None
    limit = config.force_stream_above_tokens
    return "threshold" if limit is not None and max_out > limit else None


class ChatAccumulator:
    """Folds ``ChatCompletionChunk`` objects into the ``ChatCompletion`` a non-streamed call returns."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        """Fold one chunk."""
        if not self.head:
            self.head = {"id": chunk.id, "created": chunk.created, "model": chunk.model,
                         "system_fingerprint": chunk.system_fingerprint, "service_tier": chunk.service_tier}
        if chunk.usage is not None:
            self.usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            self._fold(choice)

    def _fold(self, choice: Any) -> None:
        acc = self.choices.setdefault(choice.index, {
            "content": [], "refusal": [], "tool_calls": {}, "logprobs": None, "finish_reason": None,
            "role": "assistant",
        })
        delta = choice.delta
        if delta.role:
            acc["role"] = delta.role
        if delta.content:
            acc["content"].append(delta.content)
        if delta.refusal:
            acc["refusal"].append(delta.refusal)
        for call in delta.tool_calls or ():
            slot = acc["tool_calls"].setdefault(
                call.index, {"id": None, "type": "function", "name": "", "arguments": ""})
            if call.id:
                slot["id"] = call.id
            if call.type:
                slot["type"] = call.type
            if call.function is not None:
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
        if choice.logprobs is not None:
            acc["logprobs"] = _merge_logprobs(acc["logprobs"], choice.logprobs.model_dump())
        if choice.finish_reason:
            acc["finish_reason"] = choice.finish_reason

    def text(self, index: int = 0) -> str:
        """Content received so far for one choice."""
        acc = self.choices.get(index)
        return "".join(acc["content"]) if acc else ""

    def result(self, cast_to: Any) -> Any:
        """The assembled completion, built like the SDK builds a parsed response (no validation)."""
        choices = []
        for index in sorted(self.choices):
            acc = self.choices[index]
            tool_calls = [
                {"id": t["id"], "type": t["type"], "function": {"name": t["name"], "arguments": t["arguments"]}}
                for _, t in sorted(acc["tool_calls"].items())
            ]
            message: dict[str, Any] = {
                "role": acc["role"],
                "content": "".join(acc["content"]) if acc["content"] or not tool_calls else None,
                "refusal": "".join(acc["refusal"]) or None,
                "annotations": [],
            }
            if tool_calls:
                message["tool_calls"] = tool_calls
            choices.append({"index": index, "message": message, "logprobs": acc["logprobs"],
                            "finish_reason": acc["finish_reason"]})
        data = {**self.head, "object": "chat.completion", "choices": choices, "usage": self.usage}
        return cast_to.construct(**data)


def _merge_logprobs(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    for key in ("content", "refusal"):
        if new.get(key):
            old[key] = (old.get(key) or []) + new[key]
    return old
