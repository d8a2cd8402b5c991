"""Shared pytest configuration: every fixture module of the suite is registered here."""

import importlib.util
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
    "tests.fixtures.telemetry",
    "tests.fixtures.otlp",
]
# The dashboards generator needs grafana-foundation-sdk, which needs Python >= 3.11: where it cannot be
# installed (the Python 3.10 cell of scripts/matrix.sh) its tests and the Prometheus fixtures built on it
# are not collected; everything else runs.
if importlib.util.find_spec("grafana_foundation_sdk") is not None:
    pytest_plugins.append("tests.fixtures.prom_stack")
    collect_ignore_glob: list[str] = []
else:
    collect_ignore_glob = ["unit/test_dashboards*.py", "integration/test_rules_*.py",
                           "integration/test_mixin_render.py", "integration/test_kubernetes_forms.py",
                           "integration/test_deploy.py", "e2e/test_observability_e2e.py"]
