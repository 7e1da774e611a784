"""Base vs PPO vs DPO on held-out documents: what each policy writes and what it cost.

Each model summarizes every held-out document greedily (temperature 0, so the comparison is of the
policies, not of sampling luck). Per model the report gives the AI judge's win rate against the
first model (the base), the faithfulness/coverage proxies, length, distinct-n and embedding
diversity, and wall times (generation here; training when the caller passes it). With ``audit`` the
safety/capability audit (``tether.audit``) runs on the same models, so the table shows what the
summarization gains cost elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tether.config import EngineConfig
from tether.data.jsonl import JsonlAppender, read_completed
from tether.engine.types import SamplingParams
from tether.rlhf.candidates import summary_prompt
from tether.rlhf.documents import SummaryDocument
from tether.rlhf.labeler import AILabeler
from tether.runs import Tracer
from tether.train.monitors import TextEmbedder, diversity_metrics


@dataclass
class ModelSummary:
    """One row of the comparison."""

    name: str
    spec: str
    n: int
    win_rate: float | None  # vs the baseline under the AI judge: (wins + ties/2) / n; None for the baseline
    wins: int
    ties: int
    losses: int
    score: float  # combined proxy, mean
    faithfulness: float
    coverage: float
    conciseness: float
    tokens: float  # mean completion tokens
    words: float
    cut_off: float  # share of summaries that hit max_new_tokens
    distinct_1: float
    distinct_2: float
    embedding_diversity: float | None
    generate_seconds: float
    train_seconds: float | None = None
    audit: dict[str, float | None] = field(default_factory=dict)
    # Paired over documents vs the baseline: mean score difference with a 95% bootstrap interval.
    score_delta: float | None = None
    score_delta_ci: tuple[float, float] | None = None
    score_delta_significant: bool | None = None
    per_document: dict[str, dict[str, float]] = field(default_factory=dict)  # doc id -> proxy scores
    # The same paired deltas for each proxy: name -> {delta, ci_low, ci_high, significant}.
    proxy_deltas: dict[str, dict[str, float | bool]] = field(default_factory=dict)


@dataclass
class CompareReport:
    baseline: str
    documents: int
    rows: list[ModelSummary]
    judge: str
    audit_report: str | None = None
    audit_note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


DELTA_PROXIES = ("score", "faithfulness", "coverage", "conciseness")


def generate_summaries(
    name: str,
    spec: str,
    docs: Sequence[SummaryDocument],
    out: Path,
    *,
    max_new_tokens: int,
    engine_config: EngineConfig | None = None,
    tracer: Tracer | None = None,
) -> dict[str, dict]:
    """Greedy summaries by ``spec`` for ``docs`` (doc id -> row), cached in ``out`` and resumed from it.

    Each row keeps its share of the generation wall time, so cached rows still report what they cost.
    """
    done = {r["doc_id"]: r for r in read_completed(out)}
    todo = [d for d in docs if d.id not in done]
    if todo:
        from tether.engine import Engine

        engine = Engine.from_spec(spec, engine_config, tracer)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        began = time.perf_counter()
        completions = engine.generate([summary_prompt(d) for d in todo], params, stage=f"rlhf.compare.{name}")
        seconds = time.perf_counter() - began
        with JsonlAppender(out) as appender:
            for d, c in zip(todo, completions, strict=True):
                row = {
                    "doc_id": d.id,
                    "model": name,
                    "text": c.text.strip(),
                    "tokens": c.completion_tokens,
                    "finish_reason": c.finish_reason,
                    "seconds": round(seconds / len(todo), 4),
                }
                appender.write(row)
                done[d.id] = row
        del engine
    return {d.id: done[d.id] for d in docs}


def compare_models(
    models: Mapping[str, str],
    docs: Sequence[SummaryDocument],
    out_dir: str | Path,
    *,
    labeler: AILabeler | None = None,
    max_new_tokens: int = 96,
    engine_config: EngineConfig | None = None,
    embedder: TextEmbedder | None = None,
    train_seconds: Mapping[str, float] | None = None,
    tracer: Tracer | None = None,
    audit: bool = False,
    audit_tasks: str = "quick",
    audit_limit: int | None = 20,
) -> CompareReport:
    """Summarize ``docs`` with each of ``models`` (name -> spec; the first is the baseline) and compare.

    Writes ``summaries/<name>.jsonl`` and ``compare.json`` into ``out_dir``.
    """
    if not models:
        raise ValueError("compare_models needs at least one model")
    if not docs:
        raise ValueError("compare_models needs held-out documents")
    out_dir = Path(out_dir)
    labeler = labeler or AILabeler()
    summaries, gen_seconds = {}, {}
    for name, spec in models.items():
        cached = out_dir / "summaries" / f"{name}.jsonl"
        cached.parent.mkdir(parents=True, exist_ok=True)
        summaries[name] = generate_summaries(
            name,
            spec,
            docs,
            cached,
            max_new_tokens=max_new_tokens,
            engine_config=engine_config,
            tracer=tracer,
        )
        gen_seconds[name] = sum(r["seconds"] for r in summaries[name].values())

    from tether.audit.stats import paired_delta

    baseline = next(iter(models))
    rows = []
    base_per_document: dict[str, dict[str, float]] = {}
    for name, spec in models.items():
        texts = [summaries[name][d.id]["text"] for d in docs]
        scores = [labeler.score(d.text, t, d.question) for d, t in zip(docs, texts, strict=True)]
        per_document = {
            d.id: {proxy: sc.value(proxy) for proxy in DELTA_PROXIES}
            for d, sc in zip(docs, scores, strict=True)
        }
        deltas = {}  # proxy -> paired delta vs the baseline (none for the baseline itself)
        if name == baseline:
            base_per_document = per_document
        else:
            for proxy in DELTA_PROXIES:
                deltas[proxy] = paired_delta(
                    {k: v[proxy] for k, v in base_per_document.items()},
                    {k: v[proxy] for k, v in per_document.items()},
                    n_boot=2000,
                )
        delta = deltas.pop("score", None)
        proxy_deltas = {
            proxy: {
                "delta": ci.delta,
                "ci_low": ci.ci_low,
                "ci_high": ci.ci_high,
                "significant": ci.significant,
            }
            for proxy, ci in deltas.items()
        }
        wins = ties = losses = 0
        if name != baseline:
            base_texts = [summaries[baseline][d.id]["text"] for d in docs]
            strengths = labeler.compare(
                [(d.text, d.question, t, b) for d, t, b in zip(docs, texts, base_texts, strict=True)]
            )
            for s in strengths:
                if s >= labeler.config.margin:
                    wins += 1
                elif s <= -labeler.config.margin:
                    losses += 1
                else:
                    ties += 1
        diversity = diversity_metrics(texts, embedder)
        n = len(docs)
        rows.append(
            ModelSummary(
                name=name,
                spec=spec,
                n=n,
                win_rate=None if name == baseline else (wins + ties / 2) / n,
                wins=wins,
                ties=ties,
                losses=losses,
                score=sum(s.score for s in scores) / n,
                faithfulness=sum(s.faithfulness for s in scores) / n,
                coverage=sum(s.coverage for s in scores) / n,
                conciseness=sum(s.conciseness for s in scores) / n,
                tokens=sum(summaries[name][d.id]["tokens"] for d in docs) / n,
                words=sum(len(t.split()) for t in texts) / n,
                cut_off=sum(summaries[name][d.id]["finish_reason"] == "length" for d in docs) / n,
                distinct_1=diversity["distinct_1"],
                distinct_2=diversity["distinct_2"],
                embedding_diversity=diversity.get("embedding_diversity"),
                generate_seconds=round(gen_seconds[name], 2),
                train_seconds=(train_seconds or {}).get(name),
                score_delta=None if delta is None else delta.delta,
                score_delta_ci=None if delta is None else (delta.ci_low, delta.ci_high),
                score_delta_significant=None if delta is None else delta.significant,
                per_document=per_document,
                proxy_deltas=proxy_deltas,
            )
        )
    report = CompareReport(baseline=baseline, documents=len(docs), rows=rows, judge=labeler.annotator)
    if audit:
        _attach_audit(report, models, out_dir / "audit", audit_tasks, audit_limit, engine_config)
    (out_dir / "compare.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _attach_audit(
    report: CompareReport,
    models: Mapping[str, str],
    out_dir: Path,
    tasks: str,
    limit: int | None,
    engine_config: EngineConfig | None,
) -> None:
    """Run the safety/capability audit on the same models and copy each task's headline into the rows."""
    try:
        from tether.audit.sweep import run_audit
    except ImportError as exc:  # the audit is optional here: the comparison stands without it
        report.audit_note = f"audit skipped: tether.audit is not available ({exc})"
        return
    audit = run_audit(
        list(models.values()), tasks, out_dir, limit=limit, names=list(models), engine_config=engine_config
    )
    report.audit_report = str(out_dir / "report.html")
    for row in report.rows:
        row.audit = {s.task: s.value for s in audit.tasks if s.model == row.name}


