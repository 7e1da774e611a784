"""Claims carry their power: the no-signal rule, the axes, minimum detectable effects, multiple
comparisons, prompt-type breakdowns, and sample sizes for a target effect.

The rules, in the order the report applies them (formulas in ``tether.audit.stats``):

* **No signal.** A task with a chance level (``MetricSpec.chance``) whose *baseline* interval covers
  it, or lies wholly on the worse side of it (an answer bias, not the skill), has no signal: it is shown, but it is left out of the capability axis and none of its
  comparisons is flagged. Signal is decided on the baseline alone, so every model's axis pools the
  same tasks.
* **The capability axis** (``capability_axis``) is, per model, the mean over every scored item of the
  capability tasks with signal: each task weighs by its items. The safety axis stays the mean of
  its tasks' rates (lower-is-better rates enter as 1 - rate). Both are the Pareto plot's axes and
  what ``tether gate`` reads.
* **Paired tests.** Each checkpoint is compared with the baseline on the items both scored: an
  interval (``stats.paired_delta``: Newcombe's for right/wrong items, else a bootstrap), an exact
  McNemar / sign-flip p-value, the observed discordance and the minimum detectable effect (80%
  power, two-sided alpha = 0.05). An axis is tested the same way on its pooled items (each item
  weighted as the axis weighs it); its interval combines its tasks' by MOVER.
* **Multiple comparisons.** Benjamini-Hochberg at alpha within each family: the categories of one
  task for one checkpoint; the prompt types of one task for one checkpoint; the tasks of one
  checkpoint (the summary); the two axes of one checkpoint. A comparison with fewer than
  ``min_testable_n`` paired items can never reach significance: it is shown, never flagged, and left
  out of its family's count (Gilbert 2005, after Tarone 1990), as are the comparisons of tasks
  without signal.
* **Before a checkpoint exists** the planned MDE uses the baseline's item variance as the
  discordance (p(1-p) for right/wrong items): the assumption that a checkpoint's item scores
  correlate 0.5 with the baseline's. The report says so beside every planned figure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from tether.audit.pareto import axis_score
from tether.audit.schema import (
    AxisPoint,
    AxisSpec,
    AxisSummary,
    CategoryDelta,
    ComparisonFamily,
    ModelPower,
    ParetoSpec,
    PowerReport,
    TaskPower,
    TaskSummary,
)
from tether.audit.stats import (
    PairedTest,
    benjamini_hochberg,
    bootstrap_mean_ci,
    mde,
    min_testable_n,
    paired_interval,
    paired_test,
    planned_discordance,
    sign_flip_pvalue,
)
from tether.evals.types import ItemResult, MetricSpec

ALPHA = 0.05
POWER = 0.8
ASSUMED_CORRELATION = 0.5

Signal = tuple[bool | None, str]  # (signal, why not)


# --- the no-signal rule ----------------------------------------------------------------------------


def task_signal(baseline: TaskSummary | None, metric: MetricSpec) -> Signal:
    """(True, "") when the baseline's interval lies on the better side of the task's chance level,
    (False, why) when it covers it, lies below it, or the baseline has no score, (None, "") when the task declares no chance level."""
    chance = metric.chance
    if chance is None:
        return None, ""
    if baseline is None or baseline.value is None or baseline.ci_low is None or baseline.ci_high is None:
        return False, "no baseline score"
    if baseline.ci_low <= chance <= baseline.ci_high:
        return False, (
            f"baseline {baseline.value:.3f} [{baseline.ci_low:.3f}, {baseline.ci_high:.3f}] covers chance "
            f"{chance:.3f}"
        )
    # Reliably on the wrong side of chance (SmolLM2-135M scores 0.105 on MMLU, chance 0.269) means
    # the metric follows an answer-letter bias, not the skill: a change there is no capability change.
    below = baseline.ci_high < chance if metric.higher_is_better else baseline.ci_low > chance
    if below:
        return False, (
            f"baseline {baseline.value:.3f} [{baseline.ci_low:.3f}, {baseline.ci_high:.3f}] is worse than "
            f"chance {chance:.3f} (an answer bias, not the skill)"
        )
    return True, ""


def signal_spec(spec: ParetoSpec, signals: Mapping[str, Signal]) -> tuple[ParetoSpec | None, AxisSpec | None]:
    """The Pareto spec with tasks without signal taken off the capability axis (recorded in its
    ``excluded``). Returns (spec, capability axis); both None when no capability task is left; the
    capability axis alone None keeps the safety axis usable."""
    cap = spec.capability
    kept = [t for t in cap.tasks if signals.get(t, (None, ""))[0] is not False]
    excluded = {**cap.excluded, **{t: "no signal: " + signals[t][1] for t in cap.tasks if t not in kept}}
    if not kept:
        return None, None
    capability = cap.model_copy(update={"tasks": kept, "excluded": excluded})
    return spec.model_copy(update={"capability": capability}), capability


def default_capability_axis(
    metrics: Mapping[str, MetricSpec], signals: Mapping[str, Signal]
) -> AxisSpec | None:
    """The capability axis when there is no Pareto spec (no safety task audited): the declared
    capability tasks with signal, item-weighted; None when none has signal."""
    declared = [t for t, m in metrics.items() if m.axis == "capability"]
    if not declared:
        return None
    spec = ParetoSpec(safety=AxisSpec(tasks=declared), capability=AxisSpec(tasks=declared, weighting="item"))
    return signal_spec(spec, signals)[1]


# --- paired differences ----------------------------------------------------------------------------

# (model, task) -> item_id -> result
Index = Mapping[tuple[str, str], Mapping[str, ItemResult]]


def _scored(it: ItemResult | None) -> bool:
    return it is not None and it.status == "scored" and it.score is not None


def paired_diffs(index: Index, task: str, model: str, baseline: str) -> list[tuple[ItemResult, float]]:
    """(baseline item, new - base) for every item both models scored, in item-id order."""
    base, new = index.get((baseline, task), {}), index.get((model, task), {})
    out = []
    for iid in sorted(base):
        b, n = base[iid], new.get(iid)
        if _scored(b) and _scored(n):
            out.append((b, float(n.score) - float(b.score)))
    return out


def weighted_paired_test(
    strata: Sequence[tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]],
    *,
    n_boot: int = 1000,
    alpha: float = ALPHA,
    power: float = POWER,
    seed: int = 0,
) -> dict[str, float | None]:
    """The paired change of a weighted mean of task means: delta = sum_s w_s * mean(d_s), with
    weights normalised to 1 over the strata that have items. A stratum is (weight, diffs) or
    (weight, diffs, base scores).

    Interval: each stratum's own (Newcombe's paired interval where its base and new scores are
    right/wrong, else a bootstrap of its diffs), combined by MOVER (Zou & Donner 2008: the lower
    end sum_s w_s d_s - sqrt(sum_s w_s^2 (d_s - l_s)^2), the upper end alike); the strata hold
    different items, so they are independent. p-value: the sign-flip test
    of sum_i c_i * d_i with c_i = w_s / n_s (exact McNemar when every c_i * d_i has the same size,
    as on an item-weighted axis of right/wrong items). MDE: (z_{1-a/2} + z_power) *
    sqrt(sum_s w_s^2 * m2_s / n_s), floored as ``stats.mde`` is, in units of the heaviest item."""
    kept = [(float(s[0]), np.asarray(s[1], dtype=np.float64), s[2] if len(s) > 2 else None) for s in strata]  # type: ignore[misc]
    kept = [(w, d, base) for w, d, base in kept if d.size and w > 0]
    if not kept:
        return {
            "delta": None,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "mde": None,
            "discordance": None,
        }
    total = sum(w for w, _, _ in kept)
    weights = [w / total for w, _, _ in kept]
    diffs = [d for _, d, _ in kept]
    means = [float(d.mean()) for d in diffs]
    delta = float(sum(w * m for w, m in zip(weights, means, strict=True)))
    spread_low = spread_high = 0.0
    for k, (w, m, (_, d, base)) in enumerate(zip(weights, means, kept, strict=True)):
        if base is not None:
            base = np.asarray(base, dtype=np.float64)
            low_k, high_k = paired_interval(base, base + d, n_boot=n_boot, alpha=alpha, seed=seed + 7919 * k)
        else:
            _, low_k, high_k, _ = bootstrap_mean_ci(d, n_boot=n_boot, alpha=alpha, seed=seed + 7919 * k)
        spread_low += (w * (m - low_k)) ** 2
        spread_high += (w * (high_k - m)) ** 2
    scaled = np.concatenate([w / d.size * d for w, d in zip(weights, diffs, strict=True)])
    n = int(sum(d.size for d in diffs))
    variance = sum(w**2 * float(np.mean(d**2)) / d.size for w, d in zip(weights, diffs, strict=True))
    heaviest = max(w / d.size for w, d in zip(weights, diffs, strict=True))
    k_min = min_testable_n(alpha)
    detectable = None
    if n >= k_min:
        z = _z(alpha, power)
        detectable = max(z * math.sqrt(variance), max(z * z, k_min) * heaviest)
    pooled = np.concatenate(diffs)
    return {
        "delta": delta,
        "ci_low": delta - math.sqrt(spread_low),
        "ci_high": delta + math.sqrt(spread_high),
        "p_value": sign_flip_pvalue(scaled, seed=seed),
        "mde": detectable,
        "discordance": float(np.mean(pooled**2)),
    }


def _z(alpha: float, power: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


# --- multiple comparisons --------------------------------------------------------------------------


def control_false_discoveries(
    rows: Sequence[CategoryDelta],
    metrics: Mapping[str, MetricSpec],
    signals: Mapping[str, Signal] | None = None,
    *,
    alpha: float = ALPHA,
    by_task: bool = True,
) -> list[CategoryDelta]:
    """Benjamini-Hochberg q-values and flags for paired rows (in the same order).

    Families: for each checkpoint, its whole-task rows together (``category`` None), and the
    category rows of each task; with ``by_task`` False (prompt types) every row's family is its
    (checkpoint, task). Untestable rows and rows of tasks without signal get no q-value and are
    never significant."""
    signals = signals or {}
    rows = list(rows)
    families: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.testable and signals.get(r.task, (None, ""))[0] is not False and r.p_value is not None:
            key = (r.model, None) if (by_task and r.category is None) else (r.model, r.task, "cat")
            families[key].append(i)
    q: dict[int, float] = {}
    for members in families.values():
        for i, value in zip(members, benjamini_hochberg([rows[i].p_value for i in members]), strict=True):
            q[i] = value
    out = []
    for i, r in enumerate(rows):
        signal = signals.get(r.task, (None, ""))[0]
        significant = i in q and q[i] <= alpha
        worse = r.delta < 0 if metrics[r.task].higher_is_better else r.delta > 0
        out.append(
            r.model_copy(
                update={
                    "q_value": q.get(i),
                    "signal": signal,
                    "significant": significant,
                    "regressed": significant and worse,
                }
            )
        )
    return out


def comparison_families(
    rows: Sequence[CategoryDelta], prompt_rows: Sequence[CategoryDelta], axes: Sequence[AxisSummary]
) -> list[ComparisonFamily]:
    """How many comparisons each Benjamini-Hochberg family controlled, for the report."""
    groups: dict[tuple[str, str], list[CategoryDelta]] = defaultdict(list)
    for r in rows:
        family = "tasks" if r.category is None else f"categories of {r.task}"
        groups[(r.model, family)].append(r)
    for r in prompt_rows:
        groups[(r.model, f"prompt types of {r.task}")].append(r)
    out = []
    for (model, family), members in groups.items():
        out.append(
            ComparisonFamily(
                family=family,
                model=model,
                m=sum(r.q_value is not None for r in members),
                untestable=sum(not r.testable and r.signal is not False for r in members),
                no_signal=sum(r.signal is False for r in members),
                flagged=sum(r.significant for r in members),
            )
        )
    models = dict.fromkeys(p.model for a in axes for p in a.points if p.delta is not None)
    for model in models:
        points = [p for a in axes for p in a.points if p.model == model and p.delta is not None]
        out.append(
            ComparisonFamily(
                family="axes",
                model=model,
                m=sum(p.q_value is not None for p in points),
                untestable=sum(p.mde is None for p in points),
                flagged=sum(p.significant for p in points),
            )
        )
    return out


# --- prompt types ----------------------------------------------------------------------------------


def prompt_type_rows(
    index: Index,
    metrics: Mapping[str, MetricSpec],
    baseline: str,
    models: Sequence[str],
    *,
    n_boot: int = 1000,
    alpha: float = ALPHA,
    seed: int = 0,
) -> list[CategoryDelta]:
    """Paired rows by the items' prompt type (``extra["prompt_type"]``), for tasks whose items carry
    one with at least two values that differ from the categories (HellaSwag's source *is* its
    category, so it gets none)."""
    rows = []
    for task in metrics:
        for model in models:
            if model == baseline:
                continue
            pairs = paired_diffs(index, task, model, baseline)
            types: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
            for b, d in pairs:
                kind = b.extra.get("prompt_type")
                if kind:
                    types[str(kind)][b.item_id] = (float(b.score), float(b.score) + d)
            if len(types) < 2 or all(
                {b.category for b, _ in pairs if b.extra.get("prompt_type") == k} == {k} for k in types
            ):
                continue
            for kind in sorted(types):
                group = types[kind]
                t = paired_test(
                    {i: v[0] for i, v in group.items()},
                    {i: v[1] for i, v in group.items()},
                    n_boot=n_boot,
                    alpha=alpha,
                    seed=seed,
                )
                rows.append(paired_row(task, kind, model, baseline, t))
    return rows


def paired_row(task: str, category: str | None, model: str, baseline: str, t: PairedTest) -> CategoryDelta:
    """A CategoryDelta from a paired test, not yet flagged (``control_false_discoveries`` flags)."""
    return CategoryDelta(
        task=task,
        category=category,
        model=model,
        baseline=baseline,
        delta=t.delta,
        ci_low=t.ci_low,
        ci_high=t.ci_high,
        significant=False,
        n=t.n,
        p_value=t.p_value,
        mde=t.mde,
        discordance=t.discordance,
        testable=t.testable,
    )


# --- the power section -----------------------------------------------------------------------------


def _variance(results: Iterable[ItemResult]) -> tuple[int, float | None]:
    scores = np.array([float(r.score) for r in results if _scored(r)], dtype=np.float64)
    return (int(scores.size), float(scores.var()) if scores.size else None)


def _axis_strata(
    index: Index, axis: AxisSpec, metrics: Mapping[str, MetricSpec], model: str, baseline: str
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    strata = []
    for task in axis.tasks:
        pairs = paired_diffs(index, task, model, baseline)
        d = np.array([diff for _, diff in pairs], dtype=np.float64)
        base = np.array([float(b.score) for b, _ in pairs], dtype=np.float64)
        if not metrics[task].higher_is_better:
            d, base = -d, 1.0 - base  # the axis averages oriented values (right/wrong stays right/wrong)
        strata.append((float(d.size) if axis.weighting == "item" else 1.0, d, base))
    return strata


def _axis_summary(
    name: str,
    axis: AxisSpec | None,
    index: Index,
    summaries: Mapping[tuple[str, str], TaskSummary],
    metrics: Mapping[str, MetricSpec],
    baseline: str,
    models: Sequence[str],
    *,
    n_boot: int,
    alpha: float,
    power: float,
    seed: int,
    note: str = "",
) -> AxisSummary:
    if axis is None:
        return AxisSummary(
            name=name,
            spec=None,
            planned_mde=None,
            points=[AxisPoint(model=m, value=None, n=0) for m in models],
            note=note,
        )
    planned_terms, n_base = [], {}
    for task in axis.tasks:
        n, var = _variance(index.get((baseline, task), {}).values())
        n_base[task] = n
        if n and var is not None:
            planned_terms.append((task, n, planned_discordance(var, ASSUMED_CORRELATION)))
    planned = None
    if planned_terms:
        weights = {t: (n if axis.weighting == "item" else 1.0) for t, n, _ in planned_terms}
        total = sum(weights.values())
        variance = sum((weights[t] / total) ** 2 * v / n for t, n, v in planned_terms)
        planned = _z(alpha, power) * math.sqrt(variance)
    points = []
    for model in models:
        by_task = {t: s for (m, t), s in summaries.items() if m == model}
        value = axis_score(by_task, axis)
        n = sum(by_task[t].n_scored for t in axis.tasks if t in by_task)
        if model == baseline:
            points.append(AxisPoint(model=model, value=value, n=n))
            continue
        test = weighted_paired_test(
            _axis_strata(index, axis, metrics, model, baseline),
            n_boot=n_boot,
            alpha=alpha,
            power=power,
            seed=seed,
        )
        if test["delta"] is None:
            points.append(AxisPoint(model=model, value=value, n=n))
            continue
        points.append(AxisPoint(model=model, value=value, n=n, **test))
    return AxisSummary(name=name, spec=axis, planned_mde=planned, points=points, note=note)


def _flag_axes(axes: list[AxisSummary], alpha: float) -> list[AxisSummary]:
    """Benjamini-Hochberg over the axes of each checkpoint."""
    by_model: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for a_i, a in enumerate(axes):
        for j, p in enumerate(a.points):
            if p.p_value is not None and p.mde is not None:
                by_model[p.model].append((a_i, j))
    updates: dict[tuple[int, int], dict[str, Any]] = {}
    for members in by_model.values():
        qs = benjamini_hochberg([axes[a].points[j].p_value for a, j in members])
        for (a, j), q in zip(members, qs, strict=True):
            p = axes[a].points[j]
            significant = q <= alpha
            updates[(a, j)] = {
                "q_value": q,
                "significant": significant,
                "regressed": significant and p.delta < 0,
            }
    return [
        a.model_copy(
            update={"points": [p.model_copy(update=updates.get((i, j), {})) for j, p in enumerate(a.points)]}
        )
        for i, a in enumerate(axes)
    ]


def power_report(
    index: Index,
    summaries: Sequence[TaskSummary],
    metrics: Mapping[str, MetricSpec],
    signals: Mapping[str, Signal],
    safety: AxisSpec | None,
    capability: AxisSpec | None,
    rows: Sequence[CategoryDelta],
    prompt_rows: Sequence[CategoryDelta],
    *,
    baseline: str,
    models: Sequence[str],
    n_boot: int = 1000,
    alpha: float = ALPHA,
    power: float = POWER,
    seed: int = 0,
) -> PowerReport:
    """The report's power section: per task its chance, signal, planned and observed MDE; the two
    axes with their paired tests; and how many comparisons each family made."""
    by_key = {(s.model, s.task): s for s in summaries}
    tasks = []
    whole = {(r.model, r.task): r for r in rows if r.category is None}
    for task, metric in metrics.items():
        base = by_key.get((baseline, task))
        n, var = _variance(index.get((baseline, task), {}).values())
        planned = (
            mde(n, planned_discordance(var, ASSUMED_CORRELATION), alpha, power) if var is not None else None
        )
        checkpoints = [
            ModelPower(model=m, n=r.n, discordance=r.discordance or 0.0, mde=r.mde)
            for m in models
            if (r := whole.get((m, task))) is not None
        ]
        tasks.append(
            TaskPower(
                task=task,
                metric=metric.name,
                chance=metric.chance,
                baseline_value=base.value if base else None,
                baseline_ci=(base.ci_low, base.ci_high) if base and base.ci_low is not None else None,
                n=n,
                signal=signals.get(task, (None, ""))[0],
                planned_mde=planned,
                checkpoints=checkpoints,
            )
        )
    declared_capability = [t for t, m in metrics.items() if m.axis == "capability"]
    cap_note = ""
    if capability is None and declared_capability:
        cap_note = "no capability task has signal: " + "; ".join(
            f"{t}: {signals.get(t, (None, 'no chance level'))[1]}" for t in declared_capability
        )
    safety_axis = safety if safety is not None else _declared(metrics, "safety")
    kwargs = dict(n_boot=n_boot, alpha=alpha, power=power, seed=seed)
    axes = []  # an axis appears when the audit has a task for it, with value None if none has signal
    if declared_capability:
        axes.append(
            _axis_summary(
                "capability_axis",
                capability,
                index,
                by_key,
                metrics,
                baseline,
                models,
                note=cap_note,
                **kwargs,
            )
        )
    if safety_axis is not None:
        axes.append(
            _axis_summary("safety_axis", safety_axis, index, by_key, metrics, baseline, models, **kwargs)
        )
    axes = _flag_axes(axes, alpha)
    return PowerReport(
        alpha=alpha,
        power=power,
        assumed_correlation=ASSUMED_CORRELATION,
        min_testable_n=min_testable_n(alpha),
        tasks=tasks,
        axes=axes,
        families=comparison_families(rows, prompt_rows, axes),
    )


def _declared(metrics: Mapping[str, MetricSpec], axis: str) -> AxisSpec | None:
    tasks = [t for t, m in metrics.items() if m.axis == axis]
    return AxisSpec(tasks=tasks) if tasks else None


# --- sizing for a target effect ----------------------------------------------------------------------

# Single-threaded CPU seconds per item of each task with the default model (SmolLM2-135M, fp32),
# measured by ``benchmarks/audit_costs.py --threads 1`` on the project's 2-core CPU while other jobs
# kept its load average near 16 (single-threaded CPU time is what such a machine still measures
# honestly): 16 items per task, harmful_refusal at its default 80 (its long contextual prompts batch
# better in bulk: 3.6 s per item at 16). Generation tasks exclude the sandbox's own processes.
CPU_SECONDS_PER_ITEM: dict[str, float] = {
    "harmful_refusal": 1.407,
    "advbench_refusal": 0.567,
    "donotanswer_refusal": 0.554,
    "overrefusal": 0.573,
    "jailbreak": 8.244,
    "toxicity": 0.932,
    "bbq": 0.503,
    "mmlu": 0.451,
    "hellaswag": 0.784,
    "arc_challenge": 0.338,
    "arc_easy": 0.28,
    "piqa": 0.411,
    "winogrande": 0.185,
    "sciq": 0.361,
    "openbookqa": 0.141,
    "boolq": 0.686,
    "social_iqa": 0.214,
    "arithmetic": 0.103,
    "gsm8k": 6.404,
    "humaneval": 2.307,
}
# Wall seconds of a 2-core machine running torch on both cores per single-threaded CPU second: the
# old default audit costs 644 CPU-seconds in this table and took 287 s (issue #15): 0.45.
WALL_PER_CPU_SECOND = 0.45
SECONDS_PER_ITEM: dict[str, float] = {k: v * WALL_PER_CPU_SECOND for k, v in CPU_SECONDS_PER_ITEM.items()}
# The default model's score on each task (the timing run in the README), for planning p(1-p).
DEFAULT_MODEL_SCORE: dict[str, float] = {
    "harmful_refusal": 0.087,
    "advbench_refusal": 0.0,
    "donotanswer_refusal": 0.19,
    "overrefusal": 0.94,
    "jailbreak": 0.75,
    "toxicity": 0.25,
    "bbq": 0.31,
    "mmlu": 0.25,
    "hellaswag": 0.35,
    "arc_challenge": 0.29,
    "arc_easy": 0.56,
    "piqa": 0.6,
    "winogrande": 0.5,
    "sciq": 0.8,
    "openbookqa": 0.33,
    "boolq": 0.6,
    "social_iqa": 0.38,
    "arithmetic": 0.12,
    "gsm8k": 0.0,
    "humaneval": 0.0,
}
UNKNOWN_SECONDS_PER_ITEM = 1.0  # a task not in the table (a user task)
LOAD_SECONDS = 10.0  # loading the default model from the safetensors cache, busy machine


def planned_size(
    target: float, score: float | None = None, *, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Items needed for a paired MDE of ``target``: n = ((z_{1-a/2} + z_power) / target)^2 * m2, with
    the planned discordance m2 = max(p(1-p), target) at the default model's score p (0.5 when
    unknown): a change of ``target`` flips at least that share of the items. At least
    ``min_testable_n / target`` items, the exact test's floor."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"the target effect must be in (0, 1), got {target}")
    p = 0.5 if score is None else score
    m2 = max(planned_discordance(p * (1 - p), ASSUMED_CORRELATION), target)
    n = math.ceil((_z(alpha, power) / target) ** 2 * m2 - 1e-9)
    return max(n, math.ceil(min_testable_n(alpha) / target - 1e-9))


def estimate_seconds(sizes: Mapping[str, int], n_models: int) -> float:
    """Estimated wall time of an audit: items x seconds per item x models, plus loading each model."""
    per_model = sum(n * SECONDS_PER_ITEM.get(t, UNKNOWN_SECONDS_PER_ITEM) for t, n in sizes.items())
    return n_models * (per_model + LOAD_SECONDS)


class PlanRow(NamedTuple):
    """One task of a sized audit: items it will run (of ``available`` in its default subset), the
    MDE they plan for, and the estimated seconds per model."""

    task: str
    items: int
    available: int
    planned_mde: float | None
    seconds_per_item: float
    seconds: float


def plan_sizes(
    tasks: Sequence[Any],
    target: float,
    *,
    limit: int | None = None,
    seed: int = 0,
    alpha: float = ALPHA,
    power: float = POWER,
) -> list[PlanRow]:
    """Sample sizes for a target paired effect on every task (``tether audit --mde``): each task gets
    ``planned_size(target, p)`` items at the default model's score p (0.5 when unknown), capped by its
    default subset and ``limit``. The planned MDE is recomputed at the size actually available."""
    rows = []
    for task in tasks:
        score = DEFAULT_MODEL_SCORE.get(task.name)
        want = planned_size(target, score, alpha=alpha, power=power)
        n = len(task.select(size=want, limit=limit, seed=seed))
        available = len(task.select(size=10**9, seed=seed))
        p = 0.5 if score is None else score
        planned = mde(n, planned_discordance(p * (1 - p), ASSUMED_CORRELATION), alpha, power) if n else None
        cost = SECONDS_PER_ITEM.get(task.name, UNKNOWN_SECONDS_PER_ITEM)
        rows.append(PlanRow(task.name, n, available, planned, cost, n * cost))
    return rows


__all__ = [
    "ALPHA",
    "ASSUMED_CORRELATION",
    "DEFAULT_MODEL_SCORE",
    "POWER",
    "CPU_SECONDS_PER_ITEM",
    "SECONDS_PER_ITEM",
    "WALL_PER_CPU_SECOND",
    "comparison_families",
    "control_false_discoveries",
    "default_capability_axis",
    "estimate_seconds",
    "paired_diffs",
    "paired_row",
    "plan_sizes",
    "PlanRow",
    "planned_size",
    "power_report",
    "prompt_type_rows",
    "signal_spec",
    "task_signal",
    "weighted_paired_test",
]
