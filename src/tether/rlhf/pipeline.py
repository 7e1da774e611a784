"""The summarization RLHF pipeline as resumable stages in one run directory.

``documents`` -> ``validation`` -> ``candidates`` -> ``labels`` (AI labeler, or human pairs from
``tether label export``) -> ``reward`` -> ``ppo`` -> ``dpo`` -> ``compare``: :func:`rlhf_stages`, run
by ``tether.runs.run_stages``. Each stage writes its artifacts into the run directory and is marked
complete in ``manifest.json`` with its summary; rerunning the same config skips finished stages and
resumes the interrupted one (candidates per document, PPO from its last checkpoint, comparison
summaries per document). ``tether rlhf generate|reward|ppo|dpo`` run single stages of the same list
(:class:`RLHFContext` points them at the user's paths), so the standalone commands and the pipeline
share one code path.

Run directory::

    split.json, train_docs.jsonl, heldout_docs.jsonl     documents and their fixed split
    validation_docs.jsonl                                 held-out documents PPO validates on
    candidates.jsonl                                      CandidateSets (tether label import reads it)
    pairs.jsonl, ai_scores.jsonl, labels.json             preference pairs and the labeler's scores
    reward_model/                                         reward model + reward_report.json
    ppo/                                                  metrics.jsonl, validation.jsonl, monitors.png,
                                                          checkpoints/, best/, policy/
    dpo/                                                  DPO adapter
    compare/                                              summaries/, compare.json (+ audit/)
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from tether.config import EngineConfig, Problem, StrictModel, check_value
from tether.data.jsonl import read_jsonl, write_jsonl
from tether.data.records import PreferencePair
from tether.engine.pool import EnginePool
from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.feedback.records import CandidateSet
from tether.rlhf.compare import CompareReport, compare_models
from tether.rlhf.documents import (
    SummaryDocument,
    load_documents,
    read_split_docs,
    select_split,
    select_validation,
    write_split,
)
from tether.rlhf.labeler import AILabeler, LabelerConfig, LLMJudge
from tether.rlhf.reward_terms import PPORewardConfig, RuleTermReward, monitor_signal, quality_fn
from tether.runs import Run, Stage, StageContext, run_stages
from tether.train.dpo import DPOTrainConfig
from tether.train.ppo.trainer import PPOTrainConfig
from tether.train.reward import RewardConfig

log = logging.getLogger(__name__)

StageName = Literal[
    "documents", "validation", "candidates", "labels", "reward", "ppo", "dpo", "compare", "checks"
]


class DocumentsConfig(StrictModel):
    source: str = Field("boolq", description="'boolq' (packaged BoolQ passages) or a JSONL of {id, text}.")
    n_train: int | None = Field(32, ge=1, description="Training documents (None: all on the train side).")
    n_heldout: int | None = Field(16, ge=1, description="Held-out documents for the comparison (None: all).")
    n_validation: int = Field(
        16,
        ge=0,
        description="Further held-out documents, never compared, that PPO validates on (ppo.eval_every).",
    )
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="Share of ids hashed to the held-out side.")
    salt: str = Field("tether-rlhf", description="Salt of the split hash; change it for a different split.")


class CandidatesConfig(StrictModel):
    k: int = Field(
        4, ge=2, le=4, description="Candidate summaries per document (the labeling page shows 2-4)."
    )
    t_min: float = Field(0.3, gt=0, description="Lowest sampling temperature.")
    t_max: float = Field(1.0, gt=0, description="Highest sampling temperature.")
    max_new_tokens: int = Field(96, ge=1, description="Summary length cap in tokens.")

    @field_validator("t_max")
    @classmethod
    def _not_below_t_min(cls, t_max: float, info: ValidationInfo) -> float:
        t_min = info.data.get("t_min")
        if t_min is not None and t_max < t_min:
            raise ValueError(
                f"t_max ({t_max}) is below t_min ({t_min}); the temperatures spread from t_min up to t_max"
            )
        return t_max


class CompareConfig(StrictModel):
    max_new_tokens: int = Field(96, ge=1, description="Summary length cap for the comparison (greedy).")
    embedding_diversity: bool = Field(True, description="Load MiniLM to measure embedding diversity.")
    audit: bool = Field(False, description="Also run the safety/capability audit on base, PPO and DPO.")
    audit_tasks: str = Field("quick", description="Audit task set or task names.")
    audit_limit: int | None = Field(20, ge=1, description="Items per audit task.")


class ChecksConfig(StrictModel):
    """Signals outside the labeler's proxy family, measured after ``compare`` (tether.rlhf.independent)."""

    reader: str | None = Field(
        "gemma3-270m",
        description="QA check: a model that takes no part in training answers each held-out document's "
        "BoolQ question from the summary alone; null skips it.",
    )
    judge: str | None = Field(
        "gemma3-270m",
        description="A/B LLM judge on a model other than the policy, both orders; null skips it.",
    )
    judge_margin: float = Field(
        0.05, ge=0, lt=0.5, description="|P(better) - 0.5| below this is a tie for the judge."
    )
    human_labels: str | None = Field(
        None,
        description="Team-labelled summary pairs in tether label's import format (candidates naming their "
        "model, votes attached): win rates by people and every scorer's agreement with them.",
    )
    labelling_sheet: bool = Field(
        True,
        description="Write checks/to_label.jsonl: the held-out summary pairs (base vs each policy, and "
        "policy vs policy) whose texts differ, ready for tether label import.",
    )


