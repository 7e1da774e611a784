"""Safety vs capability: one point per model, and which points no other model beats on both axes."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from tether.audit.schema import AxisSpec, ParetoPoint, ParetoResult, ParetoSpec, TaskSummary
from tether.errors import ConfigError
from tether.evals.types import MetricSpec


def oriented(value: float, metric: MetricSpec) -> float:
    """The metric turned so that higher is better (a lower-is-better rate r becomes 1 - r)."""
    return value if metric.higher_is_better else 1.0 - value


def default_pareto_spec(metrics: Mapping[str, MetricSpec]) -> ParetoSpec | None:
    """Axes from each task's declared ``MetricSpec.axis``; None unless both axes have a task. The
    capability axis weighs each task by its scored items (``tether.audit.power``: the tasks without
    signal leave it), the safety axis each task equally."""
    safety = [t for t, m in metrics.items() if m.axis == "safety"]
    capability = [t for t, m in metrics.items() if m.axis == "capability"]
    if not safety or not capability:
        return None
    return ParetoSpec(safety=AxisSpec(tasks=safety), capability=AxisSpec(tasks=capability, weighting="item"))


def check_spec(spec: ParetoSpec, metrics: Mapping[str, MetricSpec]) -> None:
    """Raise ConfigError naming any axis task that is not an audited task, with close matches."""
    for axis_name, axis in (("safety", spec.safety), ("capability", spec.capability)):
        for task in axis.tasks:
            if task not in metrics:
                close = difflib.get_close_matches(task, list(metrics), n=3)
                raise ConfigError(
                    f"unknown task '{task}' on the {axis_name} axis",
                    where=f"pareto.{axis_name}.tasks",
                    hint=(f"did you mean {', '.join(close)}? " if close else "")
                    + f"audited tasks: {', '.join(metrics)}",
                )


def axis_score(summaries: Mapping[str, TaskSummary], axis: AxisSpec) -> float | None:
    """Mean over the axis's tasks of their oriented values, each task weighted 1 or (``weighting``
    "item") by its scored items; None when any of them has no value."""
    values, weights = [], []
    for task in axis.tasks:
        summary = summaries.get(task)
        if summary is None or summary.value is None:
            return None
        values.append(oriented(summary.value, summary.metric))
        weights.append(summary.n_scored if axis.weighting == "item" else 1)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a dominates b: at least as good on both axes and strictly better on one (both maximised)."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (safety, capability) point, whether no other point dominates it.

    Duplicates do not dominate each other, so equal points are on the frontier together. O(n^2),
    which is nothing for the tens of checkpoints an audit compares.
    """
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def frontier_gap(points: Sequence[ParetoPoint]) -> dict[str, float | None]:
    """Per model, how far it lies behind the frontier of the complete points: the largest amount by
    which some other point beats it on both axes at once (the additive epsilon indicator). 0 on the
    frontier; ``g`` means that moving up ``g`` on both axes would put it on the frontier. None for a
    point that does not compete (an axis missing or a task incomplete): it cannot be certified."""
    competing = [
        (p.safety, p.capability)
        for p in points
        if p.complete and p.safety is not None and p.capability is not None
    ]
    gaps: dict[str, float | None] = {}
    for p in points:
        if not p.complete or p.safety is None or p.capability is None:
            gaps[p.model] = None
            continue
        beaten_by = [min(s - p.safety, c - p.capability) for s, c in competing]
        gaps[p.model] = max(0.0, max(beaten_by, default=0.0))
    return gaps


def pareto_points(
    summaries: Sequence[TaskSummary], spec: ParetoSpec, models: Sequence[str] | None = None
) -> ParetoResult:
    """One point per model (in ``models`` order, default first appearance) with its frontier flag.

    A model whose axis cannot be computed gets None there; it, and any model with an incomplete task
    behind either axis, is never on the frontier."""
    by_model: dict[str, dict[str, TaskSummary]] = {}
    for s in summaries:
        by_model.setdefault(s.model, {})[s.task] = s
    order = list(models) if models is not None else list(by_model)
    axis_tasks = set(spec.safety.tasks) | set(spec.capability.tasks)

    raw = []
    for name in order:
        tasks = by_model.get(name, {})
        safety = axis_score(tasks, spec.safety)
        capability = axis_score(tasks, spec.capability)
        complete = all(t in tasks and tasks[t].complete for t in axis_tasks)
        raw.append((name, safety, capability, complete))

    # Incomplete points are plotted but never compete: a half-failed run must not push a complete one
    # off the frontier.
    def competes(safety: float | None, capability: float | None, complete: bool) -> bool:
        return complete and safety is not None and capability is not None

    front = iter(pareto_front([(s, c) for _, s, c, ok in raw if competes(s, c, ok)]))
    points = []
    for name, safety, capability, complete in raw:
        on = next(front) if competes(safety, capability, complete) else False
        points.append(
            ParetoPoint(model=name, safety=safety, capability=capability, on_frontier=on, complete=complete)
        )
    return ParetoResult(spec=spec, points=points)
