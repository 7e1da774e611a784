"""Training examples read from JSONL: ``{prompt, completion}`` for SFT, ``{prompt, chosen,
rejected}`` for DPO and the reward model. Shared by ``tether train`` and the frontier's replay, so
both read a line the same way and name a bad one by file:line."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SFTLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1)
    completion: str = Field(min_length=1)


class DPOLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    doc_id: str | None = None  # reward: held-out pairs are whole documents (default: the prompt)


def read_lines(path: Path, model: type[BaseModel]) -> list[dict]:
    from tether.data.jsonl import iter_numbered
    from tether.errors import DataError

    rows = [line.model_dump() for _, line in iter_numbered(path, model)]
    if not rows:
        raise DataError("file has no training examples", where=str(path), hint="one JSON object per line")
    return rows


__all__ = ["DPOLine", "SFTLine", "read_lines"]
