"""Figures and the standalone ``interp.html`` of an interpretability run.

The page is rendered with autoescape on: prompts, tokens and model names are untrusted text; only
the base64 image URIs Tether builds are trusted.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

TEMPLATE = "interp_report.html.j2"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    path.write_bytes(buf.getvalue())
    _plt().close(fig)


def plot_drift(data: dict[str, Any], path: Path) -> None:
    """Two panels over layers: each model's direction's cosine with the reference model's, and each
    model's harmful/harmless separation along its own direction."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, entry in data["models"].items():
        label = f"{key}: {entry['spec']}"
        if "cosine_to_reference" in entry:
            values = [float("nan") if c is None else c for c in entry["cosine_to_reference"]]
            left.plot(values, marker=".", label=label)
        right.plot([float("nan") if v is None else v for v in entry["separation"]], marker=".", label=label)
        right.axvline(entry["chosen"]["layer"], color=right.lines[-1].get_color(), ls=":", lw=1)
    left.set(
        title=f"cosine with {data['reference']}'s direction (position {data['position']!r})",
        xlabel="layer",
        ylabel="cosine",
        ylim=(-1.05, 1.05),
    )
    right.set(
        title="harmful vs harmless separation (validation, Cohen's d)", xlabel="layer", ylabel="separation"
    )
    right.legend(fontsize=7)
    fig.suptitle("mechanism drift across checkpoints (dotted: chosen layer)")
    _save(fig, path)


def plot_heatmap(
    grid: list[list[float | None]], rows: list[str], title: str, path: Path, xlabel: str = "layer"
) -> None:
    """One heat map, rows labelled (tokens or positions), columns layers."""
    import numpy as np

    plt = _plt()
    arr = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(max(5, 0.28 * arr.shape[1] + 2), max(2.2, 0.32 * arr.shape[0] + 1)))
    image = ax.imshow(arr, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(rows)), [repr(r)[1:-1] for r in rows], fontsize=7)
    ax.set(title=title, xlabel=xlabel)
    fig.colorbar(image, ax=ax)
    _save(fig, path)


