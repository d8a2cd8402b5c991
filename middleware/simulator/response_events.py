"""Responses API objects and the numbered event sequence of one generation."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from .exchange import sse_event
from .generation import Generated


def usage_object(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A ``ResponseUsage`` payload (``cached`` is part of ``prompt``, ``reasoning`` of ``completion``)."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


class ResponseRun:
    """Builds the response snapshot and every SSE event (with ``sequence_number``) of one generation."""

    def __init__(self, body: Mapping[str, Any], model: str, gen: Generated, prompt_tokens: int, background: bool):
        self.gen = gen
        self.prompt_tokens = prompt_tokens
        self.seq = 0
        self.text = ""
        self.is_tool = gen.tool_call is not None
        self.item_id = ("fc_" if self.is_tool else "msg_") + secrets.token_hex(16)
        self.pieces = gen.tool_call.arguments.pieces if gen.tool_call is not None else gen.output.pieces
        self.snapshot: dict[str, Any] = {
            "id": "resp_" + secrets.token_hex(24),
            "object": "response",
            "created_at": int(time.time()),
            "status": "queued" if background else "in_progress",
            "background": background,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": model,
            "output": [],
            "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": bool(body.get("store", True)),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": None,
            "user": None,
        }

    @property
    def response_id(self) -> str:
        """The ``resp_...`` id."""
        return str(self.snapshot["id"])

    def _event(self, kind: str, **fields: Any) -> bytes:
        fields["type"] = kind
        fields["sequence_number"] = self.seq
        self.seq += 1
        return sse_event(kind, json.dumps(fields, separators=(",", ":")))

    def _item(self, done: bool) -> dict[str, Any]:
        status = "completed" if done else "in_progress"
        call = self.gen.tool_call
        if call is not None:
            return {
                "id": self.item_id,
                "type": "function_call",
                "status": status,
                "call_id": call.call_id,
                "name": call.name,
                "arguments": self.text if done else "",
            }
        content = [self._part()] if done else []
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def opening(self) -> list[bytes]:
        """``response.created`` ... up to the first delta."""
        events = [self._event("response.created", response=dict(self.snapshot))]
        self.snapshot["status"] = "in_progress"
        events.append(self._event("response.in_progress", response=dict(self.snapshot)))
        events.append(self._event("response.output_item.added", output_index=0, item=self._item(False)))
        if not self.is_tool:
            part = self._part()
            events.append(self._event("response.content_part.added", item_id=self.item_id, output_index=0,
                                      content_index=0, part=part))
        return events

    def delta(self, piece: str) -> bytes:
        """One text (or function arguments) delta event."""
        self.text += piece
        if self.is_tool:
            return self._event("response.function_call_arguments.delta", item_id=self.item_id, output_index=0,
                               delta=piece)
        return self._event("response.output_text.delta", item_id=self.item_id, output_index=0, content_index=0,
                           delta=piece, logprobs=[])

    def closing(self) -> list[bytes]:
        """From ``response.output_text.done`` to ``response.completed`` (or ``response.incomplete``)."""
        events: list[bytes] = []
        if self.is_tool:
            events.append(self._event("response.function_call_arguments.done", item_id=self.item_id,
                                      output_index=0, arguments=self.text))
        else:
            events.append(self._event("response.output_text.done", item_id=self.item_id, output_index=0,
                                      content_index=0, text=self.text, logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=self.item_id, output_index=0,
                                      content_index=0, part=self._part()))
        events.append(self._event("response.output_item.done", output_index=0, item=self._item(True)))
        self.finish()
        final = "response.incomplete" if self.snapshot["status"] == "incomplete" else "response.completed"
        events.append(self._event(final, response=dict(self.snapshot)))
        return events

    def finish(self) -> None:
        """Set the final snapshot (status, output, usage) without producing events."""
        self.text = "".join(self.pieces)
        truncated = self.gen.output.finish_reason == "length" and not self.is_tool
        self.snapshot.update(
            status="incomplete" if truncated else "completed",
            incomplete_details={"reason": "max_output_tokens"} if truncated else None,
            output=[self._item(True)],
            usage=usage_object(self.prompt_tokens, self.gen.completion_tokens, self.gen.cached_tokens,
                               self.gen.reasoning_tokens),
            completed_at=int(time.time()),
        )

    def cancel(self) -> None:
        """Mark the snapshot cancelled."""
        self.snapshot["status"] = "cancelled"
