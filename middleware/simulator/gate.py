"""Admission of generation requests: injected faults, quota, rate limits, and their error answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .call import Call, Services, Settle
from .counting import count_prompt_tokens, rate_limit_charge
from .durations import format_go_duration
from .exchange import Exchange, default_error, retry_after_headers
from .faults import Fault, FaultState, FaultSyntaxError, garble_ratelimit_headers, parse_fault, parse_times
from .ratelimit import Decision, RateLimiter

ORGANIZATION = "org-simulator"
_VISIT = "Visit https://platform.openai.com/account/rate-limits to learn more."
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_BUCKET_NAMES = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}

Handler = Callable[[Services, Call], Awaitable[None]]
Validator = Callable[[Mapping[str, Any]], "str | None"]


def max_output_tokens(operation: str, body: Mapping[str, Any], default: int) -> int:
    """The output tokens a request may produce, as charged at admission."""
    if operation == "embeddings":
        return 0
    keys = ("max_output_tokens",) if operation == "responses" else ("max_completion_tokens", "max_tokens")
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value)
    return default


def rate_limit_message(model: str, kind: str, limit: int, used: int, requested: int, wait_s: float) -> str:
    """OpenAI's 429 message for an exhausted bucket."""
    return (
        f"Rate limit reached for {model} in organization {ORGANIZATION} on {_BUCKET_NAMES[kind]}: "
        f"Limit {limit}, Used {used}, Requested {requested}. Please try again in {format_go_duration(wait_s)}. {_VISIT}"
    )


def too_large_message(model: str, limit: int, requested: int) -> str:
    """OpenAI's message for a request larger than the whole token limit."""
    return (
        f"Request too large for {model} in organization {ORGANIZATION} on tokens per min (TPM): Limit {limit}, "
        f"Requested {requested}. The input or output tokens must be reduced in order to run successfully. {_VISIT}"
    )


def _fault_key(headers: Mapping[str, str], has_fault: bool) -> tuple[str | None, int]:
    """The key and count of a counted header fault: ``x-sim-fault-key`` + ``x-sim-fault-times`` (count 1 when
    absent), or ``x-sim-fault-once`` (count 1); FaultSyntaxError for a bad or incomplete combination."""
    key, once, raw_times = (headers.get(h) for h in ("x-sim-fault-key", "x-sim-fault-once", "x-sim-fault-times"))
    if key is not None and once is not None:
        raise FaultSyntaxError("x-sim-fault-key and x-sim-fault-once are exclusive: send one of them")
    if once is not None and raw_times is not None:
        raise FaultSyntaxError("x-sim-fault-times goes with x-sim-fault-key, not x-sim-fault-once (which is once)")
    if key is not None or raw_times is not None:
        if not has_fault:
            raise FaultSyntaxError("x-sim-fault-key and x-sim-fault-times need x-sim-fault (the fault to count)")
        if key is None or not key.strip():
            raise FaultSyntaxError("x-sim-fault-times needs a non-empty x-sim-fault-key (which requests to count)")
    times = parse_times(raw_times) if raw_times is not None else 1
    return (key if key is not None else once), times


