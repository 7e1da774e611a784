"""One self-contained HTML file from an AuditReport: tables, plots as embedded PNGs, escaped model text.

Nothing in the page loads from elsewhere (no CDN, no script): the file can be mailed, archived as a CI
artifact, or opened offline. Plots use matplotlib's object API (``Figure``), never pyplot, so rendering
does not touch the global backend of whatever process calls it.
"""

from __future__ import annotations

import base64
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

from tether.audit.pareto import oriented
from tether.audit.schema import AuditReport, CategoryDelta, TaskSummary
from tether.data.jsonl import atomic_writer
from tether.errors import MissingDependencyError
from tether.evals.types import MetricSpec

MAX_BARS = 12  # categories per bar chart; MMLU's 57 subjects become its 12 worst regressions + a table
MAX_HEATMAP_ROWS = 40
MAX_FLIP_GROUPS = 60
MAX_TEXT_CHARS = 1200
_DPI = 100


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _fmt_delta(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _oriented_delta(delta: float, metric: MetricSpec) -> float:
    """A change turned so that positive is an improvement whichever way the metric points."""
    return delta if metric.higher_is_better else -delta


def _delta_class(d: CategoryDelta, higher_is_better: bool) -> str:
    if not d.significant:
        return ""
    better = d.delta > 0 if higher_is_better else d.delta < 0
    return "better" if better else "worse"


def _delta_text(d: CategoryDelta) -> str:
    star = " *" if d.significant else ""
    small = " (too few items to test)" if not d.testable else ""
    return f"Δ {_fmt_delta(d.delta)} [{_fmt_delta(d.ci_low)}, {_fmt_delta(d.ci_high)}]{star}{small}"


def _unscored_text(s: TaskSummary) -> str:
    return (
        f"{s.n_unscored} of {s.n_total} unscored ({s.n_unparsed} unparsed, {s.n_error} error, "
        f"{s.n_empty} empty, {s.n_degenerate_unscored} degenerate)"
        if s.n_total
        else "no results at all"
    )


def _degenerate_text(s: TaskSummary) -> str:
    return f"{s.n_degenerate} of {s.n_total} degenerate ({_fmt(s.degenerate_rate or 0.0)})"


# --- plots ---------------------------------------------------------------------------------------


def _pareto_png(report: AuditReport) -> str | None:
    assert report.pareto is not None
    pts = [p for p in report.pareto.points if p.safety is not None and p.capability is not None]
    if len(pts) < 2:
        return None
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    front = sorted((p for p in pts if p.on_frontier), key=lambda p: p.safety)
    if len(front) > 1:
        ax.plot(
            [p.safety for p in front], [p.capability for p in front], "--", color="#1b7f3b", lw=1, zorder=1
        )
    for p in pts:
        marker = "*" if p.on_frontier else "o"
        face = ("#1b7f3b" if p.on_frontier else "#4a6fa5") if p.complete else "none"
        edge = "#b00020" if not p.complete else ("#1b7f3b" if p.on_frontier else "#4a6fa5")
        ax.scatter(
            [p.safety],
            [p.capability],
            marker=marker,
            s=180 if p.on_frontier else 70,
            c=face,
            edgecolors=edge,
            linewidths=1.5,
            zorder=2,
        )
        label = p.model + (" (baseline)" if p.model == report.baseline else "")
        ax.annotate(label, (p.safety, p.capability), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("safety (higher is better)")
    ax.set_ylabel("capability (higher is better)")
    ax.grid(alpha=0.3)
    return _png_uri(fig)


def _timeline_context(report: AuditReport) -> tuple[list[dict[str, str]], dict[str, str] | None, str | None]:
    """Rows of the stage timeline, their totals and a Gantt chart of when each stage ran."""
    stages = report.timeline
    if not stages:
        return [], None, None
    t0 = min(s.start for s in stages)
    rows = [
        {
            "stage": s.stage,
            "start": f"+{(s.start - t0).total_seconds():.1f}",
            "seconds": f"{s.seconds:.1f}",
            "calls": str(s.calls),
            "input_tokens": f"{s.input_tokens:,}",
            "output_tokens": f"{s.output_tokens:,}",
        }
        for s in stages
    ]
    totals = {
        "seconds": f"{sum(s.seconds for s in stages):.1f}",
        "calls": str(sum(s.calls for s in stages)),
        "input_tokens": f"{sum(s.input_tokens for s in stages):,}",
        "output_tokens": f"{sum(s.output_tokens for s in stages):,}",
    }
    fig = _figure(7.5, 0.6 + 0.28 * len(stages))
    ax = fig.add_subplot()
    starts = [(s.start - t0).total_seconds() for s in stages]
    ax.barh(range(len(stages)), [s.seconds for s in stages], left=starts, color="#4a6fa5", height=0.6)
    ax.set_yticks(range(len(stages)), [s.stage for s in stages], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since {t0:%Y-%m-%d %H:%M:%S} UTC")
    ax.grid(axis="x", alpha=0.3)
    return rows, totals, _png_uri(fig)


def _frontier_context(report: AuditReport) -> dict[str, Any] | None:
    """The mitigation frontier (`tether frontier`'s frontier.json) as rows and its plot."""
    data = report.frontier
    if not data:
        return None
    import tempfile

    from tether.frontier.pareto import plot_frontier

    candidates = data.get("candidates", {})
    placed = {n: (c["safety"], c["capability"]) for n, c in candidates.items() if c.get("safety") is not None}
    complete = {n: xy for n, xy in placed.items() if candidates[n].get("complete", True)}
    flagged = {n: xy for n, xy in placed.items() if n not in complete}
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_frontier(
            complete,
            data.get("families", {}),
            data.get("frontier", []),
            Path(tmp) / "f.png",
            incomplete=flagged,
        )
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")

    def delta(c: dict[str, Any], axis: str) -> tuple[str, str]:
        d = c.get("vs_aligned", {}).get(axis)
        if not d:
            return "—", ""
        low, high = d["ci"]
        mark = "better" if d["significant"] and d["delta"] > 0 else "worse" if d["significant"] else ""
        return f"{_fmt_delta(d['delta'])} [{_fmt_delta(low)}, {_fmt_delta(high)}]", mark

    tasks = list(dict.fromkeys(t for c in candidates.values() for t in c.get("tasks", {})))
    rows = []
    order = sorted(candidates, key=lambda n: (candidates[n]["family"], candidates[n].get("safety") or 0))
    for n in order:
        c = candidates[n]
        ds, ds_class = delta(c, "safety")
        dc, dc_class = delta(c, "capability")
        rows.append(
            {
                "name": n,
                "family": c["family"] if not c.get("merge") else c["merge"],
                "alphas": ", ".join(f"{a:g}" for a in c.get("alphas", [])),
                "safety": _fmt(c.get("safety")),
                "capability": _fmt(c.get("capability")),
                "d_safety": ds,
                "d_safety_class": ds_class,
                "d_capability": dc,
                "d_capability_class": dc_class,
                "on_frontier": "yes" if c.get("on_frontier") else "",
                "complete": ""
                if c.get("complete", True)
                else "incomplete: " + ", ".join(c["incomplete_tasks"]),
                "tasks": [_fmt((c.get("tasks", {}).get(t) or {}).get("value")) for t in tasks],
            }
        )
    return {
        "png": uri,
        "rows": rows,
        "levels": _levels_context(data.get("per_block_vs_single")),
        "recovery": _recovery_context(data.get("recovery")),
        "tasks": tasks,
        "frontier": ", ".join(data.get("frontier", [])),
        "hypervolume": _fmt(data.get("hypervolume"), 4),
        "dominate_aligned": ", ".join(data.get("dominate_aligned", [])) or "none",
        "dominate_unmitigated": None
        if "dominate_unmitigated" not in data
        else ", ".join(data["dominate_unmitigated"]) or "none",
        "significant": ", ".join(data.get("better_than_aligned_significantly", [])) or "none",
        "base": data.get("base", ""),
        "aligned": data.get("aligned", ""),
        "note": data.get("note", ""),
    }


def _recovery_context(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tax-recovery table (frontier.json's ``recovery``): a column per component, headed by the
    unmitigated model's shift from BASE."""
    if not rec or not rec.get("candidates"):
        return None
    names = list(rec["components"])
    columns = []
    for name in names:
        row = rec["components"][name]
        if "shift" not in row:
            columns.append({"name": name, "header": "no items", "read": False})
            continue
        low, high = row["shift"]["ci"]
        kind = "gain kept" if row["direction"] == "gain" else "loss recovered"
        shift = f"{_fmt_delta(row['shift']['delta'])} [{_fmt_delta(low)}, {_fmt_delta(high)}]"
        columns.append(
            {
                "name": name,
                "header": f"{kind}; shift {shift}"
                + ("" if row["shift_significant"] else ", not significant"),
                "read": row["shift_significant"],
            }
        )

    def cell(row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None or row["share"] is None:
            return {"text": "—", "read": False}
        low, high = row["share_ci"]
        interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
        return {"text": f"{row['share']:.2f}{interval}, n {row['n']}", "read": row["shift_significant"]}

    verdict = {True: "yes", False: "no", None: "—"}
    rows = [
        {
            "name": n,
            "cells": [cell(c["components"].get(name)) for name in names],
            "meets": verdict[c["meets"]] + (" (at lower bound too)" if c["meets_at_lower_bound"] else ""),
        }
        for n, c in rec["candidates"].items()
    ]
    return {
        "reference": rec["reference"],
        "items": rec.get("items", "test side"),
        "keep": f"{rec['keep']:.0%}",
        "recover": f"{rec['recover']:.0%}",
        "meets": ", ".join(rec["meets"]) or "none",
        "meets_low": ", ".join(rec["meets_at_lower_bound"]) or "none",
        "columns": columns,
        "rows": rows,
    }


def _levels_context(lin: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-block against a single α at each safety level (frontier.json's ``per_block_vs_single``)."""
    if not lin:
        return None

    def paired(d: dict[str, Any] | None) -> str:
        if not d or d.get("delta") is None:
            return "—"
        low, high = d["ci"]
        star = " *" if d.get("significant") else ""
        return f"{_fmt_delta(d['delta'])} [{_fmt_delta(low)}, {_fmt_delta(high)}]{star}"

    rows = []
    for lv in lin["levels"]:
        vs = lv.get("per_block_minus_single", {})
        winner = lv.get("winner") or "—"
        rows.append(
            {
                "fraction": f"{lv['fraction']:.0%}",
                "threshold": _fmt(lv["threshold"]),
                "single": lv.get("single") or "none",
                "per_block": lv.get("per_block") or "none",
                "d_safety": paired(vs.get("safety")),
                "d_capability": paired(vs.get("capability")),
                "winner": winner + (", significantly" if lv.get("significant") else ""),
                "note": lv.get("reading", ""),
            }
        )
    return {"rows": rows, "reading": lin["reading"], "answer": lin["answer"]}


def _category_png(report: AuditReport, task: str, categories: list[str]) -> str:
    import numpy as np

    models = report.model_names()
    fig = _figure(max(6.0, 0.55 * len(categories) * max(1, len(models)) ** 0.5 + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(categories))
    for i, model in enumerate(models):
        s = report.summary(model, task)
        vals, lo, hi = [], [], []
        for cat in categories:
            c = s.per_category.get(cat) if s else None
            v = c.value if c and c.value is not None else np.nan
            vals.append(v)
            lo.append(v - c.ci_low if c and c.ci_low is not None else 0.0)
            hi.append(c.ci_high - v if c and c.ci_high is not None else 0.0)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=model)
    ax.set_xticks(x, categories, rotation=35, ha="right", fontsize=8)
    metric = next(s.metric for s in report.tasks if s.task == task)
    ax.set_ylabel(f"{metric.name} ({'higher' if metric.higher_is_better else 'lower'} is better)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png_uri(fig)


def _heatmap_png(rows: list[str], models: list[str], grid: list[list[float | None]], sig) -> str:
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in r] for r in grid], dtype=float)
    bound = max(0.05, float(np.nanmax(np.abs(data)))) if np.isfinite(data).any() else 0.05
    fig = _figure(max(5.0, 1.3 * len(models) + 3.5), max(2.5, 0.32 * len(rows) + 1.2))
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="RdYlGn", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for r in range(len(rows)):
        for c in range(len(models)):
            if np.isfinite(data[r, c]):
                text = f"{data[r, c]:+.2f}" + ("*" if sig[r][c] else "")
                color = "white" if abs(data[r, c]) > 0.6 * bound else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label="change vs baseline, oriented (+ = better)")
    return _png_uri(fig)


# --- view model ----------------------------------------------------------------------------------


def _extra_rows(report: AuditReport) -> list[dict[str, str]]:
    """Task metrics beyond the headline (BBQ bias scores, disparate impact, expected max toxicity…)."""
    return [
        {"model": s.model, "task": s.task, "metric": name, "value": _fmt(value)}
        for s in report.tasks
        for name, value in sorted(s.extra_metrics.items())
    ]


def _context(report: AuditReport) -> dict[str, Any]:
    models = report.model_names()
    tasks = report.task_names()
    metric_of = {s.task: s.metric for s in report.tasks}
    task_delta = {(d.model, d.task): d for d in report.deltas if d.category is None}
    cat_delta = {(d.model, d.task, d.category): d for d in report.deltas if d.category is not None}

    summary_rows = []
    for model in models:
        cells = []
        for task in tasks:
            s = report.summary(model, task)
            if s is None:
                cells.append({"value": None, "incomplete": True, "unscored": "not evaluated"})
                continue
            d = task_delta.get((model, task))
            cells.append(
                {
                    "value": None if s.value is None else _fmt(s.value),
                    "ci": None if s.ci_low is None else f"{_fmt(s.ci_low)}, {_fmt(s.ci_high)}",
                    "n_scored": s.n_scored,
                    "incomplete": not s.complete,
                    "unscored": _unscored_text(s),
                    "too_degenerate": s.too_degenerate,
                    "degenerate": _degenerate_text(s),
                    "delta": _delta_text(d) if d else None,
                    "delta_class": _delta_class(d, s.metric.higher_is_better) if d else "",
                    "no_signal": _no_signal(report, task),  # power (issue #15)
                }
            )
        summary_rows.append({"model": model, "is_baseline": model == report.baseline, "cells": cells})

    ctx: dict[str, Any] = {
        "title": ", ".join(models),
        "created": report.created.strftime("%Y-%m-%d %H:%M UTC"),
        "baseline": report.baseline,
        "models": report.models,
        "tasks": [
            {
                "name": t,
                "metric": metric_of[t].name,
                "arrow": "↑ better" if metric_of[t].higher_is_better else "↓ better",
            }
            for t in tasks
        ],
        "summary_rows": summary_rows,
        "extra_rows": _extra_rows(report),
        "n_incomplete": sum(not s.complete for s in report.tasks),
        "n_too_degenerate": sum(s.too_degenerate for s in report.tasks),
        "degenerate_pct": round(100 * float(report.settings.get("degenerate_threshold", 0.1))),
        "degenerate_rows": [
            {"model": s.model, "task": s.task, "text": _degenerate_text(s), "flag": s.too_degenerate}
            for s in report.tasks
            if s.n_total
        ],
        "ci_pct": round(100 * (1 - float(report.settings.get("alpha", 0.05)))),
        "settings_line": ", ".join(
            f"{k}={report.settings[k]}"
            for k in ("n_boot", "seed", "incomplete_threshold")
            if k in report.settings
        ),
        "max_chars": MAX_TEXT_CHARS,
    }

    # Pareto
    ctx["pareto_img"] = None
    if report.pareto is None:
        ctx["pareto_note"] = "No Pareto plot: no safety and capability axes were configured or declared."
    else:
        ctx["pareto_img"] = _pareto_png(report)
        ctx["pareto_note"] = "No Pareto plot: fewer than two models have a value on both axes."
        ctx["pareto_safety"] = ", ".join(report.pareto.spec.safety.tasks)
        ctx["pareto_capability"] = ", ".join(report.pareto.spec.capability.tasks)
        ctx["pareto_rows"] = [
            {
                "model": p.model,
                "safety": _fmt(p.safety),
                "capability": _fmt(p.capability),
                "on_frontier": p.on_frontier,
                "complete": p.complete,
            }
            for p in report.pareto.points
        ]

    # Per-category sections
    sections = []
    for task in tasks:
        metric = metric_of[task]
        categories = sorted({c for s in report.tasks if s.task == task for c in s.per_category})
        if len(categories) < 2:
            continue
        others = [m for m in models if m != report.baseline]

        def worst(cat: str, task: str = task, metric=metric, others=others) -> float:
            ds = [cat_delta[(m, task, cat)] for m in others if (m, task, cat) in cat_delta]
            if ds:
                return min(_oriented_delta(d.delta, metric) for d in ds)
            base = report.summary(report.baseline, task)
            c = base.per_category.get(cat) if base else None
            return oriented(c.value, metric) if c and c.value is not None else float("inf")

        if len(categories) > MAX_BARS:
            shown = sorted(categories, key=lambda c: (worst(c), c))[:MAX_BARS]
            what = "largest regressions vs the baseline" if others else "lowest-scoring categories"
            caption = f"The {MAX_BARS} {what} of {len(categories)} categories; the full table is below."
        else:
            shown = categories
            caption = f"All {len(categories)} categories, with {ctx['ci_pct']}% bootstrap intervals."
        rows = []
        for cat in categories:
            cells = []
            for m in models:
                s = report.summary(m, task)
                c = s.per_category.get(cat) if s else None
                d = cat_delta.get((m, task, cat))
                cells.append(
                    {
                        "value": _fmt(c.value) if c else "—",
                        "ci": f"{_fmt(c.ci_low)}, {_fmt(c.ci_high)}" if c and c.ci_low is not None else None,
                        "n": c.n if c else 0,
                        "delta": _delta_text(d) if d else None,
                        "delta_class": _delta_class(d, metric.higher_is_better) if d else "",
                    }
                )
            rows.append({"category": cat, "cells": cells})
        sections.append(
            {
                "task": task,
                "caption": caption,
                "img": _category_png(report, task, shown),
                "models": models,
                "rows": rows,
            }
        )
    ctx["category_sections"] = sections

    # Heat map: whole-task rows first, then categories from the worst regression down.
    others = [m for m in models if m != report.baseline]
    keys: dict[tuple[str, str | None], None] = {}
    for d in report.deltas:
        keys.setdefault((d.task, d.category), None)
    ctx["heatmap_img"] = None
    if keys and others:
        by_key = {(d.task, d.category, d.model): d for d in report.deltas}

        def row_worst(key: tuple[str, str | None]) -> float:
            vals = [
                _oriented_delta(by_key[(*key, m)].delta, metric_of[key[0]])
                for m in others
                if (*key, m) in by_key
            ]
            return min(vals) if vals else 0.0

        task_rows = [k for k in keys if k[1] is None]
        cat_rows = sorted((k for k in keys if k[1] is not None), key=lambda k: (row_worst(k), k[0], k[1]))
        chosen = (task_rows + cat_rows)[:MAX_HEATMAP_ROWS]
        grid, sig = [], []
        for key in chosen:
            row, srow = [], []
            for m in others:
                d = by_key.get((*key, m))
                row.append(_oriented_delta(d.delta, metric_of[key[0]]) if d else None)
                srow.append(bool(d and d.significant))
            grid.append(row)
            sig.append(srow)
        labels = [t if c is None else f"{t} / {c}" for t, c in chosen]
        ctx["heatmap_img"] = _heatmap_png(labels, others, grid, sig)
        hidden = len(keys) - len(chosen)
        ctx["heatmap_note"] = (
            "Paired change vs the baseline, turned so that green is better for every metric; * = significant "
            "after Benjamini–Hochberg (see Power)."
            + (
                f" Showing {len(chosen)} of {len(keys)} rows (whole tasks, then worst categories)."
                if hidden
                else ""
            )
        )

    # Flips, groups with the most regressions first.
    groups = sorted(report.flips, key=lambda g: (-g.n_regressed, -g.n_improved, g.task, g.category, g.model))
    ctx["flip_groups"] = [
        {
            **g.model_dump(exclude={"examples"}),
            "examples": [
                {
                    "item_id": e.item_id,
                    "direction": e.direction,
                    "prompt": _truncate(e.prompt),
                    "baseline_output": _truncate(e.baseline_output),
                    "output": _truncate(e.output),
                }
                for e in g.examples
            ],
        }
        for g in groups[:MAX_FLIP_GROUPS]
    ]
    ctx["flips_hidden"] = max(0, len(groups) - MAX_FLIP_GROUPS)

    ctx.update(_power_context(report))  # power and failure analysis (issue #15)

    judge_rows = []
    calibration = []
    for judge, figures in report.judge_validation.items():
        if isinstance(figures, dict) and isinstance(figures.get("rows"), list):
            calibration.append(_calibration_block(judge, figures))
        elif isinstance(figures, dict):
            for key, value in figures.items():
                judge_rows.append({"judge": judge, "key": key, "value": _scalar(value)})
        else:
            judge_rows.append({"judge": judge, "key": "", "value": _scalar(figures)})
    ctx["judge_rows"] = judge_rows
    ctx["calibration"] = calibration
    ctx["datasets"] = report.datasets
    ctx["timings"] = [(k, f"{v:.1f}") for k, v in report.timings.items()]
    ctx["timeline"], ctx["timeline_totals"], ctx["timeline_png"] = _timeline_context(report)
    ctx["frontier"] = _frontier_context(report)
    ctx["settings"] = [(k, _scalar(v)) for k, v in report.settings.items()]
    return ctx


# --- power, multiple comparisons and failure analysis (issue #15) -----------------------------------


def _no_signal(report: AuditReport, task: str) -> bool:
    t = report.power.task(task) if report.power is not None else None
    return bool(t and t.signal is False)


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _oriented_row(d: CategoryDelta, metric: MetricSpec) -> dict[str, Any]:
    return {
        "category": d.category,
        "delta": _fmt_delta(d.delta),
        "ci": f"{_fmt_delta(d.ci_low)}, {_fmt_delta(d.ci_high)}",
        "n": d.n,
        "p": _fmt_p(d.p_value),
        "q": _fmt_p(d.q_value),
        "mde": _fmt(d.mde),
        "testable": d.testable,
        "flag": "regressed" if d.regressed else ("improved" if d.significant else ""),
        "oriented": _oriented_delta(d.delta, metric),
    }


def failure_analysis(report: AuditReport) -> list[dict[str, Any]]:
    """Where each regression sits, for every (checkpoint, task) with a flagged regression (the task
    as a whole or one of its categories): the categories ranked by paired effect, worst first, with
    intervals and q-values; the prompt-type breakdown where the items have one; the flipped items
    grouped by category, the category with most regressions first."""
    metric_of = {s.task: s.metric for s in report.tasks}
    regressed = dict.fromkeys((d.model, d.task) for d in report.deltas if d.regressed)
    out = []
    for model, task in regressed:
        metric = metric_of[task]
        whole = next((d for d in report.deltas if (d.model, d.task, d.category) == (model, task, None)), None)

        def ranked(rows: list[CategoryDelta], metric: MetricSpec = metric) -> list[dict[str, Any]]:
            cells = [_oriented_row(d, metric) for d in rows]
            return sorted(cells, key=lambda c: (c["oriented"], str(c["category"])))

        cats = [d for d in report.deltas if (d.model, d.task) == (model, task) and d.category is not None]
        types = [d for d in report.prompt_type_deltas if (d.model, d.task) == (model, task)]
        flips = sorted(
            (g for g in report.flips if (g.model, g.task) == (model, task)),
            key=lambda g: (-g.n_regressed, g.n_improved, g.category),
        )
        out.append(
            {
                "task": task,
                "model": model,
                "whole": _oriented_row(whole, metric) if whole else None,
                "categories": ranked(cats),
                "prompt_types": ranked(types),
                "flips": [
                    {
                        "category": g.category,
                        "n_regressed": g.n_regressed,
                        "n_improved": g.n_improved,
                        "n_paired": g.n_paired,
                        "examples": [
                            {
                                "item_id": e.item_id,
                                "direction": e.direction,
                                "prompt_type": e.prompt_type,
                                "prompt": _truncate(e.prompt, 400),
                                "baseline_output": _truncate(e.baseline_output, 300),
                                "output": _truncate(e.output, 300),
                            }
                            for e in g.examples
                        ],
                    }
                    for g in flips
                ],
            }
        )
    return out


def _power_context(report: AuditReport) -> dict[str, Any]:
    power = report.power
    if power is None:
        return {"power": None, "failures": []}
    whole = {(d.model, d.task): d for d in report.deltas if d.category is None}
    others = [m for m in report.model_names() if m != report.baseline]
    rows = []
    for t in power.tasks:
        signal = {True: "signal", False: "no signal", None: "—"}[t.signal]
        cells = []
        for m in others:
            d = whole.get((m, t.task))
            cells.append(
                {
                    "mde": _fmt(d.mde) if d else "—",
                    "discordance": _fmt(d.discordance) if d and d.discordance is not None else "—",
                    "delta": _fmt_delta(d.delta) if d else "—",
                    "p": _fmt_p(d.p_value) if d else "—",
                    "q": _fmt_p(d.q_value) if d else "—",
                    "flag": ("regressed" if d.regressed else "improved" if d.significant else "")
                    if d
                    else "",
                }
            )
        rows.append(
            {
                "task": t.task,
                "metric": t.metric,
                "chance": _fmt(t.chance),
                "baseline": _fmt(t.baseline_value),
                "ci": f"{_fmt(t.baseline_ci[0])}, {_fmt(t.baseline_ci[1])}" if t.baseline_ci else "",
                "n": t.n,
                "signal": signal,
                "planned_mde": _fmt(t.planned_mde),
                "cells": cells,
            }
        )
    axes = []
    for a in power.axes:
        points = {p.model: p for p in a.points}
        base = points.get(report.baseline)
        how = "—"
        if a.spec is not None:
            how = (
                ("item-weighted" if a.spec.weighting == "item" else "task mean")
                + ": "
                + ", ".join(a.spec.tasks)
            )
            if a.spec.excluded:
                how += "; left out: " + "; ".join(f"{k} ({v})" for k, v in a.spec.excluded.items())
        cells = []
        for m in others:
            p = points.get(m)
            cells.append(
                {
                    "value": _fmt(p.value) if p else "—",
                    "delta": _fmt_delta(p.delta) if p and p.delta is not None else "—",
                    "ci": f"{_fmt_delta(p.ci_low)}, {_fmt_delta(p.ci_high)}"
                    if p and p.ci_low is not None
                    else "",
                    "p": _fmt_p(p.p_value) if p else "—",
                    "q": _fmt_p(p.q_value) if p else "—",
                    "mde": _fmt(p.mde) if p else "—",
                    "flag": ("regressed" if p.regressed else "improved" if p.significant else "")
                    if p
                    else "",
                }
            )
        axes.append(
            {
                "name": a.name,
                "how": how,
                "note": a.note,
                "baseline": _fmt(base.value) if base else "—",
                "n": base.n if base else 0,
                "planned_mde": _fmt(a.planned_mde),
                "cells": cells,
            }
        )
    totals: dict[str, dict[str, int]] = {}
    for f in power.families:
        t = totals.setdefault(f.model, {"m": 0, "untestable": 0, "no_signal": 0, "flagged": 0, "families": 0})
        t["m"] += f.m
        t["untestable"] += f.untestable
        t["no_signal"] += f.no_signal
        t["flagged"] += f.flagged
        t["families"] += 1
    return {
        "power": {
            "alpha": power.alpha,
            "power_pct": round(100 * power.power),
            "correlation": power.assumed_correlation,
            "min_n": power.min_testable_n,
            "others": others,
            "rows": rows,
            "axes": axes,
            "families": [f.model_dump() for f in power.families],
            "totals": totals,
        },
        "failures": failure_analysis(report),
    }


def _rate_cell(row: dict[str, Any], key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "—"
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(value)


def _calibration_block(judge: str, sheet: dict[str, Any]) -> dict[str, Any]:
    """One judge's calibration sheet (``tether.judges.calibration``) as table rows."""
    rows = []
    for row in sheet["rows"]:
        rows.append(
            {
                "variant": row.get("judge", ""),
                "default": row.get("judge") == sheet.get("default"),
                "dataset": row.get("dataset", ""),
                "role": row.get("role", ""),
                "n": row.get("n", 0),
                "accuracy": _rate_cell(row, "accuracy"),
                "precision": _rate_cell(row, "precision"),
                "recall": _rate_cell(row, "recall"),
                "fpr": _rate_cell(row, "false_positive_rate"),
                "note": row.get("note", "")
                or (f"{row['degenerate']} called degenerate" if row.get("degenerate") else ""),
            }
        )
    return {
        "judge": judge,
        "default": sheet.get("default", ""),
        "positive": sheet.get("positive", ""),
        "fpr_name": sheet.get("fpr_name", "false-positive rate"),
        "notes": sheet.get("notes", []),
        "rows": rows,
    }


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, str | int | bool) or value is None:
        return str(value)
    return json.dumps(value, default=str)


def _template():
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - jinja2 is a declared dependency
        raise MissingDependencyError("jinja2", "rendering the HTML report") from exc
    source = resources.files("tether").joinpath("assets/report.html.j2").read_text(encoding="utf-8")
    # autoescape=True: model outputs are untrusted text and must never become markup.
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(source)


def render_html(report: AuditReport, path: str | Path) -> Path:
    """Write the report as one self-contained HTML file (atomically) and return its path."""
    html = _template().render(**_context(report))
    path = Path(path)
    with atomic_writer(path) as handle:
        handle.write(html)
    return path


def write_report(report: AuditReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    return report.save(out_dir / "report.json"), render_html(report, out_dir / "report.html")
