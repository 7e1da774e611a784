"""``tether cai``: run Constitutional AI from a config, or check a constitution."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tether.plain import out, plain_table

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
    from tether.runs import Run, recording_outcome

    # Every key, model, constitution and task checked before the run directory or any model exists.
    cfg = load_cai_config(config, set_, check=True)
    check_output_dir(root, flag="--root")
    run = Run.create(name, root=root, job="cai", config=cfg, seed=cfg.seed)
    console = Console(stderr=True)
    console.print(f"run directory: {run.path}")
    with recording_outcome(run):
        summary = run_cai(cfg, run, config_path=config)
    run.finish("complete", models=summary.get("models"), audit=summary.get("audit"))
    out(summary_text(summary))


@app.command("validate")
def validate_command(constitution: Path = typer.Argument(..., help="Constitution YAML.")) -> None:
    """Check a constitution and list its principles; every problem is reported with file:line."""
    from tether.cai.constitution import load_constitution

    loaded = load_constitution(constitution)
    rows = [
        (p.name, ", ".join(k for k in ("harmful", "benign") if p.applies_to(k)), str(len(p.examples)))
        for p in loaded.principles
    ]
    out(f"{constitution}: {len(loaded.principles)} principle(s)")
    out(plain_table(("name", "applies to", "examples"), rows, numeric={2}))


def summary_text(summary: dict) -> str:
    """The CAI run's result as plain text (stdout is data): each round's keep/drop counts, RLAIF, and
    the audit's headline per model and task."""
    lines = []
    for r in summary.get("rounds", []):
        loop = r["loop"]
        lines.append(
            f"round {r['round']}: kept {loop['kept']}/{loop['prompts']} "
            f"(dropped: {loop['dropped_harmful_still_complies']} harmful still complying, "
            f"{loop['dropped_harmful_deflection']} harmful off-topic, "
            f"{loop['dropped_benign_refused']} benign refused, {loop['dropped_empty']} empty, "
            f"{loop.get('dropped_degenerate', 0)} degenerate); "
            f"degenerate critiques {loop['degenerate_critiques']}, rewrites {loop['degenerate_revisions']}"
        )
    if "rlaif" in summary:
        s = summary["rlaif"]
        lines.append(
            f"RLAIF: {s['pairs']} pairs; raw (A)-first win rate {s['position_a_rate_raw']}; "
            f"agreement with the refusal judge on harmful prompts {s['harmful_agreement']} "
            f"(n={s['harmful_disagreements_judged']})"
        )
    audit = summary.get("audit")
    if audit:
        tasks = list(next(iter(audit.values())))
        rows = [
            (model, *("—" if row[t] is None else f"{row[t]:.3f}" for t in tasks))
            for model, row in audit.items()
        ]
        numeric = set(range(1, len(tasks) + 1))
        lines.append(plain_table(("model", *tasks), rows, numeric=numeric, title="audit (held-out items)"))
    return "\n".join(lines)
