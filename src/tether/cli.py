"""The ``tether`` command line. Each area is a sub-app; every command's docstring is its help."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from tether.errors import TetherError

console = Console()
err_console = Console(stderr=True)


class _ErrorHandlingGroup(TyperGroup):
    """Turns a TetherError raised anywhere below into a short message and an exit code; the
    traceback is shown only with ``--debug``. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TetherError as exc:
            if os.environ.get("TETHER_DEBUG"):
                traceback.print_exc()
            err_console.print(f"[bold red]error:[/] {escape(exc.render())}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None


app = typer.Typer(
    cls=_ErrorHandlingGroup,
    help="Tether: align open-weight models (RLHF, Constitutional AI) and audit what alignment cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Inspect and prepare models.", no_args_is_help=True)
runs_app = typer.Typer(help="List and inspect run directories.", no_args_is_help=True)
config_app = typer.Typer(help="Show and validate configs.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(config_app, name="config")


def _mount_areas() -> None:
    """Each pipeline area owns its sub-app; importing them is cheap (heavy imports live inside commands)."""
    from tether.audit.cli import audit_command
    from tether.audit.cli_gate import gate_command
    from tether.cai.cli import app as cai_app
    from tether.feedback.cli import app as label_app
    from tether.rlhf.cli import app as rlhf_app

    app.add_typer(
        cai_app,
        name="cai",
        help="Constitutional AI: critique, revision, SFT and RLAIF/DPO rounds, each audited.",
    )
    app.add_typer(
        rlhf_app, name="rlhf", help="RLHF for summarization: candidates, AI labels, reward model, PPO, DPO."
    )
    app.add_typer(label_app, name="label", help="Collect human preference labels in a browser (RLHF).")
    app.command(
        "audit", help="Audit safety and capability of models/checkpoints; writes report.html and report.json."
    )(audit_command)
    app.command("gate", help="Check an audit report.json against thresholds; exit code for CI pipelines.")(
        gate_command
    )


_mount_areas()

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    if debug:
        os.environ["TETHER_DEBUG"] = "1"
    if quiet:
        os.environ["TETHER_NO_PROGRESS"] = "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")
    if not debug:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _engine_config(overrides: list[str] | None):
    from tether.config import EngineConfig, load_config

    stripped = [o.removeprefix("engine.") for o in overrides or []]
    return load_config(EngineConfig, None, stripped)


# ----------------------------------------------------------------------------------------- models


@models_app.command("show")
def models_show(
    spec: Annotated[
        str, typer.Argument(help="'default', an HF dir or id, a .gguf file, or an adapter dir.")
    ] = "default",
    set_: SetOption = None,
) -> None:
    """Load a model and print its size, dtype, context length, chat template and cache path."""
    import time

    from tether.models import cache_root, load

    config = _engine_config(set_)
    began = time.perf_counter()
    loaded = load(spec, device=config.device, dtype=config.dtype)
    seconds = time.perf_counter() - began
    table = Table(show_header=False, box=None)
    rows = [
        ("name", loaded.name),
        ("spec", loaded.spec),
        ("parameters", f"{loaded.num_parameters:,} ({loaded.num_parameters / 1e6:.1f}M)"),
        ("dtype", str(loaded.dtype).removeprefix("torch.")),
        ("device", str(loaded.device)),
        ("context length", f"{loaded.context_length:,} tokens"),
        ("chat template", "yes" if loaded.has_chat_template else "no"),
        ("weights", str(loaded.weights_path or "HF cache")),
        ("adapter", str(loaded.adapter_path or "-")),
        ("fingerprint", loaded.fingerprint),
        ("tether cache", str(cache_root())),
        ("load time", f"{seconds:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)


# ----------------------------------------------------------------------------------------- generate / score


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="Model spec ('default', dir, .gguf, adapter dir, HF id).")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="One prompt, printed to stdout.")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="JSONL of {id, text[, system]} records.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write completions (JSONL).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sample.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    n: Annotated[int, typer.Option("-n", help="Samples per prompt.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Feed prompts as plain text, without the chat template.")
    ] = False,
    on_error: Annotated[
        str, typer.Option(help="Bad JSONL line: 'stop' or 'skip' (with a warning).")
    ] = "stop",
    set_: SetOption = None,
) -> None:
    """Generate completions for one prompt or a JSONL file of prompts."""
    from tether.data import read_jsonl, write_jsonl
    from tether.engine import Engine, Prompt, SamplingParams

    if (prompt is None) == (prompts is None):
        raise TetherError("give exactly one of --prompt TEXT or --prompts FILE.jsonl")
    if prompts is not None and out is None:
        raise TetherError("--prompts needs --out FILE.jsonl for the completions")
    if on_error not in ("stop", "skip"):
        raise TetherError(f"--on-error must be 'stop' or 'skip', not '{on_error}'")
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed, stop=stop or []
    )
    if prompt is not None:
        if not prompt.strip():
            raise TetherError("--prompt is empty")
        items = [Prompt(id="prompt", text=prompt, chat=not raw)]
    else:
        items = [
            p if not raw else p.model_copy(update={"chat": False})
            for p in read_jsonl(prompts, Prompt, on_error=on_error)
        ]
        empty = [p.id for p in items if not p.text.strip()]
        if empty:
            raise TetherError(
                f"{len(empty)} prompt(s) have empty text (ids: {', '.join(empty[:5])})", where=str(prompts)
            )
    engine = Engine.from_spec(model, _engine_config(set_))
    completions = engine.generate(items, params, stage="cli")
    if out is not None:
        write_jsonl(out, completions)
        total = sum(c.completion_tokens for c in completions)
        err_console.print(f"wrote {len(completions)} completions ({total} tokens) to {out}")
    else:
        for c in completions:
            console.print(c.text, highlight=False, markup=False)


