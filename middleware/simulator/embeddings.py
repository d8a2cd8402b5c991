"""``POST /v1/embeddings`` (deterministic unit vectors) and ``GET /v1/models``."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from collections.abc import Mapping
from typing import Any

from .call import Call, Services


def _inputs(body: Mapping[str, Any]) -> list[Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [raw]
    return list(raw) if isinstance(raw, list) else []


MAX_DIMENSIONS = 16_384  # text-embedding-3-large has 3072; a bound keeps one request from allocating gigabytes


def validate(body: Mapping[str, Any]) -> str | None:
    """An error message when the request cannot be served."""
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS):
        return f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}."
    return None if _inputs(body) else "'input' must be a non-empty string or array."


def vector(seed: int, model: str, item: Any, dimensions: int) -> list[float]:
    """A deterministic unit vector for one input."""
    digest = hashlib.sha256(repr((seed, model, item)).encode()).digest()
    rng = random.Random(digest)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


async def handle_embeddings(svc: Services, call: Call) -> None:
    """Answer one admitted embeddings request (``encoding_format`` float or base64)."""
    dims = call.body.get("dimensions")
    dimensions = int(dims) if isinstance(dims, int) and dims > 0 else svc.config.embedding_dimensions
    as_base64 = call.body.get("encoding_format") == "base64"
    data: list[dict[str, Any]] = []
    for index, item in enumerate(_inputs(call.body)):
        vec = vector(svc.config.seed, call.model, item, dimensions)
        embedding: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vec)).decode() if as_base64 else vec
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    await svc.latency.sleep(svc.latency.first_token())
    payload = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens},
    }
    if call.fault is not None and call.fault.cuts_json:
        await call.ex.send_truncated_json(payload, whole_length=call.fault.truncated_json)
        call.settle(0, False)
        return
    call.ex.send_json(200, payload)
    call.settle(0, True)


def models_payload(models: tuple[str, ...]) -> dict[str, Any]:
    """The ``GET /v1/models`` list."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "simulator"} for m in models],
    }
