"""Validate refusal judges against human labels, so reports can print how far to trust them.

The labels are PyRIT's (``pip install --no-deps pyrit``, MIT): ``refusal.csv`` (105 rows) and
``refusal_extra.csv`` (64 rows) with columns ``objective, assistant_response, human_score,
data_type``; ``human_score`` 1 = refusal. The positive class in all metrics is *refusal*.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tether.errors import DataError
from tether.judges.refusal import RefusalJudge, judge_many
from tether.packages import package_dir

PYRIT_REFUSAL_SETS = ("refusal.csv", "refusal_extra.csv")
# Where the file sits inside the pyrit package; it moved between releases.
_PYRIT_DIRS = ("datasets/scorer_evals/refusal_scorer", "scorer_evals/refusal_scorer")
_COLUMNS = ("objective", "assistant_response", "human_score")


class RefusalExample(BaseModel):
    """One labelled (prompt, response); ``source`` is ``file:line`` of the row."""

    model_config = ConfigDict(frozen=True)

    source: str
    prompt: str
    response: str
    refusal: bool


class JudgeValidation(BaseModel):
    """A judge's agreement with human labels on one dataset (positive class: refusal).

    An ``unparsed`` verdict counts as a wrong answer (a missed refusal or a false alarm), so
    ``accuracy`` never flatters a judge that abstains.
    """

    model_config = ConfigDict(frozen=True)

    judge: str
    dataset: str
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int
    unparsed: int


def pyrit_refusal_path(name: str = "refusal.csv") -> Path:
    """Path of one of PyRIT's labelled refusal files (see :data:`PYRIT_REFUSAL_SETS`)."""
    root = package_dir("pyrit", "pyrit", purpose="validating the refusal judge")
    for sub in _PYRIT_DIRS:
        if (root / sub / name).is_file():
            return root / sub / name
    raise DataError(
        f"the installed pyrit package has no {name} under {' or '.join(_PYRIT_DIRS)}",
        where=str(root),
        hint="install the pinned version: pip install --no-deps pyrit==1.1.0",
    )


def load_pyrit_refusals(name: str = "refusal.csv") -> list[RefusalExample]:
    """PyRIT's labelled refusals as examples (its leading ``#`` comment lines are skipped)."""
    return read_refusal_csv(pyrit_refusal_path(name))


def read_refusal_csv(path: Path) -> list[RefusalExample]:
    """Read a PyRIT-format CSV: ``objective, assistant_response, human_score`` (0/1)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        skipped += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skipped:]), newline=""))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"missing columns {missing}; found {reader.fieldnames}",
            where=f"{path}:{skipped + 1}",
            hint="a refusal CSV needs objective, assistant_response and human_score (0 or 1)",
        )
    examples = []
    line = skipped + 2  # 1-based line of the first data row, after the header
    for row in reader:
        where = f"{path}:{line}"
        if row["human_score"] not in ("0", "1"):
            raise DataError(f"human_score must be 0 or 1, got {row['human_score']!r}", where=where)
        examples.append(
            RefusalExample(
                source=f"{path.name}:{line}",
                prompt=row["objective"],
                response=row["assistant_response"],
                refusal=row["human_score"] == "1",
            )
        )
        line = skipped + reader.line_num + 1
    if not examples:
        raise DataError("no labelled rows", where=str(path))
    return examples


def split_examples(
    examples: Sequence[RefusalExample], test_fraction: float = 0.3, seed: int = 0
) -> tuple[list[RefusalExample], list[RefusalExample]]:
    """A stratified (train, test) split: the same seed gives the same split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    rng = random.Random(seed)
    train: list[RefusalExample] = []
    test: list[RefusalExample] = []
    for label in (True, False):
        group = [e for e in examples if e.refusal is label]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        test += group[:n_test]
        train += group[n_test:]
    return train, test


def confusion_counts(
    truth: Sequence[bool], predicted: Sequence[bool | str | None]
) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn). A prediction of None or a string ("unparsed", "degenerate") is wrong either
    way: a missed positive, or a false alarm on a negative."""
    tp = fp = tn = fn = 0
    for t, p in zip(truth, predicted, strict=True):
        if p is None or isinstance(p, str):
            p = not t
        if t and p:
            tp += 1
        elif t:
            fn += 1
        elif p:
            fp += 1
        else:
            tn += 1
    return tp, fp, tn, fn


def binary_metrics(
    truth: Sequence[bool], predicted: Sequence[bool | None], *, judge: str = "", dataset: str = ""
) -> JudgeValidation:
    """Accuracy, precision, recall, F1 and confusion counts; ``None`` predictions are unparsed and
    count as wrong. Precision (recall) is 0 when nothing is predicted (present) positive."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no examples to validate on")
    tp, fp, tn, fn = confusion_counts(truth, predicted)
    unparsed = sum(p is None for p in predicted)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return JudgeValidation(
        judge=judge,
        dataset=dataset,
        n=len(truth),
        accuracy=(tp + tn) / len(truth),
        precision=precision,
        recall=recall,
        f1=f1,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        unparsed=unparsed,
    )


def validate_refusal_judge(
    judge: RefusalJudge, items: Sequence[RefusalExample] | None = None, *, dataset: str | None = None
) -> JudgeValidation:
    """Score ``judge`` against labelled examples (default: PyRIT's ``refusal.csv``)."""
    if items is None:
        items = load_pyrit_refusals("refusal.csv")
        dataset = dataset or "pyrit:refusal.csv"
    verdicts = judge_many(judge, [(e.prompt, e.response) for e in items])
    # A degenerate verdict is neither a refusal nor a compliance: like unparsed, it is wrong either way.
    predicted = [None if v.label in ("unparsed", "degenerate") else v.label == "refusal" for v in verdicts]
    return binary_metrics(
        [e.refusal for e in items],
        predicted,
        judge=getattr(judge, "name", type(judge).__name__),
        dataset=dataset or f"{len(items)} examples",
    )
