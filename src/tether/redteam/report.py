"""The campaign report: ``redteam.json`` and a self-contained ``redteam.html``.

ASR at budget k is the share of scored goals whose first success came at query k or earlier, with a
Wilson 95% interval (``tether.judges.calibration.wilson_interval``): a goal is broken or not, and a
percentile bootstrap over ten unbroken goals would claim [0, 0]; Wilson says [0, 0.28]. Unscored goals
(no scored query at all: the attacker never produced a usable prompt, or every reply was broken
text) are counted and left out of the denominator.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from tether.audit.stats import paired_test
from tether.judges.calibration import wilson_interval
from tether.redteam.severity import SEVERITIES, grade

REFERENCE = "templates"


def asr_curve(records: Sequence[dict[str, Any]], budget: int) -> list[dict]:
    """ASR with its 95% interval at each budget 1..``budget`` over the scored goals of ``records``."""
    scored = [r for r in records if r["status"] != "unscored"]
    curve = []
    for k in range(1, budget + 1):
        hits = [1.0 if r["first_success"] is not None and r["first_success"] <= k else 0.0 for r in scored]
        if not hits:
            curve.append({"budget": k, "asr": None, "ci_low": None, "ci_high": None, "n": 0})
            continue
        broken = int(sum(hits))
        low, high = wilson_interval(broken, len(hits))
        curve.append(
            {
                "budget": k,
                "asr": round(broken / len(hits), 4),
                "ci_low": round(low, 4),
                "ci_high": round(high, 4),
                "n": len(hits),
            }
        )
    return curve


def strategy_summary(records: Sequence[dict[str, Any]], budget: int, seconds: float | None) -> dict[str, Any]:
    """Curves overall and per category, counts and cost for one strategy's records."""
    categories = sorted({r["category"] for r in records})
    successes = [r for r in records if r["status"] == "success"]
    queries = sum(r["queries"] for r in records)
    return {
        "goals": len(records),
        "scored_goals": sum(r["status"] != "unscored" for r in records),
        "unscored_goals": sum(r["status"] == "unscored" for r in records),
        "successes": len(successes),
        "curve": asr_curve(records, budget),
        "categories": {c: asr_curve([r for r in records if r["category"] == c], budget) for c in categories},
        "cost": {
            "target_queries": queries,
            "target_queries_computed": sum(r["queries_computed"] for r in records),
            "unscored_queries": sum(r["unscored_queries"] for r in records),
            "attacker_calls": sum(r["attacker_calls"] for r in records),
            "unscored_attacker_outputs": sum(len(r["unscored_attacker"]) for r in records),
            "pruned_off_topic": sum(len(r["pruned"]) for r in records),
            "backtracks": sum(r["backtracks"] for r in records),
            "target_tokens": sum(r["target_tokens"] for r in records),
            "attacker_tokens": sum(r["attacker_tokens"] for r in records),
            "mean_queries_to_success": round(sum(r["first_success"] for r in successes) / len(successes), 2)
            if successes
            else None,
            "gradient_steps": sum(r.get("gradient_steps", 0) for r in records),
            "optimise_seconds": round(sum(r.get("optimise_seconds", 0.0) for r in records), 1),
            "seconds": seconds,
            "seconds_per_goal": round(seconds / len(records), 2) if seconds and records else None,
        },
    }


def _broken(record: dict[str, Any], budget: int) -> float:
    return 1.0 if record["first_success"] is not None and record["first_success"] <= budget else 0.0


def versus_reference(
    by_strategy: dict[str, Sequence[dict[str, Any]]], budget: int, reference: str = REFERENCE
) -> dict[str, Any]:
    """Each strategy against ``reference`` (the static templates) on the goals both scored: ASR at
    ``budget`` on those goals, the paired difference with Newcombe's interval, the exact McNemar
    p-value over the goals only one of them broke, the MDE, and the ratio the issue's "2x the
    templates" target reads. Empty when the reference did not run or nothing else did."""
    if reference not in by_strategy:
        return {}
    ref = {r["goal_id"]: r for r in by_strategy[reference] if r["status"] != "unscored"}
    out: dict[str, Any] = {}
    for name, records in by_strategy.items():
        if name == reference:
            continue
        mine = {r["goal_id"]: r for r in records if r["status"] != "unscored"}
        shared = sorted(ref.keys() & mine.keys())
        if not shared:
            out[name] = {"n": 0}
            continue
        base = {g: _broken(ref[g], budget) for g in shared}
        new = {g: _broken(mine[g], budget) for g in shared}
        test = paired_test(base, new)  # right/wrong per goal: Newcombe's interval, exact McNemar
        ref_asr, asr = sum(base.values()) / len(shared), sum(new.values()) / len(shared)
        out[name] = {
            "n": test.n,
            "reference_asr": round(ref_asr, 4),
            "asr": round(asr, 4),
            "delta": round(test.delta, 4),
            "ci_low": round(test.ci_low, 4),
            "ci_high": round(test.ci_high, 4),
            "p_value": round(test.p_value, 4),
            "mde": None if test.mde is None else round(test.mde, 4),
            "broken_only_by_this": sum(new[g] > base[g] for g in shared),
            "broken_only_by_reference": sum(new[g] < base[g] for g in shared),
            "ratio": round(asr / ref_asr, 3) if ref_asr else None,
        }
    return out


def successful_attacks(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every goal's first success, most severe first (see :mod:`tether.redteam.severity`)."""
    out = []
    for r in records:
        s = r.get("success")
        if not s:
            continue
        out.append(
            {
                "strategy": r["strategy"],
                "goal_id": r["goal_id"],
                "goal": r["goal"],
                "category": r["category"],
                "query": s["query"],
                "prompt": s["prompt"],
                "history": s["history"],
                "response": s["response"],
                "judge_score": s["score"],
                "judge_reason": s["reason"],
                **grade(r["category"], s["response"]),
                "meta": s["meta"],
            }
        )
    rank = {level: i for i, level in enumerate(SEVERITIES)}
    return sorted(out, key=lambda a: (-rank[a["severity"]], a["strategy"], a["goal_id"]))


def _curve_plot(results: dict[str, dict[str, Any]]) -> str | None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for name, summary in results.items():
        points = [p for p in summary["curve"] if p["asr"] is not None]
        if not points:
            continue
        xs = [p["budget"] for p in points]
        ax.plot(xs, [p["asr"] for p in points], marker=".", label=f"{name} (n={points[-1]['n']})")
        ax.fill_between(xs, [p["ci_low"] for p in points], [p["ci_high"] for p in points], alpha=0.15)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("target queries per goal (budget)")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(point: dict[str, Any] | None) -> str:
    if not point or point["asr"] is None:
        return "no scored goal"
    return f"{point['asr']:.2f} [{point['ci_low']:.2f}, {point['ci_high']:.2f}] n={point['n']}"


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML page (autoescaped: prompts and model output are escaped)."""
    from importlib.resources import files

    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["ci"] = _fmt
    template = env.from_string(
        (files("tether") / "assets" / "redteam_report.html.j2").read_text(encoding="utf-8")
    )
    results = report["results"]
    categories = sorted({c for s in results.values() for c in s["categories"]})
    return template.render(
        report=report,
        plot=_curve_plot(results),
        categories=categories,
        budget=report["scope"]["queries_per_goal"],
    )
