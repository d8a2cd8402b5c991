"""Kubernetes forms of the mixin: a ``PrometheusRule`` and dashboard ``ConfigMap`` objects for the Grafana sidecar.

* ``prometheusrule.yaml``: one ``monitoring.coreos.com/v1`` ``PrometheusRule`` holding every rule group
  (the Prometheus operator loads it when its labels match the Prometheus ``ruleSelector``; set
  ``rule_labels``, e.g. ``release: kube-prometheus-stack``).
* ``grafana-dashboards.yaml``: one ``v1`` ``ConfigMap`` per dashboard, labelled ``grafana_dashboard: "1"``,
  the label the Grafana sidecar (kube-prometheus-stack's default) watches; ``grafana_folder`` sets the
  sidecar's folder annotation.
* ``kustomization.yaml``: both, for ``kubectl apply -k``.
"""

from __future__ import annotations

from typing import Any

from dashboards import build
from dashboards.mixin import MixinConfig
from dashboards.rules.model import Group
from dashboards.rules.render import dump, rule_group
from dashboards.spec import Dashboard

RULE_API_VERSION = "monitoring.coreos.com/v1"
SIDECAR_LABEL = "grafana_dashboard"
SIDECAR_FOLDER_ANNOTATION = "grafana_folder"
APP_LABEL = "app.kubernetes.io/name"
RULE_FILE = "prometheusrule.yaml"
DASHBOARDS_FILE = "grafana-dashboards.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"


def _metadata(name: str, cfg: MixinConfig, labels: dict[str, str],
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": cfg.namespace, "labels": {APP_LABEL: cfg.name, **labels}}
    if annotations:
        meta["annotations"] = annotations
    return meta


def prometheus_rule(groups: list[Group], cfg: MixinConfig) -> dict[str, Any]:
    """The PrometheusRule object holding every group."""
    return {
        "apiVersion": RULE_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": _metadata(f"{cfg.name}-rules", cfg, dict(cfg.rule_labels)),
        "spec": {"groups": [rule_group(g, cfg) for g in groups]},
    }


def dashboard_configmap(d: Dashboard, cfg: MixinConfig) -> dict[str, Any]:
    """One dashboard as a ConfigMap the Grafana sidecar picks up."""
    folder = {SIDECAR_FOLDER_ANNOTATION: cfg.grafana_folder} if cfg.grafana_folder else None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(f"{cfg.name}-dashboard-{d.uid}", cfg, {SIDECAR_LABEL: "1"}, folder),
        "data": {f"{d.uid}.json": build.to_json(d, cfg)},
    }


def files(groups: list[Group], dashboards: tuple[Dashboard, ...], cfg: MixinConfig) -> dict[str, str]:
    """The YAML files by name."""
    maps = [dump(dashboard_configmap(d, cfg)) for d in dashboards]
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [RULE_FILE, DASHBOARDS_FILE]}
    return {
        RULE_FILE: dump(prometheus_rule(groups, cfg)),
        DASHBOARDS_FILE: "---\n".join(maps),
        KUSTOMIZATION_FILE: dump(kustomization),
    }