def comparison_table(report: CompareReport) -> str:
    """The report as plain text, one row per model (stdout is data: no Rich markup, no wrapping)."""
    from tether.plain import plain_table

    title = f"Summaries on {report.documents} held-out documents (judge: {report.judge})"
    audit_tasks = list(dict.fromkeys(t for r in report.rows for t in r.audit))
    header = (
        "model",
        f"win vs {report.baseline}",
        "W/T/L",
        "score",
        "Δ score [95% CI]",
        "faithful",
        "Δ faithful",
        "coverage",
        "Δ coverage",
        "concise",
        "tokens",
        "cut off",
        "distinct-1",
        "distinct-2",
        "emb. div.",
        "gen s",
        "train s",
        *audit_tasks,
    )
    rows = []

    def fmt(value: float | None, digits: int = 3) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    def fmt_delta(d: dict | None) -> str:
        if not d:
            return "—"
        return f"{d['delta']:+.3f}" + ("*" if d["significant"] else "")

    for r in report.rows:
        rows.append(
            (
                r.name,
                fmt(r.win_rate),
                "—" if r.win_rate is None else f"{r.wins}/{r.ties}/{r.losses}",
                fmt(r.score),
                "—"
                if r.score_delta is None
                else f"{r.score_delta:+.3f} [{r.score_delta_ci[0]:+.3f}, {r.score_delta_ci[1]:+.3f}]"
                + ("*" if r.score_delta_significant else ""),
                fmt(r.faithfulness),
                fmt_delta(r.proxy_deltas.get("faithfulness")),
                fmt(r.coverage),
                fmt_delta(r.proxy_deltas.get("coverage")),
                fmt(r.conciseness),
                fmt(r.tokens, 1),
                fmt(r.cut_off, 2),
                fmt(r.distinct_1),
                fmt(r.distinct_2),
                fmt(r.embedding_diversity),
                fmt(r.generate_seconds, 1),
                fmt(r.train_seconds, 1),
                *(fmt(r.audit.get(t)) for t in audit_tasks),
            )
        )
    return plain_table(header, rows, numeric=set(range(1, len(header))), title=title)
