"""Capability tasks: multiple choice by log-likelihood (MMLU, HellaSwag, ARC-Challenge) and
arithmetic by generation (basic arithmetic, GSM8K).

Multiple choice follows lm-evaluation-harness exactly (``tether.evals.formats``): 0-shot, no chat
template, ``acc`` = argmax of summed log-likelihood, ``acc_norm`` = argmax per character. Both are
computed for every item; the headline is the one lm-eval quotes for the task, the other goes to the
task's extra metrics.

For generated answers an empty output is a wrong answer (scored 0), not an unscored item: unlike a
refusal verdict, there is nothing ambiguous about a missing number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tether.data.sources import load_source
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest
from tether.evals import formats
from tether.evals.registry import Task
from tether.evals.results import error_text, make_result
from tether.evals.tasks._common import generate_isolated, mean, numbers_in, same_number
from tether.evals.types import ItemResult, MetricSpec


def _metric(name: str) -> MetricSpec:
    return MetricSpec(name=name, higher_is_better=True, axis="capability")


# --- multiple choice ---------------------------------------------------------------------------------


def run_multiple_choice(
    engine: EngineLike,
    items: Sequence[Any],
    *,
    task: str,
    request_of: Callable[[Any], ScoreRequest],
    headline: str,
    seed: int = 0,
) -> list[ItemResult]:
    requests = [request_of(it) for it in items]
    scores = engine.score(requests, stage=task, progress=False)
    results = []
    for item, request, score in zip(items, requests, scores, strict=True):
        pred = formats.predict(score, request)
        pred_norm = formats.predict(score, request, normalized=True)
        acc, acc_norm = float(pred == item.answer_index), float(pred_norm == item.answer_index)
        chosen = pred_norm if headline == "acc_norm" else pred
        results.append(
            make_result(
                engine,
                task,
                item,
                status="scored",
                score=acc_norm if headline == "acc_norm" else acc,
                prompt=request.context,
                output=request.continuations[chosen],
                reference=request.continuations[item.answer_index],
                extra={"pred": pred, "pred_norm": pred_norm, "acc": acc, "acc_norm": acc_norm},
            )
        )
    return results


def aggregate_multiple_choice(results: Sequence[ItemResult]) -> dict[str, float]:
    scored = [r.extra for r in results if r.status == "scored" and "acc" in r.extra]
    if not scored:
        return {}
    return {"acc": mean([e["acc"] for e in scored]), "acc_norm": mean([e["acc_norm"] for e in scored])}


def _mc_task(name: str, source: str, description: str, **sizes: Any) -> Task:
    headline = formats.HEADLINE_METRIC[name]
    return Task(
        name=name,
        description=description,
        sources=(source,),
        metric=_metric(headline),
        kind="score",
        load=partial(load_source, source),
        run=partial(run_multiple_choice, task=name, request_of=formats.FORMATS[name], headline=headline),
        settings={"format": f"lm-eval {name} 0-shot", "headline": headline},
        aggregate=aggregate_multiple_choice,
        **sizes,
    )


def mmlu() -> Task:
    # Four per subject keeps all 57 subjects in the breakdown (228 items, 95% CI about +-0.055) at
    # ~3 min on 2 busy CPU cores.
    return _mc_task(
        "mmlu", "mmlu", "MMLU (57 subjects), 0-shot lm-eval format: acc, by subject", default_per_category=4
    )


def hellaswag() -> Task:
    return _mc_task(
        "hellaswag",
        "hellaswag",
        "HellaSwag validation, lm-eval format: acc_norm (acc in the extras), by context source",
        default_limit=60,
    )


def arc_challenge() -> Task:
    return _mc_task(
        "arc_challenge",
        "arc_challenge",
        "ARC-Challenge test, lm-eval format: acc_norm (acc in the extras)",
        default_limit=100,
    )


# --- arithmetic by generation -----------------------------------------------------------------------

ARITHMETIC_PARAMS = SamplingParams(max_new_tokens=8, temperature=0.0, stop=["\n"])

GSM8K_INSTRUCTION = (
    "Solve this math word problem. Reason step by step, then finish with a line of the form "
    "'The answer is N.'\n\n"
)
GSM8K_PARAMS = SamplingParams(max_new_tokens=256, temperature=0.0)
_ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


def first_number(text: str) -> str | None:
    found = numbers_in(text)
    return found[0] if found else None


def final_number(text: str) -> str | None:
    """GSM8K's answer in a generated solution: after "The answer is" or "####" when present, else
    the last number (lm-eval's flexible extraction)."""
    match = _ANSWER_IS.search(text) or re.search(r"####\s*(-?[\d,]*\.?\d+)", text)
    if match:
        return match.group(1)
    found = numbers_in(text)
    return found[-1] if found else None


def run_exact_number(
    engine: EngineLike,
    items: Sequence[Any],
    *,
    task: str,
    prompt_of: Callable[[Any], Prompt],
    params: SamplingParams,
    extract: Callable[[str], str | None],
    seed: int = 0,
) -> list[ItemResult]:
    """Score 1 when the number extracted from the answer equals the reference number."""
    prompts = [prompt_of(it) for it in items]
    outcomes = generate_isolated(engine, prompts, params, task)
    results = []
    for item, prompt, outcome in zip(items, prompts, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            results.append(
                make_result(
                    engine,
                    task,
                    item,
                    status="error",
                    prompt=prompt.text,
                    extra={"error": error_text(outcome)},
                )
            )
            continue
        text = outcome[0].text
        got = extract(text)
        results.append(
            make_result(
                engine,
                task,
                item,
                status="scored",
                score=1.0 if got is not None and same_number(got, item.answer) else 0.0,
                prompt=prompt.text,
                output=text,
                reference=item.answer,
                extra={"extracted": got},
            )
        )
    return results


def arithmetic() -> Task:
    return Task(
        name="arithmetic",
        description="AllenAI basic arithmetic ('Calculate 5 + 91 ='), raw greedy completion, exact "
        "match of the first number; by operation",
        sources=("basic_arithmetic",),
        metric=_metric("exact_match"),
        kind="generate",
        load=partial(load_source, "basic_arithmetic"),
        run=partial(
            run_exact_number,
            task="arithmetic",
            prompt_of=lambda it: Prompt(id=it.id, text=it.question, chat=False, stage="arithmetic"),
            params=ARITHMETIC_PARAMS,
            extract=first_number,
        ),
        settings={
            "format": "raw question",
            "params": ARITHMETIC_PARAMS.model_dump(),
            "extract": "first number",
        },
        default_per_category=10,
    )


def gsm8k() -> Task:
    return Task(
        name="gsm8k",
        description="GSM8K test, 0-shot chat with a step-by-step instruction, greedy 256 tokens, exact "
        "match of the final number",
        sources=("gsm8k",),
        metric=_metric("exact_match"),
        kind="generate",
        load=partial(load_source, "gsm8k"),
        run=partial(
            run_exact_number,
            task="gsm8k",
            prompt_of=lambda it: Prompt(
                id=it.id, text=GSM8K_INSTRUCTION + it.question, chat=True, stage="gsm8k"
            ),
            params=GSM8K_PARAMS,
            extract=final_number,
        ),
        settings={
            "format": "chat 0-shot",
            "instruction": GSM8K_INSTRUCTION,
            "params": GSM8K_PARAMS.model_dump(),
            "extract": "answer-is / #### / last number",
        },
        default_limit=6,
        batch_items=16,
    )


TASKS = (mmlu, hellaswag, arc_challenge, arithmetic, gsm8k)
