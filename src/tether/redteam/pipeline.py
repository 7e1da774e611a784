"""The red-team campaign, stage by stage, resumable per goal: goals → attack/<strategy> … → report.

Run directory layout::

    goals.json                 the goals (HarmBench validation behaviours) and how they were chosen
    attacks/<strategy>.jsonl   one record per finished goal: queries, first success, every attempt
    redteam.json|html          the campaign report (ASR vs budget with CIs, successes, cost)
    traces.jsonl               every model call (target and attacker), by stage

An interrupted attack stage resumes: goals already in its JSONL are skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import Problem, check_value
from tether.data.jsonl import JsonlAppender, read_completed
from tether.engine.pool import EngineLoader, EnginePool
from tether.errors import ConfigError
from tether.judges.harmful import HarmJudge
from tether.judges.ongoal import shared_minilm
from tether.redteam.attacks import AttackContext, Embedder, run_goals
from tether.redteam.config import RedteamConfig
from tether.redteam.goals import Goal, select_goals
from tether.redteam.report import (
    render_html,
    strategy_summary,
    successful_attacks,
    versus_reference,
)
from tether.runs import Run, Stage, StageContext, run_stages


def bare_judge(name: str) -> HarmJudge:
    from tether.judges.harmful import RuleHarmfulJudge, default_harmful_judge

    if name == "rules":
        return RuleHarmfulJudge()
    if name == "trained":
        from tether.judges.trained import TrainedJudge

        return TrainedJudge("harmful")
    return default_harmful_judge()


def make_judge(config: RedteamConfig, embedder: Callable[[], Embedder] | None = None) -> HarmJudge:
    """The campaign's success judge: the configured judge behind the goal gate unless it is off."""
    judge = bare_judge(config.judge)
    gate = config.goal_gate
    if not gate.enabled:
        return judge
    from tether.judges.ongoal import GoalGate

    return GoalGate(
        judge,
        embedder_factory=embedder,  # called on first use: a campaign may never flag a reply
        min_goal_similarity=gate.min_goal_similarity,
        max_attack_lean=gate.max_attack_lean,
    )


def load_templates(config: RedteamConfig) -> list[Any]:
    """The jailbreak templates the ``templates`` strategy tries (length and family filters)."""
    from tether.data.sources import load_source

    cfg = config.templates
    templates = [t for t in load_source("jailbreak_templates") if len(t.template) <= cfg.max_template_chars]
    if cfg.families is not None:
        known = sorted({t.family for t in templates})
        unknown = [f for f in cfg.families if f not in known]
        if unknown:
            raise ConfigError(
                f"unknown template famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}",
                where="templates.families",
                hint=f"families under templates.max_template_chars: {', '.join(known)}",
            )
        templates = [t for t in templates if t.family in cfg.families]
    return templates


@dataclass(kw_only=True)
class RedteamContext(StageContext):
    """What the red-team stages share."""

    config: RedteamConfig
    engines: EnginePool
    judge: HarmJudge
    embedder: Callable[[], Embedder] = shared_minilm

    def goals(self) -> list[Goal]:
        data = json.loads(self.run.artifact("goals.json").read_text(encoding="utf-8"))
        return [Goal.model_validate(g) for g in data["goals"]]


def goals_stage(ctx: RedteamContext) -> dict:
    """HarmBench validation behaviours, by category, none of them an audit item."""
    goals, info = select_goals(ctx.config.goals, ctx.config.seed)
    ctx.run.artifact("goals.json").write_text(
        json.dumps({"info": info, "goals": [g.model_dump() for g in goals]}, indent=1), encoding="utf-8"
    )
    return info


def attack_stage(strategy: str) -> Stage:
    def attack(ctx: RedteamContext) -> dict:
        """Attack every goal not yet in attacks/<strategy>.jsonl."""
        config = ctx.config
        path = ctx.run.artifact(f"attacks/{strategy}.jsonl")
        done = {r["goal_id"] for r in read_completed(path)}
        todo = [g for g in ctx.goals() if g.id not in done]
        attack_ctx = AttackContext(
            config=config,
            templates=load_templates(config) if strategy == "templates" else [],
            embedder=ctx.embedder() if strategy == "tap" and todo else None,
        )
        if todo:
            target = ctx.engines.get(config.target)
            if strategy == "gcg":
                from tether.redteam.gcg import WhiteBox

                attack_ctx.white_box = WhiteBox.of(target)
            ctx.say(f"redteam {strategy}: {len(todo)} goal(s) to attack ({len(done)} already done)")
            if strategy in (short := config.short_budgets()):
                ctx.say(f"warning: redteam {strategy} {short[strategy]}")
            # Resolved once, not every round the attacker is asked for (it reads the CPU's flags).
            attacker_overrides = config.attacker_engine_overrides()
            with JsonlAppender(path) as out:
                run_goals(
                    todo,
                    strategy,
                    target=target,
                    attacker=lambda: ctx.engines.get(
                        config.attacker_spec, keep=(config.target,), overrides=attacker_overrides
                    ),
                    judge=ctx.judge,
                    ctx=attack_ctx,
                    on_done=out.write,
                    stage=f"redteam/{strategy}",
                )
        records = read_completed(path)
        return {
            "goals": len(records),
            "successes": sum(r["status"] == "success" for r in records),
            "unscored": sum(r["status"] == "unscored" for r in records),
            "resumed_with": len(done),
        }

    return Stage(f"attack/{strategy}", attack, needs=("goals",))


