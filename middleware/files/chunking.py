"""Token-aware chunking of strings and (streamed) files.

Chunks hold at most ``max_tokens`` tokens (their real count, overlap included). Cuts prefer
paragraph, then line, sentence and word boundaries, then token boundaries that are character
boundaries (see :mod:`.segment`); when the next piece does not fit, the chunk is cut at the latest
of its strongest boundaries that keeps it at least ``min_fill`` full. With ``overlap_tokens`` each
chunk starts with up to that many tokens from the end of the previous chunk (``overlap_chars``
characters); the chunks without their overlap rejoin to exactly the original text.

Speed: each piece is encoded once and chunk counts are sums of piece counts, exact because every
cut inside a chunk is a pre-token boundary; only the overlap and hard-split pieces are re-encoded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .events import FileEvents, SafeEvents
from .safe_read import SafeReader, TextStats
from .segment import HARD, PARA, WORD_RE, Atom, Segmenter, last_cut
from .tokenizer import Tokenizer, resolve_encoding


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: ``text`` is the overlap followed by the body; ranges describe the body only.

    Character ranges index the decoded text; byte ranges index the source bytes (the file, BOM
    included, in its own codec; for a string, its UTF-8 form); lines are 1-based and inclusive.
    Byte ranges are approximate for files that needed replacement characters.
    """

    index: int
    text: str
    tokens: int
    overlap_chars: int
    overlap_tokens: int
    char_start: int
    char_end: int
    byte_start: int
    byte_end: int
    line_start: int
    line_end: int
    source: str | None = None

    @property
    def body(self) -> str:
        """The chunk without its overlap."""
        return self.text[self.overlap_chars :]


def _validate(max_tokens: int, overlap_tokens: int, min_fill: float) -> None:
    if max_tokens < 8:
        raise ValueError("max_tokens must be >= 8")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and max_tokens // 2")
    if not 0.0 <= min_fill <= 1.0:
        raise ValueError("min_fill must be between 0 and 1")


_NONE: list[Chunk] = []  # shared empty result: never mutated


class _Packer:
    """Greedy packing of atoms into chunks with look-back to the strongest boundary."""

    def __init__(
        self, tok: Tokenizer, max_tokens: int, overlap_tokens: int, min_fill: float,
        source: str | None, byte_len: Callable[[str], int], byte_offset: int,
    ) -> None:
        self.tok, self.max_tokens, self.overlap_tokens, self.min_fill = tok, max_tokens, overlap_tokens, min_fill
        self.source, self.byte_len = source, byte_len
        self.cur: list[Atom] = []
        self.cur_sum = 0
        self.overlap, self.overlap_count = "", 0
        self.index, self.char_pos, self.byte_pos, self.line = 0, 0, byte_offset, 1

    def add(self, atom: Atom) -> list[Chunk]:
        """Add one atom; returns the chunks completed by it (usually none)."""
        n = len(atom.tokens)
        if atom.level != HARD and self.cur_sum + n <= self.max_tokens - self.overlap_count:
            self.cur.append(atom)  # the common case: it fits
            self.cur_sum += n
            return _NONE
        done: list[Chunk] = []
        pending = [atom]
        while pending:
            a = pending.pop()
            budget = self.max_tokens - self.overlap_count
            if self.cur and (a.level == HARD or self.cur_sum + len(a.tokens) > budget):
                k = len(self.cur) if a.level == HARD else self._cut_index(a, budget)
                emitted, carried = self.cur[:k], self.cur[k:]
                self.cur, self.cur_sum = [], 0
                done.append(self._emit(emitted))
                pending.append(a)
                pending.extend(reversed(carried))
                continue
            self.cur.append(a)
            self.cur_sum += len(a.tokens)
        return done

    def _cut_index(self, nxt: Atom, budget: int) -> int:
        """Cut before ``cur[k]``: strongest boundary, latest, keeping the chunk >= min_fill of the budget."""
        need = self.min_fill * budget
        best_k, best_level, total = len(self.cur), nxt.level, self.cur_sum
        if total < need:
            return best_k
        for k in range(len(self.cur) - 1, 0, -1):
            total -= len(self.cur[k].tokens)
            if total < need:
                break
            if self.cur[k].level < best_level:
                best_k, best_level = k, self.cur[k].level
        return best_k

    def finish(self) -> list[Chunk]:
        """The last chunk, if any text is left."""
        if not self.cur:
            return _NONE
        emitted, self.cur, self.cur_sum = self.cur, [], 0
        return [self._emit(emitted)]

    def _emit(self, atoms: list[Atom]) -> Chunk:
        body = "".join(a.text for a in atoms)
        overlap, overlap_count = self.overlap, self.overlap_count
        atoms_sum = sum(len(a.tokens) for a in atoms)
        if not self.tok.exact_sums:
            count = self.tok.count(overlap + body)  # subadditive estimate: never above the sum
        elif overlap and atoms[0].level == HARD:  # not a pre-token boundary: count the join for real
            count = self.tok.count(overlap + atoms[0].text) + atoms_sum - len(atoms[0].tokens)
            if count > self.max_tokens:
                overlap, overlap_count, count = "", 0, atoms_sum
        else:
            count = overlap_count + atoms_sum
        n_bytes = self.byte_len(body)
        newlines = body.count("\n", 0, len(body) - 1)
        chunk = Chunk(
            self.index, overlap + body, count, len(overlap), overlap_count,
            self.char_pos, self.char_pos + len(body), self.byte_pos, self.byte_pos + n_bytes,
            self.line, self.line + newlines, self.source,
        )
        self.index += 1
        self.char_pos += len(body)
        self.byte_pos += n_bytes
        self.line += newlines + (1 if body.endswith("\n") else 0)
        self.overlap, self.overlap_count = self._next_overlap(atoms)
        return chunk

    def _next_overlap(self, atoms: list[Atom]) -> tuple[str, int]:
        """Up to ``overlap_tokens`` tokens from the end of ``atoms``, starting on a word (else character) boundary."""
        want = self.overlap_tokens
        if want == 0:
            return "", 0
        tail: list[int] = []
        for a in reversed(atoms):
            tail[:0] = a.tokens
            if len(tail) >= want:
                break
        n = min(want, len(tail))
        while n > 0:
            data = self.tok.decode_bytes(tail[-n:])
            skip = 0
            while skip < len(data) and data[skip] & 0xC0 == 0x80:
                skip += 1
            text = data[skip:].decode("utf-8", "surrogatepass")
            word = WORD_RE.search(text)  # start on a word: a pre-token boundary, so it fits first time
            if word is not None:
                text = text[word.start() :]
            count = self.tok.count(text)
            if count <= want:
                return text, count
            n -= count - want
        return "", 0


