"""What changed between the baseline and each checkpoint: per-category paired deltas and item flips,
and ``build_report``, which turns per-item results into one AuditReport."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tether.audit.pareto import check_spec, default_pareto_spec, pareto_points
from tether.audit.power import (
    control_false_discoveries,
    default_capability_axis,
    paired_row,
    power_report,
    prompt_type_rows,
    signal_spec,
    task_signal,
)
from tether.audit.schema import (
    AuditReport,
    CategoryDelta,
    DatasetInfo,
    Flip,
    FlipGroup,
    ModelInfo,
    ParetoSpec,
)
from tether.audit.stats import paired_test, summarize_task
from tether.errors import ConfigError, DataError
from tether.evals.types import ItemResult, MetricSpec

# (model, task) -> item_id -> result
_Index = dict[tuple[str, str], dict[str, ItemResult]]


def _index(items: Iterable[ItemResult]) -> _Index:
    index: _Index = defaultdict(dict)
    for it in items:
        bucket = index[(it.model, it.task)]
        if it.item_id in bucket:
            raise DataError(
                f"duplicate result for item '{it.item_id}' of task '{it.task}' and model '{it.model}'",
                hint="each (model, task, item_id) must appear once; clear the stale results and re-run",
            )
        bucket[it.item_id] = it
    return index


def _scored(it: ItemResult | None) -> bool:
    return it is not None and it.status == "scored" and it.score is not None


def _models_in(index: _Index) -> list[str]:
    return list(dict.fromkeys(model for model, _ in index))


def category_deltas(
    items: Iterable[ItemResult],
    metrics: Mapping[str, MetricSpec],
    baseline: str,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    signals: Mapping[str, tuple[bool | None, str]] | None = None,
) -> list[CategoryDelta]:
    """Paired deltas (checkpoint - baseline) for each non-baseline model and task: one whole-task row
    (``category=None``) and, when the task has several categories, one row per category.

    Only items both models scored are paired; the category is the baseline item's. Groups with no
    paired item get no row (the task summaries already show them as incomplete). Each row carries
    its exact p-value, discordance and minimum detectable effect; flags come from Benjamini-Hochberg
    over the tasks of a checkpoint and over the categories of each task (``tether.audit.power``),
    leaving out rows too small ever to be significant and tasks without signal (``signals``).
    """
    index = _index(items)
    rows: list[CategoryDelta] = []
    for task in metrics:
        base = index.get((baseline, task))
        if not base:
            continue
        for model in _models_in(index):
            new = index.get((model, task))
            if model == baseline or not new:
                continue
            pairs = [(iid, b, new[iid]) for iid, b in base.items() if _scored(b) and _scored(new.get(iid))]
            groups: dict[str | None, list[tuple[str, ItemResult, ItemResult]]] = {None: pairs}
            categories = sorted({b.category for _, b, _ in pairs})
            if len(categories) > 1:
                for cat in categories:
                    groups[cat] = [p for p in pairs if p[1].category == cat]
            for category, group in groups.items():
                if not group:
                    continue
                t = paired_test(
                    {iid: b.score for iid, b, _ in group},
                    {iid: n.score for iid, _, n in group},
                    n_boot=n_boot,
                    alpha=alpha,
                    seed=seed,
                )
                rows.append(paired_row(task, category, model, baseline, t))
    return control_false_discoveries(rows, metrics, signals, alpha=alpha)


def is_right(score: float, metric: MetricSpec) -> bool:
    """An item is right when its score is the best possible: 1 if higher is better, else 0."""
    return score == (1.0 if metric.higher_is_better else 0.0)


def find_flips(
    items: Iterable[ItemResult],
    metrics: Mapping[str, MetricSpec],
    baseline: str,
    *,
    max_examples: int = 3,
) -> list[FlipGroup]:
    """Items right under the baseline and wrong under a checkpoint ("regressed"), and the reverse.

    One group per (task, category, model) with at least one flip, holding full counts and up to
    ``max_examples`` examples, regressions first, in item-id order so reports are reproducible.
    """
    index = _index(items)
    groups: list[FlipGroup] = []
    for task, metric in metrics.items():
        base = index.get((baseline, task))
        if not base:
            continue
        for model in _models_in(index):
            new = index.get((model, task))
            if model == baseline or not new:
                continue
            by_cat: dict[str, list[Flip]] = defaultdict(list)
            paired: dict[str, int] = defaultdict(int)
            for iid in sorted(base):
                b, n = base[iid], new.get(iid)
                if not (_scored(b) and _scored(n)):
                    continue
                paired[b.category] += 1
                was, now = is_right(b.score, metric), is_right(n.score, metric)
                if was == now:
                    continue
                by_cat[b.category].append(
                    Flip(
                        task=task,
                        item_id=iid,
                        category=b.category,
                        model=model,
                        prompt=b.prompt,
                        baseline_output=b.output,
                        output=n.output,
                        direction="regressed" if was else "improved",
                        prompt_type=str(b.extra.get("prompt_type", "")),
                    )
                )
            for cat in sorted(by_cat):
                flips = by_cat[cat]
                regressed = [f for f in flips if f.direction == "regressed"]
                improved = [f for f in flips if f.direction == "improved"]
                groups.append(
                    FlipGroup(
                        task=task,
                        category=cat,
                        model=model,
                        baseline=baseline,
                        n_paired=paired[cat],
                        n_regressed=len(regressed),
                        n_improved=len(improved),
                        examples=(regressed + improved)[: max(0, max_examples)],
                    )
                )
    return groups


def build_report(
    items: Iterable[ItemResult],
    metrics: Mapping[str, MetricSpec],
    *,
    baseline: str,
    models: Sequence[ModelInfo] | None = None,
    pareto: ParetoSpec | None = None,
    judge_validation: Mapping[str, Any] | None = None,
    datasets: Sequence[DatasetInfo] = (),
    timings: Mapping[str, float] | None = None,
    settings: Mapping[str, Any] | None = None,
    extra_metrics: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    incomplete_threshold: float = 0.1,
    degenerate_threshold: float = 0.1,
    max_examples: int = 3,
) -> AuditReport:
    """Summaries for every (model, task) — including ones with no results, which come out incomplete —
    deltas and flips against ``baseline``, and the Pareto points.

    ``metrics`` (task -> MetricSpec) fixes the task order; ``models`` fixes the model order and
    specs (default: order of first appearance, spec = name). ``pareto`` defaults to the axes declared
    in each MetricSpec; with no task on one of the axes there is no Pareto section.
    ``extra_metrics`` maps (model, task) to additional task-level numbers (e.g. a bias score).
    """
    items = list(items)
    index = _index(items)
    unknown = sorted({t for _, t in index} - set(metrics))
    if unknown:
        raise DataError(
            f"results for task(s) {', '.join(unknown)} have no MetricSpec",
            hint="pass a MetricSpec for every task in the results (metrics={task: MetricSpec(...)})",
        )
    if models is None:
        fingerprints: dict[str, str] = {}
        for it in items:
            fingerprints.setdefault(it.model, it.model_fingerprint)
        models = [ModelInfo(name=m, spec=m, fingerprint=fp) for m, fp in fingerprints.items()]
    names = [m.name for m in models]
    strays = sorted({m for m, _ in index} - set(names))
    if strays:
        raise DataError(
            f"results for model(s) {', '.join(strays)} that are not in the audited model list",
            hint=f"audited models: {', '.join(names)}",
        )
    if baseline not in names:
        raise ConfigError(
            f"baseline '{baseline}' is not one of the audited models",
            where="baseline",
            hint=f"choose one of: {', '.join(names)}",
        )

    extra_metrics = extra_metrics or {}
    summaries = [
        summarize_task(
            list(index.get((model, task), {}).values()),
            metric,
            incomplete_threshold,
            task=task,
            model=model,
            n_boot=n_boot,
            alpha=alpha,
            seed=seed,
            extra_metrics=extra_metrics.get((model, task)),
            degenerate_threshold=degenerate_threshold,
        )
        for model in names
        for task, metric in metrics.items()
    ]
    spec = pareto if pareto is not None else default_pareto_spec(metrics)
    if spec is not None:
        check_spec(spec, metrics)
    # --- power and multiple comparisons (issue #15): signal on the baseline, then claims ---
    base_summary = {s.task: s for s in summaries if s.model == baseline}
    signals = {task: task_signal(base_summary.get(task), metric) for task, metric in metrics.items()}
    capability, safety = None, spec.safety if spec is not None else None
    if spec is not None:
        spec, capability = signal_spec(spec, signals)
    elif any(m.axis == "capability" for m in metrics.values()):
        capability = default_capability_axis(metrics, signals)
    stat_args = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    deltas = category_deltas(items, metrics, baseline, signals=signals, **stat_args)
    by_type = control_false_discoveries(
        prompt_type_rows(index, metrics, baseline, names, **stat_args),
        metrics,
        signals,
        alpha=alpha,
        by_task=False,
    )
    power = power_report(
        index, summaries, metrics, signals, safety, capability, deltas, by_type, baseline=baseline, models=names,
        **stat_args,
    )  # fmt: skip
    # --- end power ---
    return AuditReport(
        models=list(models),
        baseline=baseline,
        tasks=summaries,
        deltas=deltas,
        flips=find_flips(items, metrics, baseline, max_examples=max_examples),
        pareto=pareto_points(summaries, spec, names) if spec is not None else None,
        power=power,
        prompt_type_deltas=by_type,
        judge_validation=dict(judge_validation or {}),
        datasets=list(datasets),
        timings=dict(timings or {}),
        settings={
            "n_boot": n_boot,
            "alpha": alpha,
            "seed": seed,
            "incomplete_threshold": incomplete_threshold,
            "degenerate_threshold": degenerate_threshold,
            **dict(settings or {}),
        },
    )