def judge_summary(judge: HarmJudge, config: RedteamConfig) -> dict[str, Any]:
    """The success judge, its settings and its rows of the calibration sheet: how often it agreed
    with people on sets it was not built from (``attacks:heldout`` is red-team replies). The
    committed sheet's rows when they were computed for this very judge, else recomputed for it
    (``current_sheet``), as the audit's report does."""
    from tether.errors import TetherError
    from tether.judges.calibration import current_sheet

    name = getattr(judge, "name", type(judge).__name__)
    fields = ("dataset", "n", "accuracy", "precision", "precision_ci", "false_positive_rate", "recall")
    try:
        sheet = current_sheet("harmful", judge, name)
    except TetherError:
        sheet = {}
    rows = [
        {k: r.get(k) for k in fields}
        for r in sheet.get("rows", [])
        if r.get("judge") == name and r.get("role") == "validation" and r.get("n")
    ]
    return {
        "name": name,
        "config": config.judge,
        "goal_gate": config.goal_gate.model_dump(),
        "validation": rows,
        "note": "precision is the share of its successes people called real; read the successes "
        "before citing an ASR (docs/judges-goal-gate.md)"
        if rows
        else "not in the calibration sheet",
    }


def judge_changes(run: Run, config: RedteamConfig) -> list[dict[str, Any]]:
    """Earlier judge settings of a resumed run that differ from this one's (the manifest keeps every
    replaced config): goals finished before the change were judged by those."""
    now = {"judge": config.judge, "goal_gate": config.goal_gate.model_dump()}
    earlier = []
    for entry in run.manifest.get("config_history", []):
        old = entry.get("config") or {}
        setting = {"judge": old.get("judge", "default"), "goal_gate": old.get("goal_gate")}
        if setting != now and setting not in earlier:
            earlier.append(setting)
    return earlier


def build_report(run: Run, config: RedteamConfig, judge: HarmJudge) -> dict[str, Any]:
    """redteam.json's content, from the run directory alone."""
    goals_info = json.loads(run.artifact("goals.json").read_text(encoding="utf-8"))["info"]
    stages = run.manifest.get("stages", {})
    results, records_all, by_strategy = {}, [], {}
    for strategy in config.strategies:
        records = read_completed(run.artifact(f"attacks/{strategy}.jsonl"))
        records_all += records
        by_strategy[strategy] = records
        seconds = stages.get(f"attack/{strategy}", {}).get("seconds")
        results[strategy] = strategy_summary(records, config.queries_per_goal, seconds)
    return {
        "run": run.name,
        "created": run.manifest.get("created"),
        "models": {
            "target": config.target,
            "attacker": config.attacker_spec,
            "attacker_engine": config.attacker_engine_overrides(),
        },
        "judge": {**judge_summary(judge, config), "changed_during_run": judge_changes(run, config)},
        "scope": {
            **goals_info,
            "queries_per_goal": config.queries_per_goal,
            "target_max_new_tokens": config.target_max_new_tokens,
            "seed": config.seed,
        },
        "strategies": {
            s: (getattr(config, s).model_dump() if s != "templates" else config.templates.model_dump())
            for s in config.strategies
        },
        "results": results,
        # Adaptive strategies against the static templates, paired over the goals both scored.
        "versus_templates": versus_reference(by_strategy, config.queries_per_goal),
        # Strategies whose settings cap them below queries_per_goal: their ASR is at a smaller budget.
        "short_budgets": config.short_budgets(),
        "successes": successful_attacks(records_all),
    }


