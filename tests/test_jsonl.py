from __future__ import annotations

import pytest

from tether.data import JsonlAppender, read_completed, read_jsonl, write_jsonl
from tether.engine import Prompt
from tether.errors import DataError


def test_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": \n{"id": "3"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        read_jsonl(path, Prompt)
    with pytest.warns(UserWarning) as caught:
        records = read_jsonl(path, Prompt, on_error="skip")
    assert [r.id for r in records] == ["1"]
    messages = " ".join(str(w.message) for w in caught)
    assert "p.jsonl:2" in messages and "p.jsonl:3" in messages and "field 'text'" in messages


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no records"):
        read_jsonl(path)


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl"

    def boom():
        yield {"a": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, boom())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    assert write_jsonl(path, [{"a": 1}, {"a": 2}]) == 2
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_appender_and_torn_last_line(tmp_path):
    path = tmp_path / "stage.jsonl"
    with JsonlAppender(path) as out:
        out.write({"i": 0})
        out.write({"i": 1})
    with path.open("a") as handle:
        handle.write('{"i": 2')  # killed mid-write
    assert read_completed(path) == [{"i": 0}, {"i": 1}]
    with JsonlAppender(path) as out:
        out.write({"i": 2})
    assert read_completed(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
