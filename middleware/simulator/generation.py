"""From a request to its deterministic output: text, JSON for a schema, or a tool call."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .call import Call, Services
from .config import MAX_OUTPUT_TOKENS
from .counting import count_text_tokens, encoding_name
from .textgen import Output, conversation_digest, json_for_schema, output_length, plan_output, token_pieces, word_pieces


@dataclass(frozen=True)
class ToolCall:
    """A forced function call."""

    call_id: str
    name: str
    arguments: Output


@dataclass(frozen=True)
class Generated:
    """The output of one generation request and its completion token count."""

    output: Output
    tool_call: ToolCall | None
    completion_tokens: int


def message_text(content: Any) -> str:
    """Plain text of a message ``content`` (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def split_trailing_assistant(items: Sequence[Any]) -> tuple[list[Any], str | None]:
    """(conversation without a trailing assistant message, that message's text or ``None``)."""
    if items and isinstance(items[-1], Mapping) and items[-1].get("role") == "assistant":
        last = items[-1]
        if not last.get("tool_calls") and last.get("type", "message") == "message":
            return list(items[:-1]), message_text(last.get("content"))
    return list(items), None


def forced_tool(body: Mapping[str, Any], header: str | None) -> Mapping[str, Any] | None:
    """The function definition a request forces, if any (``tool_choice`` or ``x-sim-tool-call``)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and t.get("type") == "function"]
    if not tools:
        return None
    defs = [t.get("function", t) for t in tools]
    choice = body.get("tool_choice")
    wanted: str | None = None
    if isinstance(choice, Mapping):
        wanted = str(choice.get("function", choice).get("name", ""))
    elif choice == "required" or header:
        wanted = header if header and header not in ("1", "true", "any") else str(defs[0].get("name"))
    if wanted is None:
        return None
    chosen: Mapping[str, Any] = next((d for d in defs if d.get("name") == wanted), defs[0])
    return chosen


def generate(
    svc: Services,
    call: Call,
    conversation: Any,
    prefix: str | None,
    max_new: int | None,
    schema: Mapping[str, Any] | None,
) -> Generated:
    """Produce the deterministic output of ``call`` (continuing ``prefix`` when it is one)."""
    cfg = svc.config
    seed = call.seed if call.seed is not None else cfg.seed
    digest = conversation_digest(seed, call.model, conversation)
    enc = encoding_name(call.model)
    tool = forced_tool(call.body, call.ex.request.headers.get("x-sim-tool-call"))
    if tool is not None:
        params = tool.get("parameters") or {"type": "object", "properties": {}}
        args = plan_output(token_pieces(json_for_schema(digest, params), enc), None, None)
        text = str(tool.get("name", "")) + args.text
        tool_call = ToolCall("call_" + secrets.token_hex(12), str(tool.get("name", "")), args)
        return Generated(Output((), "stop"), tool_call, count_text_tokens(call.model, text))
    if schema is not None:
        full = token_pieces(json_for_schema(digest, schema), enc)
    else:
        length = call.header_int("x-sim-output-tokens")
        if length is None:
            length = output_length(digest, cfg.output_tokens_min, cfg.output_tokens_max)
        full = word_pieces(digest, enc, min(max(0, length), MAX_OUTPUT_TOKENS))
    output = plan_output(full, prefix, max_new)
    return Generated(output, None, count_text_tokens(call.model, output.text))
