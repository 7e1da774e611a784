"""`tether rlhf ...`: summarization RLHF step by step, or all at once with `run CONFIG`.

AI path:    tether rlhf run configs/rlhf.yaml
Human path: tether rlhf generate --out cands.jsonl -> tether label import cands.jsonl -> tether label serve
            -> tether label export --out pairs.jsonl -> tether rlhf reward --pairs pairs.jsonl --out rm
            -> tether rlhf ppo --reward-model rm --out ppo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tether.data.jsonl import read_completed
from tether.errors import TetherError
from tether.inputs import check_input_dir, check_input_file, check_output_dir, check_output_file, read_text
from tether.plain import out as print_data
from tether.plain import plain_table

app = typer.Typer(
    help="RLHF for summarization: candidates, AI or human preference labels, reward model, PPO, DPO, comparison.",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)


PolicyOption = Annotated[
    str, typer.Option("--policy", help="Model spec of the policy ('default', HF dir, adapter dir, .gguf).")
]
DocsOption = Annotated[str, typer.Option("--docs", help="'boolq' or a JSONL of {id, text} documents.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
]


def _say(message: str) -> None:
    err.print(message, highlight=False, markup=False)


def _line(text: str) -> None:
    """A result line on stdout, as is: no markup to eat brackets in paths, names or JSON."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _heldout_docs(docs: str, n: int | None, heldout_fraction: float = 0.2):
    from tether.rlhf.documents import load_documents, select_split

    _, heldout = select_split(load_documents(docs), n_train=n, n_heldout=n, heldout_fraction=heldout_fraction)
    return heldout


def _standalone(
    run_dir: Path,
    config,
    stages: list[str],
    *,
    provided: set[str] = frozenset(),
    job: str,
    **paths,
):
    """Run ``stages`` of the pipeline's own stage list in ``run_dir``, with the user's paths: the
    standalone commands and ``tether rlhf run`` are one code path (see tether.rlhf.pipeline)."""
    from tether.rlhf.pipeline import RLHFContext, rlhf_stages
    from tether.runs import Run, recording_outcome, run_stages

    run = Run.create(run_dir.name, root=run_dir.parent, job=job, config=config, seed=config.seed)
    ctx = RLHFContext.for_run(config, run, say=_say, provided=set(provided), **paths)
    with recording_outcome(run):
        run_stages(run, rlhf_stages(config), ctx, only=stages)
    run.finish("complete")
    return run, ctx


# The config key each standalone command's flag sets, so a bad value is reported by its flag.
FLAGS = {
    "policy": "--policy",
    "seed": "--seed",
    "pairs": "--pairs",
    "documents.source": "--docs",
    "documents.n_train": "--n",
    "documents.n_heldout": "--n",
    "documents.n_validation": "--validation",
    "candidates.k": "--k",
    "candidates.t_min": "--t-min",
    "candidates.t_max": "--t-max",
    "candidates.max_new_tokens": "--max-new-tokens",
    "ppo_reward.terms": "--term",
}


def _config(overrides: dict, sets: list[str] | None = None, config_path: Path | None = None):
    """An RLHFConfig from a command's flags (``overrides``, dotted keys) and its --set/--config,
    with the models and files it names checked (errors name the flag that gave the value)."""
    from tether.config import load_config
    from tether.rlhf.pipeline import RLHFConfig, check_rlhf_config

    flags = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return load_config(
        RLHFConfig,
        config_path,
        flags + list(sets or []),
        flags={key: FLAGS.get(key, f"--{key}") for key in overrides},
        check=check_rlhf_config,
    )


