"""``tether frontier``: candidates between BASE and ALIGNED, each audited, the frontier computed.

Stages (``frontier_stages``; a rerun skips every finished one, and the per-item audit cache keeps the
items a stage finished before an interruption):

* ``plan``: the interpolation and merge candidates (``candidates.json``); no model loads.
* ``search``: per-block interpolation. Every combination of ``per_block.grid`` over the blocks is
  audited on the **validation** side of the tasks (``validation/report.json``); the non-uniform
  combinations on the validation frontier, spread over safety, become candidates (``per_block.json``).
  With ``per_block.levels`` the single α's are audited there too, and at each safety level each
  family's best validation candidate is chosen (``tether.frontier.levels``).
* ``replay/<share>``: ALIGNED's SFT redone from BASE with capability examples mixed in.
* ``retrain/flag``: the failure analysis behind targeted retraining: BASE and ALIGNED audited on the
  **validation** side of the scored tasks (``retrain/validation/``); the tasks and categories where
  ALIGNED regressed (``retrain/flagged.json``).
* ``retrain/<steps>``: ALIGNED's adapter trained ``steps`` more steps on validation-side examples of
  the flagged domains, mixed with its own SFT data.
* ``multi/pairs``: BASE and ALIGNED on the **validation** side of the pair tasks; where they
  disagree, the better answer by the task's metric over the other (``multi/pairs.jsonl``).
* ``multi/<λ>``: ALIGNED's adapter trained with DPO on a mix of safety and helpfulness pairs,
  helpfulness λ / (1 + λ) of it (``tether.frontier.multi``).
* ``audit/<candidate>``: one candidate on the **test** side, item by item into the cache. A finished
  candidate is never built again: its stage is skipped.
* ``report``: the audit report over every candidate (``audit/report.json``, ``audit/report.html``),
  with ALIGNED as the baseline, so each candidate's axes carry paired CIs against the unmitigated
  model. Every item comes from the cache, so no candidate is built here.
* ``frontier``: ``frontier.json`` (points, frontier, hypervolume, who dominates ALIGNED, and under
  ``recovery`` each candidate's share of the unmitigated model's gain kept and loss recovered, see
  ``tether.frontier.recovery``) and ``frontier.png``; with ``per_block.levels``, per-block against a
  single α at each level, paired on the test side (``levels/<k>/``, from the cache) under
  ``per_block_vs_single``.

``plan`` runs again on every call (it reads only the config), so a changed config's new candidates
are built and audited on resume, and the report is redone when the candidates changed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.audit.cache import ResultCache, default_cache_path
from tether.audit.pareto import pareto_front
from tether.audit.report import write_report
from tether.audit.schema import AuditReport
from tether.audit.sweep import run_audit, run_task
from tether.errors import ConfigError
from tether.evals.registry import Task, resolve_tasks
from tether.frontier.candidates import CandidateBuilder, Recipe
from tether.frontier.config import FrontierConfig
from tether.frontier.levels import level_verdict, pick_at_levels, summarise
from tether.frontier.multi import MULTI_PAIRS, multi_dir, pairs_stage
from tether.frontier.multi import train_stage as multi_train_stage
from tether.frontier.pareto import frontier_summary, plot_frontier
from tether.frontier.recovery import recovery
from tether.frontier.splits import split_tasks
from tether.runs import Run, Stage, StageContext, run_stages

BuilderFactory = Callable[[str, str, FrontierConfig], Any]
# The model recovery is measured against when ALIGNED is itself a mitigation (recovery.unmitigated).
UNMITIGATED = "unmitigated"


def default_builder(base: str, aligned: str, config: FrontierConfig) -> CandidateBuilder:
    return CandidateBuilder(base, aligned, config.engine, capability_spec=config.capability_adapter)


def candidate_name(recipe: Recipe) -> str:
    """base, aligned, unmitigated, interp-0.30, block-0.00-0.50-1.00, ties-w1,1-d0.5, linear-w0.7,0.3."""
    if recipe.family == UNMITIGATED:
        return UNMITIGATED
    if recipe.adapter:
        return f"{recipe.family}-{Path(recipe.adapter).name}"
    if recipe.merge:
        w = ",".join(f"{x:g}" for x in recipe.weights)
        return f"linear-w{w}" if recipe.merge == "linear" else f"{recipe.merge}-w{w}-d{recipe.density:g}"
    if recipe.uniform == 0.0:
        return "base"
    if recipe.uniform == 1.0:
        return "aligned"
    if recipe.uniform is not None:
        return f"interp-{recipe.uniform:.2f}"
    return "block-" + "-".join(f"{a:.2f}" for a in recipe.alphas)


def _recipe_json(recipe: Recipe) -> dict[str, Any]:
    return {
        "family": recipe.family,
        "alphas": list(recipe.alphas),
        "merge": recipe.merge,
        "weights": list(recipe.weights),
        "density": recipe.density,
        "seed": recipe.seed,
        "adapter": recipe.adapter,
    }


def _recipe(data: dict[str, Any]) -> Recipe:
    return Recipe(
        family=data["family"],
        alphas=tuple(data["alphas"]),
        merge=data["merge"],
        weights=tuple(data["weights"]),
        density=data["density"],
        seed=data["seed"],
        adapter=data.get("adapter"),
    )


@dataclass(kw_only=True)
class FrontierContext(StageContext):
    config: FrontierConfig
    base: str
    aligned: str
    make_builder: BuilderFactory = default_builder
    # Trains replay's and retraining's adapters: (model spec, rows, out_dir, SFTTrainConfig) -> out_dir;
    # None: tether.train.sft.train_sft.
    train_adapter: Callable[..., Any] | None = None
    # Trains multi-objective candidates: (ALIGNED spec, pairs, out_dir, DPOTrainConfig) -> out_dir;
    # None: tether.train.dpo.train_dpo.
    train_preferences: Callable[..., Any] | None = None
    progress: bool = True
    _builder: Any = None
    _tasks: list[Task] | None = None
    _samples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def builder(self):
        if self._builder is None:
            self.say(
                f"loading BASE {self.base} and ALIGNED {self.aligned} (once; candidates are built in memory)"
            )
            self._builder = self.make_builder(self.base, self.aligned, self.config)
        return self._builder

    def tasks(self, side: str) -> list[Task]:
        if self._tasks is None:
            self._tasks = resolve_tasks(self.config.tasks)
        return split_tasks(self._tasks, side, self.config.validation_fraction)  # type: ignore[arg-type]

    @property
    def cache_path(self) -> Path:
        return Path(self.config.cache) if self.config.cache else default_cache_path(self.run.path)

    def engine(self, name: str, recipe: Recipe):
        return self.builder.engine(name, recipe, self.run.tracer)


# --- stages -----------------------------------------------------------------------------------------


def _audit(
    ctx: FrontierContext,
    recipes: Mapping[str, Recipe],
    names: list[str],
    side: str,
    limit: int | None,
    *,
    tasks: list[Task] | None = None,
    out: str | None = None,
    full: bool = False,
) -> AuditReport:
    """An audit of the candidates ``names`` (built from ``recipes``) on one side of the split: the
    validation side into ``validation/``, the test side into ``audit/`` (or ``out``); items come from
    the shared cache where an earlier stage scored them. ``tasks``: that side of these tasks instead
    of the frontier's."""
    return run_audit(
        names,
        ctx.tasks(side) if tasks is None else split_tasks(tasks, side, ctx.config.validation_fraction),  # type: ignore[arg-type]
        ctx.run.path / (out or ("validation" if side == "validation" else "audit")),
        limit=limit,
        full=full,
        seed=ctx.config.seed,
        engine_config=ctx.config.engine,
        names=names,
        cache=ctx.cache_path,
        load_engine=lambda spec, _config, _tracer: ctx.engine(spec, recipes[spec]),
        progress=ctx.progress,
    )


