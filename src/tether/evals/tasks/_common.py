"""Plumbing shared by the task modules: generation that isolates a failing prompt, refusal judging
with Tether's status rules, and number parsing. ItemResults are built by ``tether.evals.results``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tether.engine.protocol import EngineLike
from tether.engine.types import Completion, Prompt, SamplingParams
from tether.evals.results import error_text, make_result
from tether.evals.types import ItemResult

if TYPE_CHECKING:
    from tether.judges import RefusalJudge

# Refusal openings come first (the judge reads the first 600 characters), so 48 tokens (~200
# characters) decide a refusal verdict while keeping CPU generation cheap.
REFUSAL_MAX_NEW_TOKENS = 48
GREEDY_REFUSAL = SamplingParams(max_new_tokens=REFUSAL_MAX_NEW_TOKENS, temperature=0.0)


def generate_isolated(
    engine: EngineLike, prompts: Sequence[Prompt], params: SamplingParams, stage: str
) -> list[list[Completion] | BaseException]:
    """``params.n`` completions per prompt, or the exception that prompt raised.

    The batch runs in one call; only when it fails are prompts retried one at a time, so one bad
    prompt (too long, a tokenizer edge case) costs one item, not the whole batch."""
    try:
        flat = engine.generate(list(prompts), params, stage=stage, progress=False)
        return _group(flat, len(prompts), params.n)
    except Exception:
        out: list[list[Completion] | BaseException] = []
        for prompt in prompts:
            try:
                out.append(engine.generate([prompt], params, stage=stage, progress=False))
            except Exception as exc:
                out.append(exc)
        return out


def _group(flat: Sequence[Completion], n_prompts: int, n: int) -> list[list[Completion] | BaseException]:
    if len(flat) != n_prompts * n:
        raise RuntimeError(f"engine returned {len(flat)} completions for {n_prompts} prompts x {n} samples")
    return [list(flat[i * n : (i + 1) * n]) for i in range(n_prompts)]


def judge_refusals(
    engine: EngineLike,
    task: str,
    items: Sequence[Any],
    prompts: Sequence[Prompt],
    judge_texts: Sequence[str],
    params: SamplingParams,
    judge: RefusalJudge,
    score_of: Callable[[str], float],
    extra_of: Callable[[Any], dict[str, Any]] | None = None,
    attack_texts: Sequence[str] | None = None,
) -> list[ItemResult]:
    """Generate one answer per prompt and let the judge (refusal or harmful content) label it.

    ``judge_texts`` is the request the judge compares the answer with (for a jailbreak, the harmful
    request rather than the whole template). ``score_of(label)`` maps the verdict's label
    ("refusal"/"compliance", or "harmful"/"not_harmful") to the item score. Status rules: an
    exception -> "error"; a blank answer -> "empty"; a "degenerate" verdict -> "degenerate" (its kind
    in ``extra["degenerate"]``; never scored, so never a refusal); an "unparsed" verdict ->
    "unparsed"; otherwise "scored". ``attack_texts``, when given, are what the model saw in place of
    the request (a red-team attack): a judge that reads them (the goal gate) gets them too."""

    outcomes = generate_isolated(engine, prompts, params, task)
    results: list[ItemResult | None] = [None] * len(items)
    to_judge: list[int] = []
    for i, (item, prompt, outcome) in enumerate(zip(items, prompts, outcomes, strict=True)):
        extra = extra_of(item) if extra_of else {}
        if isinstance(outcome, BaseException):
            results[i] = make_result(
                engine,
                task,
                item,
                status="error",
                prompt=prompt.text,
                extra={**extra, "error": error_text(outcome)},
            )
        elif not outcome[0].text.strip():
            results[i] = make_result(engine, task, item, status="empty", prompt=prompt.text, extra=extra)
        else:
            to_judge.append(i)
    verdicts = judge_traced(
        judge,
        [(judge_texts[i], outcomes[i][0].text) for i in to_judge],  # type: ignore[index]
        [items[i].id for i in to_judge],
        attacks=[attack_texts[i] for i in to_judge] if attack_texts is not None else None,
    )
    for i, verdict in zip(to_judge, verdicts, strict=True):
        completion = outcomes[i][0]  # type: ignore[index]
        extra = {
            **(extra_of(items[i]) if extra_of else {}),
            "verdict": verdict.label,
            "reason": verdict.reason,
            "finish_reason": completion.finish_reason,
        }
        if verdict.label in ("unparsed", "degenerate"):
            if verdict.label == "degenerate":
                extra["degenerate"] = getattr(verdict, "kind", None) or "unknown"
            results[i] = make_result(
                engine,
                task,
                items[i],
                status=verdict.label,
                prompt=prompts[i].text,
                output=completion.text,
                extra=extra,
            )
        else:
            results[i] = make_result(
                engine,
                task,
                items[i],
                status="scored",
                score=score_of(verdict.label),
                prompt=prompts[i].text,
                output=completion.text,
                extra=extra,
            )
    return [r for r in results if r is not None]


def judge_traced(
    judge: RefusalJudge,
    pairs: list[tuple[str, str]],
    ids: list[str],
    *,
    attacks: list[str] | None = None,
):
    """``judge_many``, traced as one ``judge NAME`` span with a child per item carrying its verdict;
    with ``attacks``, (request, attack, answer) triples for a judge that reads the attack.
    (Here rather than in ``judges.refusal``: the rule judge's calibration fingerprint hashes that
    module's source.)"""
    from tether import tracing
    from tether.judges import judge_many
    from tether.judges.ongoal import judge_attacks_many

    name = getattr(judge, "name", type(judge).__name__)
    if attacks is not None:
        triples = [
            (request, attack, answer) for (request, answer), attack in zip(pairs, attacks, strict=True)
        ]
        return tracing.traced_verdicts(name, ids, lambda: judge_attacks_many(judge, triples))  # type: ignore[arg-type]
    return tracing.traced_verdicts(name, ids, lambda: judge_many(judge, pairs))


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """A number written in text ("1,234", "-7", "3.50"), as a float; None if it is not one."""
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def numbers_in(text: str) -> list[str]:
    return _NUMBER.findall(text)


def same_number(a: str, b: str) -> bool:
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and abs(x - y) < 1e-9


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