@app.command()
def generate(
    out_path: Annotated[
        Path, typer.Option("--out", help="CandidateSet JSONL to write (appended to; resumable).")
    ],
    policy: PolicyOption = "default",
    docs: DocsOption = "boolq",
    n: Annotated[int, typer.Option("--n", min=1, help="Documents (train side of the hash split).")] = 32,
    k: Annotated[int, typer.Option("--k", min=2, max=4, help="Candidates per document.")] = 4,
    t_min: Annotated[float, typer.Option(help="Lowest sampling temperature.")] = 0.3,
    t_max: Annotated[float, typer.Option(help="Highest sampling temperature.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Summary length cap in tokens.")] = 96,
    seed: int = 0,
) -> None:
    """Sample K candidate summaries per document at spread temperatures (input for `tether label import`).

    Runs the pipeline's documents and candidates stages; the run's manifest and split go to OUT.run/."""
    check_output_file(out_path, flag="--out", inputs={"--docs": None if docs == "boolq" else docs})
    config = _config(
        {
            "policy": policy,
            "seed": seed,
            "documents.source": docs,
            "documents.n_train": n,
            "documents.n_heldout": n,
            "candidates.k": k,
            "candidates.t_min": t_min,
            "candidates.t_max": t_max,
            "candidates.max_new_tokens": max_new_tokens,
        }
    )
    run_dir = out_path.parent / f"{out_path.name}.run"
    _, ctx = _standalone(
        run_dir, config, ["documents", "candidates"], job="rlhf-generate", candidates_path=out_path
    )
    sets = read_completed(out_path)
    _line(f"{out_path}: {len(sets)} candidate sets ({k} each)")
    _say(f"next: tether label import {out_path}   or   tether rlhf label-ai {out_path} --out pairs.jsonl")


@app.command("label-ai")
def label_ai(
    candidates: Annotated[Path, typer.Argument(help="CandidateSet JSONL (from `tether rlhf generate`).")],
    out_path: Annotated[Path, typer.Option("--out", help="Preference pairs JSONL to write.")],
    margin: Annotated[
        float, typer.Option(help="Minimum preference strength; weaker pairs are ties (dropped).")
    ] = 0.05,
    llm_judge: Annotated[
        bool, typer.Option(help="Blend in an LLM judge (engine.score, both orders).")
    ] = False,
    judge_model: Annotated[str, typer.Option(help="Model spec of the LLM judge.")] = "default",
    db: Annotated[
        Path | None, typer.Option("--db", help="Label DB with human votes: report AI-human agreement.")
    ] = None,
) -> None:
    """Label candidate sets with the AI labeler (faithfulness/coverage proxies) and write preference pairs."""
    from pydantic import ValidationError

    from tether.data.jsonl import write_jsonl
    from tether.errors import ConfigError
    from tether.feedback.records import load_candidate_sets
    from tether.rlhf.labeler import AILabeler, LabelerConfig, LLMJudge, agreement_with_humans

    check_output_file(out_path, flag="--out", inputs={"CANDIDATES": candidates})
    try:
        labeler_config = LabelerConfig(margin=margin, llm_judge=llm_judge, judge_model=judge_model)
    except ValidationError as exc:
        flag = {"margin": "--margin", "judge_model": "--judge-model"}
        raise ConfigError(
            "; ".join(
                f"{flag.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors() if e["loc"]
            )
        ) from None
    sets = load_candidate_sets(candidates)
    store = None
    if db is not None:
        from tether.feedback.store import LabelStore

        store = LabelStore(db)  # a bad --db is refused before any labeling or writing
    judge = None
    if llm_judge:
        from tether.engine import Engine
        from tether.models.spec import check_spec

        check_spec(judge_model, where="--judge-model")
        judge = LLMJudge(Engine.from_spec(judge_model))
    labeler = AILabeler(labeler_config, judge)
    result = labeler.label(sets)
    write_jsonl(out_path, result.pairs)
    _line(
        f"{out_path}: {len(result.pairs)} pairs from {len(sets)} sets; {result.ties} candidate pairs below the margin (dropped)"
    )
    _line("mean proxies: " + ", ".join(f"{k} {v:.3f}" for k, v in result.stats.items()))
    if store is not None:
        records = {item.record.doc_id: item.record for item in store.items()}
        agreement = agreement_with_humans(records, store.votes(), labeler)
        _line(f"AI vs human labels: {json.dumps(agreement.to_dict())}")


