"""Safe file operations: confined reads, token-aware chunking, atomic writes, folder processing."""

from .atomic import atomic_write
from .chunking import Chunk, chunk_text, iter_file_chunks, iter_text_chunks
from .cli import files_cli_main
from .events import FileEvents, NoopFileEvents
from .process import FileOutcome, ProcessReport, ProgressEvent, aprocess_files, expand_inputs, process_files
from .safe_read import REASONS, ReadResult, SafeReader, TextStats

__all__ = [
    "REASONS",
    "Chunk",
    "FileEvents",
    "FileOutcome",
    "NoopFileEvents",
    "ProcessReport",
    "ProgressEvent",
    "ReadResult",
    "SafeReader",
    "TextStats",
    "aprocess_files",
    "atomic_write",
    "chunk_text",
    "expand_inputs",
    "files_cli_main",
    "iter_file_chunks",
    "iter_text_chunks",
    "process_files",
]
