"""The ``tether`` command line. Each area is a sub-app; every command's docstring is its help."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from tether.errors import ConfigError, DataError, Interrupted, TetherError
from tether.inputs import UTF8_HINT, check_output_dir, check_output_file, os_reason
from tether.logs import detach_run_log, quiet_library_progress, setup_cli_logging
from tether.plain import out, plain_table

quiet_library_progress()  # before any library imports tqdm (the areas below import torch and TRL)

# Typer 0.2x ships its own copy of click (no click dependency); older typer uses click itself.
_click_exceptions = getattr(getattr(typer, "_click", None), "exceptions", None)
if _click_exceptions is None:  # pragma: no cover - older typer
    import click.exceptions as _click_exceptions
UsageError = _click_exceptions.UsageError

err_console = Console(stderr=True)
EXIT_USAGE = 1
_DEBUG = {"on": False}
_DEBUG_HINT = "`tether --debug …` shows where it happened"


def _user_error(exc: BaseException) -> TetherError | None:
    """The error boundary's safety net: an exception that comes from the user's input (a file, a
    database, a value) as a TetherError. Inputs are checked where they are read, with the file and
    line; this catches what slips past. None: a bug in Tether, which keeps its traceback."""
    if isinstance(exc, UnicodeDecodeError):
        return DataError(
            f"an input is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint=f"{UTF8_HINT}; {_DEBUG_HINT}",
        )
    if isinstance(exc, OSError) and exc.errno != errno.EPIPE:
        names = [str(n) for n in (exc.filename, exc.filename2) if n]
        return DataError(
            os_reason(exc), where=" -> ".join(names) or None, hint=f"check the path; {_DEBUG_HINT}"
        )
    if isinstance(exc, sqlite3.Error):
        return DataError(
            f"database error: {exc}", hint=f"check that --db or --cache names the right file; {_DEBUG_HINT}"
        )
    if isinstance(exc, json.JSONDecodeError):
        return DataError(f"not valid JSON ({exc.msg} at line {exc.lineno})", hint=_DEBUG_HINT)
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" for e in exc.errors())
        return ConfigError(f"invalid {exc.title}: {problems}", hint=_DEBUG_HINT)
    if isinstance(exc, yaml.YAMLError):
        return ConfigError(f"not valid YAML: {exc}", hint=_DEBUG_HINT)
    return None


def _fail(exc: TetherError) -> NoReturn:
    if _DEBUG["on"]:
        traceback.print_exc()
    prefix = "" if isinstance(exc, Interrupted) else "error: "
    sys.stderr.write(prefix + exc.render() + "\n")
    sys.stderr.flush()
    raise typer.Exit(getattr(exc, "exit_code", EXIT_USAGE))


def _usage(exc: UsageError) -> NoReturn:
    """A click usage error (bad flag, missing argument, value out of range) as one line; exit 1,
    never click's 2, which the gate's exit codes reserve for an incomplete evaluation."""
    if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
        command = exc.ctx.command_path if exc.ctx is not None else "tether"
        message = exc.format_message().replace("Value error, ", "")
        sys.stderr.write(f"error: {message}\n  hint: see `{command} --help`\n")
    raise typer.Exit(EXIT_USAGE)


class _ErrorHandlingGroup(TyperGroup):
    """The CLI's one error boundary. A TetherError raised anywhere below becomes a short message
    and its exit code; so does an OSError, UnicodeDecodeError, sqlite3, JSON, YAML or pydantic error
    (see ``_user_error``); a usage error exits 1; Ctrl-C and SIGTERM exit 130 saying a rerun resumes.
    ``--debug`` adds the traceback. Anything else is a bug in Tether and keeps its traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            _usage(exc)

    def invoke(self, ctx):
        from tether.runs import StageInterrupted

        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _usage(exc)
        except TetherError as exc:
            _fail(exc)
        except (KeyboardInterrupt, StageInterrupted):
            _fail(Interrupted("interrupted: finished records are kept; rerun the same command to resume"))
        except Exception as exc:
            converted = _user_error(exc)
            if converted is None:
                raise
            _fail(converted)
        finally:
            detach_run_log()


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
    from tether.frontier.cli import frontier_command
    from tether.interp.cli import app as interp_app
    from tether.redteam.cli import app as redteam_app
    from tether.rlhf.cli import app as rlhf_app
    from tether.serve.cli import serve_command
    from tether.train.cli import app as train_app

    app.add_typer(
        cai_app,
        name="cai",
        help="Constitutional AI: critique, revision, SFT and RLAIF/DPO rounds, each audited.",
    )
    app.add_typer(
        rlhf_app, name="rlhf", help="RLHF for summarization: candidates, AI labels, reward model, PPO, DPO."
    )
    app.add_typer(label_app, name="label", help="Collect human preference labels in a browser (RLHF).")
    app.add_typer(
        redteam_app,
        name="redteam",
        help="Red teaming: adaptive attacks on held-out goals, ASR vs query budget, found attacks exported.",
    )
    app.add_typer(
        interp_app,
        name="interp",
        help="Interpretability: refusal direction and its drift across checkpoints, causal tracing, patching.",
    )
    app.add_typer(
        train_app,
        name="train",
        help="Train one adapter (SFT, DPO) on a JSONL file; runs data-parallel under accelerate launch.",
    )
    app.command(
        "audit", help="Audit safety and capability of models/checkpoints; writes report.html and report.json."
    )(audit_command)
    app.command(
        "frontier",
        help="Mitigation candidates between BASE and ALIGNED, audited; the safety-capability frontier.",
    )(frontier_command)
    app.command("gate", help="Check an audit report.json against thresholds; exit code for CI pipelines.")(
        gate_command
    )
    app.command(
        "serve", help="Serve a model over an OpenAI-compatible API (completions with logprobs, chat)."
    )(serve_command)


