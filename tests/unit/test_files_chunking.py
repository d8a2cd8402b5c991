"""Properties of token-aware chunking: real counts within budget, valid boundaries, exact rejoin."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middleware.files import SafeReader, chunk_text, iter_file_chunks
from middleware.files.chunking import Chunk, iter_text_chunks
from middleware.files.tokenizer import Tokenizer

O200K = tiktoken.get_encoding("o200k_base")
CL100K = tiktoken.get_encoding("cl100k_base")
TRICKY = ["\r\n", "\n\n", "\n", "\r", " ", "  ", "\t", ". ", "! ", "'s", "'ll", "/", "\n/", ".\n/", "\u3000", "\x85",
          "\u2028", "\xa0", "e\u0301", "\u0301", "中文字", "。", "😀", "👍🏽",
          "👨‍👩‍👧", "123", "٣", "İ", "\x1c", "\ufeff",
          "<|endoftext|>", "a" * 40, "word ", "Sentence. ", "x" * 300]
texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=60).map("".join)
_CONTROLS = {c: None for c in [*range(0, 9), *range(14, 32), 127]}
file_texts = texts.map(lambda t: t.translate(_CONTROLS))  # text files: no binary control characters
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_chunks(
    chunks: list[Chunk], text: str, enc: tiktoken.Encoding, max_tokens: int, byte_offset: int = 0
) -> None:
    """Every invariant the chunker promises, against the real tokenizer."""
    assert "".join(c.body for c in chunks) == text
    data = b"\0" * byte_offset + text.encode("utf-8")
    pos = 0
    for i, c in enumerate(chunks):
        assert c.index == i and c.body
        assert c.tokens == len(enc.encode_ordinary(c.text)) <= max_tokens
        assert c.overlap_tokens == len(enc.encode_ordinary(c.text[: c.overlap_chars]))
        assert (c.char_start, c.char_end) == (pos, pos + len(c.body))
        assert text[c.char_start : c.char_end] == c.body
        assert data[c.byte_start : c.byte_end].decode("utf-8") == c.body  # never inside a character
        assert c.line_start == text.count("\n", 0, c.char_start) + 1
        assert c.line_end == text.count("\n", 0, c.char_end - 1) + 1
        if i:
            assert chunks[i - 1].body.endswith(c.text[: c.overlap_chars])
        pos = c.char_end
    assert not chunks or chunks[0].overlap_chars == 0


@FAST
@given(texts, st.integers(8, 60), st.data(), st.sampled_from([O200K, CL100K]))
def test_chunk_text_properties(text: str, max_tokens: int, data: st.DataObject, enc: tiktoken.Encoding) -> None:
    overlap = data.draw(st.integers(0, max_tokens // 2))
    check_chunks(chunk_text(text, "gpt-4o", max_tokens, overlap, encoding=enc), text, enc, max_tokens)


@FAST
@given(texts, st.integers(8, 40), st.integers(0, 4), st.integers(1, 50))
def test_streaming_tiny_buffers(text: str, max_tokens: int, overlap: int, buffer_chars: int) -> None:
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    chunks = list(iter_text_chunks(pieces, Tokenizer(O200K), max_tokens, overlap, buffer_chars=buffer_chars))
    check_chunks(chunks, text, O200K, max_tokens)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_texts, st.integers(1, 7), st.integers(8, 40))
def test_file_stream_tiny_blocks(tmp_path: Path, text: str, block: int, max_tokens: int) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    reader = SafeReader(tmp_path, block_size=block)
    chunks = list(iter_file_chunks(reader, "t.txt", "gpt-4o", max_tokens, 3, buffer_chars=16))
    assert all(c.source == "t.txt" for c in chunks)
    expected = text[1:] if text.startswith("\ufeff") else text  # a leading U+FEFF is a UTF-8 BOM
    check_chunks(chunks, expected, O200K, max_tokens, byte_offset=len(text) - len(expected) and 3)


@pytest.mark.parametrize("codec,bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                                       ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-8", codecs.BOM_UTF8)])
def test_file_byte_ranges_follow_the_codec(tmp_path: Path, codec: str, bom: bytes) -> None:
    text = "Première ligne 😀.\n\n第二段落。Second paragraph here.\n" * 40
    raw = bom + text.encode(codec)
    (tmp_path / "f.txt").write_bytes(raw)
    chunks = list(iter_file_chunks(SafeReader(tmp_path, block_size=5), "f.txt", "gpt-4o", 30, buffer_chars=64))
    assert "".join(c.body for c in chunks) == text
    assert chunks[0].byte_start == len(bom) and chunks[-1].byte_end == len(raw)
    for c in chunks:
        assert raw[c.byte_start : c.byte_end].decode(codec) == c.body


def test_prefers_paragraphs_then_lines() -> None:
    para = "Line one of the paragraph.\nLine two of it.\n\n"
    chunks = chunk_text(para * 10, "gpt-4o", 40, encoding=O200K)
    assert all(c.body.endswith("\n\n") for c in chunks)
    long_para = "".join(f"Line number {i} of a single long paragraph.\n" for i in range(30))
    chunks = chunk_text(long_para, "gpt-4o", 40, encoding=O200K)
    assert len(chunks) > 1 and all(c.body.endswith("\n") for c in chunks)


def test_sentences_then_words_then_hard_split() -> None:
    prose = "This is a sentence with several words. " * 20
    chunks = chunk_text(prose.strip(), "gpt-4o", 30, encoding=O200K)
    assert all(c.body.rstrip().endswith(".") for c in chunks[:-1])
    blob = "😀" * 200 + "中文" * 300
    chunks = chunk_text(blob, "gpt-4o", 16, encoding=O200K)
    check_chunks(chunks, blob, O200K, 16)
    assert len(chunks) > 10


def test_overlap_is_taken_from_previous_chunk_end() -> None:
    text = "".join(f"Paragraph {i} talks about topic {i}.\n\n" for i in range(50))
    chunks = chunk_text(text, "gpt-4o", 40, 10, encoding=O200K)
    assert all(0 < c.overlap_tokens <= 10 for c in chunks[1:])
    check_chunks(chunks, text, O200K, 40)


def test_fallback_without_tokenizer_uses_bytes_over_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("middleware.files.chunking.resolve_encoding", lambda model: None)
    text = "Fallback text ünïcode 😀.\n\n" * 30
    chunks = chunk_text(text, "no-such-model", 20, 4)
    assert "".join(c.body for c in chunks) == text
    for c in chunks:
        assert c.tokens == -(-len(c.text.encode("utf-8")) // 4) <= 20


def test_rejects_bad_budgets() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", "gpt-4o", 4)
    with pytest.raises(ValueError):
        chunk_text("x", "gpt-4o", 20, 11)
