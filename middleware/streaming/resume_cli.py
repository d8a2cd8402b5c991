"""``middleware resume ID``: continue an interrupted stream from its checkpoint and print the text.

Every failure the user can cause or meet (a bad or unreachable Redis URL, a missing, corrupt or unreadable
checkpoint, an API error, an output file that cannot be written) ends with one line on stderr and a non-zero
status, never a traceback: 2 for usage errors, 1 for everything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import MiddlewareError


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``middleware resume``."""
    from ..cli import ArgumentParser

    p = ArgumentParser(prog="middleware resume", description="Resume a stream from its checkpoint.")
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


def _fail(message: str, status: int = 1) -> int:
    print(f"middleware resume: {' '.join(message.split())}", file=sys.stderr)
    return status


def _describe(exc: BaseException, checkpoint_id: str) -> str:
    """One line for an error met while resuming (never the API key: SDK and Redis messages do not carry it)."""
    try:
        import redis

        if isinstance(exc, redis.RedisError):
            return f"checkpoint Redis unavailable: {type(exc).__name__}: {exc}"
    except ImportError:  # pragma: no cover - redis is a dependency of the checkpoint store
        pass
    import openai

    if isinstance(exc, openai.APIError):
        return f"the API call failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"cannot read checkpoint {checkpoint_id!r}{where}: {exc.strerror or exc}"
    return f"checkpoint {checkpoint_id!r} is corrupt or not resumable: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 1 failed, 2 usage)."""
    ns = build_parser().parse_args(argv)
    if not ns.checkpoint_dir and not ns.redis_url:
        return _fail("--checkpoint-dir or --redis-url is required", 2)
    if not ns.no_progress:
        from .._extras import require_rich

        missing = require_rich("resume")
        if missing:
            print(f"{missing} (or pass --no-progress)", file=sys.stderr)
            return 2
    from openai import OpenAI

    from .. import Config, protect
    from ..errors import ConfigError
    from .progress import RichProgress, progress
    from .recover import resume

    streaming = Config().streaming
    try:
        cfg = Config(streaming=type(streaming)(
            checkpoint_dir=Path(ns.checkpoint_dir) if ns.checkpoint_dir else None,
            checkpoint_redis_url=ns.redis_url or None,
        ))
    except ConfigError as exc:
        return _fail(str(exc).replace("StreamConfig.checkpoint_redis_url", "--redis-url", 1)
                     .replace("StreamConfig.checkpoint_dir", "--checkpoint-dir", 1), 2)
    client = protect(OpenAI(base_url=ns.base_url, api_key=ns.api_key or "unused"), cfg)
    try:
        if ns.no_progress:
            result = resume(client, ns.checkpoint_id)
        else:
            from rich.console import Console

            with RichProgress(f"resume {ns.checkpoint_id[:8]}", console=Console(stderr=True)) as bar, progress(bar):
                result = resume(client, ns.checkpoint_id)
    except MiddlewareError as exc:  # CheckpointNotFound, StreamInterrupted, ...
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a CLI ends in one line: corrupt checkpoint, Redis down, API error
        return _fail(_describe(exc, ns.checkpoint_id))
    if ns.output is not None:
        from ..files import atomic_write

        try:
            atomic_write(ns.output, result.text)
        except MiddlewareError as exc:
            return _fail(str(exc))
    else:
        sys.stdout.write(result.text)
        sys.stdout.flush()
    return 0
