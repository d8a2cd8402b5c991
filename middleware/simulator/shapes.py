"""The types the API checks in a request body: a wrong one is a 400 naming the field, as OpenAI answers.

OpenAI refuses ``messages[0].role = 123`` or ``tools = 5`` with ``400 invalid_request_error``
("Invalid type for 'messages[0].role': expected a string, but got an integer instead."); the
simulator must too, rather than fail inside a handler with a 500 that clients retry. Only the
fields the simulator reads, and their types, are checked; values it does not use pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_INT32 = 2**31 - 1
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ShapeError(ValueError):
    """A field of the body has a type (or an integer value) the API refuses; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, Mapping) else "an unsupported value"


def _expect(value: Any, param: str, kind: type | tuple[type, ...], what: str, *, null: bool = True) -> None:
    if value is None and null:
        return
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ShapeError(param, f"Invalid type for '{param}': expected {what}, but got {_kind(value)} instead.")


def _integer(body: Mapping[str, Any], key: str, minimum: int) -> None:
    value = body.get(key)
    _expect(value, key, int, "an integer")
    if value is not None and not minimum <= value <= MAX_INT32:
        bound = f">= {minimum}" if value < minimum else f"<= {MAX_INT32}"
        raise ShapeError(key, f"Invalid '{key}': integer out of range. Expected a value {bound}, but got {value}.")


def _content(content: Any, param: str) -> None:
    if content is None or isinstance(content, str):
        return
    _expect(content, param, list, "one of a string or an array of objects")
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        _expect(part, where, Mapping, "an object", null=False)
        _expect(part.get("type"), f"{where}.type", str, "a string", null=False)
        if "text" in part:
            _expect(part["text"], f"{where}.text", str, "a string", null=False)
        if part["type"] == "image_url":
            _expect(part.get("image_url"), f"{where}.image_url", Mapping, "an object", null=False)
            _expect(part["image_url"].get("url"), f"{where}.image_url.url", str, "a string", null=False)


def _function_call(call: Any, param: str) -> None:
    _expect(call, param, Mapping, "an object", null=False)
    _expect(call.get("name"), f"{param}.name", str, "a string")
    _expect(call.get("arguments"), f"{param}.arguments", str, "a string")


def _tools(body: Mapping[str, Any], key: str, chat: bool) -> None:
    tools = body.get(key)
    _expect(tools, key, list, "an array of objects")
    for i, tool in enumerate(tools or ()):
        where = f"{key}[{i}]"
        _expect(tool, where, Mapping, "an object", null=False)
        _expect(tool.get("type"), f"{where}.type", str, "a string")
        fn = tool.get("function") if chat and key == "tools" else tool
        if chat and key == "tools":
            _expect(fn, f"{where}.function", Mapping, "an object", null=False)
        if tool.get("type", "function") == "function":
            _expect(fn.get("name"), f"{where}.name", str, "a string", null=False)
            _expect(fn.get("description"), f"{where}.description", str, "a string")
            _expect(fn.get("parameters"), f"{where}.parameters", Mapping, "an object")


def _format(fmt: Any, param: str, inner: str) -> None:
    _expect(fmt, param, Mapping, "an object")
    if isinstance(fmt, Mapping):
        _expect(fmt.get("type"), f"{param}.type", str, "a string", null=False)
        if fmt["type"] == "json_schema":
            schema = fmt.get(inner)
            _expect(schema, f"{param}.{inner}", Mapping, "an object")
            if inner == "json_schema" and isinstance(schema, Mapping):
                _expect(schema.get("schema"), f"{param}.{inner}.schema", Mapping, "an object")


def _message(message: Any, where: str) -> None:
    _expect(message, where, Mapping, "an object", null=False)
    role = message.get("role")
    _expect(role, f"{where}.role", str, "one of " + ", ".join(f"'{r}'" for r in ROLES), null=False)
    if role not in ROLES:
        raise ShapeError(f"{where}.role", f"Invalid value: '{role}'. Supported values are: "
                         + ", ".join(f"'{r}'" for r in ROLES) + ".")
    _content(message.get("content"), f"{where}.content")
    _expect(message.get("name"), f"{where}.name", str, "a string")
    calls = message.get("tool_calls")
    _expect(calls, f"{where}.tool_calls", list, "an array of objects")
    for j, call in enumerate(calls or ()):
        _expect(call, f"{where}.tool_calls[{j}]", Mapping, "an object", null=False)
        _function_call(call.get("function"), f"{where}.tool_calls[{j}].function")
    if message.get("function_call") is not None:
        _function_call(message["function_call"], f"{where}.function_call")


def check_chat(body: Mapping[str, Any]) -> None:
    """Raise :class:`ShapeError` for a Chat Completions body the API would refuse for a type."""
    for i, message in enumerate(body.get("messages") or ()):
        _message(message, f"messages[{i}]")
    _tools(body, "tools", chat=True)
    _tools(body, "functions", chat=False)
    _format(body.get("response_format"), "response_format", "json_schema")
    _expect(body.get("stream_options"), "stream_options", Mapping, "an object")
    _integer(body, "max_tokens", 1)
    _integer(body, "max_completion_tokens", 1)
    _integer(body, "n", 1)


def check_responses(body: Mapping[str, Any]) -> None:
    """Raise :class:`ShapeError` for a Responses body the API would refuse for a type."""
    _expect(body.get("instructions"), "instructions", str, "a string")
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        where = f"input[{i}]"
        _expect(item, where, Mapping, "an object", null=False)
        if item.get("type", "message") == "message" or "role" in item:
            _expect(item.get("role"), f"{where}.role", str, "a string", null=False)
            _content(item.get("content"), f"{where}.content")
    _tools(body, "tools", chat=False)
    text = body.get("text")
    _expect(text, "text", Mapping, "an object")
    if isinstance(text, Mapping):
        _format(text.get("format"), "text.format", "schema")
    _integer(body, "max_output_tokens", 1)


def problem(check: Any, body: Mapping[str, Any]) -> str | None:
    """The message of the first wrong type ``check`` finds, else None."""
    try:
        check(body)
    except ShapeError as exc:
        return str(exc)
    return None
