"""Capability tasks: multiple choice by log-likelihood (MMLU, HellaSwag, ARC-Challenge, ARC-Easy,
PIQA, WinoGrande, SciQ, OpenBookQA, BoolQ, Social IQa) and arithmetic by generation (basic
arithmetic, GSM8K).

Multiple choice follows lm-evaluation-harness exactly (``tether.evals.formats``): 0-shot, no chat
template, ``acc`` = argmax of summed log-likelihood, ``acc_norm`` = argmax per character. Both are
computed for every item; the headline is the one lm-eval quotes for the task, the other goes to the
task's extra metrics.

For generated answers an empty output is a wrong answer (scored 0), not an unscored item: unlike a
refusal verdict, there is nothing ambiguous about a missing number.

Every task declares its chance level (``MetricSpec.chance``): 1/k for k content choices, the best
constant answer where the choices are fixed labels (MMLU's letters: "D" is right on 26.9% of the
test split; BoolQ's "yes" on 62.2% of validation), 0 for exact-match generation. The audit marks a
task whose baseline interval covers it "no signal" and leaves it out of the capability axis.

Default sample sizes are set by the audit's power budget (``tether.audit.power``,
``benchmarks/audit_costs.py``): the capability axis pools the tasks with signal, so a cheap task
with signal is worth more items than an expensive one at chance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tether.data.sources import load_boolq_questions, load_source
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest
from tether.evals import formats
from tether.evals.registry import Task
from tether.evals.results import error_text, make_result
from tether.evals.tasks._common import generate_isolated, mean, numbers_in, same_number
from tether.evals.types import ItemResult, MetricSpec


def _metric(name: str, chance: float | None = None) -> MetricSpec:
    return MetricSpec(name=name, higher_is_better=True, axis="capability", chance=chance)


# Chance levels, computed from the shipped data (tests/test_sources.py checks them).
CHANCE = {
    "mmlu": 0.269,  # always "D": 3,776 of 14,042 test questions
    "hellaswag": 0.25,
    "arc_challenge": 0.25,  # 1/k averaged over items (a few have 3 or 5 choices): 0.2502
    "arc_easy": 0.25,  # 0.2502 likewise
    "piqa": 0.5,
    "winogrande": 0.5,
    "sciq": 0.25,
    "openbookqa": 0.25,
    "boolq": 0.622,  # always "yes": 2,033 of 3,270 validation questions
    "social_iqa": 1 / 3,
    "arithmetic": 0.0,
    "gsm8k": 0.0,
}

# lm-eval's grouping of the 57 MMLU subjects (``lm_eval/tasks/mmlu/_generate_configs.py``).
MMLU_SUBJECT_GROUPS: dict[str, str] = {
    **dict.fromkeys(
        [
            "abstract_algebra",
            "anatomy",
            "astronomy",
            "college_biology",
            "college_chemistry",
            "college_computer_science",
            "college_mathematics",
            "college_physics",
            "computer_security",
            "conceptual_physics",
            "electrical_engineering",
            "elementary_mathematics",
            "high_school_biology",
            "high_school_chemistry",
            "high_school_computer_science",
            "high_school_mathematics",
            "high_school_physics",
            "high_school_statistics",
            "machine_learning",
        ],
        "stem",
    ),
    **dict.fromkeys(
        [
            "formal_logic",
            "high_school_european_history",
            "high_school_us_history",
            "high_school_world_history",
            "international_law",
            "jurisprudence",
            "logical_fallacies",
            "moral_disputes",
            "moral_scenarios",
            "philosophy",
            "prehistory",
            "professional_law",
            "world_religions",
        ],
        "humanities",
    ),
    **dict.fromkeys(
        [
            "econometrics",
            "high_school_geography",
            "high_school_government_and_politics",
            "high_school_macroeconomics",
            "high_school_microeconomics",
            "high_school_psychology",
            "human_sexuality",
            "professional_psychology",
            "public_relations",
            "security_studies",
            "sociology",
            "us_foreign_policy",
        ],
        "social_sciences",
    ),
    **dict.fromkeys(
        [
            "business_ethics",
            "clinical_knowledge",
            "college_medicine",
            "global_facts",
            "human_aging",
            "management",
            "marketing",
            "medical_genetics",
            "miscellaneous",
            "nutrition",
            "professional_accounting",
            "professional_medicine",
            "virology",
        ],
        "other",
    ),
}


def mmlu_subject_group(item: Any) -> str:
    """STEM, humanities, social sciences or other, as lm-eval groups MMLU's subjects."""
    return MMLU_SUBJECT_GROUPS.get(item.category, "other")


_ARC_GRADE = re.compile(r"^[A-Za-z&]+_(?:\d{4})?_(\d{1,2})_")


def arc_grade(item: Any) -> str:
    """The school grade in an ARC question id ("MCAS_2000_4_6" is grade 4), where the exam put it
    there; the Mercury questions (about two thirds) carry none."""
    match = _ARC_GRADE.match(item.id.split("/", 1)[-1])
    return f"grade {int(match.group(1))}" if match else "grade unknown"


def sciq_support(item: Any) -> str:
    """Whether the question comes with its supporting paragraph (about 9 in 10 do)."""
    return "with support" if item.extra.get("support", "").strip() else "no support"


# --- multiple choice ---------------------------------------------------------------------------------


