"""The ``middleware`` command: demo, simulate, dashboards, stack, resume, files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._version import __version__

USAGE = """middleware [--log-format json|text] [--log-level LEVEL] <command> [options]

commands:
  demo        run the demo workload against the built-in simulator (or the real API with --live)
  simulate    run the OpenAI-compatible simulator
  dashboards  render the Grafana dashboards and Prometheus rules into deploy/
  stack       run Prometheus and Alertmanager locally against the demo (up | down)
  resume      resume an interrupted stream from its checkpoint: middleware resume ID
  files       process files through the protected client: middleware files summarize DIR
  traces      the slowest and failed calls of the last run; middleware traces show ID draws one trace

log options (before the command; `middleware demo` also takes them after it):
  --log-format json|text   write the middleware's log records to stderr (json: one object per line,
                           with trace_id, span_id and the span's fields)
  --log-level LEVEL        DEBUG, INFO (default when a format is given), WARNING, ERROR; none without either
"""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` (one line) and exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``middleware`` console script."""
    from .logconfig import configure, split_global

    try:
        log_format, log_level, args = split_global(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"middleware: error: {exc} (see middleware --help)", file=sys.stderr)
        return 2
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    configure(log_format, log_level)  # only when asked: without the options no handler, as before
    command, rest = args[0], args[1:]
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command == "simulate":
        from .simulator import main as sim_main

        return sim_main(rest)
    if command == "dashboards":
        from dashboards import main as dash_main

        return int(dash_main(rest) or 0)
    if command == "stack":
        from dashboards.stack import main as stack_main

        return int(stack_main(rest) or 0)
    if command == "resume":
        from .streaming.resume_cli import main as resume_main

        return resume_main(rest)
    if command == "traces":
        from .traces_cli import main as traces_main

        return traces_main(rest)
    if command == "files":
        from .files import files_cli_main

        return files_cli_main(rest)
    print(f"middleware: error: unknown command {command!r} (see middleware --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
