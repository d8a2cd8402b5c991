"""Folder processing end to end against the OpenAI-compatible simulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import openai
import pytest

from middleware import protect
from middleware.files import ProgressEvent, aprocess_files, files_cli_main, process_files
from middleware.simulator import Simulator

PROMPT = "Summarize part {part}/{parts} of {path}:\n{chunk}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("".join(f"Paragraph {i} says something useful.\n\n" for i in range(60)))
    (root / "sub" / "b.md").write_text("# Title\n\nShort note.\n")
    (root / "image.bin").write_bytes(b"\x00\x01\x02PNG" * 100)
    (root / "big.txt").write_text("x" * 5000)
    (root / "empty.txt").write_text("")
    (root / ".hidden").write_text("skipped: hidden")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text("secret")
    return root


def served(sim: Simulator) -> int:
    return int(sim.stats()["total"]["served"])


def by_path(report: Any) -> dict[str, tuple[str, str | None]]:
    return {o.path: (o.status, o.reason) for o in report.outcomes}


def run(sim: Simulator, root: Path, out: Path, **kw: Any) -> Any:
    client = protect(openai.OpenAI(api_key="test", base_url=sim.base_url))
    return process_files("", PROMPT, client, model="gpt-4o-mini", root=root, out_dir=out, max_chunk_tokens=60,
                         max_bytes=4096, **kw)


def test_process_rerun_and_dry_run(simulator: Simulator, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    events: list[ProgressEvent] = []
    report = run(simulator, tree, out, concurrency=3, progress=events.append)
    assert by_path(report) == {
        "a.txt": ("done", None), "big.txt": ("refused", "too_large"), "empty.txt": ("skipped", "empty"),
        "escape.txt": ("refused", "escape"), "image.bin": ("refused", "binary"), "sub/b.md": ("done", None),
    }
    a = next(o for o in report.outcomes if o.path == "a.txt")
    assert a.chunks > 5 and served(simulator) == a.chunks + 1
    summary = (out / "a.txt.summary.md").read_text()
    assert summary.count("## Part ") == a.chunks and (out / "sub" / "b.md.summary.md").is_file()
    assert json.loads((out / "manifest.json").read_text())["files"][0]["path"] == "a.txt"
    assert {e.kind for e in events} >= {"chunk_done", "file_done", "file_refused", "file_skipped"}
    assert events[-1].files_done == events[-1].files_total == 6

    again = run(simulator, tree, out)  # nothing changed: everything done is skipped, no call made
    assert by_path(again)["a.txt"] == ("skipped", "done") and served(simulator) == a.chunks + 1

    (tree / "sub" / "b.md").write_text("# Title\n\nChanged note.\n")
    dry = run(simulator, tree, out, dry_run=True)
    assert by_path(dry)["sub/b.md"] == ("planned", None) and by_path(dry)["a.txt"] == ("skipped", "done")
    assert by_path(dry)["escape.txt"] == ("refused", "escape") and served(simulator) == a.chunks + 1
    third = run(simulator, tree, out)
    assert by_path(third)["sub/b.md"] == ("done", None) and served(simulator) == a.chunks + 2


def test_api_failure_marks_file_failed_and_writes_nothing(simulator: Simulator, tree: Path, tmp_path: Path) -> None:
    simulator.set_faults(quota_exhausted=True)  # terminal 429: not retried
    out = tmp_path / "out"
    report = run(simulator, tree, out)
    assert by_path(report)["a.txt"][0] == "failed" and not report.ok
    assert not (out / "a.txt.summary.md").exists() and not (out / "a.txt.summary.json").exists()


def test_async_variant(simulator: Simulator, tree: Path, tmp_path: Path) -> None:
    client = protect(openai.AsyncOpenAI(api_key="test", base_url=simulator.base_url))
    out = tmp_path / "out"
    report = asyncio.run(aprocess_files(["*.txt", "sub/**/*.md"], PROMPT, client, model="gpt-4o-mini", root=tree,
                                        out_dir=out, max_chunk_tokens=60, max_bytes=4096, concurrency=4))
    assert by_path(report)["a.txt"] == ("done", None) and by_path(report)["sub/b.md"] == ("done", None)
    assert by_path(report)["escape.txt"] == ("refused", "escape")
    assert (out / "a.txt.summary.md").is_file()


def test_cli_summarize(simulator: Simulator, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.remove(tree / "big.txt")
    out = tmp_path / "cli-out"
    assert files_cli_main(["summarize", str(tree), "--out", str(out), "--dry-run"]) == 0
    assert "planned" in capsys.readouterr().out and not out.exists()
    code = files_cli_main(["summarize", str(tree), "--out", str(out), "--base-url", simulator.base_url,
                           "--max-chunk-tokens", "80"])
    assert code == 0 and (out / "a.txt.summary.md").is_file()
    assert "done: 2" in capsys.readouterr().out
