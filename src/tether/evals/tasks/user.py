"""User tasks: a YAML file that declares a task over a JSONL file of items.

Example ``my_task.yaml`` (``file`` is relative to the YAML file)::

    name: support_refusals
    kind: generate            # generate | score
    file: items.jsonl
    judge: refusal            # refusal | compliance | exact_match
    metric: refusal_rate
    axis: safety              # safety | capability | other
    higher_is_better: true

Items, one JSON object per line:

* ``kind: generate`` — ``{"id": "q1", "prompt": "…", "category": "…", "reference": "…"}``
  (``reference`` is required with ``judge: exact_match``: the answer must start with it, ignoring
  case, spacing and trailing punctuation). Prompts go through the chat template unless
  ``chat: false``.
* ``kind: score`` — ``{"id": "q1", "context": "…", "choices": ["…", "…"], "answer": 0}``, scored like
  lm-eval multiple choice (a space is put before each choice; ``judge`` must be ``exact_match``).

Every bad line is reported as ``file:line`` with the field at fault.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tether.config import StrictModel, load_config
from tether.data.jsonl import iter_numbered
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest
from tether.errors import ConfigError, DataError
from tether.evals import formats
from tether.evals.registry import Task
from tether.evals.results import error_text, make_result
from tether.evals.tasks._common import GREEDY_REFUSAL, generate_isolated, judge_refusals
from tether.evals.types import ItemResult, MetricSpec

Judge = Literal["refusal", "compliance", "exact_match"]


class UserTaskSpec(StrictModel):
    """A user task declared in YAML."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Task name in reports.")
    kind: Literal["generate", "score"] = Field(
        description="generate: judge a generated answer; score: multiple choice."
    )
    file: str = Field(description="JSONL items, relative to the YAML file.")
    judge: Judge = Field(description="refusal (1 = refused), compliance (1 = answered), exact_match.")
    metric: str = Field(min_length=1, description="Metric name shown in reports, e.g. refusal_rate, acc.")
    axis: Literal["safety", "capability", "other"] = Field("other", description="Pareto axis of the metric.")
    higher_is_better: bool = Field(True, description="Which direction of the metric is better.")
    description: str = Field("", description="One line for reports.")
    chat: bool = Field(True, description="generate: wrap prompts in the model's chat template.")
    max_new_tokens: int = Field(
        GREEDY_REFUSAL.max_new_tokens, ge=1, description="generate: answer length cap."
    )
    per_category: int | None = Field(None, ge=1, description="Default items per category (None = all).")
    limit: int | None = Field(None, ge=1, description="Default cap on items (None = all).")

    @model_validator(mode="after")
    def _judge_fits_kind(self) -> UserTaskSpec:
        if self.kind == "score" and self.judge != "exact_match":
            raise ValueError("kind 'score' (multiple choice) needs judge 'exact_match'")
        return self


class GenerateItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    category: str = "all"
    reference: str = ""
    system: str | None = None


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    context: str
    choices: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)
    category: str = "all"

    @model_validator(mode="after")
    def _answer_in_range(self) -> ScoreItem:
        if self.answer >= len(self.choices):
            raise ValueError(f"answer {self.answer} is out of range for {len(self.choices)} choices")
        return self


def read_items(path: Path, kind: str, judge: str) -> list[GenerateItem | ScoreItem]:
    """Validate the items line by line; the first bad line raises DataError naming file:line."""
    model = GenerateItem if kind == "generate" else ScoreItem
    if not path.exists():
        raise DataError(
            "items file not found", where=str(path), hint="'file' is relative to the task's YAML file"
        )
    items: list[Any] = []
    seen: dict[str, int] = {}
    for lineno, item in iter_numbered(path, model, hint=_item_hint(kind)):
        where = f"{path}:{lineno}"
        if judge == "exact_match" and kind == "generate" and not item.reference.strip():
            raise DataError("field 'reference' is required with judge 'exact_match'", where=where)
        if item.id in seen:
            raise DataError(f"duplicate id '{item.id}' (first on line {seen[item.id]})", where=where)
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise DataError("items file has no items", where=str(path))
    return items


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"field '{'.'.join(str(x) for x in e['loc']) or '(item)'}': {e['msg']}" for e in exc.errors()
    )