@app.command()
def score(
    model: Annotated[str, typer.Argument(help="Model spec.")],
    items: Annotated[Path, typer.Option("--items", help="JSONL of {id, context, continuations[, answer]}.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-item log-likelihoods (JSONL).")
    ] = None,
    on_error: Annotated[str, typer.Option(help="Bad JSONL line: 'stop' or 'skip'.")] = "stop",
    set_: SetOption = None,
) -> None:
    """Score continuations by log-likelihood; prints accuracy when items carry an 'answer' index."""
    from pydantic import ConfigDict

    from tether.data import read_jsonl, write_jsonl
    from tether.engine import Engine, ScoreRequest

    class _Item(ScoreRequest):
        model_config = ConfigDict(frozen=True, extra="allow")
        answer: int | None = None

    records = read_jsonl(items, _Item, on_error=on_error)
    engine = Engine.from_spec(model, _engine_config(set_))
    results = engine.score(records, stage="cli")
    labelled = [(r, s) for r, s in zip(records, results, strict=True) if r.answer is not None]
    if out is not None:
        write_jsonl(out, results)
        err_console.print(f"wrote {len(results)} scores to {out}")
    if labelled:
        acc = sum(s.best == r.answer for r, s in labelled) / len(labelled)
        acc_norm = sum(s.best_normalized == r.answer for r, s in labelled) / len(labelled)
        console.print(f"items: {len(labelled)}  acc: {acc:.4f}  acc_norm: {acc_norm:.4f}")
    elif out is None:
        for s in results:
            console.print(json.dumps(s.model_dump()))