def plan(ctx: FrontierContext) -> dict[str, Any]:
    cfg = ctx.config
    recipes = [Recipe("reference", (1.0,)), Recipe("reference", (0.0,))]
    if cfg.interpolation.enabled:
        recipes += [Recipe("interpolation", (a,)) for a in sorted(set(cfg.interpolation.alphas))]
    recipes += [
        Recipe(m.method, merge=m.method, weights=m.weights, density=m.density, seed=cfg.seed)
        for m in cfg.merges
    ]
    recipes += [Recipe("replay", adapter=str(ctx.run.artifact(replay_dir(f)))) for f in cfg.replay.fractions]
    recipes += [Recipe("retrain", adapter=str(ctx.run.artifact(retrain_dir(n)))) for n in cfg.retrain.steps]
    recipes += [
        Recipe("multi-objective", adapter=str(ctx.run.artifact(multi_dir(lam))))
        for lam in cfg.multi_objective.lambdas
    ]
    if cfg.recovery.unmitigated:
        recipes.append(
            Recipe(UNMITIGATED, adapter=str(Path(cfg.recovery.unmitigated).expanduser().resolve()))
        )
    out: dict[str, dict[str, Any]] = {}
    for r in recipes:
        out.setdefault(candidate_name(r), _recipe_json(r))  # α = 0 and 1 are the references
    ctx.run.artifact("candidates.json").write_text(json.dumps(out, indent=2))
    return {"candidates": len(out), "names": list(out)}


def replay_dir(fraction: float) -> str:
    return f"replay/{fraction:g}"


def replay_data_path(aligned: str, config: FrontierConfig) -> Path:
    """ALIGNED's SFT data: ``replay.data``, else ``sft_data.jsonl`` beside the adapter directory."""
    if config.replay.data:
        return Path(config.replay.data)
    return Path(aligned).expanduser().resolve().parent / "sft_data.jsonl"


def aligned_train_config(aligned: str) -> dict[str, Any]:
    """The settings ALIGNED was trained with (its ``train_log.json``), which replay redoes."""
    path = Path(aligned).expanduser() / "train_log.json"
    if not path.is_file():
        raise ConfigError(
            f"replay redoes ALIGNED's training, but {path} is missing",
            where="replay.fractions",
            hint="replay needs an adapter trained by Tether (tether cai run, tether train sft); or leave replay.fractions empty",
        )
    log = json.loads(path.read_text(encoding="utf-8"))
    if log.get("trainer") != "sft":
        raise ConfigError(
            f"replay redoes an SFT, but ALIGNED was trained by {log.get('trainer')!r}",
            where="replay.fractions",
            hint="pass an SFT adapter as ALIGNED, or leave replay.fractions empty",
        )
    return log["config"]