class RLHFConfig(StrictModel):
    """Everything ``tether rlhf run`` does, in one file (``configs/rlhf.yaml``)."""

    name: str = Field("rlhf", description="Run name: the run directory is <runs_root>/<name>.")
    runs_root: str = Field("runs", description="Where run directories live.")
    seed: int = Field(
        0,
        description="Seeds candidate sampling; the reward model, PPO and DPO have their own "
        "(reward.seed, ppo.seed, dpo.seed).",
    )
    policy: str = Field(
        "default", description="Model spec of the starting policy (also the reward model's backbone)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    documents: DocumentsConfig = Field(default_factory=DocumentsConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    pairs: str | None = Field(
        None,
        description="Human preference pairs (tether label export); when set, the AI labeler is not used.",
    )
    labels_db: str | None = Field(
        None,
        description="Label DB with human votes (tether label): report the AI labeler's agreement with them.",
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOTrainConfig = Field(default_factory=PPOTrainConfig)
    ppo_reward: PPORewardConfig = Field(
        default_factory=PPORewardConfig,
        description="PPO's reward: the reward model plus optional proxy rule terms; the monitors' quality signal.",
    )
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    skip: list[StageName] = Field(default_factory=list, description="Stages not to run (e.g. [dpo]).")


def _needs_reader() -> None:
    raise ConfigError("ppo_reward's qa quality signal needs a reader model", hint="e.g. gemma3-270m")


def check_rlhf_config(config: RLHFConfig) -> list[Problem]:
    """What the schema cannot see, found before any model loads or any run directory is made:
    models that do not resolve, input files that are missing or malformed (documents, human pairs,
    the label DB), audit tasks that do not exist, a runs root that is a file."""
    from tether.evals.registry import resolve_tasks
    from tether.inputs import check_input_file, check_output_dir, did_you_mean
    from tether.models.spec import check_spec

    problems = check_value("policy", lambda: check_spec(config.policy))
    if config.labeler.llm_judge and config.labeler.judge_model:
        problems += check_value("labeler.judge_model", lambda: check_spec(config.labeler.judge_model))
    source = config.documents.source
    if source != "boolq":
        hint = did_you_mean(source, ["boolq"]) or "pass 'boolq' or a JSONL of {id, text} lines"
        problems += check_value(
            "documents.source",
            lambda: check_input_file(source, what="documents file", hint=hint) and load_documents(source),
        )
    if config.pairs is not None:
        problems += check_value(
            "pairs",
            lambda: (
                check_input_file(config.pairs, what="preference pairs file")
                and read_jsonl(config.pairs, PreferencePair)
            ),
        )
    if config.labels_db is not None:
        problems += check_value(
            "labels_db", lambda: check_input_file(config.labels_db, what="label database")
        )
    uses_qa = config.ppo_reward.monitor_quality == "qa" or config.ppo_reward.validation_quality == ["qa"]
    if uses_qa and config.checks.reader is None:
        problems += check_value("checks.reader", lambda: _needs_reader())
    for key in ("reader", "judge"):
        spec = getattr(config.checks, key)
        if spec is not None:
            problems += check_value(f"checks.{key}", lambda spec=spec: check_spec(spec))
    if config.checks.human_labels is not None:
        from tether.feedback.records import load_labelled_sets

        problems += check_value("checks.human_labels", lambda: load_labelled_sets(config.checks.human_labels))
    if config.compare.audit:
        problems += check_value("compare.audit_tasks", lambda: resolve_tasks(config.compare.audit_tasks))
    problems += check_value("runs_root", lambda: check_output_dir(config.runs_root, flag="runs_root"))
    return problems


def ppo_prompts(docs: list[SummaryDocument]) -> list[Prompt]:
    """PPO prompts carry their document, question and answer, for the quality signals."""
    return [
        Prompt(id=d.id, text=d.prompt, document=d.text, question=d.question, answer=d.answer) for d in docs
    ]


def _quality(ctx: RLHFContext, labeler: AILabeler, signal: list[str]):
    """The labeler's proxies, or (``[qa]``) the QA reader of ``checks.reader``."""
    if signal != ["qa"]:
        return quality_fn(labeler, signal)
    from tether.rlhf.independent import QAReader, ReaderQuality

    reader = ctx.config.checks.reader
    if reader is None:
        raise ConfigError(
            "the qa quality signal needs a reader", where="checks.reader", hint="e.g. gemma3-270m"
        )
    return ReaderQuality(QAReader(ctx.engines.get(reader)))


def validation_docs(config: RLHFConfig, run: Run) -> list[SummaryDocument]:
    """PPO's validation documents, written to the run directory the first time they are needed."""
    path = run.artifact("validation_docs.jsonl")
    if path.is_file():
        return read_jsonl(path, SummaryDocument, allow_empty=True)
    docs = config.documents
    chosen = select_validation(
        load_documents(docs.source),
        n_heldout=docs.n_heldout,
        n_validation=docs.n_validation,
        heldout_fraction=docs.heldout_fraction,
        salt=docs.salt,
    )
    write_jsonl(path, chosen)
    return chosen


def make_labeler(config: RLHFConfig, engines: EnginePool | None = None) -> AILabeler:
    """The AI labeler, with its LLM judge loaded (through ``engines``) when the config asks for one."""
    judge = None
    if config.labeler.llm_judge:
        engines = engines or EnginePool(config.engine)
        judge = LLMJudge(engines.get(config.labeler.judge_model or config.policy))
    return AILabeler(config.labeler, judge)


@dataclass(kw_only=True)
class RLHFContext(StageContext):
    """What the RLHF stages read and write. Paths default to the run directory's layout (see the
    module docstring); the standalone commands point them at the user's files instead."""

    config: RLHFConfig
    engines: EnginePool
    candidates_path: Path
    pairs_path: Path
    reward_dir: Path
    ppo_dir: Path
    dpo_dir: Path
    eval_pairs_path: Path | None = None  # reward: held-out pairs given by the user (else by hash)
    embedding_diversity: bool | None = None  # PPO's embedding monitor (default: compare's setting)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, config: RLHFConfig, run: Run, *, say: Callable[[str], None] = print, **paths: Any):
        defaults = {
            "candidates_path": run.path / "candidates.jsonl",
            "pairs_path": run.path / "pairs.jsonl",
            "reward_dir": run.path / "reward_model",
            "ppo_dir": run.path / "ppo",
            "dpo_dir": run.path / "dpo",
        }
        engines = paths.pop("engines", None) or EnginePool(config.engine, run.tracer)
        provided = paths.pop("provided", set())
        return cls(
            run=run, say=say, provided=provided, config=config, engines=engines, **{**defaults, **paths}
        )

    def split(self) -> tuple[list[SummaryDocument], list[SummaryDocument]]:
        return read_split_docs(self.run.path)


# --- stages ------------------------------------------------------------------------------------------


def documents_stage(ctx: RLHFContext) -> dict:
    """Load the corpus and fix the train / held-out split by hash (split.json)."""
    d = ctx.config.documents
    train, heldout = select_split(
        load_documents(d.source),
        n_train=d.n_train,
        n_heldout=d.n_heldout,
        heldout_fraction=d.heldout_fraction,
        salt=d.salt,
    )
    write_split(
        ctx.run.path, train, heldout, source=d.source, heldout_fraction=d.heldout_fraction, salt=d.salt
    )
    ctx.say(f"documents: {len(train)} train, {len(heldout)} held-out")
    return {"train": len(train), "heldout": len(heldout)}


def validation_stage(ctx: RLHFContext) -> dict:
    """PPO's validation documents: held-out ones after the compared ones. Runs before any model work,
    so a corpus too small to validate on fails in seconds."""
    config = ctx.config
    validation = validation_docs(config, ctx.run)
    if not validation:
        _, heldout = ctx.split()
        raise ConfigError(
            "ppo.eval_every needs validation documents, but the held-out side has none left after "
            f"the {len(heldout)} compared ones",
            where="documents.n_validation / documents.n_heldout",
            hint="set documents.n_validation > 0, lower n_heldout (null compares every held-out "
            "document), add documents, or set ppo.eval_every=0",
        )
    if len(validation) < config.documents.n_validation:
        ctx.say(
            f"warning: only {len(validation)} of documents.n_validation={config.documents.n_validation} "
            "validation documents exist; PPO's validation will be noisier"
        )
    return {"documents": len(validation)}


def candidates_stage(ctx: RLHFContext) -> dict:
    """K candidate summaries per training document at spread temperatures (resumable per document)."""
    from tether.rlhf.candidates import generate_candidates

    config = ctx.config
    train, _ = ctx.split()
    sets = generate_candidates(
        ctx.engines.get(config.policy),
        train,
        ctx.candidates_path,
        k=config.candidates.k,
        t_min=config.candidates.t_min,
        t_max=config.candidates.t_max,
        max_new_tokens=config.candidates.max_new_tokens,
        seed=config.seed,
        chunk_size=config.engine.batch_size,
    )
    ctx.engines.clear()
    ctx.say(f"candidates: {len(sets)} sets -> {ctx.candidates_path}")
    return {"sets": len(sets), "path": str(ctx.candidates_path)}


def labels_stage(ctx: RLHFContext) -> dict:
    """Preference pairs: the AI labeler over the candidates, or the human pairs of ``config.pairs``;
    with ``labels_db``, the AI labeler's agreement with the human votes there."""
    config = ctx.config
    info: dict = {}
    labeler = make_labeler(config, ctx.engines) if not config.pairs or config.labels_db else None
    if config.pairs:
        pairs = read_jsonl(config.pairs, PreferencePair)
        write_jsonl(ctx.pairs_path, pairs)
        info.update(source=str(config.pairs), pairs=len(pairs))
    else:
        result = labeler.label(read_jsonl(ctx.candidates_path, CandidateSet))
        write_jsonl(ctx.pairs_path, result.pairs)
        write_jsonl(
            ctx.run.artifact("ai_scores.jsonl"),
            (
                {"doc_id": lab.doc_id, "candidate_id": cid, **s.to_dict()}
                for lab in result.labels
                for cid, s in lab.scores.items()
            ),
        )
        info.update(pairs=len(result.pairs), ties_dropped=result.ties, annotator=result.annotator)
        info["mean_proxies"] = result.stats
    if config.labels_db:
        from tether.feedback.store import LabelStore
        from tether.rlhf.labeler import agreement_with_humans

        store = LabelStore(config.labels_db)
        records = {item.record.doc_id: item.record for item in store.items()}
        info["human_agreement"] = agreement_with_humans(records, store.votes(), labeler).to_dict()
        ctx.say(f"AI labeler vs human votes: {info['human_agreement']}")
    ctx.run.artifact("labels.json").write_text(json.dumps(info, indent=2) + "\n")
    ctx.engines.clear()
    ctx.say(f"labels: {info['pairs']} preference pairs")
    return info


REWARD_SUMMARY_KEYS = (
    "train_pairs",
    "eval_pairs",
    "eval_accuracy",
    "eval_ece",
    "train_accuracy",
    "seconds",
    "steps",
    "train_groups",
    "pairs_per_group",
    "seconds_per_epoch",
)


def reward_stage(ctx: RLHFContext) -> dict:
    """A Bradley–Terry reward model on the pairs, evaluated on documents held out by hash."""
    from tether.train.reward import train_reward_model

    config = ctx.config
    report = train_reward_model(
        config.policy,
        read_jsonl(ctx.pairs_path, PreferencePair),
        ctx.reward_dir,
        config.reward,
        eval_pairs=read_jsonl(ctx.eval_pairs_path, PreferencePair) if ctx.eval_pairs_path else None,
        log=ctx.say,
        device=config.engine.device,
        dtype=config.engine.dtype,
    )
    ctx.say(
        f"reward model: held-out accuracy {report.eval_accuracy} on {report.eval_pairs} pairs, "
        f"ECE {report.eval_ece}"
    )
    ctx.extra["reward_report"] = report
    return {k: getattr(report, k) for k in REWARD_SUMMARY_KEYS}


def ppo_stage(ctx: RLHFContext) -> dict:
    """PPO against the reward model (plus rule terms), monitored, validated, resumable."""
    from tether.train.monitors import Embedder
    from tether.train.ppo.trainer import RewardModelScorer, train_ppo
    from tether.train.reward import RewardModel

    config = ctx.config
    train, _ = ctx.split()
    labeler = AILabeler(config.labeler)
    reward_model = RewardModel.load(ctx.reward_dir, device=config.engine.device, dtype=config.engine.dtype)
    scorer = RuleTermReward(RewardModelScorer(reward_model), labeler, config.ppo_reward.terms)
    signal = monitor_signal(config.ppo_reward)
    ctx.say(
        f"PPO reward: reward model{''.join(f' + {w:g}*{k}' for k, w in scorer.terms.items())}; "
        f"monitors watch {'+'.join(signal)}"
    )
    validation = validation_docs(config, ctx.run) if config.ppo.eval_every else []
    if validation:
        ctx.say(
            f"PPO validates every {config.ppo.eval_every} steps on {len(validation)} held-out documents "
            f"(greedy; quality = {'+'.join(config.ppo_reward.validation_quality)})"
            + ("; keeps the best state" if config.ppo.keep_best else "")
        )
    embedding = (
        config.compare.embedding_diversity if ctx.embedding_diversity is None else ctx.embedding_diversity
    )
    result = train_ppo(
        config.policy,
        ppo_prompts(train),
        scorer,
        ctx.ppo_dir,
        config.ppo,
        quality_fn=_quality(ctx, labeler, signal),
        eval_prompts=ppo_prompts(validation),
        eval_fn=_quality(ctx, labeler, config.ppo_reward.validation_quality),
        embedder=Embedder() if embedding else None,
        engine_config=config.engine,
        tracer=ctx.run.tracer,
        on_step=lambda row: ctx.say(_step_line(row)),
    )
    ctx.extra["ppo_result"] = result
    return {
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "best_step": result.best_step,
        "best_quality": result.best_quality,
        **_ppo_trajectory(ctx.ppo_dir),
    }


def _ppo_trajectory(ppo_dir: Path) -> dict:
    """The first and last metrics, every alert, and the validation checks, from PPO's own files."""
    rows = read_jsonl(ppo_dir / "metrics.jsonl", allow_empty=True)
    out: dict = {
        "alerts": [a for r in rows for a in r.get("alerts", [])],
        "first": {k: rows[0].get(k) for k in ("reward_mean", "kl", "quality")} if rows else None,
        "last": {k: rows[-1].get(k) for k in ("reward_mean", "kl", "quality")} if rows else None,
    }
    if (ppo_dir / "validation.jsonl").is_file():
        checks = read_jsonl(ppo_dir / "validation.jsonl", allow_empty=True)
        out["validation"] = [
            {k: c.get(k) for k in ("step", "eval_quality", "eval_parts", "eval_reward", "eval_length")}
            for c in checks
        ]
    return out


def dpo_stage(ctx: RLHFContext) -> dict:
    """DPO on the same preference pairs, from scratch (it is short)."""
    from tether.train.dpo import train_dpo

    shutil.rmtree(ctx.dpo_dir, ignore_errors=True)
    pairs = read_jsonl(ctx.pairs_path, PreferencePair)
    adapter = train_dpo(ctx.config.policy, pairs, ctx.dpo_dir, ctx.config.dpo, tracer=ctx.run.tracer)
    return {"pairs": len(pairs), "adapter": str(adapter)}


def compare_stage(ctx: RLHFContext) -> dict:
    """Base, PPO and DPO summarise the held-out documents; paired deltas of the judge's score."""
    config, run = ctx.config, ctx.run
    _, heldout = ctx.split()
    if not heldout:
        ctx.say("compare: no held-out documents; nothing to compare")
        return {}
    models = {"base": config.policy}
    if run.is_complete("ppo"):
        models["ppo"] = str(ctx.ppo_dir / "policy")
    if run.is_complete("dpo"):
        models["dpo"] = str(ctx.dpo_dir)
    stages = run.manifest.get("stages", {})
    train_seconds = {name: stages.get(name, {}).get("seconds") for name in ("ppo", "dpo")}
    if stages.get("reward", {}).get("seconds") is not None and train_seconds.get("ppo") is not None:
        train_seconds["ppo"] += stages["reward"]["seconds"]  # PPO needs the reward model
    embedder = None
    if config.compare.embedding_diversity:
        from tether.train.monitors import Embedder

        embedder = Embedder()
    report = compare_models(
        models,
        heldout,
        run.path / "compare",
        labeler=make_labeler(config, ctx.engines),
        max_new_tokens=config.compare.max_new_tokens,
        engine_config=config.engine,
        embedder=embedder,
        train_seconds={k: v for k, v in train_seconds.items() if v is not None and k in models},
        tracer=run.tracer,
        audit=config.compare.audit,
        audit_tasks=config.compare.audit_tasks,
        audit_limit=config.compare.audit_limit,
    )
    ctx.engines.clear()
    ctx.extra["compare_report"] = report
    return _compare_summary(report)


def checks_stage(ctx: RLHFContext) -> dict:
    """The compared models on signals they were not trained on: a QA reader, an LLM judge on another
    model, and (when given) team-labelled pairs. Writes ``checks/independent.json``."""
    from tether.rlhf.checks import run_checks

    report = run_checks(ctx.config, ctx.run.path, ctx.engines, say=ctx.say)
    ctx.engines.clear()
    return report


def rlhf_stages(config: RLHFConfig) -> list[Stage]:
    """The pipeline for ``config``: every stage it runs, in order (``skip`` and a human ``pairs``
    file leave stages out)."""
    labels_need = ("documents",) if config.pairs else ("candidates",)
    stages = [
        Stage("documents", documents_stage),
        Stage("validation", validation_stage, needs=("documents",)),
        Stage("candidates", candidates_stage, needs=("documents",)),
        Stage("labels", labels_stage, needs=labels_need),
        Stage("reward", reward_stage, needs=("labels",)),
        Stage("ppo", ppo_stage, needs=("documents", "reward")),
        Stage("dpo", dpo_stage, needs=("labels",)),
        Stage("compare", compare_stage, needs=("documents",)),
        Stage("checks", checks_stage, needs=("compare",)),
    ]
    left_out = set(config.skip)
    if config.pairs:
        left_out.add("candidates")
    if not config.ppo.eval_every or "ppo" in left_out:
        left_out.add("validation")
    if "compare" in left_out:
        left_out.add("checks")
    return [s for s in stages if s.name not in left_out]


def run_pipeline(config: RLHFConfig, run: Run, *, say: Callable[[str], None] = print) -> dict:
    """Run every stage not yet complete in ``run``; return a summary (also saved in the manifest)."""
    ctx = RLHFContext.for_run(config, run, say=say)
    summaries = run_stages(run, rlhf_stages(config), ctx)
    summary: dict = {}
    if "reward" in summaries:
        summary["reward"] = summaries["reward"]
    if "ppo" in summaries:
        summary["ppo"] = {**summaries["ppo"], "kept_step": summaries["ppo"].get("best_step")}
    if "compare" in summaries:
        summary["compare"] = summaries["compare"]
    if "checks" in summaries:
        summary["checks"] = summaries["checks"]
    run.finish("complete", **summary)
    return summary


def _compare_summary(report: CompareReport) -> dict:
    return {
        r.name: {
            "win_rate": r.win_rate,
            "score": r.score,
            "faithfulness": r.faithfulness,
            "coverage": r.coverage,
            "tokens": r.tokens,
        }
        for r in report.rows
    }


def _step_line(row: dict) -> str:
    quality = "" if row.get("quality") is None else f" quality {row['quality']:.3f}"
    terms = row.get("reward_terms") or {}
    parts = " [" + " ".join(f"{k} {v:.3f}" for k, v in terms.items()) + "]" if terms else ""
    t = row["timings"]
    validation = (
        ""
        if row.get("eval_quality") is None
        else f" | validation quality {row['eval_quality']:.3f} reward {row['eval_reward']:+.3f}"
    )
    return (
        f"ppo step {row['step']}: reward {row['reward_mean']:+.3f}±{row['reward_std']:.3f}{parts} KL {row['kl']:.3f} "
        f"(coef {row['kl_coef']:.4f}) entropy {row['entropy']:.2f} len {row['response_length']:.1f} "
        f"distinct-2 {row['distinct_2']:.2f}{quality} [rollout {t['rollout_s']:.1f}s reward {t['reward_s']:.1f}s "
        f"update {t['forward_s'] + t['update_s']:.1f}s]{validation}"
    )
