"""Model -> tiktoken encoding choice, and one shared, lazily loaded encoder per process.

Loading is offline-first: before asking tiktoken for an encoding we probe tiktoken's
cache file ourselves (same location rule as ``tiktoken.load.read_file_cached``:
``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``;
file name = sha1 of the download URL) and check its sha256. If the file is absent or
corrupt we never call tiktoken, because tiktoken would then download it with a plain
``requests.get`` (no timeout) and, on a machine without network, could hang on DNS or
connect. The estimator then uses its documented fallback instead (the probe costs one extra
read and sha256 of the ~2-4 MB file, once per process). The outcome of a
load (encoder or failure reason) is memoised for the life of the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache

import tiktoken

__all__ = ["EncodingLoad", "encoding_name_for_model", "load_encoding"]

_log = logging.getLogger(__name__)

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o", "gpt-5", "o1", "o3", "o4")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")

# Download URL and sha256 of the encodings we know how to probe offline.
_SOURCES: dict[str, tuple[str, str]] = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def encoding_name_for_model(model: str, default: str = "o200k_base") -> str:
    """Return the tiktoken encoding name of ``model`` (``ft:`` and ``provider/`` prefixes ignored)."""
    return _encoding_name(model, default)


@lru_cache(maxsize=1024)
def _encoding_name(model: str, default: str) -> str:
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    name = name.rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return default


@dataclass(frozen=True, slots=True)
class EncodingLoad:
    """Outcome of loading one encoding: the encoder, or why it is unavailable."""

    name: str
    encoding: tiktoken.Encoding | None
    reason: str | None = None


_lock = threading.Lock()
_loaded: dict[str, EncodingLoad] = {}
_warned = False


def _cache_path(url: str) -> str:
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.environ.get("DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _probe(name: str) -> str | None:
    """Return why ``name`` cannot be loaded offline, or None when its cache file is present and intact."""
    source = _SOURCES.get(name)
    if source is None:
        return f"no offline source known for encoding {name!r}"
    if os.environ.get("TIKTOKEN_CACHE_DIR") == "":
        return "TIKTOKEN_CACHE_DIR is empty (tiktoken caching disabled, it would download)"
    url, sha256 = source
    path = _cache_path(url)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"tiktoken cache file for {name} not readable at {path}: {exc.strerror or exc}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"tiktoken cache file for {name} at {path} fails its sha256 check"
    return None


def _load(name: str) -> EncodingLoad:
    reason = _probe(name)
    if reason is None:
        try:
            return EncodingLoad(name, tiktoken.get_encoding(name))
        except Exception as exc:  # tiktoken internals: keep the caller running
            reason = f"tiktoken failed to load {name}: {type(exc).__name__}: {exc}"
    return EncodingLoad(name, None, reason)


def load_encoding(name: str) -> EncodingLoad:
    """Load ``name`` once per process (thread-safe); later calls return the memoised outcome.

    Never touches the network. A failure logs one warning per process.
    """
    result = _loaded.get(name)
    if result is not None:
        return result
    global _warned
    with _lock:
        result = _loaded.get(name)
        if result is None:
            result = _load(name)
            _loaded[name] = result
            if result.encoding is None:
                if not _warned:
                    _warned = True
                    _log.warning("token estimates fall back to utf-8 bytes / 4: %s", result.reason)
                else:
                    _log.debug("token estimates fall back to utf-8 bytes / 4: %s", result.reason)
    return result
