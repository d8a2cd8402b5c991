"""``POST /v1/chat/completions``: non-streamed JSON and SSE streams shaped like OpenAI's.

Streams emit one chunk per output token (a tool call: one chunk per argument token).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from .call import Call, Services, StreamFaults
from .exchange import sse_data
from .generation import Generated, generate, split_trailing_assistant
from .shapes import check_chat, problem

FINGERPRINT = "fp_simulator"


def max_new_tokens(body: Mapping[str, Any]) -> int | None:
    """``max_completion_tokens`` or ``max_tokens`` of a chat request."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_schema":
        schema: Mapping[str, Any] = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return schema
    if fmt.get("type") == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def _usage(prompt: int, gen: Generated) -> dict[str, Any]:
    completion = gen.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": gen.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": gen.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def validate(body: Mapping[str, Any]) -> str | None:
    """An error message when the request is not one the simulator serves."""
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "'messages' must be a non-empty array."
    wrong_type = problem(check_chat, body)
    if wrong_type is not None:
        return wrong_type
    if body.get("n", 1) not in (1, None):
        return "The simulator supports only n=1."
    return None


async def handle_chat(svc: Services, call: Call) -> None:
    """Answer one admitted chat completion request."""
    conversation, prefix = split_trailing_assistant(call.body["messages"])
    schema = _schema(call.body)
    key = {"messages": conversation, "schema": schema}
    gen = generate(svc, call, key, prefix, max_new_tokens(call.body), schema)
    if call.body.get("stream"):
        await _stream(svc, call, gen)
    else:
        await _respond(svc, call, gen)


async def _respond(svc: Services, call: Call, gen: Generated) -> None:
    pacer = svc.latency.pacer()
    await svc.latency.sleep(pacer.total(len(gen.output.pieces)))
    message: dict[str, Any] = {"role": "assistant", "content": gen.output.text, "refusal": None, "annotations": []}
    finish: str = gen.output.finish_reason
    if gen.tool_call is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": gen.tool_call.call_id,
                "type": "function",
                "function": {"name": gen.tool_call.name, "arguments": gen.tool_call.arguments.text},
            }
        ]
        finish = "tool_calls"
    payload = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(call.prompt_tokens, gen),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if call.fault is not None and call.fault.cuts_json:
        await call.ex.send_truncated_json(payload, whole_length=call.fault.truncated_json)
        call.settle(gen.completion_tokens, False)
        return
    call.ex.send_json(200, payload)
    call.settle(gen.completion_tokens, True)


async def _stream(svc: Services, call: Call, gen: Generated) -> None:
    include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    chunk_id = "chatcmpl-" + secrets.token_hex(12)
    head = json.dumps(
        {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model},
        separators=(",", ":"),
    )[:-1]
    tail = ',"service_tier":"default","system_fingerprint":"' + FINGERPRINT + '"'
    tail += ',"usage":null}' if include_usage else "}"
    fault = call.fault
    usage_on_last = include_usage and fault is not None and fault.usage_on_last_chunk
    usage_json = json.dumps(_usage(call.prompt_tokens, gen), separators=(",", ":"))

    def frame(delta: str, finish: str | None = None, with_usage: bool = False) -> bytes:
        finish_json = "null" if finish is None else f'"{finish}"'
        choice = f'[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish_json}}}]'
        end = tail.replace('"usage":null', f'"usage":{usage_json}') if with_usage else tail
        return sse_data(f'{head},"choices":{choice}{end}')

    tool = gen.tool_call
    pieces = tool.arguments.pieces if tool is not None else gen.output.pieces
    ex = call.ex
    pacer = svc.latency.pacer()
    faults = StreamFaults(call.fault, len(pieces), svc.latency)
    ex.start_sse()
    if tool is None:
        ex.sse(frame('{"role":"assistant","content":"","refusal":null}'))
        content_delta = '{{"content":{}}}'
    else:
        call_json = json.dumps({"index": 0, "id": tool.call_id, "type": "function"})[:-1]
        ex.sse(frame(f'{{"role":"assistant","content":null,"tool_calls":[{call_json},'
                     f'"function":{{"name":{json.dumps(tool.name)},"arguments":""}}}}]}}'))
        content_delta = '{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}}'
    sent = 0
    for index, piece in enumerate(pieces):
        if not await faults.after(ex, sent):
            call.settle(sent, False)
            return
        await pacer.before(index)
        if ex.conn.client_gone:
            call.settle(sent, False)
            return
        ex.sse(frame(content_delta.format(json.dumps(piece)), with_usage=usage_on_last and index == len(pieces) - 1))
        sent += 1
        await ex.conn.drain()
    if not await faults.after(ex, sent):
        call.settle(sent, False)
        return
    finish = "tool_calls" if tool is not None else gen.output.finish_reason
    ex.sse(frame("{}", finish, with_usage=usage_on_last and not pieces))
    if include_usage and not usage_on_last:
        choices = "[]"
        if fault is not None and fault.usage_chunk_with_empty_choice:  # LiteLLM's proxy: one choice, empty delta
            choices = '[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]'
        ex.sse(sse_data(f'{head},"choices":{choices},"service_tier":"default",'
                        f'"system_fingerprint":"{FINGERPRINT}","usage":{usage_json}}}'))
    ex.sse(sse_data("[DONE]"))
    ex.end_sse()
    call.settle(gen.completion_tokens, True)