_mount_areas()

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
]


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks, and what the libraries log.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            help="Also send every span over OTLP/HTTP to this collector (e.g. a local Phoenix or MLflow, "
            "http://localhost:6006); spans always go to the run's traces.otlp.jsonl.",
        ),
    ] = None,
) -> None:
    _DEBUG["on"] = debug or bool(os.environ.get("TETHER_DEBUG"))
    if otlp_endpoint:
        if not otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"'{otlp_endpoint}' is not an http(s) URL", where="--otlp-endpoint")
        os.environ["TETHER_OTLP_ENDPOINT"] = otlp_endpoint
    if quiet:
        os.environ["TETHER_NO_PROGRESS"] = "1"
    setup_cli_logging(debug=_DEBUG["on"])


def _engine_config(overrides: list[str] | None):
    from tether.config import EngineConfig, load_config

    stripped = [o.removeprefix("engine.") for o in overrides or []]
    return load_config(EngineConfig, None, stripped)


def _check_model(spec: str, where: str = "MODEL") -> None:
    from tether.models.spec import check_spec

    check_spec(spec, where=where)


_plain_table = plain_table
_out = out


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- models


@models_app.command("show")
def models_show(
    spec: Annotated[
        str, typer.Argument(help="'default', an HF dir or id, a .gguf file, or an adapter dir.")
    ] = "default",
    set_: SetOption = None,
) -> None:
    """Load a model and print its size, dtype, context length, chat template and cache path.

    A GGUF model not yet in the cache is converted first (once; it says so before it starts)."""
    import time

    from tether.models import cache_root, load
    from tether.models.spec import conversion_notice

    config = _engine_config(set_)
    _check_model(spec, "SPEC")
    notice = conversion_notice(spec)
    if notice:
        _say(notice)
    began = time.perf_counter()
    loaded = load(spec, device=config.device, dtype=config.dtype)
    seconds = time.perf_counter() - began
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
    width = max(len(key) for key, _ in rows)
    _out("\n".join(f"{key.ljust(width)}  {value}" for key, value in rows))


# ----------------------------------------------------------------------------------------- generate / score


class OnError(StrEnum):
    stop = "stop"
    skip = "skip"


_SKIP_HINT = "fix the line, or pass --on-error skip to skip bad lines"
_SAMPLING_FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "n": "-n",
    "seed": "--seed",
    "stop": "--stop",
}


