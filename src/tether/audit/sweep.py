"""The audit sweep: every model on every task, per-item results cached, one report at the end.

``run_audit`` loads each model once, runs each task on the same sampled items for every model (so
deltas can be paired item by item), and writes ``report.json`` + ``report.html`` with the run's
``manifest.json`` and ``traces.jsonl`` (every model call) beside them in ``out_dir``.

Failure policy: a task that raises marks its remaining items "error" (its summary comes out
incomplete, the CLI exits 2) and the sweep goes on. A model that fails to load is recorded in the
report's settings and its tasks come out incomplete, as long as another model loaded; when no model
loads at all the load error is raised, naming the model.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.audit.analysis import build_report
from tether.audit.cache import NullCache, ResultCache, default_cache_path
from tether.audit.pareto import check_spec
from tether.audit.report import write_report
from tether.audit.schema import AuditReport, DatasetInfo, ModelInfo, ParetoSpec, StageTiming
from tether.config import EngineConfig
from tether.engine.protocol import EngineLike
from tether.errors import ConfigError, DataError, ModelLoadError, TetherError
from tether.evals.registry import Task, resolve_tasks
from tether.evals.results import error_text, make_result
from tether.evals.types import ItemResult
from tether.progress import progress_bar
from tether.runs import Run, Tracer, read_manifest

log = logging.getLogger(__name__)

LoadEngine = Callable[[str, EngineConfig, Tracer], EngineLike]

CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class ModelTarget:
    """One model to audit: its display name in the report and its load spec."""

    name: str
    spec: str


def _natural_key(text: str) -> list[Any]:
    # step-10 before step-100: numbers compare as numbers.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def run_checkpoints(path: Path) -> list[Path]:
    """The checkpoint directories of a run directory (``checkpoints/*/`` holding an adapter or HF
    weights), in natural order; [] when ``path`` is not such a run directory."""
    folder = path / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [
        d
        for d in folder.iterdir()
        if d.is_dir() and ((d / "adapter_config.json").exists() or (d / "config.json").exists())
    ]
    return sorted(found, key=lambda d: _natural_key(d.name))


def _display_name(spec: str) -> str:
    path = Path(spec)
    return path.name if path.exists() else spec


def expand_models(models: Sequence[str], names: Sequence[str] | None = None) -> list[ModelTarget]:
    """Model specs -> targets. A run directory with ``checkpoints/*/`` becomes one target per
    checkpoint, named ``<run name>/<checkpoint>``. ``names`` (one per spec) replace the default
    display names (the spec, or a path's last component)."""
    if not models:
        raise ConfigError("no models to audit", hint="pass at least one model spec, e.g. `default`")
    if names and len(names) != len(models):
        raise ConfigError(
            f"{len(names)} name(s) for {len(models)} model(s)",
            where="--name",
            hint="give one --name per model argument, in the same order",
        )
    targets: list[ModelTarget] = []
    for i, spec in enumerate(models):
        label = names[i] if names else _display_name(spec)
        checkpoints = run_checkpoints(Path(spec))
        if checkpoints:
            targets += [ModelTarget(f"{label}/{c.name}", str(c)) for c in checkpoints]
        else:
            targets.append(ModelTarget(label, spec))
    seen: dict[str, str] = {}
    for t in targets:
        if t.name in seen:
            raise ConfigError(
                f"two models are both called '{t.name}' ({seen[t.name]} and {t.spec})",
                where="models",
                hint="give each model its own display name with --name",
            )
        seen[t.name] = t.spec
    return targets


def _default_load_engine(spec: str, config: EngineConfig, tracer: Tracer) -> EngineLike:
    from tether.engine.pool import load_engine

    return load_engine(spec, config, tracer)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


@dataclass
class TaskRun:
    """What one task produced for one model."""

    results: list[ItemResult]
    n_cached: int
    seconds: float
    error: str | None = None


def run_task(
    engine: EngineLike,
    task: Task,
    items: Sequence[Any],
    *,
    model: str,
    cache: ResultCache | NullCache,
    seed: int = 0,
    progress: bool = True,
) -> TaskRun:
    """One task on one model: cached items are read back, the rest run in batches of
    ``task.batch_items``, each batch cached as soon as it finishes. An exception marks the items not
    yet done "error" and stops the task (the same bug would most likely repeat on every batch)."""
    began = time.perf_counter()
    fingerprint = engine.fingerprint
    version = task.version(seed)
    found = cache.get(fingerprint, task.name, version, [it.id for it in items])
    done = {
        iid: r.model_copy(update={"model": model, "model_fingerprint": fingerprint})
        for iid, r in found.items()
    }
    todo = [it for it in items if it.id not in done]
    error = None
    with progress_bar(f"{model} · {task.name}", total=len(items), enabled=progress) as bar:
        bar.advance(len(done))
        for chunk in _chunks(todo, task.batch_items):
            try:
                out = task.run(engine, list(chunk), seed=seed)
                if [r.item_id for r in out] != [it.id for it in chunk]:
                    raise RuntimeError(
                        f"task '{task.name}' returned results for {len(out)} items in a different order "
                        f"or set than the {len(chunk)} it was given"
                    )
            except Exception as exc:
                error = error_text(exc)
                for it in todo:
                    if it.id not in done:
                        done[it.id] = make_result(
                            engine, task.name, it, status="error", extra={"error": error}
                        ).model_copy(update={"model": model})
                break
            out = _tag_degenerate(task, out)
            cache.put(fingerprint, task.name, version, out)
            for r in out:
                done[r.item_id] = r.model_copy(update={"model": model, "model_fingerprint": fingerprint})
            bar.advance(len(chunk))
    return TaskRun(
        results=[_with_prompt_type(done[it.id], task, it) for it in items],
        n_cached=len(found),
        seconds=time.perf_counter() - began,
        error=error,
    )


def _with_prompt_type(result: ItemResult, task: Task, item: Any) -> ItemResult:
    """The item's prompt type (``Task.prompt_type``) in ``extra``, for the failure analysis. Added
    after the cache, since it depends on the item alone."""
    if task.prompt_type is None:
        return result
    return result.model_copy(update={"extra": {**result.extra, "prompt_type": task.prompt_type(item)}})


# Kinds the sweep looks for in answers no judge read (code, numbers, continuations): only those that
# are broken whatever the task. Truncation and word salad need the task's own judge (code is not prose).
_SWEEP_DEGENERATE_KINDS = ("empty", "echo", "loop")


def _tag_degenerate(task: Task, results: Sequence[ItemResult]) -> list[ItemResult]:
    """Mark scored answers of generation tasks that are degenerate (``extra["degenerate"]`` = kind),
    so every task reports a degenerate rate. Judged tasks set it themselves; scores are untouched."""
    if task.kind != "generate":
        return list(results)
    from tether.judges.degenerate import detect_degenerate

    out = []
    for r in results:
        if r.status == "scored" and "degenerate" not in r.extra and r.output:
            finding = detect_degenerate(r.prompt, r.output)
            kind = finding.kind if finding and finding.kind in _SWEEP_DEGENERATE_KINDS else None
            r = r.model_copy(update={"extra": {**r.extra, "degenerate": kind}})
        out.append(r)
    return out


def _judge_validation(tasks: Sequence[Task]) -> dict[str, Any]:
    """The calibration sheet of every judge the tasks use (``tether.judges.calibration``): each
    variant on the labelled sets it was not built from, with the default marked. The committed sheet
    is read as is; only a default judge changed since it was built is re-validated (and cached)."""
    from tether.evals.tasks.safety import ATTACK_JUDGE

    used = {j for t in tasks for j in t.judges}
    figures: dict[str, Any] = {}
    judged = [target for target in ("refusal", "harmful", ATTACK_JUDGE) if target in used]
    if judged:
        from tether.evals.tasks.safety import _attack_judge
        from tether.judges.calibration import current_sheet
        from tether.judges.degenerate import detect_degenerate
        from tether.judges.harmful import default_harmful_judge
        from tether.judges.refusal import default_refusal_judge

        makers = {
            "refusal": default_refusal_judge,
            "harmful": default_harmful_judge,
            ATTACK_JUDGE: _attack_judge,
        }
        titles = {ATTACK_JUDGE: "attack-success judge (harmful content behind the goal gate)"}
        for target in judged:
            judge = makers[target]()
            name = getattr(judge, "name", type(judge).__name__)
            title = titles.get(target, f"{target} judge")
            sheet_target = "harmful" if target == ATTACK_JUDGE else target
            try:
                # The sheet's default is the variant these tasks use, which for attacks is not the
                # harmful sheet's own default.
                figures[title] = {**current_sheet(sheet_target, judge, name), "default": name}
            except TetherError as exc:
                figures[title] = f"not validated: {exc.message}"
        try:
            figures["degenerate detector"] = current_sheet("degenerate", detect_degenerate, "rules")
        except TetherError as exc:
            figures["degenerate detector"] = f"not validated: {exc.message}"
    if "toxicity" in used:
        figures["toxicity scorer 'alt-profanity-check'"] = (
            "not validated here: a linear offensive-language classifier used as a proxy for the "
            "Perspective API scores RealToxicityPrompts reports"
        )
    return figures


def _datasets(task: Task, n_items: int) -> list[DatasetInfo]:
    from tether.data.sources import SOURCES

    out = []
    for source in task.sources:
        known = SOURCES.get(source)
        out.append(
            DatasetInfo(
                name=f"{source} ({task.name})",
                source_package=known.package if known else "user file",
                license=known.license if known else "as supplied by the user",
                n_items=n_items,
            )
        )
    return out


@dataclass
class _Sweep:
    """What the sweep gathers model by model, for the report."""

    results: list[ItemResult] = field(default_factory=list)
    infos: list[ModelInfo] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    task_errors: dict[str, str] = field(default_factory=dict)
    extra: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    cached_counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _open_run(out_dir: Path, config: dict[str, Any], seed: int) -> Run:
    """The audit's run directory; refuses to write into another job's run directory."""
    manifest = out_dir / "manifest.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; the audit writes a directory", where="--out")
    if manifest.exists():
        job = read_manifest(manifest).get("job")
        if job != "audit":
            raise ConfigError(
                f"{out_dir} is the run directory of a '{job}' job, not an audit",
                where="--out",
                hint="write the audit elsewhere, e.g. --out runs/audit-1 (the run's checkpoints are read, not written)",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    return Run.create(out_dir.name, root=out_dir.parent, job="audit", config=config, seed=seed)


def _timeline(run: Run) -> list[StageTiming]:
    """The audit's stages as its spans recorded them (flushed first: the stages of this invocation
    are still in the exporter's queue). Empty when the run writes no spans."""
    from datetime import UTC, datetime

    from tether.tracing import read_spans, stage_timeline

    if run.tracer.spans_path is None:
        return []
    sink = run.tracer.sink
    if sink is not None:
        sink.flush()
    if not run.tracer.spans_path.exists():
        return []
    try:
        rows = stage_timeline(read_spans(run.tracer.spans_path))
    except DataError as exc:  # the timeline is a view of the spans; a damaged file must not fail the audit
        log.warning("no stage timeline in the report: %s", exc)
        return []
    return [
        StageTiming(
            stage=row["stage"],
            start=datetime.fromtimestamp(row["start_ns"] / 1e9, UTC),
            seconds=row["seconds"],
            calls=row["calls"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
        )
        for row in rows
    ]


def _select(
    task_list: Sequence[Task], sweep: _Sweep, *, limit, full, seed, sizes=None
) -> dict[str, list[Any]]:
    """The same items for every model: sampling depends on the data and the seed only."""
    samples: dict[str, list[Any]] = {}
    for task in task_list:
        try:
            size = (sizes or {}).get(task.name)
            samples[task.name] = task.select(limit=limit, full=full, seed=seed, size=size)
        except TetherError as exc:
            sweep.task_errors[task.name] = exc.render()
            samples[task.name] = []
    return samples


def _audit_model(
    target: ModelTarget,
    engine: EngineLike,
    task_list: Sequence[Task],
    samples: dict[str, list[Any]],
    sweep: _Sweep,
    *,
    run: Run,
    store: ResultCache | NullCache,
    seed: int,
    progress: bool,
) -> None:
    """Every task on one loaded model, one run stage each; results and errors go into ``sweep``."""
    for task in task_list:
        with run.stage(f"{target.name}/{task.name}") as stage:
            done = run_task(
                engine, task, samples[task.name], model=target.name, cache=store, seed=seed, progress=progress
            )
            stage.update(items=len(done.results), cached=done.n_cached, error=done.error)
        key = f"{target.name} / {task.name}"
        sweep.timings[key] = done.seconds
        sweep.cached_counts[key] = done.n_cached
        if done.error:
            sweep.task_errors[key] = done.error
        sweep.results += done.results
        if task.aggregate is None:
            continue
        try:
            numbers = task.aggregate(done.results)
        except Exception as exc:  # a bad aggregate must not cost the whole audit
            sweep.task_errors[f"{key} (extra metrics)"] = error_text(exc)
        else:
            if numbers:
                sweep.extra[(target.name, task.name)] = numbers


def _load(
    target: ModelTarget, load_engine: LoadEngine, config: EngineConfig, run: Run, sweep: _Sweep, alone: bool
):
    """Load one model; a failure is recorded (the others still run) unless it is the only model."""
    began = time.perf_counter()
    try:
        engine = load_engine(target.spec, config, run.tracer)
    except Exception as exc:
        if alone:
            if isinstance(exc, TetherError):
                raise
            raise ModelLoadError(f"could not load model '{target.name}': {exc}", where=target.spec) from exc
        sweep.failed[target.name] = exc.render() if isinstance(exc, TetherError) else error_text(exc)
        sweep.infos.append(ModelInfo(name=target.name, spec=target.spec))
        return None
    sweep.timings[f"load {target.name}"] = time.perf_counter() - began
    sweep.infos.append(ModelInfo(name=target.name, spec=target.spec, fingerprint=engine.fingerprint))
    return engine


def _settings(task_list, samples, sweep: _Sweep, store, *, limit, full, seed) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "tasks": ", ".join(t.name for t in task_list),
        "limit": limit,
        "full": full,
        "cache": str(store.path) if store.path else "off",
        **{
            f"task {t.name}": f"{t.description} — {len(samples[t.name])} items, version {t.version(seed)}"
            for t in task_list
        },
    }
    if sweep.failed:
        settings["failed models"] = sweep.failed
    if sweep.task_errors:
        settings["task errors"] = sweep.task_errors
    if any(sweep.cached_counts.values()):
        settings["items from cache"] = {k: v for k, v in sweep.cached_counts.items() if v}
    return settings


def run_audit(
    models: Sequence[str],
    tasks: str | Sequence[str],
    out_dir: str | Path,
    *,
    limit: int | None = None,
    full: bool = False,
    seed: int = 0,
    engine_config: EngineConfig | None = None,
    names: Sequence[str] | None = None,
    pareto: ParetoSpec | None = None,
    cache: str | Path | bool = True,
    load_engine: LoadEngine | None = None,
    progress: bool = True,
    sizes: Mapping[str, int] | None = None,
) -> AuditReport:
    """Audit ``models`` (the first is the baseline) on ``tasks`` (set names, task names, user task
    YAML paths) and write report.json and report.html into ``out_dir``.

    ``limit`` caps the items per task (on top of each task's default sample unless ``full``).
    ``cache``: True = the default cache file (see ``default_cache_path``), False = none, or a path.
    ``load_engine(spec, config, tracer)`` replaces ``Engine.from_spec`` (tests, preloaded models);
    without it every model spec is checked (``tether.models.spec.check_spec``) before any work.
    ``sizes`` (task name -> items) replaces tasks' default sample sizes (``tether audit --mde``).
    """
    out_dir = Path(out_dir)
    engine_config = engine_config or EngineConfig()
    task_list = resolve_tasks(tasks)
    targets = expand_models(models, names)
    if load_engine is None:  # a typo or a missing path fails now, not after the first model's tasks
        from tether.engine.served import check_served, is_served
        from tether.models.spec import check_spec as check_model_spec

        for target in targets:
            if is_served(target.spec, engine_config.backend):
                check_served(target.spec, engine_config.served)
            else:
                check_model_spec(target.spec, where="MODELS")
        load_engine = _default_load_engine
    metrics = {t.name: t.metric for t in task_list}
    if pareto is not None:
        check_spec(pareto, metrics)  # before hours of compute, not after
    sweep = _Sweep()
    if sizes and full:
        raise ConfigError("sample sizes and --full contradict each other", where="--mde", hint="drop one")
    samples = _select(task_list, sweep, limit=limit, full=full, seed=seed, sizes=sizes)
    config = {
        "models": [{"name": t.name, "spec": t.spec} for t in targets],
        "tasks": [t.name for t in task_list],
        "limit": limit,
        "full": full,
        "seed": seed,
        "engine": engine_config.model_dump(mode="json"),
        **({"sizes": dict(sizes)} if sizes else {}),
    }
    # The cache is opened (and refused, if it is not one) before the run directory says "running".
    store = (
        NullCache()
        if cache is False
        else ResultCache(default_cache_path(out_dir) if cache is True else Path(cache))
    )
    try:
        run = _open_run(out_dir, config, seed)
    except BaseException:
        store.close()
        raise
    try:
        began = time.perf_counter()
        judge_validation = _judge_validation(task_list)
        sweep.timings["judge validation"] = time.perf_counter() - began
        with store:
            for target in targets:
                engine = _load(target, load_engine, engine_config, run, sweep, alone=len(targets) == 1)
                if engine is None:
                    continue
                _audit_model(
                    target,
                    engine,
                    task_list,
                    samples,
                    sweep,
                    run=run,
                    store=store,
                    seed=seed,
                    progress=progress,
                )
                del engine
                gc.collect()  # free one model's weights before the next one loads
        if len(sweep.failed) == len(targets):
            raise ModelLoadError(
                "no model could be loaded: " + "; ".join(f"{k}: {v}" for k, v in sweep.failed.items())
            )
        report = build_report(
            sweep.results,
            metrics,
            baseline=targets[0].name,
            models=sweep.infos,
            pareto=pareto,
            judge_validation=judge_validation,
            datasets=[d for t in task_list for d in _datasets(t, len(samples[t.name]))],
            timings=sweep.timings,
            settings=_settings(task_list, samples, sweep, store, limit=limit, full=full, seed=seed),
            extra_metrics=sweep.extra,
            seed=seed,
        )
        report = report.model_copy(update={"timeline": _timeline(run)})
        write_report(report, out_dir)
    except BaseException as exc:
        run.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=error_text(exc))
        raise
    run.finish(
        "complete",
        incomplete=[f"{s.model} / {s.task}" for s in report.tasks if not s.complete],
        report="report.json",
    )
    return report


__all__ = ["ModelTarget", "TaskRun", "expand_models", "run_audit", "run_checkpoints", "run_task"]
