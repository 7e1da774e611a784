"""``tether redteam``: run a red-team campaign from a config; export what it found as a dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="Red teaming: adaptive attacks (templates, PAIR, TAP, Crescendo, GCG) on held-out HarmBench goals, "
    "judged by harmful content; ASR vs query budget; found attacks exported for CAI and the audit.",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)


def _say(message: str) -> None:
    err.print(message, highlight=False, markup=False)


def _json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Red-team config YAML (see configs/redteam.yaml).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Run directory (default: runs/redteam-<timestamp>); an existing one resumes."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
    ] = None,
) -> None:
    """Attack every goal with every strategy, resuming the goals an earlier run of --out finished;
    print the headline ASR per strategy (JSON) and write redteam.json and redteam.html."""
    from tether.inputs import check_output_dir
    from tether.redteam.pipeline import load_redteam_config, resume_conflict, run_redteam
    from tether.runs import DEFAULT_RUNS_ROOT, Run, recording_outcome

    # Every key, model, goal category and template family checked before any model loads.
    cfg = load_redteam_config(config, set_ or [], check=True)
    if out is not None:
        check_output_dir(out, flag="--out")
        conflict = resume_conflict(out, cfg)
        if conflict is not None:  # before Run.create, which would record this config as the run's
            raise conflict
    name, root = (out.name, out.parent) if out is not None else (None, DEFAULT_RUNS_ROOT)
    run = Run.create(name, root=root, job="redteam", config=cfg, seed=cfg.seed)
    _say(f"run directory: {run.path}")
    with recording_outcome(run):
        summary = run_redteam(cfg, run, say=_say)
    run.finish("complete", redteam=summary["strategies"])
    _json({"run": str(run.path), **summary})


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A red-team run directory.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Dataset JSONL to write (default: RUN/redteam_export.jsonl).")
    ] = None,
    heldout_fraction: Annotated[
        float, typer.Option("--heldout-fraction", min=0.0, max=1.0, help="Share of goals held out (by hash).")
    ] = 0.5,
) -> None:
    """Write the successful attacks as a dataset, each goal on the train or held-out side by hash:
    `tether cai run --set prompts.extra_redteam=FILE` trains on the train side, and the audit task
    `redteam_replay:FILE` replays the held-out side."""
    from tether.inputs import check_input_dir, check_output_file
    from tether.redteam.export import export_run
    from tether.runs import Run

    check_input_dir(run_dir, flag="RUN", what="run directory")
    run = Run.open(run_dir)
    target = out or run.path / "redteam_export.jsonl"
    check_output_file(target, flag="--out")
    _json(export_run(run, target, heldout_fraction))
