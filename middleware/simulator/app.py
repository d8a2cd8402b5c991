"""Routing of every simulator endpoint onto its handler."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from typing import Any

from . import chat, embeddings, responses
from .call import Call, Services
from .config import SimulatorConfig
from .exchange import Exchange
from .faults import FaultState, FaultSyntaxError, parse_fault, parse_fault_times
from .gate import Gate
from .httpserver import Connection, Request
from .latency import Latency
from .ratelimit import RateLimiter
from .stats import Stats

log = logging.getLogger("middleware.simulator")


class SimulatorApp:
    """The request handler of one simulator server and the state it owns."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.faults = FaultState(seed=config.seed, quota_exhausted=config.quota_exhausted)
        self.faults.update({"outages": config.outages, "outage_fault": config.outage_fault})
        self.faults.set_rates(config.fault_rates)
        self.faults.set_counted(config.fault_times)
        self.limiter = RateLimiter.for_config(config)
        latency = Latency(config.ttft_s, config.tokens_per_s, config.jitter, config.time_scale, config.seed)
        self.svc = Services(config, latency, self.stats)
        self.gate = Gate(self.svc, self.faults, self.limiter)
        self.responses = responses.ResponsesEndpoint(self.svc)
        self._ids = itertools.count(1)
        self._id_prefix = f"req_{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}"

    async def handle(self, request: Request, conn: Connection) -> None:
        """Answer one request; unexpected errors become a 500 (or a dropped stream)."""
        ex = Exchange(request, conn, f"{self._id_prefix}{next(self._ids):010d}")
        try:
            await self._route(ex)
        except Exception:
            log.exception("simulator handler failed for %s %s", request.method, request.path)
            if conn.responded:
                conn.abort()
            else:
                ex.send_error(500, "Internal simulator error.", "server_error", None)
        if self.config.access_log:
            print(f"{request.method} {request.path} {ex.request_id}", file=sys.stderr)

    async def _route(self, ex: Exchange) -> None:
        method, path = ex.request.method, ex.request.path.rstrip("/")
        if method == "POST" and path == "/v1/chat/completions":
            await self.gate.run(ex, "chat", chat.validate, chat.handle_chat)
        elif method == "POST" and path == "/v1/responses":
            await self.gate.run(ex, "responses", responses.validate, self._create_response)
        elif method == "POST" and path == "/v1/embeddings":
            await self.gate.run(ex, "embeddings", embeddings.validate, embeddings.handle_embeddings)
        elif path.startswith("/v1/responses/"):
            await self._response_item(ex, method, path.removeprefix("/v1/responses/"))
        elif method == "GET" and path == "/v1/models":
            ex.send_json(200, embeddings.models_payload(self.config.models))
        elif method == "GET" and path.startswith("/v1/models/"):
            ex.send_json(200, embeddings.models_payload((path.removeprefix("/v1/models/"),))["data"][0])
        elif path.startswith(("/stats", "/admin", "/health")):
            self._control(ex, method, path)
        else:
            ex.send_error(404, f"Unknown route {method} {path}.", "invalid_request_error", None)

    async def _create_response(self, svc: Services, call: Call) -> None:
        await self.responses.create(call)

    async def _response_item(self, ex: Exchange, method: str, rest: str) -> None:
        response_id, _, action = rest.partition("/")
        if method == "GET" and not action:
            await self.responses.retrieve(ex, response_id)
        elif method == "POST" and action == "cancel":
            await self.responses.cancel(ex, response_id)
        else:
            ex.send_error(404, f"Unknown route {method} /v1/responses/{rest}.", "invalid_request_error", None)

    def _control(self, ex: Exchange, method: str, path: str) -> None:
        if method == "GET" and path == "/health":
            ex.send_json(200, {"status": "ok"})
        elif method == "GET" and path == "/stats":
            ex.send_json(200, self.stats.snapshot())
        elif method == "POST" and path == "/stats/reset":
            self.stats.reset()
            ex.send_json(200, {"reset": True})
        elif method == "GET" and path == "/stats/requests":
            tag = ex.request.query.get("tag", "")
            ex.send_json(200, {"tag": tag, "times": self.stats.times(tag), "now": time.monotonic()})
        elif path == "/admin/faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    self.apply_faults(ex.request.json())
                except (ValueError, TypeError, FaultSyntaxError) as exc:
                    ex.send_error(400, f"Bad fault settings: {exc}", "invalid_request_error", None)
                    return
            ex.send_json(200, self.faults.describe())
        elif method == "POST" and path == "/admin/limits/reset":
            self.limiter.reset()
            ex.send_json(200, {"reset": True})
        else:
            ex.send_error(404, f"Unknown route {method} {path}.", "invalid_request_error", None)

    def apply_faults(self, payload: Any) -> None:
        """Apply an ``/admin/faults`` payload (validated first)."""
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        for spec in (payload.get("fault_rates") or {}):
            parse_fault(str(spec))
        if "fault_times" in payload:
            try:
                parse_fault_times(payload["fault_times"])
            except FaultSyntaxError as exc:
                raise FaultSyntaxError(f"fault_times: {exc}") from None
        self.faults.update(payload)
