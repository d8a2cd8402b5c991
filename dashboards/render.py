"""Render every generated artifact, or check that the committed ones are current.

    python -m dashboards [render]           write dashboards, rules, rule tests, runbooks, docs/metrics.md
    python -m dashboards check              exit 1 and list the files that are stale
    python -m dashboards rules --scale 60 --out DIR   time-scaled rules (for end-to-end tests)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards import build, metricsdoc
from dashboards.registry import DASHBOARDS
from dashboards.rules import groups
from dashboards.rules import render as rules_render

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = "deploy/grafana/dashboards"
METRICS_DOC = "docs/metrics.md"


def dashboard_files(out_dir: Path) -> dict[Path, str]:
    """Dashboard JSON text by path."""
    return {out_dir / f"{d.uid}.json": build.to_json(d) for d in DASHBOARDS}


def artifacts(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file by path under `root`."""
    out = dashboard_files(root / DASHBOARDS_DIR)
    out.update(rules_render.render(groups(), root))
    out[root / METRICS_DOC] = metricsdoc.render()
    return out


def _write(files: dict[Path, str]) -> list[Path]:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def render_all(out_dir: Path | None = None) -> list[Path]:
    """Write the dashboards' JSON into `out_dir` (default: deploy/grafana/dashboards)."""
    return _write(dashboard_files(Path(out_dir) if out_dir else ROOT / DASHBOARDS_DIR))


def render_rules(out_dir: Path, scale: float = 1.0) -> list[Path]:
    """Write the rule files (optionally time-scaled) into `out_dir`, flat."""
    return _write({Path(out_dir) / g.file: rules_render.rule_file(g) for g in groups(scale=scale)})


def stale(root: Path = ROOT) -> list[Path]:
    """Generated files whose committed content differs from what the code renders now."""
    return [p for p, text in artifacts(root).items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (also used by `middleware dashboards`)."""
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="render", choices=["render", "check", "rules"])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (render/check)")
    parser.add_argument("--out", type=Path, help="output directory (rules)")
    parser.add_argument("--scale", type=float, default=1.0, help="divide windows and for: by this (rules)")
    args = parser.parse_args(argv)
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
        paths = render_rules(args.out, args.scale)
    else:
        paths = _write(artifacts(args.root))
    for p in paths:
        print(p)
    return 0
