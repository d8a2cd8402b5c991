"""Control of a running simulator over its own HTTP control routes (same for thread and process)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy


class SimulatorControl:
    """Stats, faults and limits of a simulator reachable at ``self.root_url``."""

    root_url: str

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return self.root_url + "/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.root_url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        with _OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: counters per model and in total."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset_stats(self) -> None:
        """``POST /stats/reset``."""
        self._call("POST", "/stats/reset", {})

    def reset_limits(self) -> None:
        """Refill every rate-limit bucket."""
        self._call("POST", "/admin/limits/reset", {})

    def request_times(self, tag: str) -> list[float]:
        """Server-side arrival times (monotonic seconds) of requests sent with ``x-sim-tag: tag``."""
        result = self._call("GET", "/stats/requests?" + urllib.parse.urlencode({"tag": tag}))
        return [float(t) for t in result["times"]]

    def faults(self) -> dict[str, Any]:
        """``GET /admin/faults``: outages, fault rates and the counted faults still to be served."""
        result: dict[str, Any] = self._call("GET", "/admin/faults")
        return result

    def set_faults(
        self,
        *,
        outage: bool | None = None,
        outage_for_s: float | None = None,
        outages: list[tuple[float, float]] | None = None,
        outage_fault: str | None = None,
        fault_rates: dict[str, float] | None = None,
        fault_times: list[tuple[str, int]] | None = None,
        quota_exhausted: bool | None = None,
    ) -> dict[str, Any]:
        """Change server-side faults at runtime (``POST /admin/faults``); returns the new state.

        ``fault_times=[("status=503", 2)]`` replaces the queue of counted faults: the next 2 generation requests
        (without an ``x-sim-fault`` of their own) get a 503, whenever they come; ``[]`` empties it.
        """
        payload = {
            k: v
            for k, v in {
                "outage": outage,
                "outage_for_s": outage_for_s,
                "outages": outages,
                "outage_fault": outage_fault,
                "fault_rates": fault_rates,
                "fault_times": None if fault_times is None else [list(item) for item in fault_times],
                "quota_exhausted": quota_exhausted,
            }.items()
            if v is not None
        }
        result: dict[str, Any] = self._call("POST", "/admin/faults", payload)
        return result
