"""The SDK adapter boundary: only ``middleware/sdk/`` may name private parts of openai, httpx or httpx2.

Private means: a module of ``openai`` whose name starts with an underscore (``openai._constants``),
the HTTP libraries themselves (the adapter hides which one the SDK uses), and every underscore
attribute the SDK's classes define (``_process_response``, ``_iterator``, ``_client``, ``__stream__``
...), whether named as an attribute or as a string given to ``getattr``/``setattr``/``hasattr``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "middleware"
ADAPTER = PACKAGE / "sdk"
HTTP_LIBRARIES = ("httpx", "httpx2")


def _sdk_private_names() -> frozenset[str]:
    """Every underscore attribute the openai client core defines or sets (dunders excluded).

    Read from the installed SDK: class attributes of its top-level modules, plus every ``self._x``
    those modules assign (instance attributes such as ``Stream._iterator``).
    """
    names: set[str] = {"__stream__"}  # the SDK's own "dunder", not Python's
    for info in pkgutil.iter_modules(openai.__path__, "openai."):  # the top-level modules hold the client core
        if info.name.endswith("__main__"):
            continue  # runs the SDK's CLI
        try:
            module = importlib.import_module(info.name)
        except Exception:
            continue
        try:
            classes = inspect.getmembers(module, inspect.isclass)
        except Exception:  # a lazy proxy of an optional extra (numpy, pandas) that is not installed
            classes = []
        for _, cls in classes:
            if cls.__module__.startswith("openai"):
                names.update(n for n in vars(cls) if _private(n))
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and isinstance(node.ctx, ast.Store) and _private(node.attr)):
                names.add(node.attr)
    return frozenset(names)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


PRIVATE = _sdk_private_names()


# SDK classes whose subclasses reach into private behaviour (the guarded streams, the protected clients).
SDK_BASES = frozenset({"Stream", "AsyncStream", "OpenAI", "AsyncOpenAI", "AzureOpenAI", "AsyncAzureOpenAI",
                       "SyncAPIClient", "AsyncAPIClient", "BaseClient"})


def _own(value: ast.expr) -> bool:
    """``self._x`` / ``cls._x``: an attribute of the module's own class (SDK subclasses are caught separately)."""
    return isinstance(value, ast.Name) and value.id in ("self", "cls")


def violations(source: str, filename: str = "<module>") -> list[str]:
    """The private SDK names a module's source uses (empty when it keeps to the public API)."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                if top[0] in HTTP_LIBRARIES or (top[0] == "openai" and any(p.startswith("_") for p in top[1:])):
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in HTTP_LIBRARIES or (parts[0] == "openai" and any(p.startswith("_") for p in parts[1:])):
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            elif parts[0] == "openai":
                found.extend(f"{filename}:{node.lineno}: from openai import {a.name}"
                             for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE and not _own(node.value):
            found.append(f"{filename}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ClassDef):
            found.extend(f"{filename}:{node.lineno}: class {node.name} subclasses the SDK's {base}"
                         for base in map(ast.unparse, node.bases) if base.split(".")[-1].split("[")[0] in SDK_BASES)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE):
            found.append(f"{filename}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_the_private_name_list_is_real() -> None:
    """The list comes from the installed SDK and holds the names the adapter relies on."""
    for name in ("_process_response", "_iterator", "_client", "__stream__", "_maybe_override_cast_to"):
        assert name in PRIVATE, name


def test_no_module_outside_the_adapter_names_a_private_sdk_part() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if ADAPTER not in p.parents]
    assert len(modules) > 50
    found: list[str] = []
    for path in modules:
        found.extend(violations(path.read_text(), str(path.relative_to(ROOT))))
    assert found == []


def test_the_adapter_is_where_the_private_names_are() -> None:
    """The check is not vacuous: the adapter itself does use private parts (and is allowed to)."""
    found: list[str] = []
    for path in ADAPTER.rglob("*.py"):
        found.extend(violations(path.read_text(), str(path.relative_to(ROOT))))
    assert any("_process_response" in v for v in found)
    assert any("openai._" in v or "from openai" in v for v in found)


@pytest.mark.parametrize("snippet, expected", [
    ("from openai._constants import RAW_RESPONSE_HEADER\n", "from openai._constants"),
    ("import openai._streaming\n", "import openai._streaming"),
    ("from openai import _legacy_response\n", "from openai import _legacy_response"),
    ("import httpx2\n", "import httpx2"),
    ("from httpx import Timeout\n", "from httpx import"),
    ("def f(stream):\n    return stream._iterator\n", "._iterator"),
    ("def f(client):\n    return client._process_response\n", "._process_response"),
    ("def f(s):\n    return getattr(s, '_client')\n", "getattr(..., '_client')"),
    ("class G:\n    def __stream__(self):\n        return super().__stream__()\n", ".__stream__"),
    ("from openai import Stream\nclass G(Stream[int]):\n    pass\n", "subclasses the SDK's Stream[int]"),
    ("import openai\nclass C(openai.OpenAI):\n    pass\n", "subclasses the SDK's openai.OpenAI"),
])
def test_a_private_name_added_outside_the_adapter_is_caught(snippet: str, expected: str) -> None:
    found = violations(snippet, "middleware/streaming/new_module.py")
    assert any(expected in v for v in found), found


def test_public_names_pass() -> None:
    source = (
        "import openai\nfrom openai import OpenAI, Stream\nfrom openai.types.chat import ChatCompletion\n"
        "def f(client, stream):\n    return client.chat.completions, stream.response, openai.APIError\n"
    )
    assert violations(source) == []


def test_tests_reach_the_http_library_only_through_tests_http() -> None:
    """A test importing ``httpx2`` (or ``httpx``) by name cannot even be collected under the other SDK majors.

    CI's SDK matrix once failed on exactly that: every such test goes through ``tests/http.py``.
    """
    offenders: list[str] = []
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name == "http.py" and path.parent.name == "tests":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders.extend(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                             if n.split(".")[0] in HTTP_LIBRARIES)
    assert offenders == []
