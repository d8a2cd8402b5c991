"""Image input tokens, by detail and size (OpenAI vision pricing rule for gpt-4o-class models).

* ``detail="low"``: ``BASE`` tokens (85).
* ``"high"`` and ``"auto"`` (counted as high, the conservative choice): scale to fit within
  2048x2048, then so the shortest side is at most 768 px (images are never scaled up), and
  charge ``BASE + TILE * tiles`` where ``tiles = ceil(w/512) * ceil(h/512)`` and ``TILE`` is 170.
  Example: 1024x1024 -> 768x768 -> 4 tiles -> 765 tokens.
* Size comes from the image header when the image is inline (``data:`` URL with PNG, GIF, WebP
  or JPEG); for a remote URL or an unreadable header it is assumed ``DEFAULT_SIZE`` (1024x1024),
  i.e. 765 tokens at high detail.
* gpt-4o-mini bills images with larger constants (2833 base, 5667 per tile); other models with
  patch-based image billing (gpt-4.1-mini, o4-mini ...) are counted with the 85/170 rule.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

__all__ = ["BASE", "DEFAULT_SIZE", "TILE", "image_size_from_url", "image_tokens"]

BASE = 85
TILE = 170
DEFAULT_SIZE = (1024, 1024)
_MINI_COSTS = (2833, 5667)
_HEADER_B64_CHARS = 87_384  # decode at most ~64 KiB of an inline image to find its size


def image_tokens(detail: str | None, size: tuple[int, int] | None, model: str = "") -> int:
    """Tokens of one image input given its ``detail`` and pixel ``size`` (None = unknown)."""
    base, tile = _MINI_COSTS if "gpt-4o-mini" in model else (BASE, TILE)
    if detail == "low":
        return base
    width, height = size if size and size[0] > 0 and size[1] > 0 else DEFAULT_SIZE
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def image_size_from_url(url: str) -> tuple[int, int] | None:
    """Pixel size of an inline ``data:`` image from its header, or None when unknown."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0 or ";base64" not in url[:comma]:
        return None
    chunk = url[comma + 1 : comma + 1 + _HEADER_B64_CHARS]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        data = base64.b64decode(chunk)
    except (binascii.Error, ValueError):
        return None
    return image_size(data)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Pixel size read from the first bytes of a PNG, GIF, WebP or JPEG file."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if kind == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
