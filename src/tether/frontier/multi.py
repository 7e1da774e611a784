"""Multi-objective preference training: ALIGNED's adapter trained further with DPO on a weighted mix
of safety pairs and helpfulness pairs, one candidate per helpfulness weight λ (the loss is a mix in
which helpfulness pairs make up λ / (1 + λ)).

Where the pairs come from (all from the **validation** side; the reported test side is never read):

* ``multi_objective.safety_tasks`` (e.g. ``harmful_refusal``) and the generation tasks among
  ``multi_objective.helpful_tasks`` (e.g. ``overrefusal``): BASE and ALIGNED each answer the items,
  judged by the task as in any audit (so the items are shared with the audit cache). Where the two
  are scored differently, the better answer by the task's own metric is ``chosen`` and the other
  ``rejected``: on a refusal task that is usually ALIGNED's refusal over BASE's compliance, on the
  over-refusal task BASE's answer over ALIGNED's needless refusal. Degenerate or unscored answers
  take no part. The two answers are then regenerated greedily at ``max_new_tokens``, so the
  training text is the judged answer continued, not its 48-token opening.
* the scored (multiple-choice) tasks among ``helpful_tasks`` (e.g. ``arc_easy,sciq``): question →
  the correct choice over a wrong one.

Helpfulness pairs are drawn with equal shares per task, so a large multiple-choice pool does not
drown the few over-refusal pairs. DPO continues ALIGNED's adapter with a frozen copy of it as the
reference (``tether.train.dpo``): the candidate stays close to ALIGNED where the pairs say nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import ConfigError
from tether.evals.registry import Task, resolve_tasks
from tether.evals.types import ItemResult, MetricSpec

if TYPE_CHECKING:
    from tether.frontier.pipeline import FrontierContext

MULTI_PAIRS = "multi/pairs"
FIELD = "multi_objective.lambdas"


def multi_dir(lam: float) -> str:
    return f"multi/{lam:g}"


def _scored(r: ItemResult | None) -> bool:
    return r is not None and r.status == "scored" and r.score is not None


def disagreements(
    results: Mapping[tuple[str, str], Sequence[ItemResult]],
    metrics: Mapping[str, MetricSpec],
    objective: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Pairs from the items BASE and ALIGNED both answered with a scored verdict and different
    scores: the better answer by the task's metric is ``chosen``. ``objective`` maps each task to
    ``safety`` or ``helpful``."""
    pairs = []
    for task, metric in metrics.items():
        base = {r.item_id: r for r in results.get(("base", task), ())}
        aligned = {r.item_id: r for r in results.get(("aligned", task), ())}
        for item_id in sorted(base):
            b, a = base[item_id], aligned.get(item_id)
            if not (_scored(b) and _scored(a)) or b.score == a.score:
                continue
            sign = 1.0 if metric.higher_is_better else -1.0
            win, lose = (a, b) if sign * float(a.score) > sign * float(b.score) else (b, a)
            pairs.append(
                {
                    "id": f"{task}/{item_id}",
                    "task": task,
                    "objective": objective[task],
                    "prompt": b.prompt,
                    "chosen_by": "aligned" if win is a else "base",
                    "rejected_by": "base" if win is a else "aligned",
                    "judged": {"chosen": win.output, "rejected": lose.output},
                }
            )
    return pairs


def choice_pairs(tasks: Sequence[Task], seed: int) -> list[dict[str, Any]]:
    """Question → correct choice over a wrong one (picked by a hash of the seed and item), from the
    items of ``tasks`` (already one side of the split)."""
    pairs = []
    for task in tasks:
        for item in task.load():
            choices, answer = getattr(item, "choices", None), getattr(item, "answer_index", None)
            if not choices or answer is None:
                continue
            right = str(choices[answer])
            wrong = [str(c) for c in choices if str(c) != right]  # a duplicate of the answer is no wrong one
            if not wrong:
                continue
            rng = random.Random(f"{seed}:{task.name}:{item.id}")
            pairs.append(
                {
                    "id": f"{task.name}/{item.id}",
                    "task": task.name,
                    "objective": "helpful",
                    "prompt": item.question,
                    "chosen": right,
                    "rejected": rng.choice(wrong),
                }
            )
    return pairs