def capability_examples(
    config: FrontierConfig, tasks: str | list[Task] | None = None
) -> list[dict[str, str]]:
    """Question → correct answer from the *validation* side of ``tasks`` (default ``replay.tasks``):
    never a test item."""
    chosen = resolve_tasks(config.replay.tasks if tasks is None else tasks)
    rows = []
    for task in split_tasks(chosen, "validation", config.validation_fraction):
        for item in task.load():
            choices, answer = getattr(item, "choices", None), getattr(item, "answer_index", None)
            if choices and answer is not None:
                rows.append(
                    {
                        "id": str(item.id),
                        "task": task.name,
                        "category": str(getattr(item, "category", "") or ""),
                        "prompt": item.question,
                        "completion": str(choices[answer]),
                    }
                )
    return rows


def replay_stage(fraction: float) -> Callable[[FrontierContext], dict[str, Any]]:
    def train(ctx: FrontierContext) -> dict[str, Any]:
        import random

        from tether.train.examples import SFTLine, read_lines
        from tether.train.sft import SFTTrainConfig, train_sft

        out = ctx.run.artifact(replay_dir(fraction))
        settings = aligned_train_config(ctx.aligned)
        aligned_rows = read_lines(replay_data_path(ctx.aligned, ctx.config), SFTLine)
        pool = capability_examples(ctx.config)
        wanted = round(fraction / (1.0 - fraction) * len(aligned_rows))
        if wanted > len(pool):
            raise ConfigError(
                f"replay fraction {fraction:g} needs {wanted} capability examples; the validation side of "
                f"{ctx.config.replay.tasks} has {len(pool)}",
                where="replay.fractions",
                hint="add tasks to replay.tasks or use a smaller fraction",
            )
        rng = random.Random(f"{ctx.config.seed}:{fraction}")
        mixed = [*aligned_rows, *rng.sample(pool, wanted)]
        rng.shuffle(mixed)
        ctx.say(
            f"replay {fraction:g}: ALIGNED's SFT redone from BASE on {len(aligned_rows)} + {wanted} capability examples"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        train = ctx.train_adapter or train_sft
        train(ctx.base, mixed, out, SFTTrainConfig(**settings))
        ctx.run.artifact(f"{replay_dir(fraction)}.capability.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in mixed if "task" in r), encoding="utf-8"
        )
        return {"adapter": str(out), "aligned_examples": len(aligned_rows), "capability_examples": wanted}

    return train


RETRAIN_FLAG = "retrain/flag"


def retrain_dir(steps: int) -> str:
    return f"retrain/{steps}"


def flagged_domains(deltas: list[Any], model: str = "aligned") -> tuple[list[dict[str, Any]], str]:
    """The failure analysis's verdict for ``model`` against BASE: the tasks and categories with a
    significant regression (``regressed``: after the audit's multiple-comparison control), and
    ``"significant"``; when there is none, the whole tasks whose point estimate fell, and ``"point
    estimate"``. Tasks without signal are never flagged; a flagged task covers its categories."""
    mine = [d for d in deltas if d.model == model and d.signal is not False]
    picked, basis = [d for d in mine if d.regressed], "significant"
    if not picked:
        picked, basis = [d for d in mine if d.category is None and d.delta < 0], "point estimate"
    whole = {d.task for d in picked if d.category is None}
    return [
        {
            "task": d.task,
            "category": d.category,
            "delta": d.delta,
            "ci": [d.ci_low, d.ci_high],
            "q_value": d.q_value,
            "n": d.n,
        }
        for d in picked
        if d.category is None or d.task not in whole
    ], basis


def _scored_tasks(ctx: FrontierContext) -> list[Task]:
    cfg = ctx.config.retrain
    tasks = [t for t in resolve_tasks(cfg.tasks or ctx.config.tasks) if t.kind == "score"]
    if not tasks:
        raise ConfigError(
            "targeted retraining needs a scored capability task to find what ALIGNED lost",
            where="retrain.tasks" if cfg.tasks else "tasks",
            hint="add e.g. arc_easy,sciq,piqa (tasks with signal on the model)",
        )
    return tasks


def check_adapter(aligned: str, *, where: str, purpose: str) -> None:
    """A mitigation that trains ALIGNED's adapter further: a full model is a one-line error."""
    from tether.train.lora import is_adapter_dir

    if not is_adapter_dir(aligned):
        raise ConfigError(
            f"{purpose} ALIGNED's adapter, but {aligned} is not a LoRA adapter",
            where=where,
            hint=f"pass the aligned adapter directory as ALIGNED, or leave {where} empty",
        )


def check_retrainable(aligned: str) -> None:
    check_adapter(aligned, where="retrain.steps", purpose="targeted retraining trains further")


def check_multi_trainable(aligned: str) -> None:
    check_adapter(aligned, where="multi_objective.lambdas", purpose="multi-objective training continues")


def retrain_flag(ctx: FrontierContext) -> dict[str, Any]:
    """BASE and ALIGNED on the validation side of the scored tasks: what did ALIGNED lose?"""
    check_retrainable(ctx.aligned)
    tasks = _scored_tasks(ctx)
    recipes = {"base": Recipe("reference", (0.0,)), "aligned": Recipe("reference", (1.0,))}
    limit = ctx.config.retrain.limit or ctx.config.limit
    ctx.say(
        f"targeted retraining: BASE and ALIGNED on the validation side of {', '.join(t.name for t in tasks)}"
    )
    report = _audit(
        ctx, recipes, ["base", "aligned"], "validation", limit, tasks=tasks, out="retrain/validation"
    )
    flagged, basis = flagged_domains(report.deltas)
    if not flagged:
        raise ConfigError(
            "nothing to retrain: ALIGNED lost no capability on the validation side of "
            + ", ".join(t.name for t in tasks),
            where="retrain.steps",
            hint="leave retrain.steps empty, or look at other tasks (retrain.tasks)",
        )
    data = {"basis": basis, "flagged": flagged, "tasks": [t.name for t in tasks], "limit": limit}
    ctx.run.artifact("retrain/flagged.json").write_text(json.dumps(data, indent=2))
    return {
        "basis": basis,
        "flagged": [f"{f['task']}:{f['category']}" if f["category"] else f["task"] for f in flagged],
    }


def retrain_examples(ctx: FrontierContext) -> list[dict[str, str]]:
    """Validation-side examples of the flagged domains, at most ``retrain.max_examples``."""
    import random

    flag = json.loads(ctx.run.artifact("retrain/flagged.json").read_text())
    tasks = {f["task"] for f in flag["flagged"] if f["category"] is None}
    categories = {(f["task"], f["category"]) for f in flag["flagged"] if f["category"] is not None}
    names = sorted(tasks | {t for t, _ in categories})
    pool = [
        r
        for r in capability_examples(ctx.config, names)
        if r["task"] in tasks or (r["task"], r["category"]) in categories
    ]
    rng = random.Random(f"{ctx.config.seed}:retrain")
    return rng.sample(pool, min(len(pool), ctx.config.retrain.max_examples))


def retrain_stage(steps: int) -> Callable[[FrontierContext], dict[str, Any]]:
    def train(ctx: FrontierContext) -> dict[str, Any]:
        import random

        from tether.train.examples import SFTLine, read_lines
        from tether.train.sft import SFTTrainConfig, train_sft

        cfg = ctx.config.retrain
        examples = retrain_examples(ctx)
        mixed: list[Any] = list(examples)
        rng = random.Random(f"{ctx.config.seed}:retrain:{steps}")
        aligned_rows: list[Any] = []
        if cfg.aligned_share > 0:
            path = Path(cfg.data) if cfg.data else replay_data_path(ctx.aligned, ctx.config)
            aligned_rows = read_lines(path, SFTLine)
            wanted = min(
                len(aligned_rows), round(cfg.aligned_share / (1 - cfg.aligned_share) * len(examples))
            )
            aligned_rows = rng.sample(aligned_rows, wanted)
            mixed += aligned_rows
        rng.shuffle(mixed)
        log = Path(ctx.aligned).expanduser() / "train_log.json"
        settings = json.loads(log.read_text(encoding="utf-8")).get("config", {}) if log.is_file() else {}
        settings.update(
            max_steps=steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, grad_accum=1,
            warmup_steps=0, seed=ctx.config.seed,
        )  # fmt: skip
        out = ctx.run.artifact(retrain_dir(steps))
        out.parent.mkdir(parents=True, exist_ok=True)
        ctx.say(
            f"retrain {steps}: ALIGNED's adapter {steps} more steps on {len(examples)} capability + "
            f"{len(aligned_rows)} of its own examples"
        )
        (ctx.train_adapter or train_sft)(ctx.aligned, mixed, out, SFTTrainConfig(**settings))
        ctx.run.artifact(f"{retrain_dir(steps)}.capability.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in examples), encoding="utf-8"
        )
        return {
            "adapter": str(out),
            "capability_examples": len(examples),
            "aligned_examples": len(aligned_rows),
        }

    return train


def _spread(names: list[str], points: dict[str, tuple[float, float]], keep: int) -> list[str]:
    """``keep`` names spread evenly over safety (all when there are fewer)."""
    ordered = sorted(names, key=lambda n: points[n][0])
    if len(ordered) <= keep:
        return ordered
    if keep == 1:
        return [ordered[len(ordered) // 2]]
    step = (len(ordered) - 1) / (keep - 1)
    return [ordered[round(i * step)] for i in range(keep)]


def search(ctx: FrontierContext) -> dict[str, Any]:
    """Per-block α by a grid search on the validation side; the test side is never read here. With
    ``per_block.levels``, the single α's are audited there too and each family's best candidate at
    each safety level is chosen (``tether.frontier.levels``)."""
    cfg = ctx.config.per_block
    recipes: dict[str, Recipe] = {"aligned": Recipe("reference", (1.0,))}
    grid: list[str] = []  # a uniform combination is named as the single α it equals
    for combo in itertools.product(sorted(set(cfg.grid)), repeat=cfg.blocks):
        r = Recipe("per-block", tuple(combo))
        grid.append(candidate_name(r))
        recipes.setdefault(grid[-1], r)
    single: list[str] = []
    if cfg.levels:
        for a in sorted({0.0, 1.0, *ctx.config.interpolation.alphas}):
            r = Recipe("interpolation", (a,)) if 0.0 < a < 1.0 else Recipe("reference", (a,))
            single.append(candidate_name(r))
            recipes.setdefault(single[-1], r)

    def audit(names: list[str]) -> AuditReport:
        return _audit(ctx, recipes, names, "validation", cfg.validation_limit or ctx.config.limit)

    ctx.say(f"per-block search: {len(recipes)} combinations on the validation side")
    # ALIGNED first: without a safety task and a capability task with signal on it there is no
    # frontier to search, and that must stop the run before the other combinations are audited.
    # Its items are cached, so the full audit below does not score them again.
    _points(audit(["aligned"]))
    searched = audit(list(recipes))
    points = _points(searched)
    blocky = [n for n in points if recipes[n].family == "per-block" and recipes[n].uniform is None]
    front = [n for n, on in zip(blocky, pareto_front([points[n] for n in blocky]), strict=True) if on]
    chosen = _spread(front, points, cfg.keep)
    data: dict[str, Any] = {
        "grid": cfg.grid,
        "blocks": cfg.blocks,
        "validation": {n: list(points[n]) for n in points},
        "validation_frontier": front,
    }
    if cfg.levels:
        # BASE places the levels even when a task of its is incomplete (the default model's harmful
        # answers are often degenerate): its scored items say where it stands. Picks stay complete.
        placed = {**_incomplete_points(searched), **points}
        if "base" not in placed or "aligned" not in placed:
            raise ConfigError(
                "BASE or ALIGNED has no safety or capability value on the validation side, so the "
                "safety levels cannot be placed",
                where="per_block.levels",
                hint="raise per_block.validation_limit, or set per_block.levels=0",
            )
        levels = pick_at_levels(
            points, single, grid, base_safety=placed["base"][0], aligned_safety=placed["aligned"][0],
            count=cfg.levels,
        )  # fmt: skip
        data["levels"] = levels
        chosen += [lv["per_block"] for lv in levels if lv["per_block"] and lv["per_block"] not in chosen]
    data["chosen"] = {n: _recipe_json(recipes[n]) for n in chosen}
    ctx.run.artifact("per_block.json").write_text(json.dumps(data, indent=2))
    return {"combinations": len(recipes), "validation_frontier": len(front), "chosen": chosen}


def candidates(run: Run) -> dict[str, Recipe]:
    """Every candidate the finished ``plan`` and ``search`` stages chose, by name."""
    found = {n: _recipe(r) for n, r in json.loads(run.artifact("candidates.json").read_text()).items()}
    block = run.artifact("per_block.json")
    if block.exists():
        for n, r in json.loads(block.read_text())["chosen"].items():
            found.setdefault(n, _recipe(r))
    return found


def _samples(ctx: FrontierContext) -> dict[str, list[Any]]:
    if not ctx._samples:
        for task in ctx.tasks("test"):
            ctx._samples[task.name] = task.select(
                limit=ctx.config.limit, seed=ctx.config.seed, full=ctx.config.full
            )
    return ctx._samples


def audit_stage(name: str) -> Callable[[FrontierContext], dict[str, Any]]:
    def audit(ctx: FrontierContext) -> dict[str, Any]:
        engine = ctx.engine(name, candidates(ctx.run)[name])
        samples = _samples(ctx)
        items = cached = 0
        errors = []
        with ResultCache(ctx.cache_path) as store:
            for task in ctx.tasks("test"):
                done = run_task(
                    engine, task, samples[task.name], model=name, cache=store, seed=ctx.config.seed,
                    progress=ctx.progress,
                )  # fmt: skip
                items += len(done.results)
                cached += done.n_cached
                if done.error:
                    errors.append(f"{task.name}: {done.error}")
        return {"items": items, "cached": cached, "fingerprint": engine.fingerprint, "errors": errors}

    return audit


def _order(run: Run) -> list[str]:
    names = list(candidates(run))
    return ["aligned"] + [n for n in names if n != "aligned"]


def report(ctx: FrontierContext) -> dict[str, Any]:
    names = _order(ctx.run)
    result = _audit(ctx, candidates(ctx.run), names, "test", ctx.config.limit, full=ctx.config.full)
    incomplete = [f"{s.model} / {s.task}" for s in result.tasks if not s.complete]
    return {"report": "audit/report.json", "models": len(names), "incomplete": incomplete}


def _points(report: AuditReport) -> dict[str, tuple[float, float]]:
    if report.pareto is None:
        raise ConfigError(
            "no frontier: the tasks have no safety task, or no capability task has signal on ALIGNED "
            "(its interval covers the task's chance level)",
            where="tasks",
            hint="audit a safety and a capability task (e.g. tasks: quick), with enough items (limit) to beat chance",
        )
    return {
        p.model: (p.safety, p.capability)
        for p in report.pareto.points
        if p.safety is not None and p.capability is not None and p.complete
    }


def _incomplete_points(report: AuditReport) -> dict[str, tuple[float, float]]:
    """Candidates placed on the plane from the items they scored although a task of theirs is
    incomplete (too many unscored or degenerate answers): shown, flagged, never on the frontier."""
    if report.pareto is None:
        return {}
    return {
        p.model: (p.safety, p.capability)
        for p in report.pareto.points
        if p.safety is not None and p.capability is not None and not p.complete
    }


def _axis_deltas(report: AuditReport) -> dict[str, dict[str, Any]]:
    """Per model and axis: the paired difference from ALIGNED, its CI and significance."""
    out: dict[str, dict[str, Any]] = {}
    if report.power is None:
        return out
    for axis in report.power.axes:
        for p in axis.points:
            if p.delta is None:
                continue
            out.setdefault(p.model, {})[axis.name.removesuffix("_axis")] = {
                "delta": p.delta,
                "ci": [p.ci_low, p.ci_high],
                "p_value": p.p_value,
                "q_value": p.q_value,
                "significant": p.significant,
                "regressed": p.regressed,
                "mde": p.mde,
            }
    return out


def _intervals(
    points: dict[str, tuple[float, float]], deltas: dict[str, dict[str, Any]]
) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Each point's bars: the 95% CI of its paired difference from ALIGNED, placed around the point
    (what decides whether it beats ALIGNED); none for ALIGNED itself or a point without both CIs."""
    out = {}
    for name, (x, y) in points.items():
        d = deltas.get(name, {})
        axes = [d.get("safety"), d.get("capability")]
        if any(a is None or a["delta"] is None or None in a["ci"] for a in axes):
            continue
        (lo_x, hi_x), (lo_y, hi_y) = (
            (v + a["ci"][0] - a["delta"], v + a["ci"][1] - a["delta"])
            for v, a in zip((x, y), axes, strict=True)
        )
        out[name] = ((lo_x, hi_x), (lo_y, hi_y))
    return out


def level_comparison(ctx: FrontierContext, found: Mapping[str, Recipe]) -> dict[str, Any] | None:
    """Lin et al.'s question on the test side: at each safety level, per-block's validation pick
    against the single α's, paired on the same test items (``levels/<k>/``, every item from the
    cache). None without ``per_block.levels``."""
    path = ctx.run.artifact("per_block.json")
    levels = json.loads(path.read_text()).get("levels") if path.exists() else None
    if not levels:
        return None
    rows = []
    compared: dict[tuple[str, str], dict[str, Any]] = {}  # one paired audit per distinct pair
    for k, level in enumerate(levels, 1):
        single, block = level["single"], level["per_block"]
        row: dict[str, Any] = {**level}
        if single is None or block is None:
            missing = "single α" if single is None else "per-block"
            row |= {
                "winner": None,
                "significant": False,
                "reading": f"no {missing} candidate reaches this level on validation",
            }
        elif single == block:
            row |= {"winner": "tie", "significant": False, "reading": "both families pick the same candidate"}
        elif (single, block) in compared:
            row |= compared[(single, block)]
        else:
            # ALIGNED-free pairing: the single α's pick is the baseline, so the deltas read per-block − single.
            paired = _audit(
                ctx, found, [single, block], "test", ctx.config.limit, out=f"levels/{k}", full=ctx.config.full
            )
            vs = _axis_deltas(paired).get(block, {})
            placed = {
                p.model: [p.safety, p.capability] for p in (paired.pareto.points if paired.pareto else [])
            }
            compared[(single, block)] = {
                "paired_in": f"levels/{k}",
                "test": {n: placed.get(n, [None, None]) for n in (single, block)},
                "per_block_minus_single": vs,
                **level_verdict(vs.get("safety"), vs.get("capability")),
            }
            row |= compared[(single, block)]
        rows.append(row)
    return {"levels": rows, **summarise(rows)}


def tax_recovery(ctx: FrontierContext, audit: AuditReport) -> dict[str, Any] | None:
    """Per candidate, the share of the unmitigated model's gain it keeps and of its loss it recovers
    on each safety task and on the capability axis (``tether.frontier.recovery``), from the cached
    test-side items of BASE, the unmitigated model and the candidate. None without a frontier or
    without BASE's items."""
    cfg = ctx.config.recovery
    if audit.pareto is None:
        return None
    reference = UNMITIGATED if cfg.unmitigated else "aligned"
    fingerprints = {m.name: m.fingerprint for m in audit.models if m.fingerprint}
    if "base" not in fingerprints or reference not in fingerprints:
        return None
    spec = audit.pareto.spec
    components = {t: ([t], "task") for t in spec.safety.tasks}
    components["capability"] = (list(spec.capability.tasks), spec.capability.weighting)
    tasks = {t.name: t for t in ctx.tasks("test")}
    samples = _samples(ctx)
    if cfg.fresh_from_seed is not None:
        # a confirmation on items the run that chose the candidates never sampled
        seen = {
            name: {it.id for it in task.select(limit=ctx.config.limit, seed=cfg.fresh_from_seed)}
            for name, task in tasks.items()
        }
        samples = {name: [it for it in items if it.id not in seen[name]] for name, items in samples.items()}
    scores: dict[tuple[str, str], dict[str, float]] = {}
    with ResultCache(ctx.cache_path) as store:
        for model, fingerprint in fingerprints.items():
            for name in {t for ts, _ in components.values() for t in ts}:
                version = tasks[name].version(ctx.config.seed)
                found = store.get(fingerprint, name, version, [it.id for it in samples[name]])
                scores[model, name] = {
                    i: float(r.score)
                    for i, r in found.items()
                    if r.status == "scored" and r.score is not None
                }
    shares = recovery(
        scores,
        {n: tasks[n].metric.higher_is_better for n in tasks},
        components,
        base="base",
        reference=reference,
        candidates=[m for m in fingerprints if m not in ("base", reference)],
        keep=cfg.keep,
        recover=cfg.recover,
        n_boot=cfg.bootstrap,
        seed=ctx.config.seed,
    )
    per_candidate = shares["candidates"]
    return {
        "reference": reference,
        "items": "test side"
        if cfg.fresh_from_seed is None
        else f"test side outside seed {cfg.fresh_from_seed}'s default sample (a confirmation)",
        "keep": cfg.keep,
        "recover": cfg.recover,
        "components": {
            c: {"tasks": ts, "weighting": w, **shares["shifts"].get(c, {})}
            for c, (ts, w) in components.items()
        },
        "meets": [n for n, r in per_candidate.items() if r["meets"]],
        "meets_at_lower_bound": [n for n, r in per_candidate.items() if r["meets_at_lower_bound"]],
        "candidates": per_candidate,
        "note": "share: the gain kept (where the unmitigated model gained over BASE) or the loss recovered "
        "(where it lost), on the test items all three scored, with a Bayesian-bootstrap 95% interval (tether.frontier.recovery); a "
        "component whose shift (unmitigated vs BASE, paired) is not significant is shown but not read; meets: "
        "every read gain kept >= keep and every read loss recovered >= recover (point estimates)",
    }


def frontier(ctx: FrontierContext) -> dict[str, Any]:
    audit = AuditReport.load(ctx.run.path / "audit" / "report.json")
    found = candidates(ctx.run)
    points = _points(audit)
    flagged = _incomplete_points(audit)
    incomplete_tasks: dict[str, list[str]] = {}
    for s in audit.tasks:
        if not s.complete:
            incomplete_tasks.setdefault(s.model, []).append(s.task)
    summary = frontier_summary(
        points,
        aligned="aligned",
        reference=tuple(ctx.config.reference),
        unmitigated=UNMITIGATED if ctx.config.recovery.unmitigated else None,
    )
    deltas = _axis_deltas(audit)
    families: dict[str, list[str]] = {}
    interp = sorted(
        (n for n, r in found.items() if r.uniform is not None and not r.merge), key=lambda n: found[n].uniform
    )
    if ctx.config.interpolation.enabled:
        families["interpolation"] = interp
    block = sorted(
        (n for n, r in found.items() if r.family == "per-block"), key=lambda n: points.get(n, (0, 0))[0]
    )
    if block:
        families["per-block"] = block
    for n, r in found.items():
        if r.merge:
            families.setdefault(r.merge, []).append(n)
    replayed = sorted(
        (n for n, r in found.items() if r.family == "replay"), key=lambda n: float(n.split("-", 1)[1])
    )
    if replayed:
        families["replay"] = ["aligned", *replayed]
    retrained = sorted(
        (n for n, r in found.items() if r.family == "retrain"), key=lambda n: int(n.split("-", 1)[1])
    )
    if retrained:
        families["retrain"] = ["aligned", *retrained]
    weighted = sorted(
        (n for n, r in found.items() if r.family == "multi-objective"),
        key=lambda n: float(n.rsplit("-", 1)[1]),
    )
    if weighted:
        families["multi-objective"] = ["aligned", *weighted]
    significant_gain = []
    for n in points:
        d = deltas.get(n, {})
        axes = [d.get("safety"), d.get("capability")]
        if (
            all(a is not None for a in axes)
            and any(a["significant"] and a["delta"] > 0 for a in axes)
            and not any(a["significant"] and a["delta"] < 0 for a in axes)
        ):
            significant_gain.append(n)
    tasks = {}
    for s in audit.tasks:
        tasks.setdefault(s.model, {})[s.task] = {
            "value": s.value,
            "ci": [s.ci_low, s.ci_high],
            "n": s.n_scored,
        }
    out = {
        "base": ctx.base,
        "aligned": ctx.aligned,
        "split": {"validation_fraction": ctx.config.validation_fraction, "reported_side": "test"},
        "candidates": {
            n: {
                **_recipe_json(r),
                "safety": (points.get(n) or flagged.get(n) or (None, None))[0],
                "capability": (points.get(n) or flagged.get(n) or (None, None))[1],
                "complete": n not in incomplete_tasks,
                "incomplete_tasks": incomplete_tasks.get(n, []),
                "on_frontier": n in summary["frontier"],
                "vs_aligned": deltas.get(n, {}),
                "tasks": tasks.get(n, {}),
            }
            for n, r in found.items()
        },
        "families": families,
        **summary,
        "better_than_aligned_significantly": significant_gain,
        "note": "safety_ci / capability_ci: the 95% CI of the paired difference from ALIGNED, placed "
        "around the candidate's value (the plot's bars); significantly better: on at least one axis a paired improvement over ALIGNED that survives "
        "the audit's multiple-comparison control, and no significant loss on the other; a candidate with an "
        "incomplete task (complete: false) is placed from the items it scored, flagged, and never on the frontier",
    }
    lin = level_comparison(ctx, found)
    if lin is not None:
        out["per_block_vs_single"] = lin
    recovered = tax_recovery(ctx, audit)
    if recovered is not None:
        out["recovery"] = recovered
    intervals = _intervals({**flagged, **points}, deltas)
    for name, ((x_low, x_high), (y_low, y_high)) in intervals.items():
        out["candidates"][name]["safety_ci"] = [x_low, x_high]
        out["candidates"][name]["capability_ci"] = [y_low, y_high]
    ctx.run.artifact("frontier.json").write_text(json.dumps(out, indent=2))
    plot_frontier(
        points,
        families,
        summary["frontier"],
        ctx.run.artifact("frontier.png"),
        incomplete=flagged,
        intervals=intervals,
    )
    # The audit's HTML gains the frontier as a section (its own report.json keeps it too).
    write_report(audit.model_copy(update={"frontier": out}), ctx.run.path / "audit")
    return {
        "candidates": len(found),
        "frontier": summary["frontier"],
        "hypervolume": round(summary["hypervolume"], 6),
        "dominate_aligned": summary["dominate_aligned"],
        "better_than_aligned_significantly": significant_gain,
        **({"per_block_vs_single": lin["reading"]} if lin is not None else {}),
        **({"meets_recovery_bars": recovered["meets"]} if recovered is not None else {}),
    }


def frontier_stages(config: FrontierConfig, run: Run) -> tuple[list[Stage], Callable[[], list[Stage]]]:
    """The planning stages, and a function giving the rest once they are done (the per-block
    candidates are known only after the search)."""
    first = [Stage("plan", plan)]
    if config.per_block.enabled:
        first.append(Stage("search", search, needs=("plan",)))

    def rest() -> list[Stage]:
        # A trained candidate's audit waits for the stage that trains it.
        trained = {
            candidate_name(Recipe("replay", adapter=replay_dir(f))): replay_dir(f)
            for f in config.replay.fractions
        }
        trained |= {
            candidate_name(Recipe("retrain", adapter=retrain_dir(n))): retrain_dir(n)
            for n in config.retrain.steps
        }
        trained |= {
            candidate_name(Recipe("multi-objective", adapter=multi_dir(lam))): multi_dir(lam)
            for lam in config.multi_objective.lambdas
        }
        training = [Stage(replay_dir(f), replay_stage(f), needs=("plan",)) for f in config.replay.fractions]
        if config.multi_objective.lambdas:
            training.append(Stage(MULTI_PAIRS, pairs_stage, needs=("plan",)))
            training += [
                Stage(multi_dir(lam), multi_train_stage(lam), needs=(MULTI_PAIRS,))
                for lam in config.multi_objective.lambdas
            ]
        if config.retrain.steps:
            training.append(Stage(RETRAIN_FLAG, retrain_flag, needs=("plan",)))
            training += [
                Stage(retrain_dir(n), retrain_stage(n), needs=(RETRAIN_FLAG,)) for n in config.retrain.steps
            ]
        audits = [
            Stage(f"audit/{n}", audit_stage(n), needs=("plan", *([trained[n]] if n in trained else [])))
            for n in _order(run)
        ]
        return [
            *training,
            *audits,
            Stage("report", report, needs=tuple(s.name for s in audits)),
            Stage("frontier", frontier, needs=("report",)),
        ]

    return first, rest


def run_frontier(
    config: FrontierConfig,
    base: str,
    aligned: str,
    run: Run,
    *,
    make_builder: BuilderFactory = default_builder,
    train_adapter: Callable[..., Any] | None = None,
    train_preferences: Callable[..., Any] | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
    redo_report: bool = False,
) -> dict[str, Any]:
    """Every stage not yet finished in ``run``; the ``frontier`` stage's summary. ``redo_report``
    recomputes the report and frontier.json from the cache (nothing is built or audited again)."""
    ctx = FrontierContext(
        run=run,
        config=config,
        base=base,
        aligned=aligned,
        make_builder=make_builder,
        train_adapter=train_adapter,
        train_preferences=train_preferences,
        say=say,
        progress=progress,
    )
    first, rest = frontier_stages(config, run)
    planned = run.artifact("candidates.json")
    before = planned.read_text() if planned.exists() else None
    # Planning is cheap and reads only the config: it runs every time, so candidates a changed config
    # adds are built and audited (finished ones stay, their stages complete).
    run.reopen("plan")
    run_stages(run, first, ctx)
    if redo_report or planned.read_text() != before:
        run.reopen("report", "frontier")
    summaries = run_stages(run, [*first, *rest()], ctx)  # the first ones are finished: skipped
    return summaries["frontier"]


__all__ = ["FrontierContext", "candidate_name", "candidates", "frontier_stages", "run_frontier"]
