"""``tether frontier BASE ALIGNED``: build, audit and plot mitigation candidates.

Mount with ``app.command("frontier")(frontier_command)``. stdout is one JSON object (the frontier
summary); progress and messages go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def frontier_command(
    base: Annotated[
        str, typer.Argument(help="The model before alignment (a spec: default, a directory, ...).")
    ],
    aligned: Annotated[
        str, typer.Argument(help="The aligned model: a full fine-tune of BASE or a LoRA adapter on it.")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", help="Frontier config YAML (see configs/frontier.yaml).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Run directory; an existing frontier run there resumes.")
    ] = Path("runs/frontier"),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
    ] = None,
    redo_report: Annotated[
        bool,
        typer.Option(
            "--redo-report",
            help="Recompute the report and frontier.json of a finished run from its cache (nothing is built "
            "or audited again), e.g. after an upgrade or with another recovery.keep/recover.",
        ),
    ] = False,
) -> None:
    """Interpolated, per-block and merged candidates between BASE and ALIGNED, each audited on held-out
    items; writes frontier.json, frontier.png and the audit report into --out."""
    from rich.console import Console

    from tether.config import load_config
    from tether.errors import ConfigError
    from tether.frontier.candidates import check_same_base
    from tether.frontier.config import FrontierConfig, check_frontier_config
    from tether.frontier.pipeline import run_frontier
    from tether.inputs import check_output_dir
    from tether.models.spec import check_spec
    from tether.runs import Run, read_manifest, recording_outcome

    cfg = load_config(FrontierConfig, config, set_ or [], check=check_frontier_config)
    check_spec(base, where="BASE")
    check_spec(aligned, where="ALIGNED")
    check_same_base(base, aligned, cfg.capability_adapter, cfg.recovery.unmitigated)
    if cfg.retrain.steps:
        from tether.frontier.pipeline import check_retrainable

        check_retrainable(aligned)
    if cfg.multi_objective.lambdas:
        from tether.frontier.pipeline import check_multi_trainable

        check_multi_trainable(aligned)
    check_output_dir(out, flag="--out")
    manifest = out / "manifest.json"
    if manifest.exists():
        previous = read_manifest(manifest)
        if previous.get("job") != "frontier":
            raise ConfigError(
                f"{out} is the run directory of a '{previous.get('job')}' job, not a frontier run",
                where="--out",
                hint="write the frontier elsewhere, e.g. --out runs/frontier-1",
            )
        models = previous.get("config", {}).get("models", {})
        if models and models != {"base": base, "aligned": aligned}:
            raise ConfigError(
                f"{out} holds a frontier of BASE {models.get('base')} and ALIGNED {models.get('aligned')}, "
                f"not of {base} and {aligned}",
                where="--out",
                hint="resume with the same models, or pass another --out",
            )
    console = Console(stderr=True)
    record = {**cfg.model_dump(mode="json"), "models": {"base": base, "aligned": aligned}}
    run = Run.create(out.name, root=out.parent, job="frontier", config=record, seed=cfg.seed)
    console.print(f"run directory: {run.path}")
    with recording_outcome(run):
        summary = run_frontier(
            cfg, base, aligned, run, say=lambda m: console.print(m), redo_report=redo_report
        )
    run.finish("complete", frontier="frontier.json")
    typer.echo(json.dumps({"run": str(run.path), **summary}))


__all__ = ["frontier_command"]