def _byte_len_for(codec: str) -> Callable[[str], int]:
    return lambda s: len(s.encode(codec, "surrogatepass"))


_UTF8_LEN = _byte_len_for("utf-8")


def _tokenizer(model: str, encoding: Any) -> Tokenizer:
    return Tokenizer(encoding if encoding is not None else resolve_encoding(model))


def chunk_text(
    text: str,
    model: str,
    max_tokens: int,
    overlap_tokens: int = 0,
    *,
    min_fill: float = 0.5,
    source: str | None = None,
    encoding: Any = None,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens for ``model`` (see module docs).

    ``encoding`` overrides the model's tiktoken encoding. Lone surrogates are not supported.
    """
    _validate(max_tokens, overlap_tokens, min_fill)
    tok = _tokenizer(model, encoding)
    packer = _Packer(tok, max_tokens, overlap_tokens, min_fill, source, _UTF8_LEN, 0)
    seg = Segmenter(tok, max_tokens - overlap_tokens)
    out: list[Chunk] = []
    for atom in seg.atoms(text, PARA):
        out.extend(packer.add(atom))
    out.extend(packer.finish())
    return out


def iter_text_chunks(
    pieces: Iterable[str],
    tok: Tokenizer,
    max_tokens: int,
    overlap_tokens: int = 0,
    *,
    min_fill: float = 0.5,
    source: str | None = None,
    byte_len: Callable[[str], int] = _UTF8_LEN,
    byte_offset: int = 0,
    buffer_chars: int = 256 * 1024,
) -> Iterator[Chunk]:
    """Chunk a stream of text pieces with memory bounded by ``buffer_chars`` and the chunk size.

    Text is buffered until ``buffer_chars`` characters, then cut at the last paragraph (else line,
    else word) cut in the buffer's second half; text without any cut is cut hard at 4x the buffer.
    """
    _validate(max_tokens, overlap_tokens, min_fill)
    packer = _Packer(tok, max_tokens, overlap_tokens, min_fill, source, byte_len, byte_offset)
    seg = Segmenter(tok, max_tokens - overlap_tokens)
    hard_limit = 4 * max(buffer_chars, 16 * max_tokens)
    parts: list[str] = []
    size, level = 0, PARA
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size < buffer_chars:
            continue
        buf = "".join(parts)
        cut, cut_level = last_cut(buf, len(buf) // 2)
        if cut == 0 and len(buf) >= hard_limit:
            cut, cut_level = len(buf) * 3 // 4, HARD
        if cut:
            for atom in seg.atoms(buf[:cut], level):
                yield from packer.add(atom)
            buf, level = buf[cut:], cut_level
        parts, size = [buf], len(buf)
    for atom in seg.atoms("".join(parts), level):
        yield from packer.add(atom)
    yield from packer.finish()


def iter_file_chunks(
    reader: SafeReader,
    path: str | os.PathLike[str],
    model: str,
    max_tokens: int,
    overlap_tokens: int = 0,
    *,
    min_fill: float = 0.5,
    encoding: Any = None,
    buffer_chars: int = 256 * 1024,
    stats: TextStats | None = None,
    events: FileEvents | None = None,
) -> Iterator[Chunk]:
    """Stream the chunks of a file read through ``reader`` (blocks of ``reader.block_size`` bytes).

    Chunk ``source`` is the path relative to the reader's root. Refusals raise
    :class:`~middleware.errors.FileOperationError` (a ``"changed"`` error can come after chunks were
    yielded: discard them). ``stats``, when given, is filled with the reader's :class:`TextStats`.
    """
    tok = _tokenizer(model, encoding)
    ev = SafeEvents(events)
    started = time.perf_counter()
    rel = reader.relpath(path)
    with reader.open_text(path) as stream:
        sizes: list[int] = []
        head = _Peek(iter(stream))
        head.prime()  # reads the first block: BOM and binary check
        for chunk in iter_text_chunks(
            head, tok, max_tokens, overlap_tokens, min_fill=min_fill, source=rel,
            byte_len=_byte_len_for(stream.stats.encoding), byte_offset=stream.stats.bom_bytes,
            buffer_chars=buffer_chars,
        ):
            sizes.append(chunk.tokens - chunk.overlap_tokens)
            yield chunk
        if stats is not None:
            vars(stats).update(vars(stream.stats))
    ev.file_read(stream.stats.bytes_read, sum(sizes))
    ev.chunks_produced(sizes, time.perf_counter() - started)


class _Peek:
    """An iterator whose first item can be pulled early (to surface refusals before chunking starts)."""

    def __init__(self, it: Iterator[str]) -> None:
        self._it = it
        self._first: list[str] = []

    def prime(self) -> None:
        self._first = [next(self._it, "")]

    def __iter__(self) -> Iterator[str]:
        yield from self._first
        yield from self._it
