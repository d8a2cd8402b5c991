"""The error of a call that stayed rate limited for its whole wait budget."""

from __future__ import annotations

from middleware.errors import ThrottleTimeout


class RateLimitWaitExceeded(ThrottleTimeout):
    """Rate limited (429) for longer than the call's wait budget (``LimitConfig.max_wait_seconds``).

    A ``ThrottleTimeout`` (``needed_seconds``: the further wait the server or the limiter asked for;
    ``max_wait_seconds``: the budget; ``reason`` ``"rate_limit"``) that also says how long the call
    waited, on which resource and under which limit; its ``__cause__`` is the last 429.
    """

    def __init__(self, message: str, *, needed_seconds: float, max_wait_seconds: float, waited_seconds: float,
                 resource: str | None, limit: float | None, model: str) -> None:
        super().__init__(message, needed_seconds=needed_seconds, max_wait_seconds=max_wait_seconds,
                         reason="rate_limit")
        self.waited_seconds = waited_seconds
        self.resource = resource
        self.limit = limit
        self.model = model
