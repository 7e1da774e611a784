"""`tether audit MODEL...`: run the eval tasks over models and checkpoints, write the report.

Mount with ``app.command("audit")(audit_command)``; ``app`` is the same command as a standalone app.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.audit.gate import EXIT_INCOMPLETE, EXIT_PASS, EXIT_USAGE
from tether.audit.schema import AuditReport, AxisSpec, ParetoSpec
from tether.errors import ConfigError, TetherError
from tether.plain import out as print_data
from tether.plain import plain_table


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _pareto(safety: str | None, capability: str | None, tasks: str) -> ParetoSpec | None:
    """Axes from the flags; an axis not given falls back to the tasks that declare it."""
    if safety is None and capability is None:
        return None
    from tether.evals import resolve_tasks

    declared = {"safety": [], "capability": []}
    for task in resolve_tasks(tasks):
        if task.metric.axis in declared:
            declared[task.metric.axis].append(task.name)
    axes = {}
    for axis, flag in (("safety", safety), ("capability", capability)):
        chosen = _split([flag]) if flag is not None else declared[axis]
        if not chosen:
            raise ConfigError(
                f"the {axis} axis has no task", where=f"--{axis}-axis", hint="name at least one audited task"
            )
        axes[axis] = AxisSpec(tasks=chosen)
    return ParetoSpec(**axes)


def _engine_config(overrides: list[str]):
    from tether.config import EngineConfig, load_config

    return load_config(EngineConfig, None, [o.removeprefix("engine.") for o in overrides])


def summary_table(report: AuditReport) -> str:
    """Model x task: value, interval, n scored, and an incomplete mark (plain text: stdout is data)."""
    ci_pct = round(100 * (1 - float(report.settings.get("alpha", 0.05))))
    rows = []
    for model in report.model_names():
        for task in report.task_names():
            s = report.summary(model, task)
            if s is None:
                continue
            arrow = "↑" if s.metric.higher_is_better else "↓"
            value = "—" if s.value is None else f"{s.value:.3f}"
            if not s.complete:
                value = f"{value} incomplete"
            ci = "" if s.ci_low is None else f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"
            n = f"{s.n_scored}/{s.n_total}" if s.n_scored != s.n_total else str(s.n_scored)
            extras = ", ".join(f"{k}={v:.3f}" for k, v in s.extra_metrics.items() if not k.startswith("n_"))
            rows.append((model, task, f"{s.metric.name} {arrow}", value, ci, n, extras))
    header = ("model", "task", "metric", "value", f"{ci_pct}% CI", "n", "extras")
    return plain_table(header, rows, numeric={3, 4, 5}, title="audit summary")


def power_table(report: AuditReport) -> str:
    """Per task and axis: chance, signal, planned MDE, and each checkpoint's paired change, q-value
    and MDE at the observed discordance (report.html explains the columns). ▲ improved, ▼ regressed
    (Benjamini-Hochberg q < 0.05)."""
    power = report.power
    assert power is not None
    others = [m for m in report.model_names() if m != report.baseline]
    header = ["task", "chance", "signal", "n", "planned MDE"]
    for m in others:
        header += [f"{m}: Δ (q)", "MDE"]

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    def mark(item) -> str:
        return " ▼" if item.regressed else (" ▲" if item.significant else "")

    whole = {(d.model, d.task): d for d in report.deltas if d.category is None}
    rows = []
    for t in power.tasks:
        signal = {True: "yes", False: "no signal", None: "—"}[t.signal]
        cells = []
        for m in others:
            d = whole.get((m, t.task))
            cells += [f"{d.delta:+.3f} ({fmt(d.q_value)}){mark(d)}" if d else "—", fmt(d.mde) if d else "—"]
        rows.append((t.task, fmt(t.chance), signal, str(t.n), fmt(t.planned_mde), *cells))
    for a in power.axes:
        points = {p.model: p for p in a.points}
        base = points.get(report.baseline)
        cells = []
        for m in others:
            p = points.get(m)
            ok = p is not None and p.delta is not None
            cells += [f"{p.delta:+.3f} ({fmt(p.q_value)}){mark(p)}" if ok else "—", fmt(p.mde) if ok else "—"]
        rows.append((a.name, "", "", str(base.n if base else 0), fmt(a.planned_mde), *cells))
    numeric = {1, 3, 4, *range(5, len(header))}
    return plain_table(
        header, rows, numeric=numeric, title="power (80%, alpha 0.05, paired; ▲ improved, ▼ regressed)"
    )


def audit_command(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to audit, baseline first: 'default', an HF dir, a .gguf, an adapter dir, or a run "
            "directory (each of its checkpoints/*/ is audited).",
            show_default=False,
        ),
    ] = None,
    tasks: Annotated[
        str,
        typer.Option(
            "--tasks",
            "-t",
            help="Task sets (all, safety, capability, quick), task names or task .yaml files, comma-separated.",
        ),
    ] = "all",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/audit-<time>).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="At most N items per task.")
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Every item of every task instead of the default stratified sample."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for item sampling and sampled generation.")] = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Engine setting, engine.key=value (repeatable).")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="Display name per model argument, in order (repeatable or comma-separated)."
        ),
    ] = None,
    safety_axis: Annotated[
        str | None, typer.Option("--safety-axis", help="Tasks averaged into the Pareto safety axis (a,b).")
    ] = None,
    capability_axis: Annotated[
        str | None, typer.Option("--capability-axis", help="Tasks averaged into the Pareto capability axis.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Result cache file (default: $TETHER_CACHE/audit.sqlite or OUT/audit.sqlite)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Evaluate everything; store nothing.")] = False,
    list_tasks: Annotated[
        bool, typer.Option("--list-tasks", help="List the tasks and task sets, then exit.")
    ] = False,
    mde: Annotated[
        float | None,
        typer.Option(
            "--mde",
            min=0.005,
            max=0.5,
            help="Size every task's sample to detect this paired change (e.g. 0.03) with 80% power at "
            "alpha 0.05; prints the sizes and the estimated time, then runs.",
        ),
    ] = None,
) -> None:
    """Audit models on safety and capability tasks; write report.json and report.html.

    Per-item results are cached, so re-running, or adding a checkpoint, evaluates only what is new.
    Exit codes: 0 done, 1 usage or config error, 2 a task is incomplete (too many unscored items).
    """
    err = Console(stderr=True)
    try:
        if list_tasks:
            print_data(_task_table())
            raise typer.Exit(EXIT_PASS)
        if not models:
            raise ConfigError("no models given", hint="e.g. `tether audit default runs/sft` (baseline first)")
        from tether.audit.sweep import run_audit
        from tether.inputs import check_output_dir, check_output_file

        out_dir = out or Path("runs") / f"audit-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        # Paths first; run_audit checks the models and tasks before the first model loads.
        check_output_dir(out_dir, flag="--out")
        if cache is not None and not no_cache:
            check_output_file(cache, flag="--cache")
        sizes = None
        if mde is not None:
            if full:
                raise ConfigError(
                    "--mde sizes samples and --full runs everything", where="--mde", hint="drop one"
                )
            sizes = _plan(err, tasks, mde, models, _split(name) or None, limit, seed)
        report = run_audit(
            models,
            tasks,
            out_dir,
            limit=limit,
            full=full,
            seed=seed,
            engine_config=_engine_config(set_ or []),
            names=_split(name) or None,
            pareto=_pareto(safety_axis, capability_axis, tasks),
            cache=False if no_cache else (cache if cache is not None else True),
            sizes=sizes,
        )
    except TetherError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.render())}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from exc

    print_data(summary_table(report))
    if report.power is not None:
        print_data(power_table(report))
    incomplete = [f"{s.model} / {s.task}" for s in report.tasks if not s.complete]
    print_data(f"report: {out_dir / 'report.html'}")
    print_data(f"data:   {out_dir / 'report.json'}")
    if incomplete:
        print_data("incomplete (too many unscored items, or no score): " + ", ".join(incomplete))
        raise typer.Exit(EXIT_INCOMPLETE)


def _plan(console: Console, tasks: str, target: float, models, names, limit, seed) -> dict[str, int]:
    """Print the sample sizes ``--mde`` chose and the estimated time; return the sizes."""
    from tether.audit.power import LOAD_SECONDS, plan_sizes
    from tether.audit.sweep import expand_models
    from tether.evals import resolve_tasks

    n_models = len(expand_models(models, names))
    rows = plan_sizes(resolve_tasks(tasks), target, limit=limit, seed=seed)
    table = Table(title=f"sample sizes for a detectable change of {target:g}", title_justify="left")
    for column in ("task", "items", "of", "planned MDE", "s/item", "min/model"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in rows:
        short = r.planned_mde is not None and r.planned_mde > target + 1e-9
        mde_text = (
            "—" if r.planned_mde is None else f"{r.planned_mde:.3f}" + (" (all items)" if short else "")
        )
        table.add_row(
            r.task,
            str(r.items),
            str(r.available),
            mde_text,
            f"{r.seconds_per_item:.2f}",
            f"{r.seconds / 60:.1f}",
        )
    console.print(table)
    total = n_models * (sum(r.seconds for r in rows) + LOAD_SECONDS)
    console.print(
        f"estimated time: {total / 60:.0f} min for {n_models} model(s) (per-item costs of the default model "
        "measured on a shared 2-core CPU, tether.audit.power.SECONDS_PER_ITEM; larger models and other "
        "machines scale). Planned MDE assumes a checkpoint whose item scores correlate 0.5 with the baseline's."
    )
    return {r.task: r.items for r in rows}


def _task_table() -> str:
    from tether.evals import TASK_SETS, get_task, task_names

    rows = []
    for task_name in task_names():
        t = get_task(task_name)
        sample = ", ".join(
            f"{k} {v}"
            for k, v in (("per category", t.default_per_category), ("limit", t.default_limit))
            if v is not None
        )
        arrow = "↑" if t.metric.higher_is_better else "↓"
        rows.append(
            (t.name, f"{t.metric.name} {arrow}", t.metric.axis, t.kind, sample or "all", t.description)
        )
    sets = "; ".join(f"{k}: {', '.join(v)}" for k, v in TASK_SETS.items())
    header = ("task", "metric", "axis", "kind", "default sample", "description")
    return plain_table(header, rows, title="tasks") + f"\ntask sets — {sets}"


app = typer.Typer(add_completion=False, help="Audit models on safety and capability tasks.")
app.command("audit")(audit_command)