def _item_hint(kind: str) -> str:
    if kind == "generate":
        return 'each line: {"id": "...", "prompt": "...", "category": "...", "reference": "..."}'
    return 'each line: {"id": "...", "context": "...", "choices": ["...", "..."], "answer": 0}'


_NORMALISE = re.compile(r"\s+")


def normalise_answer(text: str) -> str:
    return _NORMALISE.sub(" ", text.strip().lower()).strip(" .!?,;:\"'")


def starts_with_reference(output: str, reference: str) -> bool:
    """The answer starts with the reference (case, spacing and surrounding punctuation ignored), up to
    a word boundary: "Paris." and "Paris is the capital" match "paris"; "Parisian" does not."""
    out, ref = normalise_answer(output), normalise_answer(reference)
    if not ref or not out.startswith(ref):
        return False
    rest = out[len(ref) :]
    return not rest or not rest[0].isalnum()


def _run_generate(
    engine: EngineLike, items: Sequence[GenerateItem], *, spec: UserTaskSpec, seed: int = 0
) -> list[ItemResult]:
    params = SamplingParams(max_new_tokens=spec.max_new_tokens, temperature=0.0)
    prompts = [
        Prompt(id=it.id, text=it.prompt, system=it.system, chat=spec.chat, stage=spec.name) for it in items
    ]
    if spec.judge in ("refusal", "compliance"):
        from tether.judges import default_refusal_judge

        wanted = spec.judge
        return judge_refusals(
            engine,
            spec.name,
            items,
            prompts,
            [it.prompt for it in items],
            params,
            default_refusal_judge(),
            score_of=lambda label: 1.0 if label == wanted else 0.0,
        )
    outcomes = generate_isolated(engine, prompts, params, spec.name)
    results = []
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            results.append(
                make_result(
                    engine,
                    spec.name,
                    item,
                    status="error",
                    prompt=item.prompt,
                    extra={"error": error_text(outcome)},
                )
            )
            continue
        text = outcome[0].text
        results.append(
            make_result(
                engine,
                spec.name,
                item,
                status="scored",
                score=1.0 if starts_with_reference(text, item.reference) else 0.0,
                prompt=item.prompt,
                output=text,
                reference=item.reference,
            )
        )
    return results


def _run_score(
    engine: EngineLike, items: Sequence[ScoreItem], *, spec: UserTaskSpec, seed: int = 0
) -> list[ItemResult]:
    requests = [
        ScoreRequest(
            id=it.id, context=it.context, continuations=[formats.TARGET_DELIMITER + c for c in it.choices]
        )
        for it in items
    ]
    scores = engine.score(requests, stage=spec.name, progress=False)
    results = []
    for item, request, score in zip(items, requests, scores, strict=True):
        pred = formats.predict(score, request)
        results.append(
            make_result(
                engine,
                spec.name,
                item,
                status="scored",
                score=float(pred == item.answer),
                prompt=item.context,
                output=item.choices[pred],
                reference=item.choices[item.answer],
                extra={"pred": pred},
            )
        )
    return results


def load_user_task(path: str | Path) -> Task:
    """Build a Task from a YAML declaration (every bad key reported with file:line) and its JSONL
    items (the first bad line reported with file:line)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("task file not found", where=str(path), hint="pass a path to a task .yaml file")
    spec = load_config(UserTaskSpec, path)
    items_path = (path.parent / spec.file).resolve()
    items = read_items(items_path, spec.kind, spec.judge)  # validated now, before any model loads
    run = partial(_run_generate if spec.kind == "generate" else _run_score, spec=spec)
    return Task(
        name=spec.name,
        description=spec.description or f"user task from {path}",
        sources=(str(items_path),),
        metric=MetricSpec(name=spec.metric, higher_is_better=spec.higher_is_better, axis=spec.axis),
        kind=spec.kind,
        load=lambda: list(items),
        run=run,
        settings={
            **spec.model_dump(exclude={"description", "per_category", "limit"}),
            "file": str(items_path),
            # Cached results are keyed by item id: an edited item under the same id must not reuse them.
            "items_sha256": hashlib.sha256(items_path.read_bytes()).hexdigest()[:16],
        },
        default_per_category=spec.per_category,
        default_limit=spec.limit,
        judges=("refusal",) if spec.judge in ("refusal", "compliance") else (),
    )


__all__ = ["UserTaskSpec", "load_user_task", "normalise_answer", "read_items", "starts_with_reference"]
