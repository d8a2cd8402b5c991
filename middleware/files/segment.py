"""Cutting text into atoms of at most ``budget`` tokens at pre-token boundaries.

Why counts add up: tiktoken (cl100k_base, o200k_base) pre-splits text with a regex and runs BPE
inside each piece, so ``encode(a + b) == encode(a) + encode(b)`` whenever the cut between ``a``
and ``b`` is a pre-split boundary. The cuts used here are boundaries by construction, whatever
text precedes or follows them, because no alternative of those regexes can match across them:

* line cut: right after the last ``\\r``/``\\n`` of a whitespace run whose rest is horizontal
  whitespace followed by a non-space character other than ``/`` (o200k's punctuation
  alternative may swallow ``[\\r\\n/]*``); a paragraph cut is a line cut after two or more breaks;
* word cut: between a non-space character and a run of horizontal whitespace followed by a
  non-space character (the space goes with the next word, as ``" word"`` pre-tokens do);
  a sentence cut is a word cut after ``.!?…`` (and closing quotes or brackets).

"Whitespace" is the Unicode White_Space set (what ``\\s`` means to tiktoken), not ``str.isspace``.
A piece with no such cut (a long word, CJK text) is split at token boundaries that are character
boundaries ("hard" cuts, level :data:`HARD`); those are not pre-split boundaries, so such pieces
are re-encoded on their own and a chunk never continues across a hard cut.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterator

from .tokenizer import Tokenizer

PARA, LINE, SENTENCE, WORD, HARD = range(5)
LEVEL_NAMES = ("paragraph", "line", "sentence", "word", "hard")

_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_HWS = "\t\x0b\x0c \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_VALID_AFTER = rf"(?=[{_HWS}]*[^{_WS}])(?!/)"
# One line break: \r\n, a lone \r or \n (``\r(?!\n)`` keeps \r\n whole, as an atomic group would; Python 3.10
# has no atomic groups).
_BREAK = r"(?:\r\n|\r(?!\n)|\n)"
PARA_RE = re.compile(rf"{_BREAK}(?:[{_HWS}]*{_BREAK})+{_VALID_AFTER}")
PARA_LF_RE = re.compile(rf"\n(?:[{_HWS}]*\n)+{_VALID_AFTER}")  # the same for text without \r, 5x faster
LINE_RE = re.compile(rf"[\r\n](?:[{_WS}]*[\r\n])?{_VALID_AFTER}")
WORD_RE = re.compile(rf"(?<=[^{_WS}])(?=[{_HWS}]+[^{_WS}])")
_ENDERS = frozenset(".!?…。！？")
_CLOSERS = frozenset("\"')]}»”’")


class Atom:
    """A piece of text between two cuts, with its tokens; ``level`` is the kind of cut before it."""

    __slots__ = ("level", "text", "tokens")

    def __init__(self, text: str, tokens: list[int], level: int) -> None:
        self.text = text
        self.tokens = tokens
        self.level = level


def _is_sentence_end(seg: str, pos: int) -> bool:
    ch = seg[pos - 1]
    return ch in _ENDERS or (ch in _CLOSERS and pos >= 2 and seg[pos - 2] in _ENDERS)


def cuts(seg: str, kind: int) -> list[int]:
    """Inner cut positions of ``seg`` of one kind (LINE, SENTENCE or WORD)."""
    if kind == LINE:
        return [m.end() for m in LINE_RE.finditer(seg) if m.end() < len(seg)]
    found = [m.start() for m in WORD_RE.finditer(seg)]
    return [p for p in found if _is_sentence_end(seg, p)] if kind == SENTENCE else found


def last_cut(buf: str, start: int) -> tuple[int, int]:
    """The last (position, level) cut of ``buf`` at or after ``start``, preferring paragraph, line, word."""
    para = PARA_RE if "\r" in buf else PARA_LF_RE
    for regex, level in ((para, PARA), (LINE_RE, LINE)):
        last = None
        for last in regex.finditer(buf, start):  # noqa: B007
            pass
        if last is not None and last.end() < len(buf):
            return last.end(), level
    last_word = None
    for last_word in WORD_RE.finditer(buf, start):  # noqa: B007
        pass
    return (last_word.start(), WORD) if last_word is not None else (0, HARD)


class Segmenter:
    """Turns text between two cuts into atoms of at most ``budget`` tokens, coarsest cuts first."""

    def __init__(self, tok: Tokenizer, budget: int) -> None:
        self.tok = tok
        self.budget = budget
        self.encode_chars = max(64, budget * 6)  # longer pieces are split before encoding (a speed heuristic)

    def atoms(self, text: str, level: int) -> Iterator[Atom]:
        """Atoms of ``text``; ``level`` is the kind of cut at its start."""
        budget, limit, encode = self.budget, self.encode_chars, self.tok.encode
        start, ends = 0, [m.end() for m in (PARA_RE if "\r" in text else PARA_LF_RE).finditer(text)]
        ends.append(len(text))
        for end in ends:
            seg = text[start:end]
            if seg and len(seg) <= limit:  # fast path: a paragraph that fits
                tokens = encode(seg)
                if len(tokens) <= budget:
                    yield Atom(seg, tokens, level)
                    level, start = PARA, end
                    continue
            yield from self._piece(seg, level, PARA)
            level, start = PARA, end

    def _piece(self, seg: str, level: int, kind: int) -> Iterator[Atom]:
        if not seg:
            return
        tokens = None
        if len(seg) <= self.encode_chars:
            tokens = self.tok.encode(seg)
            if len(tokens) <= self.budget:
                yield Atom(seg, tokens, level)
                return
        yield from self._split(seg, level, kind + 1, tokens)

    def _split(self, seg: str, level: int, kind: int, tokens: list[int] | None) -> Iterator[Atom]:
        if kind == HARD:
            yield from self._hard(seg, level, tokens)
            return
        inner = cuts(seg, kind)
        if not inner:
            yield from self._split(seg, level, kind + 1, tokens)
            return
        prev = 0
        for pos in [*inner, len(seg)]:
            yield from self._piece(seg[prev:pos], level if prev == 0 else kind, kind)
            prev = pos

    def _hard(self, seg: str, level: int, tokens: list[int] | None) -> Iterator[Atom]:
        """Split at token boundaries moved back to character boundaries; every piece is re-encoded."""
        tok, budget = self.tok, self.budget
        tokens = tok.encode(seg) if tokens is None else tokens
        if len(tokens) <= budget:
            yield Atom(seg, tokens, level)
            return
        data = seg.encode("utf-8", "surrogatepass")
        cum = [0, *itertools.accumulate(tok.token_byte_lengths(tokens))]
        pos = 0
        while pos < len(data):
            first = bisect.bisect_right(cum, pos) - 1
            j = min(first + budget, len(tokens))
            while True:
                end = _char_start(data, cum[j])
                if end <= pos:
                    end = _char_end(data, pos)
                piece = data[pos:end].decode("utf-8", "surrogatepass")
                piece_tokens = tok.encode(piece)
                if len(piece_tokens) <= budget or end == _char_end(data, pos):
                    break
                j = max(first + 1, j - (len(piece_tokens) - budget))
                if j == first + 1 and _char_start(data, cum[j]) >= end:
                    j = first  # the token run cannot shrink further: take one character
            yield Atom(piece, piece_tokens, level if pos == 0 else HARD)
            pos = end


def _char_start(data: bytes, i: int) -> int:
    """``i`` moved back to the start of the UTF-8 character it falls in."""
    while 0 < i < len(data) and data[i] & 0xC0 == 0x80:
        i -= 1
    return i


def _char_end(data: bytes, i: int) -> int:
    """The end of the UTF-8 character starting at ``i``."""
    i += 1
    while i < len(data) and data[i] & 0xC0 == 0x80:
        i += 1
    return i
