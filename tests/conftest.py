"""Shared pytest configuration: every fixture module of the suite is registered here."""

import os
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_ROOT.parent / "shared" / "tiktoken_cache"))

pytest_plugins = [
    "tests.fixtures.simulator",
    "tests.fixtures.redis_server",
    "tests.fixtures.prom_stack",
    "tests.fixtures.telemetry",
]
