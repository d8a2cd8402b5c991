"""Kubernetes forms: the PrometheusRule and the dashboard ConfigMaps, validated against their schemas.

The schemas (``tests/data/kubernetes-schemas.yaml``) are the PrometheusRule CRD's openAPIV3Schema and
the core/v1 ConfigMap written out, with the API server's ObjectMeta rules. Beyond the schema, the rule
groups inside the PrometheusRule go through ``promtool check rules``, the ConfigMaps carry exactly the
dashboards Grafana gets from ``deploy/``, and the objects stay under the API server's size limits.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

import dashboards
from dashboards.kubernetes import DASHBOARDS_FILE, RULE_FILE, SIDECAR_FOLDER_ANNOTATION, SIDECAR_LABEL
from dashboards.mixin import DEFAULT, MixinConfig
from dashboards.render import REPO, ROOT

SCHEMAS = yaml.safe_load((Path(__file__).resolve().parents[1] / "data/kubernetes-schemas.yaml").read_text())
PROMTOOL = shutil.which("promtool")
CUSTOM = MixinConfig(selector='namespace="payments", job=~"llm-.*"', group_by=("namespace", "job"),
                     namespace="observability", rule_labels={"release": "kube-prometheus-stack"},
                     grafana_folder="LLM middleware", name="llm-payments")
MAX_OBJECT_BYTES = 1024 * 1024  # etcd's request limit; ConfigMap data must stay below it
MAX_ANNOTATION_BYTES = 256 * 1024  # client-side apply stores the object in an annotation of at most this


def validator(kind: str) -> Draft202012Validator:
    schema = {**SCHEMAS, "$ref": f"#/$defs/{kind}"}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _objects(kube_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rule = yaml.safe_load((kube_dir / RULE_FILE).read_text())
    maps = [d for d in yaml.safe_load_all((kube_dir / DASHBOARDS_FILE).read_text()) if d]
    return rule, maps


@pytest.fixture(params=["default", "custom"])
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[MixinConfig, Path, Path]:
    """(config, kubernetes dir, grafana dashboards dir): deploy/ itself, or a user's copy."""
    if request.param == "default":
        return DEFAULT, ROOT / REPO.kubernetes, ROOT / REPO.dashboards
    dashboards.render_copy(tmp_path, CUSTOM)
    return CUSTOM, tmp_path / "kubernetes", tmp_path / "grafana/dashboards"


def test_objects_match_their_schemas(rendered: tuple[MixinConfig, Path, Path]) -> None:
    cfg, kube, _ = rendered
    rule, maps = _objects(kube)
    errors = [e.message for e in validator("PrometheusRule").iter_errors(rule)]
    for cm in maps:
        errors += [f"{cm['metadata']['name']}: {e.message}" for e in validator("ConfigMap").iter_errors(cm)]
    assert not errors, errors
    assert rule["metadata"]["namespace"] == cfg.namespace and len(maps) == 7
    assert all(rule["metadata"]["labels"][k] == v for k, v in cfg.rule_labels.items())
    names = [r["name"] for r in rule["spec"]["groups"]]
    assert len(names) == len(set(names))  # the CRD's list-map key: group names are unique


def test_configmaps_hold_the_dashboards_for_the_sidecar(rendered: tuple[MixinConfig, Path, Path]) -> None:
    cfg, kube, grafana = rendered
    _, maps = _objects(kube)
    by_file: dict[str, str] = {}
    for cm in maps:
        meta = cm["metadata"]
        assert meta["labels"][SIDECAR_LABEL] == "1"
        assert meta.get("annotations", {}).get(SIDECAR_FOLDER_ANNOTATION, "") == cfg.grafana_folder
        assert len(json.dumps(cm).encode()) < MAX_ANNOTATION_BYTES < MAX_OBJECT_BYTES
        by_file.update(cm["data"])
    assert by_file == {p.name: p.read_text() for p in grafana.glob("*.json")}
    assert all(json.loads(text)["panels"] for text in by_file.values())


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_rule_groups_pass_promtool_and_equal_the_rule_files(rendered: tuple[MixinConfig, Path, Path],
                                                            tmp_path: Path) -> None:
    cfg, kube, _ = rendered
    rule, _ = _objects(kube)
    as_file = tmp_path / "from-prometheusrule.yml"
    as_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(as_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rules_dir = ROOT / REPO.rules if cfg is DEFAULT else kube.parent / "prometheus/rules"
    from_files = [g for p in sorted(rules_dir.glob("*.yml")) for g in yaml.safe_load(p.read_text())["groups"]]
    assert sorted(rule["spec"]["groups"], key=lambda g: g["name"]) == sorted(from_files, key=lambda g: g["name"])


def _broken(obj: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize(("path", "value"), [
    (["spec", "groups", 0, "rules", 0, "for"], "10 minutes"),  # not a Prometheus duration
    (["spec", "groups", 0, "rules", 0, "alert"], "Both"),  # a recording rule that is also an alert
    (["spec", "groups", 0, "rules", 0, "expresion"], "up"),  # a typo the server would prune silently
    (["spec", "groups", 0, "name"], ""),
    (["metadata", "name"], "LLM_rules"),  # not a DNS-1123 subdomain
    (["metadata", "labels", "release"], "kube prometheus stack"),  # not a label value
    (["kind"], "PrometheusRules"),
    (["spec"], KeyError),
])
def test_the_prometheusrule_schema_rejects_broken_objects(path: list[Any], value: Any) -> None:
    rule, _ = _objects(ROOT / REPO.kubernetes)
    assert not list(validator("PrometheusRule").iter_errors(rule))
    rule["metadata"]["labels"]["release"] = "x"
    assert list(validator("PrometheusRule").iter_errors(_broken(rule, path, value)))


@pytest.mark.parametrize(("path", "value"), [
    (["data", "dashboards/llm-overview.json"], "{}"),  # a data key with a slash
    (["data", "llm-overview.json"], {"panels": []}),  # data values are strings
    (["metadata", "labels", "grafana_dashboard"], 1),  # label values are strings
    (["metadata", "namespace"], "Observability"),
    (["apiVersion"], "v2"),
])
def test_the_configmap_schema_rejects_broken_objects(path: list[Any], value: Any) -> None:
    _, maps = _objects(ROOT / REPO.kubernetes)
    assert list(validator("ConfigMap").iter_errors(_broken(maps[0], path, value)))