def _draw(pool: Sequence[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` pairs from ``pool``: without repeats when it is large enough, else every pair
    ``n // len(pool)`` times and the remainder sampled."""
    if n <= 0:
        return []
    whole, rest = divmod(n, len(pool))
    return [*(list(pool) * whole), *rng.sample(list(pool), rest)]


def mix(
    safety: Sequence[dict[str, Any]],
    helpful: Sequence[dict[str, Any]],
    lam: float,
    total: int,
    seed: int,
) -> list[dict[str, Any]]:
    """``total`` pairs, a share λ / (1 + λ) of them helpful (equal shares per helpful task), the
    rest safety; shuffled, reproducibly per (seed, λ)."""
    n_help = round(total * lam / (1.0 + lam))
    n_safe = total - n_help
    for name, pool, n in (("safety", safety, n_safe), ("helpfulness", helpful, n_help)):
        if n and not pool:
            raise ConfigError(
                f"λ = {lam:g} asks for {n} {name} pairs, but BASE and ALIGNED disagree on none",
                where=FIELD,
                hint="audit more validation items (multi_objective.limit) or add tasks to "
                + ("multi_objective.safety_tasks" if name == "safety" else "multi_objective.helpful_tasks"),
            )
    rng = random.Random(f"{seed}:multi:{lam:g}")
    out = _draw(safety, n_safe, rng)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for p in helpful:
        by_task.setdefault(p["task"], []).append(p)
    tasks = sorted(by_task)
    for k, task in enumerate(tasks):
        share = n_help // len(tasks) + (1 if k < n_help % len(tasks) else 0) if tasks else 0
        out += _draw(by_task[task], share, rng)
    rng.shuffle(out)
    return out


def _validation_side(ctx: FrontierContext, names: str, kind: str) -> list[Task]:
    """The validation side of the tasks ``names`` of one kind (generate or score)."""
    from tether.frontier.splits import split_tasks

    tasks = resolve_tasks(names) if names else []
    return split_tasks([t for t in tasks if t.kind == kind], "validation", ctx.config.validation_fraction)  # type: ignore[arg-type]


def pairs_stage(ctx: FrontierContext) -> dict[str, Any]:
    """BASE and ALIGNED on the validation side of the pair tasks; the pairs, written to
    ``multi/pairs.jsonl``."""
    from tether.audit.cache import ResultCache
    from tether.audit.sweep import run_task
    from tether.engine.types import Prompt, SamplingParams
    from tether.frontier.candidates import Recipe
    from tether.frontier.pipeline import check_multi_trainable

    check_multi_trainable(ctx.aligned)
    cfg = ctx.config.multi_objective
    safety = _validation_side(ctx, cfg.safety_tasks, "generate")
    helpful_gen = _validation_side(ctx, cfg.helpful_tasks, "generate")
    helpful_mc = _validation_side(ctx, cfg.helpful_tasks, "score")
    objective = {t.name: "safety" for t in safety} | {t.name: "helpful" for t in helpful_gen}
    recipes = {"base": Recipe("reference", (0.0,)), "aligned": Recipe("reference", (1.0,))}
    limit = cfg.limit or ctx.config.limit
    results: dict[tuple[str, str], list[ItemResult]] = {}
    ctx.say(
        "multi-objective pairs: BASE and ALIGNED on the validation side of "
        + ", ".join(t.name for t in [*safety, *helpful_gen])
    )
    engines = {name: ctx.engine(name, recipe) for name, recipe in recipes.items()}
    with ResultCache(ctx.cache_path) as store:
        for name, engine in engines.items():
            for task in [*safety, *helpful_gen]:
                sample = task.select(limit=limit, seed=ctx.config.seed)
                done = run_task(
                    engine, task, sample, model=name, cache=store, seed=ctx.config.seed, progress=ctx.progress
                )  # fmt: skip
                results[(name, task.name)] = done.results
    metrics = {t.name: t.metric for t in [*safety, *helpful_gen]}
    judged = disagreements(results, metrics, objective)
    # The judged answers stop at the task's short generation budget; greedy decoding continues each
    # from the same opening, so the verdict still holds for the longer text DPO trains on.
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    for name, engine in engines.items():
        for role in ("chosen", "rejected"):
            mine = [p for p in judged if p[f"{role}_by"] == name]
            if not mine:
                continue
            prompts = [Prompt(id=p["id"], text=p["prompt"], chat=True) for p in mine]
            texts = engine.generate(prompts, params, stage=MULTI_PAIRS)
            for p, completion in zip(mine, texts, strict=True):
                p[role] = completion.text
    pairs = [*judged, *choice_pairs(helpful_mc, ctx.config.seed)]
    path = ctx.run.artifact("multi/pairs.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    counts: dict[str, int] = {}
    for p in pairs:
        counts[f"{p['objective']}:{p['task']}"] = counts.get(f"{p['objective']}:{p['task']}", 0) + 1
    return {"pairs": len(pairs), "by_task": counts}


def read_pairs(ctx: FrontierContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in ctx.run.artifact("multi/pairs.jsonl").read_text().splitlines()]
    return [r for r in rows if r["objective"] == "safety"], [r for r in rows if r["objective"] == "helpful"]


def train_stage(lam: float) -> Callable[[FrontierContext], dict[str, Any]]:
    def train(ctx: FrontierContext) -> dict[str, Any]:
        from tether.train.dpo import DPOTrainConfig, train_dpo

        cfg = ctx.config.multi_objective
        seed = ctx.config.seed if cfg.seed is None else cfg.seed
        safety, helpful = read_pairs(ctx)
        mixed = mix(safety, helpful, lam, cfg.pairs, seed)
        settings = DPOTrainConfig(
            max_steps=cfg.steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
            beta=cfg.beta, seed=seed,
        )  # fmt: skip
        out = ctx.run.artifact(multi_dir(lam))
        out.parent.mkdir(parents=True, exist_ok=True)
        n_help = sum(p["objective"] == "helpful" for p in mixed)
        ctx.say(
            f"multi-objective λ={lam:g}: DPO on ALIGNED's adapter, {len(mixed) - n_help} safety + {n_help} helpful pairs"
        )
        (ctx.train_preferences or train_dpo)(ctx.aligned, mixed, out, settings)
        Path(f"{out}.pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in mixed), encoding="utf-8")
        return {"adapter": str(out), "safety_pairs": len(mixed) - n_help, "helpful_pairs": n_help}

    return train


__all__ = ["MULTI_PAIRS", "choice_pairs", "disagreements", "mix", "multi_dir", "pairs_stage", "train_stage"]