class Gate:
    """Decides, for each generation request, whether it is faulted, refused or admitted."""

    def __init__(self, svc: Services, faults: FaultState, limiter: RateLimiter) -> None:
        self.svc = svc
        self.faults = faults
        self.limiter = limiter

    def limit_key(self, headers: Mapping[str, str], model: str) -> str:
        """The bucket key: API key and model (or API key alone for a shared budget)."""
        auth = headers.get("authorization", "")
        api_key = auth[7:].strip() if auth.lower().startswith("bearer ") else auth
        return f"{api_key}|{'*' if self.svc.config.limit_scope == 'shared' else model}"

    def _pick_fault(self, ex: Exchange, now: float) -> Fault | None:
        headers = ex.request.headers
        spec = headers.get("x-sim-fault")
        key, times = _fault_key(headers, spec is not None)
        if spec is not None:
            fault = parse_fault(spec)  # a malformed spec is a 400 on every request, counted or not
            then = headers.get("x-sim-fault-then")
            then_fault = parse_fault(then) if then is not None else None
            if key is None or self.faults.within(key, times):
                return fault
            if then_fault is not None:
                return then_fault
        return self.faults.pick(now)

    async def run(self, ex: Exchange, operation: str, validate: Validator, handler: Handler) -> None:
        """Admit one generation request and hand it to ``handler``, or answer with an error."""
        stats = self.svc.stats
        stats.request()
        try:
            body = ex.request.json()
        except ValueError:
            ex.send_error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
            return
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            ex.send_error(400, "You must provide a model parameter.", "invalid_request_error", None, param="model")
            return
        model: str = body["model"]
        headers = ex.request.headers
        now = time.monotonic()
        stats.received(model, headers.get("x-sim-tag") or headers.get("x-sim-trace"), now)
        try:
            fault = self._pick_fault(ex, now)
        except FaultSyntaxError as exc:
            ex.send_error(400, str(exc), "invalid_request_error", None, param="x-sim-fault")
            return
        key = self.limit_key(headers, model)
        if self.limiter.enabled:
            ex.headers = list(self.limiter.headers(key))
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(self.svc.latency.scaled(fault.delay_s))
            if fault.reset or fault.is_error:
                stats.fault(model, fault.kind)
                if fault.reset:
                    ex.conn.abort()
                else:
                    self._send_fault(ex, model, fault, operation, body)
                return
        problem = validate(body)
        if problem is not None:
            ex.send_error(400, problem, "invalid_request_error", None)
            return
        if self.faults.quota_exhausted or self.svc.config.quota_exhausted:
            stats.refused(model, "insufficient_quota")
            ex.send_error(429, _QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
            return
        prompt = count_prompt_tokens(operation, body)
        cfg = self.svc.config
        charge = rate_limit_charge(
            operation, body, prompt, max_output_tokens(operation, body, cfg.default_max_output_tokens),
            accounting=cfg.accounting, factor=cfg.charge_factor, offset=cfg.charge_offset,
            per_choice=cfg.charge_per_choice)
        if self.limiter.enabled:
            decision = self.limiter.admit(key, charge)
            ex.headers = list(decision.headers)
            if not decision.allowed:
                stats.refused(model, decision.refused_type or "tokens")
                self._send_refusal(ex, model, decision)
                return
        stats.admitted(model, charge)
        if fault is not None and fault.kind not in ("none", "delay"):
            stats.fault(model, fault.kind)
        if fault is not None and fault.bad_ratelimit_headers:
            ex.headers = garble_ratelimit_headers(ex.headers)
        call = Call(ex, body, model, prompt, fault, self._settler(model, key, prompt, charge))
        await handler(self.svc, call)

    def _settler(self, model: str, key: str, prompt: int, charge: int) -> Settle:
        done = False
        usage_mode = self.svc.config.charge_mode == "usage" and self.limiter.enabled

        def settle(completion: int, served: bool) -> None:
            nonlocal done
            if done:
                return
            done = True
            if served:
                self.svc.stats.served(model, prompt, completion)
            if usage_mode:
                delta = prompt + completion - charge
                self.limiter.correct(key, delta)
                self.svc.stats.recharged(model, delta)

        return settle

    def _send_refusal(self, ex: Exchange, model: str, decision: Decision) -> None:
        if decision.refused_type == "too_large":
            message = too_large_message(model, decision.limit, decision.requested)
            ex.send_error(429, message, "tokens", "rate_limit_exceeded")
            return
        kind = decision.refused_type or "tokens"
        message = rate_limit_message(model, kind, decision.limit, decision.used, decision.requested,
                                     decision.retry_after_s)
        ex.send_error(429, message, kind, "rate_limit_exceeded", retry_after_headers(decision.retry_after_s))

    def _send_fault(self, ex: Exchange, model: str, fault: Fault, operation: str, body: Mapping[str, Any]) -> None:
        status = fault.status or 500
        message, error_type, code = default_error(status)
        extra: list[tuple[str, str]] = []
        if fault.retry_after_s is not None:
            extra += retry_after_headers(fault.retry_after_s)
        if fault.should_retry is not None:
            extra.append(("x-should-retry", "true" if fault.should_retry else "false"))
        error_type = fault.error_type or error_type
        code = fault.code or code
        if fault.too_large:
            requested = count_prompt_tokens(operation, body) + max_output_tokens(operation, body, 0)
            message = too_large_message(model, self.limiter.tpm, requested)
        elif error_type == "insufficient_quota":
            message = _QUOTA_MESSAGE
        elif status == 429 and error_type in _BUCKET_NAMES:
            limit = self.limiter.rpm if error_type == "requests" else self.limiter.tpm
            message = rate_limit_message(model, error_type, limit, limit, 1, fault.retry_after_s or 1.0)
        ex.send_error(status, fault.message or message, error_type, code, extra)
