"""Library etiquette: the runtime depends on the OpenTelemetry API, not the SDK; rich is the CLI's extra.

Each check runs in a fresh interpreter (subprocess), so that nothing imported by the test session counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors a TOML reader
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("middleware", "middleware.cli", "middleware.demo", "middleware.traces_cli", "middleware.files.cli",
           "middleware.streaming.resume_cli", "middleware.telemetry.setup", "middleware.telemetry.tracefiles")
HEAVY = ("opentelemetry.sdk", "opentelemetry.exporter", "rich")

PROBE = """
import importlib, json, sys
block = tuple(sys.argv[1].split(",")) if sys.argv[1] else ()
heavy = tuple(sys.argv[2].split(","))
asked = []

def importer():
    f = sys._getframe(2)
    while f is not None and (f.f_globals.get("__name__", "").startswith("importlib")
                             or "importlib._bootstrap" in f.f_code.co_filename):
        f = f.f_back
    return f.f_globals.get("__name__", "") if f is not None else ""

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if any(name == h or name.startswith(h + ".") for h in heavy):
            asked.append([name, importer()])
        if top in block or name in block:
            raise ModuleNotFoundError(name, name=name)
        return None

sys.meta_path.insert(0, Watch())
for module in sys.argv[3:]:
    importlib.import_module(module)
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps({"loaded": loaded, "asked": asked}))
"""


def probe(block: tuple[str, ...] = ()) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", PROBE, ",".join(block), ",".join(HEAVY), *MODULES],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_import_loads_no_sdk_no_exporter_and_no_rich_with_the_runtime_dependencies_alone() -> None:
    # redis is the `redis` extra; redis-py 8 imports the OTel SDK itself when both are installed.
    result = probe(block=("redis",))
    assert result["loaded"] == []
    assert result["asked"] == []


def test_no_middleware_module_asks_for_the_sdk_or_rich_in_the_full_environment() -> None:
    result = probe()
    assert not [m for m in result["loaded"] if m == "rich" or m.startswith("rich.")]
    ours = [(name, by) for name, by in result["asked"] if by.startswith("middleware")]
    assert ours == []


def test_the_probe_sees_an_import_of_the_sdk_by_middleware_code() -> None:
    """The watcher attributes imports correctly: importing the SDK-based exporters is seen and blamed."""
    out = subprocess.run([sys.executable, "-c", PROBE, "redis", ",".join(HEAVY), "middleware.telemetry.exporters"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    result = json.loads(out.stdout)
    assert ["opentelemetry.sdk", "middleware.telemetry.exporters"] in result["asked"]
    assert "opentelemetry.sdk.trace" in result["loaded"]


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.lower()


def test_runtime_dependencies_and_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert runtime == {"openai", "tiktoken", "prometheus-client", "opentelemetry-api"}
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    for name, deps in extras.items():  # "llm-middleware[test,dashboards]": an extra that includes others
        for dep in list(deps):
            if dep == project["name"]:
                deps.discard(dep)
                for req in project["optional-dependencies"][name]:
                    if req.startswith(project["name"] + "["):
                        for inner in req.split("[", 1)[1].rstrip("]").split(","):
                            deps |= {_name(r) for r in project["optional-dependencies"][inner.strip()]}
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"} <= extras["otel"]
    assert extras["cli"] == {"rich"}
    assert extras["otel"] | extras["cli"] <= extras["dev"]  # the README's two commands keep installing everything