def run_multiple_choice(
    engine: EngineLike,
    items: Sequence[Any],
    *,
    task: str,
    request_of: Callable[[Any], ScoreRequest | list[ScoreRequest]],
    headline: str,
    seed: int = 0,
) -> list[ItemResult]:
    """Score every item's choices in one engine call. ``request_of`` gives one request per item, or
    one per choice for partial scoring (WinoGrande: a context per choice, one shared continuation;
    the item's log-likelihoods are then one per request, and acc_norm equals acc)."""
    made = [request_of(it) for it in items]
    flat = [r for m in made for r in (m if isinstance(m, list) else [m])]
    scores = iter(engine.score(flat, stage=task, progress=False))
    results = []
    for item, m in zip(items, made, strict=True):
        if isinstance(m, list):
            parts = [next(scores) for _ in m]
            logprobs = [p.logprobs[0] for p in parts]
            pred = pred_norm = max(range(len(logprobs)), key=logprobs.__getitem__)
            prompt = item.question
            texts = [r.context + r.continuations[0] for r in m]
        else:
            score = next(scores)
            pred = formats.predict(score, m)
            pred_norm = formats.predict(score, m, normalized=True)
            prompt, texts = m.context, m.continuations
        acc, acc_norm = float(pred == item.answer_index), float(pred_norm == item.answer_index)
        chosen = pred_norm if headline == "acc_norm" else pred
        results.append(
            make_result(
                engine,
                task,
                item,
                status="scored",
                score=acc_norm if headline == "acc_norm" else acc,
                prompt=prompt,
                output=texts[chosen],
                reference=texts[item.answer_index],
                extra={"pred": pred, "pred_norm": pred_norm, "acc": acc, "acc_norm": acc_norm},
            )
        )
    return results


def aggregate_multiple_choice(results: Sequence[ItemResult]) -> dict[str, float]:
    scored = [r.extra for r in results if r.status == "scored" and "acc" in r.extra]
    if not scored:
        return {}
    return {"acc": mean([e["acc"] for e in scored]), "acc_norm": mean([e["acc_norm"] for e in scored])}


def _mc_task(
    name: str,
    source: str,
    description: str,
    *,
    load: Callable[[], Sequence[Any]] | None = None,
    prompt_type: Callable[[Any], str] | None = None,
    **sizes: Any,
) -> Task:
    headline = formats.HEADLINE_METRIC[name]
    return Task(
        name=name,
        description=description,
        sources=(source,),
        metric=_metric(headline, CHANCE[name]),
        kind="score",
        load=load or partial(load_source, source),
        run=partial(run_multiple_choice, task=name, request_of=formats.FORMATS[name], headline=headline),
        settings={"format": f"lm-eval {name} 0-shot", "headline": headline},
        aggregate=aggregate_multiple_choice,
        prompt_type=prompt_type,
        **sizes,
    )


def mmlu() -> Task:
    # The default model is at chance on MMLU (no signal), so the default keeps one question per
    # subject: every subject and subject group appears, the task costs little, and --mde or --full
    # buys power for a model that can answer it.
    return _mc_task(
        "mmlu",
        "mmlu",
        "MMLU (57 subjects), 0-shot lm-eval format: acc, by subject",
        prompt_type=mmlu_subject_group,
        default_per_category=1,
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
        prompt_type=arc_grade,
        default_limit=50,
    )


def arc_easy() -> Task:
    return _mc_task(
        "arc_easy",
        "arc_easy",
        "ARC-Easy test, lm-eval format: acc (acc_norm in the extras)",
        prompt_type=arc_grade,
        default_limit=350,
    )


def piqa() -> Task:
    return _mc_task(
        "piqa",
        "piqa",
        "PIQA validation, lm-eval format: acc_norm (acc in the extras)",
        default_limit=200,
    )


def winogrande() -> Task:
    return _mc_task(
        "winogrande",
        "winogrande",
        "WinoGrande (xl) validation, lm-eval partial scoring: acc",
        default_limit=60,
    )


def sciq() -> Task:
    return _mc_task(
        "sciq",
        "sciq",
        "SciQ validation (lm-eval scores test, not shipped), lm-eval format: acc_norm (acc in the extras)",
        prompt_type=sciq_support,
        default_limit=150,
    )


def openbookqa() -> Task:
    return _mc_task(
        "openbookqa",
        "openbookqa",
        "OpenBookQA test, lm-eval format (question stem only): acc_norm (acc in the extras)",
        default_limit=200,
    )


def boolq() -> Task:
    return _mc_task(
        "boolq",
        "boolq",
        "BoolQ validation, lm-eval (SuperGLUE) format: acc; chance = always 'yes' (0.622)",
        load=load_boolq_questions,
        default_limit=30,
    )


def social_iqa() -> Task:
    return _mc_task(
        "social_iqa",
        "social_iqa",
        "Social IQa validation, lm-eval format: acc",
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
        metric=_metric("exact_match", CHANCE["arithmetic"]),
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
        metric=_metric("exact_match", CHANCE["gsm8k"]),
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
        default_limit=3,
        batch_items=16,
    )


TASKS = (
    mmlu,
    hellaswag,
    arc_challenge,
    arc_easy,
    piqa,
    winogrande,
    sciq,
    openbookqa,
    boolq,
    social_iqa,
    arithmetic,
    gsm8k,
)
