"""``middleware resume ID``: continue an interrupted stream from its checkpoint and print the text."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import MiddlewareError


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``middleware resume``."""
    p = argparse.ArgumentParser(prog="middleware resume", description="Resume a stream from its checkpoint.")
    p.add_argument("checkpoint_id", help="the checkpoint id (printed by the interrupted program)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="API base URL (env OPENAI_BASE_URL)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="API key (env OPENAI_API_KEY)")
    p.add_argument("--checkpoint-dir", default=os.environ.get("MIDDLEWARE_CHECKPOINT_DIR"),
                   help="checkpoint directory (env MIDDLEWARE_CHECKPOINT_DIR)")
    p.add_argument("--redis-url", default=os.environ.get("MIDDLEWARE_CHECKPOINT_REDIS_URL"),
                   help="checkpoint Redis URL instead of a directory")
    p.add_argument("--output", "-o", type=Path, help="write the full text here instead of stdout")
    p.add_argument("--no-progress", action="store_true", help="do not draw the progress bar (stderr)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 1 failed, 2 usage)."""
    ns = build_parser().parse_args(argv)
    if not ns.checkpoint_dir and not ns.redis_url:
        print("middleware resume: --checkpoint-dir or --redis-url is required", file=sys.stderr)
        return 2
    if not ns.no_progress:
        from .._extras import require_rich

        missing = require_rich("resume")
        if missing:
            print(f"{missing} (or pass --no-progress)", file=sys.stderr)
            return 2
    from openai import OpenAI

    from .. import Config, protect
    from .progress import RichProgress, progress
    from .recover import resume

    streaming = Config().streaming
    cfg = Config(streaming=type(streaming)(
        checkpoint_dir=Path(ns.checkpoint_dir) if ns.checkpoint_dir else None,
        checkpoint_redis_url=ns.redis_url or None,
    ))
    client = protect(OpenAI(base_url=ns.base_url, api_key=ns.api_key or "unused"), cfg)
    try:
        if ns.no_progress:
            result = resume(client, ns.checkpoint_id)
        else:
            from rich.console import Console

            with RichProgress(f"resume {ns.checkpoint_id[:8]}", console=Console(stderr=True)) as bar, progress(bar):
                result = resume(client, ns.checkpoint_id)
    except MiddlewareError as exc:
        print(f"middleware resume: {exc}", file=sys.stderr)
        return 1
    if ns.output is not None:
        from ..files import atomic_write

        atomic_write(ns.output, result.text)
    else:
        sys.stdout.write(result.text)
        sys.stdout.flush()
    return 0
