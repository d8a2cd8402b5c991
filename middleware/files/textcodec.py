"""Text detection and incremental decoding: BOM sniffing, binary detection, counted replacements.

Policy (documented): a UTF-32 / UTF-16 / UTF-8 byte-order mark selects that codec and is skipped;
without a BOM the text is UTF-8. Undecodable bytes are replaced by U+FFFD (``errors="replace"``),
each replacement counted, or refused (``errors="strict"`` -> reason ``"decode"``).
"""

from __future__ import annotations

import codecs
import threading
from dataclasses import dataclass

# Longest BOM first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
MAX_BOM = 4
SNIFF_BYTES = 8192
# Control characters that do not occur in text: C0 except \t \n \v \f \r and ESC.
_TEXT_CONTROLS = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}
_BINARY_BYTES = bytes(b for b in range(32) if b not in _TEXT_CONTROLS) + b"\x7f"
BINARY_CONTROL_RATIO = 0.10


def detect_bom(head: bytes) -> tuple[str, int]:
    """The codec named by a byte-order mark at the start of ``head`` and the BOM length (utf-8, 0 if none)."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    return "utf-8", 0


def looks_binary(sample: bytes, codec: str) -> bool:
    """True when the first block is binary: a NUL byte (UTF-8), or too many control characters."""
    if not sample:
        return False
    if codec == "utf-8":
        if b"\x00" in sample:
            return True
        controls = len(sample) - len(sample.translate(None, _BINARY_BYTES))
        return controls / len(sample) > BINARY_CONTROL_RATIO
    text = sample.decode(codec, errors="replace")
    if not text:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS)
    return controls / len(text) > BINARY_CONTROL_RATIO


_state = threading.local()


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _state.count = getattr(_state, "count", 0) + 1
    return "\ufffd", exc.end


_HANDLER = "middleware.files.count_replace"
codecs.register_error(_HANDLER, _count_replace)


@dataclass
class Decoder:
    """Incremental decoder that never splits a character across blocks and counts replacements."""

    codec: str
    strict: bool = False
    replacements: int = 0

    def __post_init__(self) -> None:
        errors = "strict" if self.strict else _HANDLER
        self._dec = codecs.getincrementaldecoder(self.codec)(errors=errors)

    def decode(self, data: bytes, final: bool = False) -> str:
        """Decode the next block; raises UnicodeDecodeError only in strict mode."""
        _state.count = 0
        text = self._dec.decode(data, final)
        self.replacements += _state.count
        return text
