"""Issue 12.9: every user error of the ``middleware`` command is one clear line on stderr and a non-zero exit.

Each probe runs in its own process: most in forked children of one harness that imported the package once
(``cli_harness``: on a loaded 2-core machine a fresh interpreter per probe took 6-12 s), and two through the
real entry point, ``python -m middleware``, to show the entry point behaves the same. A probe that does not
end within its timeout is killed (with whatever it started) and fails.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from .helpers import Outcome, Probe, assert_one_clear_line, fork_probes, probe, run_probes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CORRUPT_CHECKPOINTS = {
    "wrong_types": {"id": "c1", "operation": "chat", "model": "m", "body": "x", "expires_at": "soon"},
    "body_not_object": {"id": "c2", "operation": "chat", "model": "m", "body": ["x"]},
    "not_json": "{corrupt",
    "is_a_folder": None,
}


def _tree(base: Path) -> dict[str, Path]:
    docs = base / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A short text.\n")
    hostile = base / "hostile"
    (hostile / "a[").mkdir(parents=True)
    (hostile / "[red]alert.txt").write_text("markup in the name\n")
    (hostile / "a[" / "bold]tail.txt").write_text("a closing tag in the path\n")
    (hostile / "esc\x1b[31mred.txt").write_text("a terminal escape in the name\n")
    (hostile / "bidi\u202etxt.exe").write_text("a right-to-left override in the name\n")
    links = base / "links"
    links.mkdir()
    (base / "outside.txt").write_text("outside\n")
    os.link(base / "outside.txt", links / "linked.txt")
    ckpt = base / "ckpt"
    ckpt.mkdir()
    for name, content in CORRUPT_CHECKPOINTS.items():
        path = ckpt / f"{name}.json"
        if content is None:
            path.mkdir()
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    (base / "a-file").write_text("not a folder")
    return {"docs": docs, "hostile": hostile, "links": links, "ckpt": ckpt, "file": base / "a-file"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    t = _tree(tmp_path_factory.mktemp("cli"))
    down = f"redis://:s3cret-pw@127.0.0.1:{_closed_port()}/0"
    dead_api = f"http://127.0.0.1:{_closed_port()}/v1"
    probes: dict[str, Probe] = {
        "sim_port": probe("simulate", "--port", "99999"),
        "sim_fault": probe("simulate", "--port", "0", "--fault", "bogus@0.5"),
        "sim_outage": probe("simulate", "--port", "0", "--outage", "abc"),
        "sim_fault_times": probe("simulate", "--port", "0", "--fault-times", "status=503@0"),
        "sim_fault_times_spec": probe("simulate", "--port", "0", "--fault-times", "status=503"),
        "sim_json": probe("simulate", "--port", "0", "--config-json", "{bad"),
        "sim_rpm": probe("simulate", "--port", "0", "--rpm", "-5", timeout=20),
        "sim_ttft": probe("simulate", "--port", "0", "--ttft", "nan", timeout=20),
        "resume_bad_url": probe("resume", "abc", "--redis-url", "not-a-url"),
        "resume_redis_down": probe("resume", "abc", "--redis-url", down, "--no-progress"),
        "resume_no_args": probe("resume"),
        "files_out_file": probe("files", "summarize", str(t["docs"]), "--out", str(t["file"]), "--base-url", dead_api),
        "files_out_proc": probe("files", "summarize", str(t["docs"]), "--out", "/proc/x", "--base-url", dead_api),
        "files_bad_env": probe("files", "summarize", str(t["docs"]), "--out", str(t["file"].parent / "o1"),
                               "--base-url", dead_api, env={"MIDDLEWARE_MAX_ATTEMPTS": "inf"}),
        "files_markup_dir": probe("files", "summarize", str(t["hostile"] / "no[/bold]such"), "--dry-run"),
        "demo_port": probe("demo", "--metrics-port", "99999", "--no-progress"),
        "demo_duration": probe("demo", "--duration", "-5", "--no-progress", "--metrics-port", "0", timeout=25),
        "demo_bad_env": probe("demo", "--duration", "1", "--no-progress", "--metrics-port", "0",
                              env={"MIDDLEWARE_STREAM_IDLE_TIMEOUT": "nan"}, timeout=40),
        "demo_bad_addr": probe("demo", "--duration", "1", "--no-progress",
                               env={"MIDDLEWARE_METRICS_ADDR": "localhost:http"}, timeout=40),
        "unknown_command": probe("nope"),
        "webhook_port": probe("--port", "99999", module="dashboards.webhook"),
        "markup_names": probe("files", "summarize", str(t["hostile"]), "--dry-run"),
        "hard_link": probe("files", "summarize", str(t["links"]), "--dry-run"),
        "hard_link_allowed": probe("files", "summarize", str(t["links"]), "--dry-run", "--allow-hard-links"),
    }
    for name in CORRUPT_CHECKPOINTS:
        checkpoint_id = name.replace("_", "-")
        (t["ckpt"] / f"{name}.json").rename(t["ckpt"] / f"{checkpoint_id}.json")
        probes[f"corrupt_{name}"] = probe("resume", checkpoint_id, "--checkpoint-dir", str(t["ckpt"]), "--no-progress",
                                          "--base-url", dead_api, "--api-key", "sk-SECRET-KEY-123")
    entry = {"entry_sim_port": probe("simulate", "--port", "99999"),
             "entry_demo_duration": probe("demo", "--duration", "-5", "--no-progress", "--metrics-port", "0",
                                          timeout=40)}
    forked, executed = fork_probes(list(probes.values())), run_probes(list(entry.values()))
    return {**{name: forked[p] for name, p in probes.items()}, **{name: executed[p] for name, p in entry.items()}}


@pytest.mark.parametrize(("name", "needles"), [
    ("sim_port", ("--port", "99999", "65535")),
    ("sim_fault", ("bogus",)),
    ("sim_outage", ("--outage", "abc")),
    ("sim_fault_times", ("--fault-times", "status=503", "'0'", "1000000")),
    ("sim_fault_times_spec", ("--fault-times", "SPEC@N")),
    ("sim_json", ("--config-json",)),
    ("sim_rpm", ("--rpm", "-5")),
    ("sim_ttft", ("--ttft", "nan")),
    ("resume_bad_url", ("--redis-url", "not-a-url")),
    ("resume_no_args", ("checkpoint_id",)),
    ("files_out_file", ("a-file",)),
    ("files_out_proc", ("/proc/x",)),
    ("files_bad_env", ("MIDDLEWARE_MAX_ATTEMPTS", "inf")),
    ("files_markup_dir", ("no[/bold]such",)),
    ("demo_port", ("--metrics-port", "99999")),
    ("demo_duration", ("--duration", "-5")),
    ("demo_bad_env", ("MIDDLEWARE_STREAM_IDLE_TIMEOUT", "nan")),
    ("demo_bad_addr", ("MIDDLEWARE_METRICS_ADDR",)),
    ("unknown_command", ("nope",)),
    ("webhook_port", ("99999",)),
    ("entry_sim_port", ("--port", "99999")),
    ("entry_demo_duration", ("--duration", "-5")),
])
def test_user_error_is_one_clear_line(results: dict[str, Outcome], name: str, needles: tuple[str, ...]) -> None:
    assert_one_clear_line(results[name], *needles)


def test_a_corrupt_or_unreadable_checkpoint_is_one_clear_line(results: dict[str, Outcome]) -> None:
    for name in CORRUPT_CHECKPOINTS:
        outcome = results[f"corrupt_{name}"]
        assert_one_clear_line(outcome, name.replace("_", "-"))
        assert "sk-SECRET-KEY-123" not in outcome.stderr + outcome.stdout


def test_an_unreachable_redis_is_one_line_without_its_password(results: dict[str, Outcome]) -> None:
    outcome = results["resume_redis_down"]
    assert_one_clear_line(outcome, "Redis")
    assert "s3cret-pw" not in outcome.stderr + outcome.stdout


def test_file_names_print_literally_never_as_markup_or_escapes(results: dict[str, Outcome]) -> None:
    outcome = results["markup_names"]
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    table = outcome.stdout
    assert "[red]alert.txt" in table and "a[/bold]tail.txt" in table
    assert "\x1b" not in table and "esc\\x1b[31mred.txt" in table  # no terminal escape reaches the terminal
    assert "\u202e" not in table and "bidi\\u202etxt.exe" in table
    assert "planned: 4" in table


def test_hard_links_are_refused_unless_the_flag_allows_them(results: dict[str, Outcome]) -> None:
    refused, allowed = results["hard_link"], results["hard_link_allowed"]
    assert refused.returncode == 0 and "linked.txt" in refused.stdout and "hard_link" in refused.stdout
    assert allowed.returncode == 0 and "planned: 1" in allowed.stdout, allowed.stderr[-1000:]
