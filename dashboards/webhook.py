"""A tiny Alertmanager webhook receiver: records (and prints) every notification it is sent.

Used by the tests (in a thread) and by the compose stack (``python -m dashboards.webhook``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1024 * 1024


class WebhookReceiver:
    """Serves POSTs on 127.0.0.1 (or `host`) and keeps their JSON bodies with the request path."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo: bool = False) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.headers.get("Content-Length", "0").strip()
                if not raw.isdigit() or int(raw) > MAX_BODY_BYTES:
                    self.send_error(413 if raw.isdigit() else 400)
                    return
                try:
                    payload = json.loads(self.rfile.read(int(raw)) or b"{}")
                except ValueError:
                    self.send_error(400, "body is not JSON")
                    return
                if not isinstance(payload, dict):
                    self.send_error(400, "body is not a JSON object")
                    return
                with receiver._lock:
                    receiver.notifications.append((self.path, payload))
                if echo:
                    print(self.path, json.dumps(payload), flush=True)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert received so far (flattened from the notifications)."""
        with self._lock:
            return [a for _, n in self.notifications for a in n.get("alerts", [])]

    def firing(self) -> set[str]:
        """Names of alerts received in state firing."""
        return {a["labels"]["alertname"] for a in self.alerts() if a.get("status") == "firing"}

    def start(self) -> WebhookReceiver:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted, printing each notification (127.0.0.1 unless ``--host`` says otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.webhook")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1; 0.0.0.0 only inside a container network)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"webhook: --port must be from 0 to 65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        receiver = WebhookReceiver(args.host, args.port, echo=True)
    except OSError as exc:
        print(f"webhook: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        receiver._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver._server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
