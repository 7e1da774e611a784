"""The frontier's numbers: non-dominated candidates, the hypervolume they cover, which of them beat
the unmitigated aligned model, and the plot. Both axes are oriented higher-is-better (the audit's
``report.pareto`` points)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tether.audit.pareto import dominates, pareto_front

Point = tuple[float, float]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by ``points`` and dominating ``reference`` (2-D, both axes maximised)."""
    inside = [p for p in points if p[0] > reference[0] and p[1] > reference[1]]
    front = [p for p, on in zip(inside, pareto_front(inside), strict=True) if on]
    area, floor = 0.0, reference[1]
    for s, c in sorted(set(front), key=lambda p: (-p[0], p[1])):
        if c > floor:
            area += (s - reference[0]) * (c - floor)
            floor = c
    return area


def frontier_summary(
    points: Mapping[str, Point | None], *, aligned: str, reference: Point, unmitigated: str | None = None
) -> dict[str, Any]:
    """On-frontier flags, hypervolume, and the candidates that dominate ``aligned`` (point estimates);
    with ``unmitigated`` (a chain's original aligned model), also those that dominate it. A candidate
    without both axis values takes no part."""
    scored = {n: p for n, p in points.items() if p is not None}
    names = list(scored)
    flags = pareto_front([scored[n] for n in names])
    on = [n for n, f in zip(names, flags, strict=True) if f]

    def dominating(name: str) -> list[str]:
        target = scored.get(name)
        return [n for n in names if target is not None and dominates(scored[n], target)]

    out = {
        "frontier": on,
        "hypervolume": hypervolume([scored[n] for n in on], reference),
        "reference": list(reference),
        "dominate_aligned": dominating(aligned),
    }
    if unmitigated is not None:
        out["dominate_unmitigated"] = dominating(unmitigated)
    return out


def plot_frontier(
    points: Mapping[str, Point | None],
    families: Mapping[str, Sequence[str]],
    frontier: Sequence[str],
    path: Path,
    *,
    title: str = "safety-capability frontier",
    incomplete: Mapping[str, Point] | None = None,
    intervals: Mapping[str, tuple[Point, Point]] | None = None,
) -> Path:
    """Safety (x) vs capability (y): one curve per family in its order, the frontier as a step line,
    BASE and ALIGNED labelled; ``incomplete`` candidates (a task with too many unscored answers) as
    hollow grey markers, off every curve and the frontier. ``intervals`` ({name: ((x_low, x_high),
    (y_low, y_high))}) are drawn as error bars around the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for family, names in families.items():
        xy = [points[n] for n in names if points.get(n) is not None]
        if xy:
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=family, alpha=0.8)
    front = sorted(points[n] for n in frontier if points.get(n) is not None)
    if front:
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="black",
            lw=1,
            ls="--",
            label="Pareto frontier",
        )
    if incomplete:
        xy = list(incomplete.values())
        ax.scatter(
            [p[0] for p in xy],
            [p[1] for p in xy],
            facecolors="none",
            edgecolors="grey",
            label="incomplete (not on the frontier)",
        )
    drawn = {**(incomplete or {}), **{n: p for n, p in points.items() if p is not None}}
    with_bars = [n for n in (intervals or {}) if n in drawn]
    if with_bars:
        xs, ys = [drawn[n][0] for n in with_bars], [drawn[n][1] for n in with_bars]
        (x_bars, y_bars) = zip(*(intervals[n] for n in with_bars), strict=True)  # type: ignore[index]
        ax.errorbar(
            xs,
            ys,
            xerr=[
                [x - lo for x, (lo, _) in zip(xs, x_bars, strict=True)],
                [hi - x for x, (_, hi) in zip(xs, x_bars, strict=True)],
            ],
            yerr=[
                [y - lo for y, (lo, _) in zip(ys, y_bars, strict=True)],
                [hi - y for y, (_, hi) in zip(ys, y_bars, strict=True)],
            ],
            fmt="none",
            ecolor="grey",
            elinewidth=0.8,
            alpha=0.6,
            label="95% CI of the paired difference from aligned",
        )
    for name in ("base", "aligned", "unmitigated"):  # unmitigated: the reference of a chain
        where = points.get(name) or (incomplete or {}).get(name)
        if where is not None:
            ax.annotate(name, where, textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("safety axis (higher is safer)")
    ax.set_ylabel("capability axis (higher is more capable)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["frontier_summary", "hypervolume", "plot_frontier"]
