"""The ``checks`` stage: an RLHF run's compared models on signals outside the labeler's proxies.

Reads what ``compare`` left (``compare/summaries/<model>.jsonl`` over the held-out documents) and
writes ``checks/``: ``to_label.jsonl`` (the pairs for people to label), ``independent.json`` (the QA
check, the LLM judge's win rates, and, given team labels, win rates by people and each scorer's
agreement with them). See :mod:`tether.rlhf.independent` for what each signal is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

from tether.data.jsonl import read_completed, write_jsonl
from tether.rlhf.documents import read_split_docs
from tether.rlhf.independent import (
    Agreement,
    HumanCheck,
    QAReader,
    WinRate,
    candidate_sets_for_labelling,
    human_check,
    judge_win_rates,
    labelled_pairs,
    qa_check,
    side,
)

if TYPE_CHECKING:
    from tether.engine.pool import EnginePool
    from tether.rlhf.pipeline import RLHFConfig

BASELINE = "base"


def compared_summaries(run_path: Path) -> dict[str, dict[str, str]]:
    """model -> doc id -> greedy summary, from the compare stage's cache (base first)."""
    directory = run_path / "compare" / "summaries"
    names = sorted(p.stem for p in directory.glob("*.jsonl"))
    if BASELINE not in names:
        raise FileNotFoundError(f"{directory}: no {BASELINE}.jsonl; run the compare stage first")
    names.remove(BASELINE)
    return {
        name: {row["doc_id"]: row["text"] for row in read_completed(directory / f"{name}.jsonl")}
        for name in [BASELINE, *names]
    }


def run_checks(
    config: RLHFConfig, run_path: Path, engines: EnginePool, *, say: Callable[[str], None] = print
) -> dict:
    checks = config.checks
    out_dir = run_path / "checks"
    out_dir.mkdir(parents=True, exist_ok=True)
    _, heldout = read_split_docs(run_path)
    summaries = compared_summaries(run_path)
    heldout = [d for d in heldout if all(d.id in s for s in summaries.values())]
    models = list(summaries)
    report: dict = {"documents": len(heldout), "models": models}

    if checks.labelling_sheet:
        pairs = [(BASELINE, m) for m in models[1:]] + list(combinations(models[1:], 2))
        sets = candidate_sets_for_labelling(heldout, summaries, pairs)
        write_jsonl(out_dir / "to_label.jsonl", sets)
        report["to_label"] = {"path": str(out_dir / "to_label.jsonl"), "pairs": len(sets)}
        say(
            f"checks: {len(sets)} held-out summary pairs with different texts in {out_dir / 'to_label.jsonl'}"
        )

    if checks.reader and not any(d.question and d.answer is not None for d in heldout):
        say("checks: the held-out documents carry no question and answer (not BoolQ): no QA check")
    elif checks.reader:
        reader = QAReader(engines.get(checks.reader))
        qa = qa_check(reader, heldout, summaries)
        report["qa"] = qa.to_dict()
        say(
            f"checks: QA reader {qa.reader} P(correct) from the passage {qa.passage:.3f}, from the question "
            f"alone {qa.question_only:.3f} ({'signal' if qa.signal else 'NO SIGNAL: the reader ignores context'})"
        )

    judge = None
    if checks.judge:
        from tether.rlhf.labeler import LLMJudge

        judge = LLMJudge(engines.get(checks.judge))
        by_doc = {d.id: d for d in heldout}
        probs = {}
        for model in models[1:]:
            items = [(by_doc[i].text, summaries[model][i], summaries[BASELINE][i]) for i in by_doc]
            probs[model] = dict(zip(by_doc, judge.prefer(items), strict=True))
        rates = judge_win_rates(probs, BASELINE, checks.judge_margin, f"judge:{checks.judge}")
        report["judge"] = {"model": checks.judge, "margin": checks.judge_margin, "win_rates": _dicts(rates)}

    if checks.human_labels:
        report["human"] = _human(config, run_path, judge, engines).to_dict()

    (out_dir / "independent.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return _summary(report)


def _human(config: RLHFConfig, run_path: Path, judge, engines: EnginePool) -> HumanCheck:
    from tether.feedback.records import load_labelled_sets
    from tether.rlhf.labeler import AILabeler
    from tether.train.reward import RewardModel

    path = config.checks.human_labels
    pairs = labelled_pairs(load_labelled_sets(path))
    if not pairs:
        raise ValueError(f"{path}: no votes on two-candidate sets; nothing to measure")
    labeler = AILabeler(config.labeler)
    strengths = labeler.compare([(p.document, p.question, p.first[1], p.second[1]) for p in pairs])
    scorers = {"ai_labeler": [side(s, config.labeler.margin) for s in strengths]}
    reward_dir = run_path / "reward_model"
    if reward_dir.is_dir():
        model = RewardModel.load(reward_dir, device=config.engine.device, dtype=config.engine.dtype)
        prompts = [p.prompt for p in pairs]
        first = model.score(prompts, [p.first[1] for p in pairs])
        second = model.score(prompts, [p.second[1] for p in pairs])
        scorers["reward_model"] = [side(a - b, 0.0) for a, b in zip(first, second, strict=True)]
        del model
    if judge is not None:
        probs = judge.prefer([(p.document, p.first[1], p.second[1]) for p in pairs])
        scorers[f"judge:{config.checks.judge}"] = [side(q - 0.5, config.checks.judge_margin) for q in probs]
    return human_check(pairs, str(path), scorers)


def _dicts(rows: list[WinRate] | list[Agreement]) -> list[dict]:
    return [asdict(r) | ({"win_rate": r.win_rate} if isinstance(r, WinRate) else {}) for r in rows]


def _summary(report: dict) -> dict:
    out: dict = {"documents": report["documents"]}
    if "qa" in report:
        qa = report["qa"]
        out["qa"] = {
            "reader": qa["reader"],
            "signal": qa["signal"],
            **{m["model"]: round(m["p_correct"], 4) for m in qa["models"]},
        }
    if "judge" in report:
        out["judge"] = {r["model"]: r["preference"]["delta"] for r in report["judge"]["win_rates"]}
    if "human" in report:
        out["human"] = {
            f"{r['model']} vs {r['other']}": r["preference"]["delta"] for r in report["human"]["win_rates"]
        }
    return out
