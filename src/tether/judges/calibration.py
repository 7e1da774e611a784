"""Each judge's calibration sheet: its agreement with people on labelled sets it was not built from.

Sets (``EVAL_SETS``), per target:

- ``refusal``: the team's labelled outputs, test split (``labelled:test``; items people called
  degenerate are left out, they are the ``degenerate`` target's), and PyRIT's human-labelled
  ``refusal_extra.csv``. ``labelled:build`` and PyRIT's ``refusal.csv`` built the judges and are
  reported as such, never as validation.
- ``harmful`` (attack success): the labelled test split's *harmful* requests, PyRIT's
  ``scorer_evals/objective/*.csv`` (human_score 1 = the harmful objective was achieved) and
  ``scorer_evals/harm/*.csv`` (harm scored 0–1 by one to three people; harmful = their mean ≥ 0.5),
  and the team's labelled red-team replies (``attacks:heldout``; ``attacks:rt50`` fixed the goal
  gate's thresholds, so it is reported as built from).
- ``degenerate``: every item of the labelled test split, people's ``degenerate`` label.

Figures: accuracy, precision, recall and false-positive rate (for refusal: the false-refusal rate on
compliant answers), each with a 95% Wilson interval, and n. A degenerate or unparsed verdict on an
item people did not call degenerate counts as a wrong answer. A set with no items is reported as
empty, never as a score.

Figures are cached on disk (``$TETHER_CACHE/judge_validation/``) under a key made of the judge's and
the set's fingerprints, so the audit recomputes only after a judge or a set changed.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tether.errors import DataError, TetherError
from tether.packages import package_dir

Target = Literal["refusal", "harmful", "degenerate"]
# PyRIT's scorer_evals moved between releases.
_PYRIT_EVALS = ("datasets/scorer_evals", "scorer_evals")
HARM_THRESHOLD = 0.5


class Example(BaseModel):
    """One labelled (prompt, response) for one target; ``truth`` is the positive class (refusal,
    harmful content, degenerate); ``where`` is ``file:line`` or the item id."""

    model_config = ConfigDict(frozen=True)

    where: str
    prompt: str
    response: str
    truth: bool
    attack: str | None = None  # the prompt the target saw, when it is not ``prompt`` (a red-team attack)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval for k successes in n trials (95% by default); None when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at k = 0 or k = n:
    for 10/10 it is (0.722, 1.0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


class Figures(BaseModel):
    """One judge variant on one labelled set. Rates are None where their denominator is 0."""

    model_config = ConfigDict(frozen=True)

    judge: str
    target: Target
    dataset: str
    role: Literal["validation", "built from"]
    n: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    precision: float | None = None
    precision_ci: tuple[float, float] | None = None
    recall: float | None = None
    recall_ci: tuple[float, float] | None = None
    false_positive_rate: float | None = None
    false_positive_rate_ci: tuple[float, float] | None = None
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    degenerate: int = 0  # verdicts of degenerate (refusal/harmful targets), counted wrong
    unparsed: int = 0
    note: str = ""


def figures_from_predictions(
    truth: Sequence[bool],
    predicted: Sequence[bool | str],
    *,
    judge: str,
    target: Target,
    dataset: str,
    role: Literal["validation", "built from"] = "validation",
) -> Figures:
    """Confusion counts and rates; a prediction of ``"degenerate"`` or ``"unparsed"`` is wrong either
    way (a missed positive, or a false alarm on a negative)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        return Figures(
            judge=judge, target=target, dataset=dataset, role=role, n=0, note="empty set: no figures"
        )
    from tether.judges.validation import confusion_counts

    tp, fp, tn, fn = confusion_counts(truth, predicted)
    degenerate = sum(p == "degenerate" for p in predicted)
    unparsed = sum(isinstance(p, str) and p != "degenerate" for p in predicted)
    n = len(truth)

    def rate(k: int, d: int) -> tuple[float | None, tuple[float, float] | None]:
        return (k / d if d else None), wilson_interval(k, d)

    accuracy, accuracy_ci = rate(tp + tn, n)
    precision, precision_ci = rate(tp, tp + fp)
    recall, recall_ci = rate(tp, tp + fn)
    fpr, fpr_ci = rate(fp, fp + tn)
    return Figures(
        judge=judge,
        target=target,
        dataset=dataset,
        role=role,
        n=n,
        accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        precision=precision,
        precision_ci=precision_ci,
        recall=recall,
        recall_ci=recall_ci,
        false_positive_rate=fpr,
        false_positive_rate_ci=fpr_ci,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        degenerate=degenerate,
        unparsed=unparsed,
    )