@app.command()
def reward(
    pairs: Annotated[
        Path, typer.Option("--pairs", help="Preference pairs JSONL (tether label export / label-ai).")
    ],
    out_path: Annotated[Path, typer.Option("--out", help="Reward model directory to write.")],
    policy: PolicyOption = "default",
    eval_pairs: Annotated[
        Path | None, typer.Option(help="Held-out pairs; default: hold out documents by hash.")
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Train a reward model (LoRA + scalar head, Bradley–Terry loss) and print held-out accuracy and calibration.

    Runs the pipeline's reward stage with OUT as its run directory (--set takes reward.* fields)."""
    check_input_file(pairs, flag="--pairs", what="preference pairs file")
    if eval_pairs is not None:
        check_input_file(eval_pairs, flag="--eval-pairs", what="preference pairs file")
    check_output_dir(out_path, flag="--out")
    sets = [o if o.startswith(("reward.", "engine.")) else f"reward.{o}" for o in overrides or []]
    config = _config({"policy": policy, "pairs": str(pairs)}, sets)
    _, ctx = _standalone(
        out_path,
        config,
        ["reward"],
        provided={"labels"},
        job="rlhf-reward",
        pairs_path=pairs,
        reward_dir=out_path,
        eval_pairs_path=eval_pairs,
    )
    report = ctx.extra.get("reward_report")
    if report is None:
        _line(f"reward model -> {out_path}: already trained (see {out_path / 'reward_report.json'})")
        return
    _line(
        f"reward model -> {out_path}: {report.train_pairs} train / {report.eval_pairs} held-out pairs, "
        f"{report.steps} steps, {report.seconds:.0f} s; train accuracy {report.train_accuracy:.3f}"
    )
    _line(
        f"{report.train_groups} prompt groups ({report.pairs_per_group:.1f} pairs, "
        f"{report.sequences_per_epoch} sequences an epoch), {report.seconds_per_epoch:.0f} s an epoch"
    )
    if report.eval_accuracy is not None:
        _line(
            f"held-out accuracy {report.eval_accuracy:.3f}, loss {report.eval_loss:.4f}, ECE {report.eval_ece:.3f}"
        )
        rows = [
            (f"{b.low:.2f}-{b.high:.2f}", str(b.count), f"{b.confidence:.3f}", f"{b.accuracy:.3f}")
            for b in report.reliability
        ]
        header = ("confidence bin", "pairs", "mean confidence", "accuracy")
        print_data(plain_table(header, rows, numeric={1, 2, 3}, title="Reliability (held-out)"))


@app.command()
def ppo(
    reward_model: Annotated[
        Path, typer.Option("--reward-model", help="Reward model directory (tether rlhf reward).")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", help="PPO output directory (resumes from its checkpoints).")
    ],
    policy: PolicyOption = "default",
    docs: DocsOption = "boolq",
    n: Annotated[int, typer.Option("--n", min=1, help="Training documents.")] = 32,
    config_path: Annotated[
        Path | None, typer.Option("--config", help="YAML of PPOTrainConfig fields.")
    ] = None,
    overrides: SetOption = None,
    embedding_diversity: Annotated[
        bool, typer.Option(help="Load MiniLM for the embedding-diversity monitor.")
    ] = True,
    terms: Annotated[
        list[str] | None,
        typer.Option(
            "--term",
            help="Rule term PROXY=WEIGHT added to the reward (faithfulness, coverage, conciseness, "
            "repetition, score); repeatable. The hacking monitor then watches the proxies left out.",
        ),
    ] = None,
    n_validation: Annotated[
        int,
        typer.Option(
            "--validation",
            min=1,
            help="Held-out documents PPO validates on when eval_every > 0 (--set eval_every=2).",
        ),
    ] = 16,
) -> None:
    """Train the policy with PPO against the reward model; monitors every step, checkpoints, resumable.

    Runs the pipeline's documents, validation and ppo stages with OUT as the run directory. Validation
    documents are held out and never among the first N held-out ones (those `tether rlhf compare`
    compares by default)."""
    from tether.config import load_config
    from tether.train.ppo.trainer import PPOTrainConfig

    _check_reward_dir(reward_model)
    check_output_dir(out_path, flag="--out")
    engine_sets = [o for o in overrides or [] if o.startswith("engine.")]
    ppo_config = load_config(
        PPOTrainConfig, config_path, [o for o in overrides or [] if o not in engine_sets]
    )
    config = _config(
        {
            "policy": policy,
            "documents.source": docs,
            "documents.n_train": n,
            "documents.n_heldout": n,
            "documents.n_validation": n_validation,
            "ppo_reward.terms": _parse_terms(terms or []),
        },
        engine_sets,
    ).model_copy(update={"ppo": ppo_config})
    stages = ["documents", "validation", "ppo"] if ppo_config.eval_every else ["documents", "ppo"]
    _, ctx = _standalone(
        out_path,
        config,
        stages,
        provided={"reward"},
        job="rlhf-ppo",
        reward_dir=reward_model,
        ppo_dir=out_path,
        embedding_diversity=embedding_diversity,
    )
    result = ctx.extra.get("ppo_result")
    if result is None:
        _line(f"PPO: already complete in {out_path}")
        return
    _line(
        f"PPO: {result.steps} steps in {result.seconds:.0f} s -> {result.policy_dir}; "
        f"{len(result.alerts)} monitor alerts; plot {result.plot_path}"
    )
    if result.best_step is not None:
        kept = "kept" if ppo_config.keep_best else "best (not kept: keep_best is off)"
        _line(f"validation: {kept} step {result.best_step}, quality {result.best_quality:.3f}")
    for alert in result.alerts:
        _line(f"  step {alert.step} [{alert.kind}/{alert.severity}] {alert.message}")


def _check_reward_dir(directory: Path) -> None:
    """--reward-model is what `tether rlhf reward` wrote: its reward_model.json readable and complete,
    its head saved, its base a model spec that resolves. Checked before documents or models load."""
    from tether.models.spec import check_spec
    from tether.train.reward import REWARD_CONFIG, REWARD_HEAD

    hint = "train one with: tether rlhf reward --pairs PAIRS.jsonl --out DIR"
    check_input_dir(directory, flag="--reward-model", what="reward model directory", hint=hint)
    meta_path = directory / REWARD_CONFIG
    if not meta_path.is_file():
        raise TetherError(
            f"{directory} is not a reward model directory (no {REWARD_CONFIG})",
            where="--reward-model",
            hint=hint,
        )
    try:
        meta = json.loads(read_text(meta_path, what="reward model config"))
    except json.JSONDecodeError as exc:
        raise TetherError(
            f"not valid JSON ({exc.msg} at line {exc.lineno})", where=f"{meta_path}:{exc.lineno}", hint=hint
        ) from None
    missing = [
        k for k in ("base", "max_length", "mean", "std") if not isinstance(meta, dict) or k not in meta
    ]
    if missing or not (directory / REWARD_HEAD).is_file():
        what = f"lacks {', '.join(missing)}" if missing else f"has no {REWARD_HEAD} beside it"
        raise TetherError(f"the reward model config {what}", where=str(meta_path), hint=hint)
    check_spec(str(meta["base"]), where=f"{meta_path} (base)")


def _parse_terms(specs: list[str]) -> dict[str, float]:
    terms = {}
    for spec in specs:
        name, sep, weight = spec.partition("=")
        try:
            terms[name.strip()] = float(weight)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"{spec!r}: expected PROXY=WEIGHT, e.g. coverage=2", param_hint="--term")
    return terms


@app.command()
def dpo(
    pairs: Annotated[Path, typer.Option("--pairs", help="Preference pairs JSONL.")],
    out_path: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")],
    policy: PolicyOption = "default",
    overrides: SetOption = None,
) -> None:
    """Train the policy with DPO on the same preference pairs (TRL DPOTrainer, LoRA).

    Runs the pipeline's dpo stage; its manifest goes to OUT.run/ (--set takes dpo.* fields)."""
    check_input_file(pairs, flag="--pairs", what="preference pairs file")
    check_output_dir(out_path, flag="--out")
    sets = [o if o.startswith(("dpo.", "engine.")) else f"dpo.{o}" for o in overrides or []]
    config = _config({"policy": policy, "pairs": str(pairs)}, sets)
    run_dir = out_path.parent / f"{out_path.name}.run"
    _standalone(
        run_dir, config, ["dpo"], provided={"labels"}, job="rlhf-dpo", pairs_path=pairs, dpo_dir=out_path
    )
    _line(f"DPO adapter -> {out_path}")


@app.command()
def compare(
    models: Annotated[
        list[str],
        typer.Option("--model", help="name=spec (repeatable); the first is the baseline, e.g. base=default."),
    ],
    out_path: Annotated[Path, typer.Option("--out", help="Output directory (summaries cached per model).")],
    docs: DocsOption = "boolq",
    n: Annotated[int, typer.Option("--n", min=1, help="Held-out documents.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 96,
    audit: Annotated[bool, typer.Option(help="Also run the safety/capability audit on the models.")] = False,
    audit_limit: Annotated[int, typer.Option(min=1, help="Items per audit task.")] = 20,
    embedding_diversity: Annotated[bool, typer.Option(help="Load MiniLM for embedding diversity.")] = True,
) -> None:
    """Compare policies on held-out documents: AI-judge win rate vs the first, proxies, length, diversity, time."""
    from tether.models.spec import check_spec
    from tether.rlhf.compare import compare_models, comparison_table
    from tether.train.monitors import Embedder

    named = {}
    for item in models:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise TetherError(
                f"'{item}' is not name=spec",
                where="--model",
                hint="e.g. --model base=default --model ppo=runs/x/ppo/policy",
            )
        if name in named:
            raise TetherError(
                f"two models are both called '{name}'", where="--model", hint="give each --model its own name"
            )
        check_spec(spec, where=f"--model {item}")
        named[name] = spec
    check_output_dir(out_path, flag="--out")
    report = compare_models(
        named,
        _heldout_docs(docs, n),
        out_path,
        max_new_tokens=max_new_tokens,
        embedder=Embedder() if embedding_diversity else None,
        audit=audit,
        audit_limit=audit_limit,
    )
    print_data(comparison_table(report))
    _line(f"{out_path / 'compare.json'}")


@app.command()
def run(
    config_path: Annotated[Path, typer.Argument(help="RLHF config YAML (see configs/rlhf.yaml).")],
    overrides: SetOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: the config's name).")] = None,
) -> None:
    """Run the whole pipeline resumably in runs/<name>: documents, candidates, labels, reward, PPO, DPO, compare."""
    from tether.config import load_config
    from tether.rlhf.compare import CompareReport, ModelSummary, comparison_table
    from tether.rlhf.pipeline import RLHFConfig, check_rlhf_config, run_pipeline
    from tether.runs import Run, recording_outcome

    config = load_config(RLHFConfig, config_path, overrides or [], check=check_rlhf_config)
    run_dir = Run.create(
        name or config.name, root=config.runs_root, job="rlhf", config=config, seed=config.seed
    )
    _say(f"run directory: {run_dir.path}")
    with recording_outcome(run_dir):
        run_pipeline(config, run_dir, say=_say)
    compare_json = run_dir.path / "compare" / "compare.json"
    if compare_json.is_file():
        data = json.loads(compare_json.read_text())
        rows = [ModelSummary(**r) for r in data.pop("rows")]
        print_data(comparison_table(CompareReport(rows=rows, **data)))
    _line(f"done: {run_dir.path}")


@app.command()
def check(
    run_dir: Annotated[Path, typer.Argument(help="An RLHF run directory whose compare stage has finished.")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Team-labelled pairs (tether label import format, votes attached)."),
    ] = None,
    reader: Annotated[
        str | None, typer.Option(help="QA reader model spec; 'none' skips the QA check.")
    ] = None,
    judge: Annotated[str | None, typer.Option(help="LLM judge model spec; 'none' skips the judge.")] = None,
    overrides: SetOption = None,
) -> None:
    """Measure the compared models on signals outside the labeler's proxies (re-runs the checks stage):
    a QA reader, an LLM judge on another model, and people's labels. Writes checks/independent.json."""
    from tether.config import load_config
    from tether.rlhf.checks import run_checks
    from tether.rlhf.pipeline import RLHFConfig, check_rlhf_config
    from tether.runs import read_manifest

    if not (run_dir / "compare" / "summaries").is_dir():
        raise TetherError(
            "no compare/summaries in this directory",
            where=str(run_dir),
            hint="pass an RLHF run directory after its compare stage (tether rlhf run ...)",
        )
    recorded = read_manifest(run_dir / "manifest.json").get("config") or {}
    flags = {}
    if labels is not None:
        flags["checks.human_labels"] = str(labels)
    for key, value in (("checks.reader", reader), ("checks.judge", judge)):
        if value is not None:
            flags[key] = None if value.lower() == "none" else value
    names = {"checks.human_labels": "--labels", "checks.reader": "--reader", "checks.judge": "--judge"}
    config = load_config(
        RLHFConfig,
        None,
        [f"{key}={json.dumps(value)}" for key, value in flags.items()] + list(overrides or []),
        flags={key: names[key] for key in flags},
        check=check_rlhf_config,
        base=recorded,
        base_source=f"{run_dir / 'manifest.json'} (the run's config)",
    )
    from tether.engine.pool import EnginePool

    summary = run_checks(config, run_dir, EnginePool(config.engine), say=_say)
    print_data(checks_table(json.loads((run_dir / "checks" / "independent.json").read_text())))
    _line(json.dumps(summary))


def checks_table(report: dict) -> str:
    """The checks as plain text: QA reader, judge and people's win rates, scorer agreement."""
    from tether.plain import plain_table

    blocks = []
    if "qa" in report:
        qa = report["qa"]
        rows = [
            ("passage (upper reference)", f"{qa['passage']:.3f}", "", ""),
            ("question only (no context)", f"{qa['question_only']:.3f}", "", ""),
        ]
        for m in qa["models"]:
            delta = m["vs_baseline"]
            rows.append((m["model"], f"{m['p_correct']:.3f}", f"{m['accuracy']:.3f}", _delta(delta)))
        title = (
            f"QA check: reader {qa['reader']} answers each document's question from the summary, n={qa['n']}"
            + ("" if qa["signal"] else " -- NO SIGNAL: the passage does not help the reader")
        )
        blocks.append(
            plain_table(("context", "P(correct)", "accuracy", "vs base (paired)"), rows, title=title)
        )
    for key, title in (("judge", "LLM judge"), ("human", "People")):
        if key not in report:
            continue
        rows = [
            (
                f"{r['model']} vs {r['other']}",
                f"{r['wins']}/{r['ties']}/{r['losses']}",
                _delta(r["preference"]),
            )
            for r in report[key]["win_rates"]
        ]
        blocks.append(
            plain_table(("comparison", "W/T/L", "mean(win − loss)"), rows, title=f"{title} win rates")
        )
    if "human" in report:
        rows = [
            (
                a["scorer"],
                str(a["n"]),
                "n/a" if a["kappa"] is None else f"{a['kappa']:.3f}",
                "n/a" if a["accuracy"] is None else f"{a['accuracy']:.3f}",
                "" if a["accuracy_ci"] is None else f"[{a['accuracy_ci'][0]:.3f}, {a['accuracy_ci'][1]:.3f}]",
                str(a["decided"]),
                str(a["scorer_ties"]),
            )
            for a in report["human"]["agreement"]
        ]
        header = ("scorer", "pairs", "kappa", "accuracy", "95% CI", "both decided", "scorer ties")
        blocks.append(plain_table(header, rows, title="Agreement with people (first/second/tie)"))
    return "\n\n".join(blocks)


def _delta(delta: dict | None) -> str:
    if delta is None:
        return ""
    mde = "—" if delta["mde"] is None else f"{delta['mde']:.3f}"
    return (
        f"{delta['delta']:+.3f} [{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}] p={delta['p_value']:.3f} "
        f"MDE {mde} n={delta['n']}"
    )
