"""Shared pytest configuration: every fixture module of the suite is registered here."""

import os
import pathlib

from hypothesis import HealthCheck, settings

_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_ROOT.parent / "shared" / "tiktoken_cache"))

# Property tests: no per-example deadline (a loaded 2-core machine is slow, not wrong); in CI
# (CI=true) the examples are derandomized so that a run is reproducible.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

pytest_plugins = [
    "tests.fixtures.simulator",
    "tests.fixtures.redis_server",
    "tests.fixtures.prom_stack",
    "tests.fixtures.telemetry",
    "tests.fixtures.otlp",
]