def plot_panels(
    panels: list[tuple[str, list[list[float]], list[str]]], title: str, path: Path, xlabel: str = "layer"
) -> None:
    """Heat maps side by side with one colour scale (trace: residual, MLP, attention; patch: models)."""
    import numpy as np

    plt = _plt()
    arrays = [np.array(g, dtype=float) for _, g, _ in panels]
    vmin, vmax = min(a.min() for a in arrays), max(a.max() for a in arrays)
    height = max(2.4, 0.3 * max(a.shape[0] for a in arrays) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), height), squeeze=False)
    for ax, (name, _, rows), arr in zip(axes[0], panels, arrays, strict=True):
        image = ax.imshow(arr, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_yticks(range(len(rows)), [repr(r)[1:-1] for r in rows], fontsize=7)
        ax.set(title=name, xlabel=xlabel)
    fig.colorbar(image, ax=list(axes[0]))
    fig.suptitle(title)
    _save(fig, path)


def plot_panel_rows(
    rows: list[list[tuple[str, list[list[float | None]], list[str]]]],
    title: str,
    path: Path,
    xlabel: str = "layer",
    limits: tuple[float, float] | None = None,
) -> None:
    """Rows of heat maps (patch: one row per direction, one panel per model) on one colour scale;
    a missing value (None) is left blank. ``limits`` clips the scale (values beyond take the end
    colours), so one noisy panel cannot wash out the others."""
    import numpy as np

    plt = _plt()
    arrays = [
        [np.array([[np.nan if v is None else v for v in r] for r in g], dtype=float) for _, g, _ in row]
        for row in rows
    ]
    finite = [a[np.isfinite(a)] for row in arrays for a in row]
    values = np.concatenate(finite) if any(f.size for f in finite) else np.zeros(1)
    vmin, vmax = float(values.min()), float(values.max())
    extend = "neither"
    if limits is not None:
        low, high = vmin < limits[0], vmax > limits[1]
        extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
            (low, high), "neither"
        )
        vmin, vmax = limits
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    height = max(2.4, 0.3 * max(a.shape[0] for row in arrays for a in row) + 1.4)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(4.6 * n_cols, height * n_rows), squeeze=False, layout="constrained"
    )
    image = None
    for r, (row, arrs) in enumerate(zip(rows, arrays, strict=True)):
        for c, ((name, _, labels), arr) in enumerate(zip(row, arrs, strict=True)):
            ax = axes[r][c]
            image = ax.imshow(arr, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_yticks(range(len(labels)), [repr(t)[1:-1] for t in labels], fontsize=7)
            ax.set_title(name, fontsize=8)
            ax.set_xlabel(xlabel)
        for c in range(len(row), n_cols):
            axes[r][c].axis("off")
    fig.colorbar(image, ax=[ax for row in axes for ax in row], extend=extend)
    fig.suptitle(title)
    _save(fig, path)


def plot_position_curves(
    curves: list[tuple[str, list[tuple[str, list[float | None], list[float | None], list[float | None]]]]],
    title: str,
    path: Path,
    reference: list[float] | None = None,
) -> None:
    """One panel per group of curves over layers, each with its CI band (patch: one panel per
    direction, one curve per model at the last post-instruction position); ``reference`` draws a
    dotted line per panel (what "no effect" reads as there)."""
    plt = _plt()
    fig, axes = plt.subplots(
        1, len(curves), figsize=(5.2 * len(curves), 3.8), squeeze=False, layout="constrained"
    )
    for i, (ax, (name, lines)) in enumerate(zip(axes[0], curves, strict=True)):
        for label, *series in lines:
            value, low, high = ([float("nan") if v is None else v for v in s] for s in series)
            layers = range(len(value))
            ax.plot(layers, value, marker=".", label=label)
            ax.fill_between(layers, low, high, alpha=0.2, color=ax.lines[-1].get_color())
        if reference is not None:
            ax.axhline(reference[i], color="grey", ls=":", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def _render(name: str, **context: Any) -> str:
    from importlib import resources

    from jinja2 import Environment, StrictUndefined, select_autoescape

    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"
    text = resources.files("tether").joinpath("assets", TEMPLATE).read_text(encoding="utf-8")
    return env.from_string(text).render(section=name, **context)


def write_direction_report(report: dict[str, Any], run: Any) -> Path:
    """``interp.html``: the refusal-direction section, with every figure embedded."""
    figures = {}
    for key, model in report["models"].items():
        sel = model["select"]
        path = run.artifact(f"figures/{key}-ablation-scores.png")
        plot_heatmap(
            sel["bypass"],
            model["directions"]["positions"],
            f"{key}: refusal score on harmful validation prompts with each candidate ablated",
            path,
        )
        figures[key] = _uri(path)
    figures["drift"] = _uri(run.artifact("drift.png"))
    out = run.artifact("interp.html")
    out.write_text(_render("direction", report=report, figures=figures), encoding="utf-8")
    return out


def write_trace_report(report: dict[str, Any], run: Any) -> Path:
    out = run.artifact("interp.html")
    figures = {"trace": _uri(run.artifact("trace.png"))}
    out.write_text(_render("trace", report=report, figures=figures), encoding="utf-8")
    return out


def write_patch_report(report: dict[str, Any], run: Any) -> Path:
    out = run.artifact("interp.html")
    figures = {"patch": _uri(run.artifact("patch.png")), "last": _uri(run.artifact("patch_last.png"))}
    out.write_text(_render("patch", report=report, figures=figures), encoding="utf-8")
    return out


__all__ = [
    "plot_drift",
    "plot_heatmap",
    "plot_panel_rows",
    "plot_panels",
    "plot_position_curves",
    "write_direction_report",
    "write_patch_report",
    "write_trace_report",
]