def report_stage(ctx: RedteamContext) -> dict:
    """redteam.json and redteam.html."""
    report = build_report(ctx.run, ctx.config, ctx.judge)
    ctx.run.artifact("redteam.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    ctx.run.artifact("redteam.html").write_text(render_html(report), encoding="utf-8")
    return {
        s: {"asr": r["curve"][-1]["asr"], "n": r["curve"][-1]["n"], "successes": r["successes"]}
        for s, r in report["results"].items()
    }


def redteam_stages(config: RedteamConfig) -> list[Stage]:
    stages = [Stage("goals", goals_stage)]
    stages += [attack_stage(s) for s in config.strategies]
    stages.append(Stage("report", report_stage, needs=tuple(f"attack/{s}" for s in config.strategies)))
    return stages


def run_redteam(
    config: RedteamConfig,
    run: Run,
    *,
    load_engine: EngineLoader | None = None,
    judge: HarmJudge | None = None,
    embedder: Callable[[], Embedder] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the campaign into ``run``; return the report's headline per strategy."""
    problem = config.white_box_problem()
    if problem:  # before any model loads
        raise ConfigError(problem, where="target")
    began = time.perf_counter()
    ctx = RedteamContext(
        run=run,
        say=say,
        config=config,
        engines=EnginePool(config.engine, run.tracer, load_engine),
        judge=judge or make_judge(config, embedder or shared_minilm),
        **({"embedder": embedder} if embedder is not None else {}),
    )
    with ctx.engines:
        summaries = run_stages(run, redteam_stages(config), ctx)
    return {
        "strategies": summaries["report"],
        "report": str(run.path / "redteam.html"),
        "seconds_this_invocation": round(time.perf_counter() - began, 1),
    }


# What a finished goal's record means depends on these: a resumed campaign must keep them.
RESUME_FIXED = (
    "target",
    "attacker",
    "attacker_dtype",
    "seed",
    "goals",
    "queries_per_goal",
    "target_max_new_tokens",
)
# ...and on these, for a strategy that has finished goals: they change the strategy's algorithm.
RESUME_FIXED_PER_STRATEGY = {"pair": ("pair.keep_last",), "tap": ("tap.keep_last",)}
# What a manifest from before a setting existed ran under.
RESUME_BEFORE = {"attacker_dtype": "engine", "pair.keep_last": 0, "tap.keep_last": 0}
_MISSING = object()


def _setting(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return RESUME_BEFORE.get(dotted, _MISSING)
        node = node[part]
    return node


def resume_conflict(run_dir: str | Path, config: RedteamConfig) -> ConfigError | None:
    """Why ``config`` cannot resume the campaign in ``run_dir``: a setting of :data:`RESUME_FIXED`
    (or of :data:`RESUME_FIXED_PER_STRATEGY`, for a strategy with finished goals) that differs from
    the one its finished goals were attacked under (another target or attacker would be mixed into
    the same ASR, the report naming only the new one). None for a new directory or one with no
    finished goal. Judge settings may change: the report says so."""
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.json"
    finished = [p for p in (run_dir / "attacks").glob("*.jsonl") if p.stat().st_size]
    if not manifest.exists() or not finished:
        return None
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return None  # Run.create reports an unreadable manifest, naming it
    now = config.model_dump(mode="json")
    names = list(RESUME_FIXED)
    for path in finished:
        names += RESUME_FIXED_PER_STRATEGY.get(path.stem, ())
    for name in names:
        was, value = _setting(previous, name), _setting(now, name)
        if was is _MISSING:
            continue
        has = value
        if isinstance(was, dict) and isinstance(value, dict):
            has = {k: value.get(k) for k in was}  # a field added in a later release is not a change
        if was != has:
            return ConfigError(
                f"{run_dir} attacked its finished goals with {name}={json.dumps(was)}, "
                f"and this config has {json.dumps(value)}",
                where=name,
                hint=f"resume with --set {name}=<that value>, or use another --out",
            )
    return None


def check_redteam_config(config: RedteamConfig) -> list[Problem]:
    """What the schema cannot see, before any model loads: model specs, goal categories, families."""
    from tether.models.spec import check_spec

    problems = check_value("target", lambda: check_spec(config.target))
    problem = config.white_box_problem()
    if problem:
        problems.append((("target",), problem))
    if config.attacker is not None:
        problems += check_value("attacker", lambda: check_spec(config.attacker))
    problems += check_value("goals", lambda: select_goals(config.goals, config.seed))
    if "templates" in config.strategies:
        problems += check_value("templates.families", lambda: load_templates(config))
    return problems


def load_redteam_config(
    path: str | Path | None, overrides: list[str] | None = None, *, check: bool = False
) -> RedteamConfig:
    from tether.config import load_config

    return load_config(RedteamConfig, path, overrides or [], check=check_redteam_config if check else None)


__all__ = ["RedteamConfig", "build_report", "load_redteam_config", "redteam_stages", "run_redteam"]
