"""Render every generated artifact from a mixin config, or check that the committed ones are current.

    python -m dashboards [render]                   the default config into deploy/ and docs/ (what the repo holds)
    python -m dashboards check                      exit 1 and list the files that are stale
    python -m dashboards render --selector 'job="my-api"' --out DIR
                                                    your own copy: grafana/, prometheus/, kubernetes/, runbooks/
    python -m dashboards render --config mixin.yaml --out DIR
                                                    any MixinConfig field from a YAML file (see docs/mixin.md)
    python -m dashboards rules --scale 60 --out DIR time-scaled rules (for end-to-end tests)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dashboards import build, kubernetes, metricsdoc
from dashboards.mixin import DEFAULT, MixinConfig, load_config
from dashboards.registry import dashboards
from dashboards.rules import groups
from dashboards.rules import render as rules_render

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    """Where each kind of generated file goes, relative to the output root."""

    dashboards: str
    rules: str
    tests: str
    runbooks: str
    kubernetes: str
    metrics_doc: str | None = None


REPO = Layout("deploy/grafana/dashboards", rules_render.RULES_DIR, rules_render.TESTS_DIR, rules_render.RUNBOOK_DIR,
              "deploy/kubernetes", "docs/metrics.md")
COPY = Layout("grafana/dashboards", "prometheus/rules", "prometheus/tests", "runbooks", "kubernetes")
DASHBOARDS_DIR = REPO.dashboards
METRICS_DOC = "docs/metrics.md"


def dashboard_files(out_dir: Path, cfg: MixinConfig = DEFAULT) -> dict[Path, str]:
    """Dashboard JSON text by path."""
    return {out_dir / f"{d.uid}.json": build.to_json(d, cfg) for d in dashboards(cfg)}


def artifacts(root: Path = ROOT, cfg: MixinConfig = DEFAULT, layout: Layout = REPO) -> dict[Path, str]:
    """Every generated file by path under `root`."""
    gs = groups(cfg)
    out = dashboard_files(root / layout.dashboards, cfg)
    out.update(rules_render.render(gs, root, cfg=cfg, rules_dir=layout.rules, tests_dir=layout.tests,
                                   runbook_dir=layout.runbooks))
    out.update({root / layout.kubernetes / name: text
                for name, text in kubernetes.files(gs, dashboards(cfg), cfg).items()})
    if layout.metrics_doc:
        out[root / layout.metrics_doc] = metricsdoc.render()
    return out


def _write(files: dict[Path, str]) -> list[Path]:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def render_all(out_dir: Path | None = None, cfg: MixinConfig = DEFAULT) -> list[Path]:
    """Write the dashboards' JSON into `out_dir` (default: deploy/grafana/dashboards)."""
    return _write(dashboard_files(Path(out_dir) if out_dir else ROOT / DASHBOARDS_DIR, cfg))


def render_copy(out_dir: Path, cfg: MixinConfig) -> list[Path]:
    """A user's own copy rendered from `cfg` into `out_dir` (grafana/, prometheus/, kubernetes/, runbooks/)."""
    return _write(artifacts(Path(out_dir), cfg, COPY))


def render_rules(out_dir: Path, scale: float = 1.0, cfg: MixinConfig = DEFAULT) -> list[Path]:
    """Write the rule files (optionally time-scaled) into `out_dir`, flat."""
    return _write({Path(out_dir) / g.file: rules_render.rule_file(g, cfg) for g in groups(cfg, scale=scale)})


def stale(root: Path = ROOT) -> list[Path]:
    """Generated files whose committed content differs from what the default config renders now."""
    return [p for p, text in artifacts(root).items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (also used by `middleware dashboards`)."""
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="render", choices=["render", "check", "rules"])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (render/check of the default)")
    parser.add_argument("--out", type=Path, help="output directory: your own copy (render) or flat rules (rules)")
    parser.add_argument("--config", type=Path, help="YAML file of MixinConfig fields")
    parser.add_argument("--selector", help='PromQL matchers for every query, e.g. \'job="my-api",namespace="prod"\'')
    parser.add_argument("--group-by", help="labels rules aggregate by, comma-separated (default: job)")
    parser.add_argument("--scale", type=float, default=1.0, help="divide windows and for: by this (rules)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, selector=args.selector, group_by=args.group_by)
    except (ValueError, TypeError, OSError) as exc:
        parser.error(str(exc))
    if args.command == "check":
        outdated = stale(args.root)
        for p in outdated:
            print(f"stale: {p.relative_to(args.root)}", file=sys.stderr)
        if outdated:
            print("run: python -m dashboards", file=sys.stderr)
        return 1 if outdated else 0
    if args.command == "rules":
        if args.out is None:
            parser.error("rules needs --out")
        paths = render_rules(args.out, args.scale, cfg)
    elif args.out is not None:
        paths = render_copy(args.out, cfg)
    elif cfg != DEFAULT:
        parser.error("a config other than the default renders a copy: give --out DIR (deploy/ holds the default)")
    else:
        paths = _write(artifacts(args.root))
    for p in paths:
        print(p)
    return 0