def _sampling_params(**values):
    """SamplingParams from the flags; every bad value is named by its flag, all at once."""
    from tether.engine import SamplingParams

    try:
        return SamplingParams(**values)
    except ValidationError as exc:
        problems = [
            f"{_SAMPLING_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}"
            for e in exc.errors()
            if e["loc"]
        ]
        raise ConfigError("; ".join(problems), hint="see `tether generate --help`") from None


def _chunk_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``: fixed by the seed and the batch's place in the plan, so a
    resumed run samples its remaining batches exactly as an uninterrupted one would."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:4], "big")


def _generate_batches(engine, items, params, batch_size: int, *, skip: set[str], write) -> None:
    """Generate in a fixed batch plan (longest prompts first, ``batch_size`` sequences a batch),
    calling ``write(completions)`` after each batch; prompts whose ids are in ``skip`` are done."""
    from tether.progress import progress_bar

    per_batch = max(1, batch_size // params.n)
    order = sorted(range(len(items)), key=lambda i: -len(engine.render(items[i])))
    plan = [[items[i] for i in order[s : s + per_batch]] for s in range(0, len(order), per_batch)]
    with progress_bar("generate", total=len(items)) as bar:
        bar.advance(sum(1 for p in items if p.id in skip))
        for index, batch in enumerate(plan):
            todo = [p for p in batch if p.id not in skip]
            if not todo:
                continue
            chunk_params = params.model_copy(update={"seed": _chunk_seed(params.seed, index)})
            write(engine.generate(todo, chunk_params, stage="cli", progress=False))
            bar.advance(len(todo))


def _resume_from(partial: Path, key: str, n: int):
    """Completions an interrupted run of the same command kept in ``partial`` (its first line
    records the command's key), by (prompt id, sample); an empty dict if none or another command's."""
    from tether.data import read_completed
    from tether.engine import Completion

    if not partial.exists():
        return {}
    try:
        rows = read_completed(partial)
    except DataError:
        rows = []
    if not rows or rows[0].get("tether_partial") != key:
        _say(f"{partial} is from another command or damaged; starting over")
        partial.unlink()
        return {}
    kept = {}
    for row in rows[1:]:
        c = Completion.model_validate(row)
        kept[(c.prompt_id, c.sample_index)] = c
    return kept


def _generate_to_file(engine, items, params, batch_size: int, out: Path, key: str) -> list:
    """Append each batch's completions to OUT.partial; on Ctrl-C keep it and say how to resume; a
    rerun skips the prompts it holds. When all are done, OUT is written atomically in input order."""
    from tether.data import JsonlAppender, write_jsonl
    from tether.runs import StageInterrupted

    partial = out.with_name(out.name + ".partial")
    kept = _resume_from(partial, key, params.n)
    done = {pid for pid, _ in kept if all((pid, k) in kept for k in range(params.n))}
    if done:
        _say(f"resuming: {len(done)} of {len(items)} prompts already done in {partial}")
    with JsonlAppender(partial) as sink:
        if not kept:
            sink.write({"tether_partial": key, "out": out.name})

        def write(completions) -> None:
            for c in completions:
                sink.write(c)
                kept[(c.prompt_id, c.sample_index)] = c

        try:
            _generate_batches(engine, items, params, batch_size, skip=done, write=write)
        except (KeyboardInterrupt, StageInterrupted):
            finished = len({pid for pid, _ in kept})
            raise Interrupted(
                f"interrupted after {finished} of {len(items)} prompts; rerun the same command to resume "
                f"(finished completions are kept in {partial})"
            ) from None
    completions = [kept[(p.id, k)] for p in items for k in range(params.n)]
    write_jsonl(out, completions)
    partial.unlink()
    return completions


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
        Path | None,
        typer.Option("--out", "-o", help="Where to write completions (JSONL); an interrupted run resumes."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sample.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1].")] = 1.0,
    n: Annotated[int, typer.Option("-n", help="Samples per prompt.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Feed prompts as plain text, without the chat template.")
    ] = False,
    on_error: Annotated[
        OnError, typer.Option(help="Bad JSONL line: stop, or skip it with a warning.")
    ] = OnError.stop,
    set_: SetOption = None,
) -> None:
    """Generate completions for one prompt or a JSONL file of prompts.

    With --out, completions are appended to OUT.partial batch by batch; after Ctrl-C the same
    command resumes with the prompts not yet done, and OUT is written (atomically) at the end."""
    from tether.data import read_jsonl
    from tether.engine import Engine, Prompt

    if (prompt is None) == (prompts is None):
        raise ConfigError("give exactly one of --prompt TEXT or --prompts FILE.jsonl")
    if prompts is not None and out is None:
        raise ConfigError("--prompts needs --out FILE.jsonl for the completions", where="--out")
    if out is not None:
        check_output_file(out, flag="--out", inputs={"--prompts": prompts})
    if any(not s for s in stop or []):
        raise ConfigError(
            "an empty stop string would end every completion before it starts",
            where="--stop",
            hint="drop it, or pass the text that should end a completion",
        )
    params = _sampling_params(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed, stop=stop or []
    )
    if prompt is not None:
        if not prompt.strip():
            raise ConfigError("the prompt is empty", where="--prompt")
        items = [Prompt(id="prompt", text=prompt, chat=not raw)]
    else:
        items = [
            p if not raw else p.model_copy(update={"chat": False})
            for p in read_jsonl(prompts, Prompt, on_error=on_error.value, unique="id", hint=_SKIP_HINT)
        ]
        empty = [p.id for p in items if not p.text.strip()]
        if empty:
            raise DataError(
                f"{len(empty)} prompt(s) have empty text (ids: {', '.join(empty[:5])})", where=str(prompts)
            )
    config = _engine_config(set_)
    _check_model(model)
    engine = Engine.from_spec(model, config)
    if out is None:
        completions: list = []
        _generate_batches(engine, items, params, config.batch_size, skip=set(), write=completions.extend)
        for c in completions:
            _out(c.text)
        return
    key = hashlib.sha256(
        json.dumps(
            [model, params.model_dump(mode="json"), [p.model_dump(mode="json") for p in items]],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    completions = _generate_to_file(engine, items, params, config.batch_size, out, key)
    total = sum(c.completion_tokens for c in completions)
    _say(f"wrote {len(completions)} completions ({total} tokens) to {out}")


@app.command()
def score(
    model: Annotated[str, typer.Argument(help="Model spec.")],
    items: Annotated[Path, typer.Option("--items", help="JSONL of {id, context, continuations[, answer]}.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-item log-likelihoods (JSONL).")
    ] = None,
    on_error: Annotated[
        OnError, typer.Option(help="Bad JSONL line: stop, or skip it with a warning.")
    ] = OnError.stop,
    set_: SetOption = None,
) -> None:
    """Score continuations by log-likelihood; prints accuracy when items carry an 'answer' index.

    Without --out and without answers, prints one JSON object per item (JSON Lines) on stdout."""
    from pydantic import ConfigDict, ValidationInfo, field_validator

    from tether.data import read_jsonl, write_jsonl
    from tether.engine import Engine, ScoreRequest

    class _Item(ScoreRequest):
        model_config = ConfigDict(frozen=True, extra="allow")
        answer: int | None = None

        @field_validator("continuations")
        @classmethod
        def _not_empty(cls, continuations: list[str]) -> list[str]:
            if any(not c for c in continuations):
                raise ValueError("a continuation is empty; each must be some text to score")
            return continuations

        @field_validator("answer")
        @classmethod
        def _an_index(cls, answer: int | None, info: ValidationInfo) -> int | None:
            count = len(info.data.get("continuations") or [])
            if answer is not None and count and not 0 <= answer < count:
                raise ValueError(
                    f"{answer} is not the index of one of the {count} continuations (0 to {count - 1})"
                )
            return answer

    if out is not None:
        check_output_file(out, flag="--out", inputs={"--items": items})
    records = read_jsonl(items, _Item, on_error=on_error.value, unique="id", hint=_SKIP_HINT)
    config = _engine_config(set_)
    _check_model(model)
    engine = Engine.from_spec(model, config)
    results = engine.score(records, stage="cli")
    labelled = [(r, s) for r, s in zip(records, results, strict=True) if r.answer is not None]
    if out is not None:
        write_jsonl(out, results)
        _say(f"wrote {len(results)} scores to {out}")
    if labelled:
        acc = sum(s.best == r.answer for r, s in labelled) / len(labelled)
        acc_norm = sum(s.best_normalized == r.answer for r, s in labelled) / len(labelled)
        _out(f"items: {len(labelled)}  acc: {acc:.4f}  acc_norm: {acc_norm:.4f}")
    elif out is None:
        sys.stdout.write("".join(json.dumps(s.model_dump(), ensure_ascii=False) + "\n" for s in results))
        sys.stdout.flush()


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
    from tether.demo import DemoConfig, check_demo_config, demo_table, run_demo

    demo_config = load_config(DemoConfig, config, set_, check=check_demo_config)
    check_output_dir(runs_root, flag="--runs")
    run = run_demo(demo_config, runs_root, name, say=_say)
    _out(demo_table(run.manifest.get("summary", {})))
    _say(f"run directory: {run.path}  (see `tether runs show {run.name}`)")


# ----------------------------------------------------------------------------------------- runs


@runs_app.command("list")
def runs_list(
    root: Annotated[Path | None, typer.Option(help="Runs directory (default: runs).")] = None,
) -> None:
    """List run directories with their job, status and age (a damaged one is named on stderr)."""
    from tether.inputs import check_input_dir
    from tether.runs import DEFAULT_RUNS_ROOT, scan_runs

    if root is None and not DEFAULT_RUNS_ROOT.exists():
        _say(f"no runs yet: there is no {DEFAULT_RUNS_ROOT}/ folder here (pass --root to look elsewhere)")
        return
    root = root or DEFAULT_RUNS_ROOT
    check_input_dir(
        root, flag="--root", what="runs directory", hint="pass the folder that holds run directories"
    )
    runs, broken = scan_runs(root)
    rows = []
    for run in runs:
        m = run.manifest
        stages = m.get("stages") if isinstance(m.get("stages"), dict) else {}
        done = sum(1 for s in stages.values() if isinstance(s, dict) and s.get("status") == "complete")
        rows.append(
            (
                run.name,
                str(m.get("job", "")),
                str(m.get("status", "")),
                str(m.get("created", "")),
                f"{done}/{len(stages)}",
            )
        )
    if rows:
        _out(_plain_table(("name", "job", "status", "created", "stages"), rows))
    else:
        _say(f"no runs in {root}")
    for exc in broken:
        _say(f"warning: skipped {exc.render()}")


@runs_app.command("show")
def runs_show(
    name: Annotated[str, typer.Argument(help="Run name or path.")],
    root: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs"),
) -> None:
    """Show a run's manifest: config, versions, stages and timings, artifacts."""
    from tether.runs import Run

    run = Run.open(name, root)
    m = run.manifest
    lines = [
        f"{run.name}  job={m.get('job')}  status={m.get('status')}  path={run.path}",
        f"created {m.get('created')}  ended {m.get('ended', '-')}  seed {m.get('seed')}  git {m.get('git_sha') or '-'}",
    ]
    stages = m.get("stages") if isinstance(m.get("stages"), dict) else {}
    rows = []
    for stage, entry in stages.items():
        entry = entry if isinstance(entry, dict) else {}
        seconds = entry.get("seconds", 0)
        rows.append((
            stage,
            str(entry.get("status", "")),
            f"{seconds:.1f}" if isinstance(seconds, int | float) else str(seconds),
            str(entry.get("started", "")),
        ))  # fmt: skip
    if rows:
        lines.append(_plain_table(("stage", "status", "seconds", "started"), rows, numeric={2}))
    files = sorted(p.relative_to(run.path) for p in run.path.rglob("*") if p.is_file())
    lines.append("artifacts: " + ", ".join(str(f) for f in files[:40]) + (" ..." if len(files) > 40 else ""))
    if m.get("summary"):
        lines.append(json.dumps(m["summary"], indent=2, ensure_ascii=False, default=str))
    _out("\n".join(lines))


@runs_app.command("trace")
def runs_trace(
    name: Annotated[str, typer.Argument(help="Run name or path.")],
    root: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs"),
    items: Annotated[
        bool, typer.Option("--items", help="List every item span instead of folding them.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Check every span against Tether's span schema; exit 1 on a problem."),
    ] = False,
) -> None:
    """Print a run's span tree (traces.otlp.jsonl) with durations and token totals."""
    from tether.runs import Run
    from tether.tracing import SPANS_FILENAME, check_spans, format_tree, read_spans

    run = Run.open(name, root)
    path = run.path / SPANS_FILENAME
    if not path.is_file():
        raise TetherError(
            f"the run has no {SPANS_FILENAME}",
            where=str(run.path),
            hint="runs made before tracing have traces.jsonl only",
        )
    spans = read_spans(path)
    if check:
        problems = check_spans(spans)
        _out("\n".join(problems) if problems else f"ok: {len(spans)} spans pass the span schema")
        if problems:
            raise typer.Exit(1)
        return
    _out(format_tree(spans, items=items))


# ----------------------------------------------------------------------------------------- config


# Config classes by the name users type, with the check of what they reference (models, files,
# task names); imported lazily so `tether --help` stays fast.
CONFIG_CLASSES = {
    "engine": ("tether.config", "EngineConfig", None),
    "demo": ("tether.demo", "DemoConfig", "check_demo_config"),
    "cai": ("tether.cai.pipeline", "CAIConfig", "check_cai_config"),
    "rlhf": ("tether.rlhf.pipeline", "RLHFConfig", "check_rlhf_config"),
    "redteam": ("tether.redteam.pipeline", "RedteamConfig", "check_redteam_config"),
    "gate": ("tether.audit.gate", "GateConfig", None),
    "frontier": ("tether.frontier.config", "FrontierConfig", "check_frontier_config"),
    "interp": ("tether.interp.config", "RefusalDirectionConfig", "check_direction_config"),
    "trace": ("tether.interp.config", "TraceConfig", None),
    "patch": ("tether.interp.config", "PatchConfig", None),
    "reward_attribution": ("tether.interp.config", "RewardAttributionConfig", None),
}


def _config_class(name: str, flag: str = "KIND"):
    import importlib

    from tether.inputs import did_you_mean

    key = name.lower().removesuffix("config")
    if key not in CONFIG_CLASSES:
        close = did_you_mean(key, CONFIG_CLASSES)
        raise ConfigError(
            f"unknown config kind '{name}'", where=flag, hint=close or f"one of: {', '.join(CONFIG_CLASSES)}"
        )
    module, attr, check = CONFIG_CLASSES[key]
    loaded = importlib.import_module(module)
    return getattr(loaded, attr), getattr(loaded, check) if check else None


@config_app.command("show")
def config_show(
    name: Annotated[str, typer.Argument(help=f"Config kind: {', '.join(CONFIG_CLASSES)}.")] = "engine",
) -> None:
    """Print every field of a config with its type, default and meaning."""
    from tether.config import describe_fields

    rows = [tuple(row) for row in describe_fields(_config_class(name)[0])]
    out(plain_table(("field", "type", "default", "description"), rows))


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML config file.")],
    kind: Annotated[
        str | None, typer.Option(help="Config kind; default: guessed from the file name.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Check a config file before a long run: every unknown key and bad value, with file:line, and
    every model, file, task and data source it names (without loading any model)."""
    from tether.config import load_config

    if kind is None:
        kind = next((k for k in CONFIG_CLASSES if k in path.stem.lower()), None)
        if kind is None and "tax" in path.stem.lower():
            kind = "cai"  # configs/tax.yaml is a CAI run (issue #18's run with a real tax)
        if kind is None:
            raise ConfigError(
                f"cannot tell the config kind from '{path.name}'",
                where="--kind",
                hint=f"pass --kind ({', '.join(CONFIG_CLASSES)})",
            )
    model, check = _config_class(kind, "--kind")
    if model.__name__ == "CAIConfig":  # a CAI config may name its constitution beside itself
        check_cai = check
        check = lambda config: check_cai(config, path)  # noqa: E731
    load_config(model, path, set_, check=check)
    _out(f"ok: {path} is a valid {kind} config")


def main() -> None:
    from tether.runs import StageInterrupted

    try:
        app()
    except (KeyboardInterrupt, StageInterrupted):
        sys.stderr.write("interrupted: finished records are kept; rerun the same command to resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
