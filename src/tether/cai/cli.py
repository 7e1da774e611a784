"""``tether cai``: run Constitutional AI from a config, or check a constitution."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Constitutional AI: critique → revision → SFT rounds, RLAIF pairs, DPO, audits.",
    no_args_is_help=True,
)


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="CAI config YAML (see configs/cai.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set rounds=2 (repeatable)."),
    name: str | None = typer.Option(
        None, "--name", help="Run name (default: cai-<timestamp>); an existing run resumes."
    ),
    root: Path = typer.Option(Path("runs"), "--root", help="Directory that holds run directories."),
) -> None:
    """Run every stage, resuming whatever an earlier run of the same --name finished."""
    from tether.cai.pipeline import load_cai_config, run_cai
    from tether.inputs import check_output_dir
    from tether.runs import Run

    # Every key, model, constitution and task checked before the run directory or any model exists.
    cfg = load_cai_config(config, set_, check=True)
    check_output_dir(root, flag="--root")
    run = Run.create(name, root=root, job="cai", config=cfg, seed=cfg.seed)
    console = Console(stderr=True)
    console.print(f"run directory: {run.path}")
    try:
        summary = run_cai(cfg, run, config_path=config)
    except BaseException as exc:
        run.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc)[:500])
        raise
    run.finish("complete", models=summary.get("models"), audit=summary.get("audit"))
    console = Console()
    _print_summary(summary, console if console.is_terminal else Console(width=1000))  # no squeezing in pipes


@app.command("validate")
def validate_command(constitution: Path = typer.Argument(..., help="Constitution YAML.")) -> None:
    """Check a constitution and list its principles; every problem is reported with file:line."""
    from tether.cai.constitution import load_constitution

    loaded = load_constitution(constitution)
    console = Console()
    # A heading line, not a table title: a long path must not wrap through "N principle(s)".
    console.print(escape(f"{constitution}: {len(loaded.principles)} principle(s)"), soft_wrap=True)
    table = Table()
    for column in ("name", "applies to", "examples"):
        table.add_column(column)
    for p in loaded.principles:
        kinds = ", ".join(k for k in ("harmful", "benign") if p.applies_to(k))
        table.add_row(escape(p.name), kinds, str(len(p.examples)))
    console.print(table)


def _print_summary(summary: dict, console: Console) -> None:
    for r in summary.get("rounds", []):
        loop = r["loop"]
        console.print(
            f"round {r['round']}: kept {loop['kept']}/{loop['prompts']} "
            f"(dropped: {loop['dropped_harmful_still_complies']} harmful still complying, "
            f"{loop['dropped_harmful_deflection']} harmful off-topic, "
            f"{loop['dropped_benign_refused']} benign refused, {loop['dropped_empty']} empty); "
            f"degenerate critiques {loop['degenerate_critiques']}, rewrites {loop['degenerate_revisions']}"
        )
    if "rlaif" in summary:
        s = summary["rlaif"]
        console.print(
            f"RLAIF: {s['pairs']} pairs; raw (A)-first win rate {s['position_a_rate_raw']}; "
            f"agreement with the refusal judge on harmful prompts {s['harmful_agreement']} "
            f"(n={s['harmful_disagreements_judged']})"
        )
    audit = summary.get("audit")
    if audit:
        tasks = list(next(iter(audit.values())))
        table = Table(title="audit (held-out items)")
        table.add_column("model")
        for t in tasks:
            table.add_column(t)
        for model, row in audit.items():
            table.add_row(model, *("—" if row[t] is None else f"{row[t]:.3f}" for t in tasks))
        console.print(table)