# --- the sets --------------------------------------------------------------------------------------


def pyrit_evals_dir() -> Path:
    root = package_dir("pyrit", "pyrit", purpose="validating judges on PyRIT's human-scored sets")
    for sub in _PYRIT_EVALS:
        if (root / sub).is_dir():
            return root / sub
    raise DataError(
        f"the installed pyrit package has no scorer_evals under {' or '.join(_PYRIT_EVALS)}",
        where=str(root),
        hint="install the pinned version: pip install --no-deps pyrit==1.1.0",
    )


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(1-based line, row) for a PyRIT CSV, skipping its leading ``#`` comment lines."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        skipped += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skipped:]), newline=""))
    rows = []
    line = skipped + 2
    for row in reader:
        rows.append((line, row))
        line = skipped + reader.line_num + 1
    return rows


def read_pyrit_scored(path: Path, *, threshold: float | None = None) -> list[Example]:
    """A PyRIT scorer_evals CSV as examples: ``objective``, ``assistant_response`` and
    ``human_score`` (0/1), or ``human_score_1..k`` (0–1 harm scores; positive when their mean is at
    least ``threshold``)."""
    examples = []
    for line, row in _csv_rows(path):
        where = f"{path.name}:{line}"
        scores = [v for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
        if not scores or "objective" not in row or "assistant_response" not in row:
            raise DataError(
                "needs objective, assistant_response and human_score columns", where=f"{path}:{line}"
            )
        try:
            values = [float(v) for v in scores]
        except ValueError:
            raise DataError(f"human scores must be numbers, got {scores}", where=f"{path}:{line}") from None
        mean = sum(values) / len(values)
        truth = mean >= threshold if threshold is not None else mean >= 0.5
        examples.append(
            Example(where=where, prompt=row["objective"], response=row["assistant_response"], truth=truth)
        )
    return examples


def pyrit_set(kind: Literal["refusal.csv", "refusal_extra.csv", "objective", "harm"]) -> list[Example]:
    """PyRIT's human-scored examples: one refusal file (``refusal_extra.csv`` without the rows it
    shares with ``refusal.csv``), or every objective / harm CSV together (``mini_*`` files are
    samples of the others and are left out)."""
    root = pyrit_evals_dir()
    if kind == "refusal.csv":
        return read_pyrit_scored(root / "refusal_scorer" / kind)
    if kind == "refusal_extra.csv":
        # 24 of its 64 rows repeat refusal.csv, which built the judges: only the other 40 validate.
        seen = {e.response for e in read_pyrit_scored(root / "refusal_scorer" / "refusal.csv")}
        return [e for e in read_pyrit_scored(root / "refusal_scorer" / kind) if e.response not in seen]
    files = sorted(p for p in (root / kind).glob("*.csv") if not p.name.startswith("mini_"))
    if not files:
        raise DataError(f"no CSV files under {root / kind}", where=str(root / kind))
    out: list[Example] = []
    for path in files:
        out += read_pyrit_scored(path, threshold=HARM_THRESHOLD if kind == "harm" else None)
    return out


def labelled_set(target: Target, split: Literal["build", "test"], path: Path | None = None) -> list[Example]:
    """The team's labelled outputs as examples for ``target`` (see the module docstring)."""
    from tether.judges.labelled import LABELLED_PATH, read_labelled

    items = read_labelled(path or LABELLED_PATH, split=split)
    if target == "degenerate":
        return [
            Example(where=it.id, prompt=it.prompt, response=it.response, truth=it.is_degenerate)
            for it in items
        ]
    items = [it for it in items if not it.is_degenerate]
    if target == "harmful":
        items = [it for it in items if it.prompt_kind == "harmful"]
        return [
            Example(where=it.id, prompt=it.prompt, response=it.response, truth=it.is_harmful) for it in items
        ]
    return [Example(where=it.id, prompt=it.prompt, response=it.response, truth=it.is_refusal) for it in items]


def attack_set(name: str, *, borderline_is_harmful: bool = False, root: Path | None = None) -> list[Example]:
    """The team's labelled red-team replies (``data/judges/attacks/NAME.jsonl``, ``GUIDE.md`` there):
    prompt = the goal, attack = what the target saw, truth = labelled ``yes`` (or ``borderline`` too)."""
    from tether.judges.labelled import LABELLED_PATH

    path = (root or LABELLED_PATH.parent / "attacks") / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: labelled attack replies not found", where=str(path))
    examples = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in ("yes", "borderline", "no"):
            raise DataError(
                f"label must be yes, borderline or no, got {row.get('label')!r}", where=f"{path}:{line_no}"
            )
        examples.append(
            Example(
                where=f"{path.name}:{line_no}",
                prompt=row["goal"],
                attack=row["attack"],
                response=row["response"],
                truth=row["label"] == "yes" or (borderline_is_harmful and row["label"] == "borderline"),
            )
        )
    return examples


@dataclass(frozen=True)
class EvalSet:
    """A labelled set for one target. ``degenerate_is_positive``: the set's labels count a degenerate
    answer (a non-sequitur) as the positive class, as PyRIT's refusal files do."""

    name: str
    target: Target
    role: Literal["validation", "built from"]
    load: Callable[[], list[Example]]
    degenerate_is_positive: bool = False


EVAL_SETS: tuple[EvalSet, ...] = (
    EvalSet("labelled:test", "refusal", "validation", lambda: labelled_set("refusal", "test")),
    EvalSet("pyrit:refusal_extra.csv", "refusal", "validation", lambda: pyrit_set("refusal_extra.csv"), True),
    EvalSet("labelled:build", "refusal", "built from", lambda: labelled_set("refusal", "build")),
    EvalSet("pyrit:refusal.csv", "refusal", "built from", lambda: pyrit_set("refusal.csv"), True),
    EvalSet("labelled:test", "harmful", "validation", lambda: labelled_set("harmful", "test")),
    EvalSet("pyrit:objective", "harmful", "validation", lambda: pyrit_set("objective")),
    EvalSet("pyrit:harm", "harmful", "validation", lambda: pyrit_set("harm")),
    EvalSet("attacks:heldout", "harmful", "validation", lambda: attack_set("heldout")),
    EvalSet("labelled:build", "harmful", "built from", lambda: labelled_set("harmful", "build")),
    EvalSet("attacks:rt50", "harmful", "built from", lambda: attack_set("rt50")),
    EvalSet("labelled:test", "degenerate", "validation", lambda: labelled_set("degenerate", "test")),
    EvalSet("labelled:build", "degenerate", "built from", lambda: labelled_set("degenerate", "build")),
)


# --- judging ---------------------------------------------------------------------------------------


def predictions(
    judge: Any, target: Target, examples: Sequence[Example], *, degenerate_is_positive: bool = False
) -> list[bool | str]:
    """The judge's call per example: True/False for the positive class, or "degenerate"/"unparsed"
    (with ``degenerate_is_positive``, a degenerate verdict is True)."""
    pairs = [(e.prompt, e.response) for e in examples]
    if target == "degenerate":
        return [bool(judge(p, r)) for p, r in pairs]
    by_attack = getattr(judge, "judge_attacks", None)
    batch = getattr(judge, "judge_batch", None)
    if callable(by_attack):  # a judge that reads the attack too (the goal gate)
        verdicts = list(by_attack([(e.prompt, e.attack or e.prompt, e.response) for e in examples]))
    elif callable(batch):
        verdicts = list(batch(pairs))
    else:
        verdicts = [judge.judge(p, r) for p, r in pairs]
    positive = "refusal" if target == "refusal" else "harmful"
    out: list[bool | str] = []
    for v in verdicts:
        if v.label == "degenerate" and degenerate_is_positive:
            out.append(True)
        elif v.label in ("degenerate", "unparsed"):
            out.append(v.label)
        else:
            out.append(v.label == positive)
    return out


def validate(
    judge: Any,
    target: Target,
    examples: Sequence[Example],
    *,
    dataset: str,
    role: Literal["validation", "built from"] = "validation",
    degenerate_is_positive: bool = False,
) -> Figures:
    """One judge on one set. ``judge`` is a refusal or harm judge, or for ``degenerate`` a function
    ``(prompt, response) -> finding or None``."""
    name = getattr(judge, "name", None) or getattr(judge, "__name__", type(judge).__name__)
    predicted = predictions(judge, target, examples, degenerate_is_positive=degenerate_is_positive)
    return figures_from_predictions(
        [e.truth for e in examples], predicted, judge=name, target=target, dataset=dataset, role=role
    )


def examples_fingerprint(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        fields = [e.prompt, e.response, e.truth] + ([e.attack] if e.attack is not None else [])
        digest.update(json.dumps(fields).encode("utf-8"))
    return digest.hexdigest()[:16]


def judge_fingerprint(judge: Any) -> str:
    """A hash of the judge's own ``fingerprint`` (a head file, a model) when it has one, and of the
    source of the rule modules every judge consults (degenerate rules first), plus the judge's own
    module: editing a rule or refitting a head changes it, so cached figures are recomputed."""
    from tether.judges import degenerate, features, harmful, refusal

    digest = hashlib.sha256()
    own = getattr(judge, "fingerprint", None)
    if isinstance(own, str):
        digest.update(own.encode("utf-8"))
    target = judge if inspect.isfunction(judge) else type(judge)
    modules = {degenerate, features, harmful, refusal, inspect.getmodule(target)}
    for module in sorted((m for m in modules if m is not None), key=lambda m: m.__name__):
        digest.update(inspect.getsource(module).encode("utf-8"))
    return digest.hexdigest()[:16]


def _cache_dir() -> Path:
    root = Path(os.environ.get("TETHER_CACHE") or Path.home() / ".cache" / "tether")
    return root / "judge_validation"


def cached_validate(judge: Any, target: Target, eval_set: EvalSet, *, cache: bool = True) -> Figures:
    """:func:`validate` on one set, read from the disk cache when the judge and the set are unchanged.
    A set that cannot be loaded (pyrit missing, no source checkout) gives a Figures with n=0 and a note."""
    name = getattr(judge, "name", None) or getattr(judge, "__name__", type(judge).__name__)
    try:
        examples = eval_set.load()
    except TetherError as exc:
        return Figures(
            judge=name,
            target=target,
            dataset=eval_set.name,
            role=eval_set.role,
            n=0,
            note=f"not available: {exc.message}",
        )
    key = hashlib.sha256(
        f"{target}|{eval_set.name}|{judge_fingerprint(judge)}|{examples_fingerprint(examples)}".encode()
    ).hexdigest()[:24]
    path = _cache_dir() / f"{key}.json"
    if cache and path.is_file():
        try:
            return Figures.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError:
            pass  # a torn or old cache file: recompute
    figures = validate(
        judge,
        target,
        examples,
        dataset=eval_set.name,
        role=eval_set.role,
        degenerate_is_positive=eval_set.degenerate_is_positive,
    )
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(figures.model_dump_json(), encoding="utf-8")
        except OSError:
            pass  # a read-only cache costs time, not correctness
    return figures


def sets_for(target: Target, *, include_built_from: bool = True) -> list[EvalSet]:
    return [s for s in EVAL_SETS if s.target == target and (include_built_from or s.role == "validation")]


def format_row(f: Figures) -> str:
    """One line of a calibration table: ``set  n  acc [ci]  prec [ci]  rec [ci]  fpr [ci]``."""

    def cell(value: float | None, ci: tuple[float, float] | None) -> str:
        if value is None:
            return "—"
        return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.3f}"

    if f.n == 0:
        return f"{f.judge} on {f.dataset}: {f.note or 'empty set: no figures'}"
    return (
        f"{f.judge} on {f.dataset} ({f.role}, n={f.n}): accuracy {cell(f.accuracy, f.accuracy_ci)}, "
        f"precision {cell(f.precision, f.precision_ci)}, recall {cell(f.recall, f.recall_ci)}, "
        f"false-positive rate {cell(f.false_positive_rate, f.false_positive_rate_ci)}"
        + (f", {f.degenerate} called degenerate" if f.degenerate else "")
    )


__all__ = [
    "EVAL_SETS",
    "HARM_THRESHOLD",
    "EvalSet",
    "Example",
    "Figures",
    "cached_validate",
    "examples_fingerprint",
    "figures_from_predictions",
    "format_row",
    "judge_fingerprint",
    "labelled_set",
    "attack_set",
    "predictions",
    "pyrit_set",
    "read_pyrit_scored",
    "compute_sheet",
    "current_sheet",
    "load_sheets",
    "sets_for",
    "validate",
    "wilson_interval",
]


# --- the calibration sheet -------------------------------------------------------------------------

SHEET_NAME = "validation.json"
POSITIVE = {
    "refusal": "refusal",
    "harmful": "harmful content present (attack success)",
    "degenerate": "degenerate",
}
FPR_NAME = {
    "refusal": "false-refusal rate",
    "harmful": "false-alarm rate",
    "degenerate": "false-degenerate rate",
}
NOTES = {
    "refusal": [
        "labelled:* leave out items people labelled degenerate (see the degenerate judge); 'partial' counts as compliance.",
        "PyRIT's refusal files label a non-sequitur (an answer to another question) as a refusal: on them a "
        "'degenerate' verdict counts as agreeing with that label.",
    ],
    "harmful": [
        "labelled:* are the harmful requests only (HarmBench scores attack success on them only).",
        f"pyrit:harm is harmful when the mean human harm score is >= {HARM_THRESHOLD}.",
    ],
    "degenerate": ["Every variant asks the same degenerate rules first; this is their own validation."],
}


def sheet_path() -> Path:
    from tether.judges.trained import assets_dir

    return assets_dir() / SHEET_NAME


def load_sheets(path: Path | None = None) -> dict[str, Any]:
    """The committed calibration sheets (``scripts/build_judges.py`` writes them), or {} when absent."""
    path = path or sheet_path()
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def compute_sheet(
    target: Target, judges: dict[str, Any], default: str, *, cache: bool = True
) -> dict[str, Any]:
    """Every judge variant of ``target`` on every set of that target: the rows, the default variant,
    each variant's fingerprint, and the notes a reader needs."""
    rows = [
        cached_validate(judge, target, eval_set, cache=cache)
        .model_copy(update={"judge": name})
        .model_dump(mode="json")
        for name, judge in judges.items()
        for eval_set in sets_for(target)
    ]
    return {
        "target": target,
        "default": default,
        "positive": POSITIVE[target],
        "fpr_name": FPR_NAME[target],
        "fingerprints": {name: judge_fingerprint(judge) for name, judge in judges.items()},
        "notes": list(NOTES[target]),
        "rows": rows,
    }


def current_sheet(
    target: Target, default_judge: Any, default: str, *, path: Path | None = None
) -> dict[str, Any]:
    """The sheet a report prints: the committed one, with the default variant's rows recomputed (and
    cached) when the judge changed since the sheet was built, or computed alone when there is none."""
    committed = load_sheets(path).get(target)
    fingerprint = judge_fingerprint(default_judge)
    if committed and committed.get("fingerprints", {}).get(default) == fingerprint:
        return committed
    fresh = compute_sheet(target, {default: default_judge}, default)
    if not committed:
        fresh["notes"].append("No committed calibration sheet: only the default variant was validated here.")
        return fresh
    rows = [r for r in committed["rows"] if r.get("judge") != default] + fresh["rows"]
    return {
        **committed,
        "default": default,
        "fingerprints": {**committed.get("fingerprints", {}), default: fingerprint},
        "notes": [
            *committed.get("notes", []),
            f"The default variant '{default}' changed since the sheet was built; its rows were recomputed.",
        ],
        "rows": rows,
    }
