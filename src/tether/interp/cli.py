"""``tether interp``: refusal direction, causal tracing and activation patching.

stdout is one JSON object per command (the run directory and the headline numbers); messages and
progress go to stderr. Every input is checked before a model loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tether.plain import out

app = typer.Typer(
    help="Interpretability: refusal direction (ablate/add, drift across checkpoints), causal tracing, "
    "activation patching.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Config YAML (see `tether config show`).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
]


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(message, highlight=False, markup=False)


def _open_run(out_dir: Path | None, job: str, record: dict, seed: int):
    from tether.errors import ConfigError
    from tether.inputs import check_output_dir
    from tether.runs import DEFAULT_RUNS_ROOT, Run, read_manifest

    if out_dir is not None:
        check_output_dir(out_dir, flag="--out")
        manifest = out_dir / "manifest.json"
        if manifest.exists():
            previous = read_manifest(manifest)
            if previous.get("job") != job:
                raise ConfigError(
                    f"{out_dir} is the run directory of a '{previous.get('job')}' job, not {job}",
                    where="--out",
                    hint="write elsewhere, e.g. --out runs/interp-2",
                )
            models = (previous.get("config") or {}).get("models")
            if models is not None and models != record["models"]:
                raise ConfigError(
                    f"{out_dir} holds a run of {models}, not of {record['models']}",
                    where="--out",
                    hint="resume with the same models, or pass another --out",
                )
    name, root = (out_dir.name, out_dir.parent) if out_dir is not None else (None, DEFAULT_RUNS_ROOT)
    return Run.create(name, root=root, job=job, config=record, seed=seed)


def _finish(run, fn):
    from tether.runs import recording_outcome

    _say(f"run directory: {run.path}")
    with recording_outcome(run):
        summary = fn()
    run.finish("complete")
    out(json.dumps({"run": str(run.path), **summary}, indent=2, default=str))


@app.command("refusal-direction")
def refusal_direction_command(
    models: Annotated[
        list[str], typer.Argument(help="Model specs: a base model and its checkpoints (adapters are merged).")
    ],
    config: ConfigOption = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Run directory (default runs/interp-direction-<time>); resumes."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """A refusal direction per model (difference of means at the post-instruction positions, layer and
    position chosen on validation prompts); on test prompts: refusal with it ablated and added, a
    random control, KL on harmless prompts, capability change; drift of the direction across models.
    Writes directions (safetensors), drift.png, interp.json and interp.html."""
    from tether.config import load_config
    from tether.interp.config import RefusalDirectionConfig, check_direction_config
    from tether.interp.refusal import model_keys, run_refusal_direction
    from tether.models.spec import check_spec

    cfg = load_config(RefusalDirectionConfig, config, set_ or [], check=check_direction_config)
    for i, spec in enumerate(models):
        check_spec(spec, where=f"MODEL {i + 1}")
    record = {**cfg.model_dump(mode="json"), "models": dict(zip(model_keys(models), models, strict=True))}
    run = _open_run(out_dir, "interp-direction", record, cfg.seed)

    def go() -> dict:
        summaries = run_refusal_direction(cfg, models, run, say=_say)
        return {
            "models": record["models"],
            **{k: v for k, v in summaries.items() if k.startswith(("select/", "evaluate/"))},
            "drift": summaries.get("drift"),
            "report": str(run.path / "interp.html"),
        }

    _finish(run, go)


@app.command("patch")
def patch_command(
    models: Annotated[
        list[str], typer.Argument(help="Model specs: a base model and its checkpoints (adapters are merged).")
    ],
    config: ConfigOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/interp-patch-<time>); resumes.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Activation patching between harmful and harmless runs: the residual stream entering each layer
    at each post-instruction position copied from one run of a (harmful, harmless) pair into the
    other; the refusal score normalised 0 (harmless run) to 1 (harmful run), per model (patch.json,
    patch.png, interp.html)."""
    from tether.config import load_config
    from tether.interp.config import PatchConfig, check_patch_config
    from tether.interp.patch import run_patch
    from tether.interp.refusal import model_keys
    from tether.models.spec import check_spec

    cfg = load_config(PatchConfig, config, set_ or [], check=check_patch_config)
    for i, spec in enumerate(models):
        check_spec(spec, where=f"MODEL {i + 1}")
    record = {**cfg.model_dump(mode="json"), "models": dict(zip(model_keys(models), models, strict=True))}
    run = _open_run(out_dir, "interp-patch", record, cfg.seed)

    def go() -> dict:
        summaries = run_patch(cfg, models, run, say=_say)
        return {
            "models": record["models"],
            **{k: v for k, v in summaries.items() if k.startswith("patch/")},
            "report": str(run.path / "interp.html"),
        }

    _finish(run, go)


@app.command("reward")
def reward_command(
    run_dir: Annotated[
        Path,
        typer.Argument(help="An RLHF run directory (reward_model/, heldout_docs.jsonl, compare/summaries/)."),
    ],
    config: ConfigOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/interp-reward-<time>).")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Reward-model attribution: Spearman correlations (bootstrap CIs) of the reward with summary length,
    copied bigrams and truncation over the held-out summaries; gradient x input token attributions for
    the highest- and lowest-reward summaries (reward_attribution.json, interp.html)."""
    from tether.config import load_config
    from tether.interp.config import RewardAttributionConfig
    from tether.interp.reward import read_rlhf_run, run_reward_attribution

    cfg = load_config(RewardAttributionConfig, config, set_ or [])
    read_rlhf_run(run_dir)  # every input checked before the model loads
    record = {**cfg.model_dump(mode="json"), "models": {"reward_model": str(run_dir / "reward_model")}}
    run = _open_run(out_dir, "interp-reward", record, cfg.seed)

    def go() -> dict:
        summary = run_reward_attribution(run_dir, cfg, run, say=_say)
        return {**summary, "report": str(run.path / "interp.html")}

    _finish(run, go)


def shipped_facts() -> Path:
    """The factual prompts shipped with Tether (see src/tether/assets/interp/FACTS.md)."""
    from importlib import resources

    return Path(str(resources.files("tether").joinpath("assets", "interp", "facts.jsonl")))


@app.command("trace")
def trace_command(
    model: Annotated[str, typer.Argument(help="Model spec (default, a directory, an adapter, ...).")],
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Facts JSONL: {id, prompt, subject, answer} (default: the shipped set the default model answers).",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Trace the first N facts only.")] = None,
    config: ConfigOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/interp-trace-<time>); resumes.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """ROME-style causal tracing: corrupt the subject's embeddings, restore one clean hidden state at a
    time (residual; MLP and attention over a window of layers); heat maps of the restored probability
    of the answer per layer and token group, averaged over the prompts (trace.png, trace.json,
    interp.html)."""
    from tether.config import load_config
    from tether.interp.config import TraceConfig
    from tether.interp.refusal import load_merged
    from tether.interp.trace import read_facts, run_trace
    from tether.models.spec import check_spec

    cfg = load_config(TraceConfig, config, set_ or [])
    facts = read_facts(prompts or shipped_facts())[:limit]
    check_spec(model, where="MODEL")
    record = {**cfg.model_dump(mode="json"), "models": {"m0": model}, "prompts": str(prompts or "shipped")}
    run = _open_run(out_dir, "interp-trace", record, cfg.seed)

    def go() -> dict:
        _say(f"loading {model}")
        engine = load_merged(model, cfg.engine, run.tracer)
        return {**run_trace(engine, facts, cfg, run, say=_say), "report": str(run.path / "interp.html")}

    _finish(run, go)


__all__ = ["app"]
