"""Documents (BoolQ and user JSONL), the fixed hash split, and resumable candidate generation."""

from __future__ import annotations

import json

import pytest

from tether.errors import ConfigError, DataError
from tether.feedback.records import load_candidate_sets, summarization_prompt
from tether.feedback.store import LabelStore
from tether.rlhf.candidates import generate_candidates, temperatures
from tether.rlhf.documents import (
    SummaryDocument,
    load_documents,
    load_user_documents,
    read_split_docs,
    select_split,
    select_validation,
    split_of,
    write_split,
)


def _docs(n: int) -> list[SummaryDocument]:
    return [
        SummaryDocument(id=f"d{i}", text=f"Document number {i} says something. It has two sentences.")
        for i in range(n)
    ]


def test_split_is_by_id_hash_not_position():
    docs = _docs(200)
    train, held = select_split(docs, n_train=None, n_heldout=None, heldout_fraction=0.25)
    assert len(train) + len(held) == 200 and 30 < len(held) < 70
    # Reversing, dropping or adding documents does not move anyone across the split.
    train2, held2 = select_split(
        [*reversed(docs[:150]), *_docs(0)], n_train=None, n_heldout=None, heldout_fraction=0.25
    )
    assert {d.id for d in held2} == {d.id for d in held if int(d.id[1:]) < 150}
    assert all(split_of(d.id, 0.25) == "heldout" for d in held)
    # n_train / n_heldout take a fixed pseudo-random sample, the same every time
    a, b = select_split(docs, n_train=5, n_heldout=3), select_split(docs, n_train=5, n_heldout=3)
    assert [d.id for d in a[0]] == [d.id for d in b[0]] and len(a[0]) == 5 and len(a[1]) == 3
    assert [d.id for d in a[0]] != [f"d{i}" for i in range(5)]  # not file order


def test_validation_documents_follow_the_compared_ones_on_the_held_out_side():
    docs = _docs(200)
    train, held = select_split(docs, n_train=None, n_heldout=5, heldout_fraction=0.25)
    validation = select_validation(docs, n_heldout=5, n_validation=4, heldout_fraction=0.25)
    assert len(validation) == 4 and all(split_of(d.id, 0.25) == "heldout" for d in validation)
    assert not {d.id for d in validation} & {d.id for d in [*train, *held]}
    # The next held-out documents in hash order: growing n_validation only appends.
    more = select_validation(docs, n_heldout=5, n_validation=6, heldout_fraction=0.25)
    assert more[:4] == validation
    # When the comparison takes every held-out document, none is left to validate on.
    assert select_validation(docs, n_heldout=None, n_validation=4, heldout_fraction=0.25) == []


def test_write_and_read_split(tmp_path):
    train, held = select_split(_docs(20), n_train=6, n_heldout=2)
    write_split(tmp_path, train, held, salt="tether-rlhf")
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["train"] == [d.id for d in train] and split["heldout"] == [d.id for d in held]
    assert read_split_docs(tmp_path) == (train, held)


def test_boolq_documents_keep_the_key_fact():
    docs = load_documents("boolq")
    assert len(docs) == 3270
    lengths = sorted(len(d.text.split()) for d in docs)
    assert lengths[0] < 20 and lengths[-1] > 500  # nothing may assume ~90 words
    assert all(d.question and d.answer is not None for d in docs[:50])
    assert docs[0].prompt == summarization_prompt(docs[0].text)


def test_user_documents_and_errors(tmp_path):
    good = tmp_path / "docs.jsonl"
    good.write_text('{"id": 1, "text": "One."}\n\n{"id": "b", "text": " Two. ", "title": "kept out"}\n')
    docs = load_user_documents(good)
    assert [(d.id, d.text) for d in docs] == [("1", "One."), ("b", "Two.")]
    assert docs[0].question is None and docs[0].source == "docs.jsonl"

    cases = {
        '{"id": "a", "text": "x"}\n{"id": "a"}\n': ("docs.jsonl:2", "text"),
        '{"id": "a", "text": "x"}\nnot json\n': ("docs.jsonl:2", "not valid JSON"),
        '{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n': (
            "docs.jsonl:3",
            r"repeats \(first on line 1\)",
        ),
        '{"id": "a", "text": "   "}\n': ("docs.jsonl:1", "empty text"),
    }
    for content, (where, message) in cases.items():
        good.write_text(content)
        with pytest.raises(DataError, match=message) as info:
            load_user_documents(good)
        assert info.value.where.endswith(where)
    with pytest.raises(DataError, match="not found"):
        load_documents(str(tmp_path / "missing.jsonl"))


def test_temperatures():
    assert temperatures(4, 0.3, 1.0) == [0.3, 0.533, 0.767, 1.0]
    assert temperatures(2, 0.5, 0.5) == [0.5, 0.5]
    with pytest.raises(ConfigError, match="2-4"):
        temperatures(5, 0.3, 1.0)


def test_generate_candidates_resumable_and_importable(tiny_model_dir, tmp_path):
    from tether.engine import Engine

    engine = Engine.from_spec(str(tiny_model_dir))
    docs = [*_docs(3), SummaryDocument(id="q", text="A passage. " * 400, question="is it?", answer=True)]
    out = tmp_path / "cands.jsonl"
    sets = generate_candidates(engine, docs[:2], out, k=3, max_new_tokens=4, chunk_size=2)
    assert [s.doc_id for s in sets] == ["d0", "d1"]
    first = sets[0]
    assert [c.id for c in first.candidates] == ["s0", "s1", "s2"]
    assert [c.model_extra["temperature"] for c in first.candidates] == [0.3, 0.65, 1.0]
    assert all(c.model_extra["completion_tokens"] <= 4 for c in first.candidates)
    assert first.model_extra["model"] == engine.name and first.export_prompt == summarization_prompt(
        first.document
    )

    # Resume: the first two are not regenerated (same records), the rest are added.
    calls = []
    original = engine.generate
    engine.generate = lambda prompts, params, **kw: (
        calls.append([p.id for p in prompts]) or original(prompts, params, **kw)
    )
    # The tiny model's context is 512 tokens: the ~1,250-token document is the engine's to truncate.
    with pytest.warns(UserWarning, match="prompt 'q' truncated"):
        sets = generate_candidates(engine, docs, out, k=3, max_new_tokens=4, chunk_size=2)
    assert [s.doc_id for s in sets] == ["d0", "d1", "d2", "q"]
    assert sets[0] == first
    assert calls == [["d2", "q"]] * 3  # one call per temperature, only the missing documents
    assert sets[3].model_extra["question"] == "is it?" and sets[3].document == docs[3].text

    loaded = load_candidate_sets(out)  # what `tether label import` reads
    assert [s.doc_id for s in loaded] == ["d0", "d1", "d2", "q"]
    summary = LabelStore(tmp_path / "labels.db", create=True).import_sets(loaded)
    assert summary.added == 4