# ----------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    config: Annotated[Path | None, typer.Argument(help="Optional YAML DemoConfig.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default: demo-<timestamp>); reuse it to resume.")
    ] = None,
    runs_root: Annotated[Path, typer.Option("--runs", help="Where run directories live.")] = Path("runs"),
    set_: SetOption = None,
) -> None:
    """Run the workbench end to end on the default model: answers, MMLU scoring, one CAI round
    audited against the base (paired deltas with CIs), a short RLHF run. Prints the result table."""
    from tether.config import load_config
    from tether.demo import DemoConfig, demo_table, run_demo

    run = run_demo(load_config(DemoConfig, config, set_), runs_root, name, say=_say)
    print(demo_table(run.manifest.get("summary", {})))
    _say(f"run directory: {run.path}  (see `tether runs show {run.name}`)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- runs


@runs_app.command("list")
def runs_list(root: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs")) -> None:
    """List run directories with their job, status and age."""
    from tether.runs import list_runs

    table = Table("name", "job", "status", "created", "stages")
    for run in list_runs(root):
        m = run.manifest
        done = sum(1 for s in m.get("stages", {}).values() if s.get("status") == "complete")
        table.add_row(
            run.name,
            m.get("job", ""),
            m.get("status", ""),
            m.get("created", ""),
            f"{done}/{len(m.get('stages', {}))}",
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    name: Annotated[str, typer.Argument(help="Run name or path.")],
    root: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs"),
) -> None:
    """Show a run's manifest: config, versions, stages and timings, artifacts."""
    from tether.runs import Run

    run = Run.open(name, root)
    m = run.manifest
    console.print(f"[bold]{run.name}[/]  job={m.get('job')}  status={m.get('status')}  path={run.path}")
    console.print(
        f"created {m.get('created')}  ended {m.get('ended', '-')}  seed {m.get('seed')}  git {m.get('git_sha') or '-'}"
    )
    table = Table("stage", "status", "seconds", "started")
    for stage, entry in m.get("stages", {}).items():
        table.add_row(
            stage, entry.get("status", ""), f"{entry.get('seconds', 0):.1f}", entry.get("started", "")
        )
    console.print(table)
    files = sorted(p.relative_to(run.path) for p in run.path.rglob("*") if p.is_file())
    console.print("artifacts: " + ", ".join(str(f) for f in files[:40]) + (" ..." if len(files) > 40 else ""))
    if m.get("summary"):
        console.print_json(data=m["summary"])


# ----------------------------------------------------------------------------------------- config


# Config classes by the name users type; imported lazily so `tether --help` stays fast.
CONFIG_CLASSES = {
    "engine": ("tether.config", "EngineConfig"),
    "demo": ("tether.demo", "DemoConfig"),
    "cai": ("tether.cai.pipeline", "CAIConfig"),
    "rlhf": ("tether.rlhf.pipeline", "RLHFConfig"),
    "gate": ("tether.audit.gate", "GateConfig"),
}


def _config_class(name: str):
    import importlib

    key = name.lower().removesuffix("config")
    if key not in CONFIG_CLASSES:
        raise TetherError(f"unknown config '{name}'", hint=f"one of: {', '.join(CONFIG_CLASSES)}")
    module, attr = CONFIG_CLASSES[key]
    return getattr(importlib.import_module(module), attr)


@config_app.command("show")
def config_show(
    name: Annotated[str, typer.Argument(help=f"Config kind: {', '.join(CONFIG_CLASSES)}.")] = "engine",
) -> None:
    """Print every field of a config with its type, default and meaning."""
    from tether.config import describe_fields

    table = Table("field", "type", "default", "description")
    for row in describe_fields(_config_class(name)):
        table.add_row(*row)
    console.print(table)


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML config file.")],
    kind: Annotated[
        str | None, typer.Option(help="Config kind; default: guessed from the file name.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Check a config file before a long run: every unknown key and bad value, with file:line."""
    from tether.config import load_config

    if kind is None:
        kind = next((k for k in CONFIG_CLASSES if k in path.stem.lower()), None)
        if kind is None:
            raise TetherError(
                f"cannot tell the config kind from '{path.name}'",
                hint=f"pass --kind ({', '.join(CONFIG_CLASSES)})",
            )
    load_config(_config_class(kind), path, set_)
    console.print(f"[green]ok[/]: {path} is a valid {kind} config")


def main() -> None:
    from tether.runs import StageInterrupted

    try:
        app()
    except (KeyboardInterrupt, StageInterrupted):
        err_console.print("interrupted: finished records are kept; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
