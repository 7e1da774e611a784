"""Run directories and the stage runner: every artifact of a job in one place, with a manifest that
makes it resumable.

Layout of ``runs/<name>/``::

    manifest.json   config, package versions, seed, git sha, start/end, per-stage status and timings
    traces.jsonl    one line per model call (stage, prompt, output, token counts, latency)
    log.txt         what the libraries said (warnings, training logs), when run from the CLI
    <stage files>   artifacts written by the stages (JSONL records, checkpoints, reports)

A pipeline is a list of :class:`Stage` s run by :func:`run_stages`, which owns skip/resume, timing,
interruption and the manifest: a stage marked complete is skipped, one that was interrupted runs
again and resumes from the records it already appended (see ``tether.data.JsonlAppender``), and the
dict each stage returns is its summary in the manifest. docs/architecture.md shows how to write one.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, DataError, TetherError
from tether.inputs import os_reason, read_text
from tether.logs import attach_run_log

DEFAULT_RUNS_ROOT = Path("runs")
TRACKED_PACKAGES = ("tether", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


class Tracer:
    """A run's traces: one JSON line per model call in ``traces.jsonl`` (:meth:`record`), and
    OpenTelemetry spans in ``traces.otlp.jsonl`` (:meth:`span`, :meth:`item_span`; see
    ``tether.tracing``). Thread-safe; cheap enough to leave on. ``NULL_TRACER`` writes nothing, and
    its spans go to the run stage in progress, if any."""

    def __init__(self, path: Path | None, spans: Path | None = None, run: str = ""):
        self.path = path
        self.spans_path = spans
        self.run = run
        self._sink = None
        self._lock = threading.Lock()

    @property
    def sink(self):
        """The run's span sink, made on first use (opening a run to read it starts no tracer)."""
        if self._sink is None and self.spans_path is not None:
            from tether.tracing import ENDPOINT_ENV, SpanSink

            with self._lock:
                if self._sink is None:
                    self._sink = SpanSink(
                        self.spans_path, run=self.run, endpoint=os.environ.get(ENDPOINT_ENV)
                    )
        return self._sink

    def record(self, **fields: Any) -> None:
        if self.path is None:
            return
        fields.setdefault("time", _now())
        if "opentelemetry.trace" in sys.modules:  # link the line to its span, when one is open
            context = sys.modules["opentelemetry.trace"].get_current_span().get_span_context()
            if context.is_valid:
                fields.setdefault("trace_id", f"{context.trace_id:032x}")
                fields.setdefault("span_id", f"{context.span_id:016x}")
        line = json.dumps(fields, ensure_ascii=False, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def span(self, name: str, attributes: dict[str, Any] | None = None, *, client: bool = False):
        """A span around a block (``with tracer.span(...) as s``); see ``tether.tracing.span``."""
        from tether.tracing import span

        return span(name, attributes, sink=self.sink, client=client)

    def item_span(
        self, name: str, start_ns: int, end_ns: int, attributes: dict[str, Any] | None = None
    ) -> None:
        from tether.tracing import item_span

        item_span(name, start_ns, end_ns, attributes, sink=self.sink)

    def close(self) -> None:
        """End the run's root span and write every span out (a later span starts a new sink)."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None


NULL_TRACER = Tracer(None)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A run's manifest.json; DataError naming the file when it is unreadable, not UTF-8, not JSON
    or not a JSON object."""
    path = Path(path)
    text = read_text(path, what="manifest")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"the run's manifest is not valid JSON ({exc.msg} at line {exc.lineno})",
            where=f"{path}:{exc.lineno}",
            hint="the file is damaged (a crash while writing it?); move the run directory aside or delete it",
        ) from None
    if not isinstance(data, dict):
        raise DataError(
            "the run's manifest is not a JSON object",
            where=str(path),
            hint="this is not a Tether run directory; move it out of the runs folder",
        )
    return data


class Run:
    """A run directory and its manifest."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.tracer = Tracer(self.path / "traces.jsonl", self.path / "traces.otlp.jsonl", run=self.path.name)
        self.manifest: dict[str, Any] = (
            read_manifest(self.manifest_path) if self.manifest_path.exists() else {}
        )

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(
        cls,
        name: str | None = None,
        *,
        root: str | Path = DEFAULT_RUNS_ROOT,
        job: str = "",
        config: Any = None,
        seed: int | None = None,
        resume: bool = True,
    ) -> Run:
        """Open ``root/name`` (resuming it if it exists and ``resume``), or create it."""
        name = name or f"{job or 'run'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        if name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(
                f"run name '{name}' is not one folder name",
                hint="pass a plain name such as cai-try-2 (the folder that holds runs is set apart, e.g. --root)",
            )
        path = Path(root) / name
        if path.exists() and (path / "manifest.json").exists() and not resume:
            raise TetherError(
                f"run directory {path} already exists",
                hint="pass --resume to continue it, or choose another --name",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TetherError(
                f"cannot create the run directory {path}: {os_reason(exc)}",
                hint="choose another runs folder or --name",
            ) from None
        run = cls(path)
        attach_run_log(path)  # library chatter goes to log.txt here (when run from the CLI)
        config_dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        if not run.manifest:
            run.manifest = {
                "name": name,
                "job": job,
                "created": _now(),
                "config": config_dump,
                "seed": seed,
                "versions": package_versions(),
                "git_sha": git_sha(),
                "host": platform.node(),
                "stages": {},
                "status": "running",
            }
        else:
            previous = run.manifest.get("config")
            if config_dump is not None and previous is not None and previous != config_dump:
                run.manifest.setdefault("config_history", []).append({"replaced": _now(), "config": previous})
                run.manifest["config"] = config_dump
            run.manifest["resumed"] = run.manifest.get("resumed", 0) + 1
            run.manifest["status"] = "running"
        run.save()
        return run

    @classmethod
    def open(cls, name_or_path: str | Path, root: str | Path = DEFAULT_RUNS_ROOT) -> Run:
        path = Path(name_or_path)
        if not (path / "manifest.json").exists():
            path = Path(root) / str(name_or_path)
        if not (path / "manifest.json").exists():
            raise TetherError(
                f"no run named '{name_or_path}'", where=str(path), hint="see `tether runs list`"
            )
        return cls(path)

    def save(self) -> None:
        _atomic_write_json(self.manifest_path, self.manifest)

    def artifact(self, relative: str) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def is_complete(self, stage: str) -> bool:
        return self.manifest.get("stages", {}).get(stage, {}).get("status") == "complete"

    def reopen(self, *stages: str) -> None:
        """Mark finished stages to run again on the next ``run_stages`` (their timings are kept)."""
        for name in stages:
            entry = self.manifest.get("stages", {}).get(name)
            if entry is not None and entry.get("status") == "complete":
                entry["status"] = "reopened"
        self.save()

    @contextmanager
    def stage(self, name: str, **info: Any) -> Iterator[dict[str, Any]]:
        """Time a stage and record its status; an exception (Ctrl-C included) marks it interrupted."""
        stages = self.manifest.setdefault("stages", {})
        entry = stages.setdefault(name, {})
        entry.update(status="running", started=_now(), **info)
        self.save()
        started = time.perf_counter()
        from tether.tracing import activate

        sink = self.tracer.sink
        try:
            with (
                activate(sink),
                self.tracer.span(f"stage {name}", {"tether.stage": name, "tether.run": self.name}),
            ):
                yield entry
        except BaseException as exc:
            entry.update(status="interrupted", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        else:
            entry["status"] = "complete"
            entry.pop("error", None)
        finally:
            entry["ended"] = _now()
            entry["seconds"] = round(entry.get("seconds_before", 0.0) + time.perf_counter() - started, 3)
            entry["seconds_before"] = entry["seconds"]
            self.save()
            if sink is not None:
                sink.flush()

    def finish(self, status: str = "complete", **summary: Any) -> None:
        self.tracer.close()
        self.manifest["status"] = status
        self.manifest["ended"] = _now()
        if summary:
            self.manifest.setdefault("summary", {}).update(summary)
        self.save()


def scan_runs(root: str | Path = DEFAULT_RUNS_ROOT) -> tuple[list[Run], list[DataError]]:
    """The runs under ``root`` (oldest first), and a DataError for each run directory whose
    manifest cannot be read: one damaged run does not hide the others."""
    root = Path(root)
    runs: list[Run] = []
    broken: list[DataError] = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if (path / "manifest.json").exists():
            try:
                runs.append(Run(path))
            except DataError as exc:
                broken.append(exc)
    return sorted(runs, key=lambda r: str(r.manifest.get("created", ""))), broken


def list_runs(root: str | Path = DEFAULT_RUNS_ROOT) -> list[Run]:
    """The readable runs under ``root``, oldest first ([] when there is no such folder)."""
    return scan_runs(root)[0]


# --- stages ------------------------------------------------------------------------------------------


class StageInterrupted(BaseException):
    """SIGTERM arrived while a stage ran. Like Ctrl-C it is not an ``Exception``, so no stage code
    swallows it; the stage is marked interrupted with its seconds kept, and a rerun resumes it."""


@dataclass(frozen=True)
class Stage:
    """One named step of a pipeline: ``fn(ctx)`` does the work and returns a small JSON-able summary
    (or None), which the manifest keeps under ``stages.<name>.summary``. ``needs`` names the stages
    whose artifacts it reads: they must be complete, run earlier in the same call, or ``provided``."""

    name: str
    fn: Callable[[Any], dict[str, Any] | None]
    needs: tuple[str, ...] = ()


@dataclass
class StageContext:
    """What every stage function gets: the run directory and a way to talk to the user. Pipelines
    subclass it with their config, their engines and their paths."""

    run: Run
    say: Callable[[str], None] = print
    # Stages whose outputs the caller supplies from outside the run (a standalone command's flags).
    provided: set[str] = field(default_factory=set)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into StageInterrupted for the duration (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise StageInterrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def recording_outcome(run: Run) -> Iterator[None]:
    """Mark ``run`` interrupted (Ctrl-C, SIGTERM) or failed when the block raises, then re-raise; a
    command that owns a run wraps its work in this, so no manifest is left saying "running"."""
    try:
        yield
    except BaseException as exc:
        stopped = isinstance(exc, KeyboardInterrupt | StageInterrupted)
        run.finish("interrupted" if stopped else "failed", error=str(exc)[:500])
        raise


def stage_summaries(run: Run) -> dict[str, dict[str, Any]]:
    """Every stage's recorded summary, in the order the stages first ran."""
    return {
        name: entry["summary"]
        for name, entry in run.manifest.get("stages", {}).items()
        if entry.get("summary") is not None
    }


def run_stages(
    run: Run,
    stages: Sequence[Stage],
    ctx: Any,
    *,
    only: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every stage of ``stages`` not yet complete in ``run`` (only those named in ``only``, when
    given), in order, each inside ``run.stage``; return the summaries of every stage the run has.

    A stage whose ``needs`` are neither complete, nor run earlier in this call, nor in
    ``ctx.provided`` is an error before anything runs. A complete stage runs again, timed afresh,
    when a stage it needs ran in this call: it read that stage's artifacts before they changed (a
    strategy added to a finished red-team campaign leaves its report out otherwise). A stage the
    pipeline reopened (:meth:`Run.reopen`: the frontier replans every time) does not count: whoever
    reopens a stage reopens what depends on it. SIGTERM interrupts like Ctrl-C."""
    names = [s.name for s in stages]
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(
                f"no stage named {', '.join(map(repr, unknown))} in this pipeline",
                hint=f"its stages are: {', '.join(names)}",
            )
    chosen = [s for s in stages if only is None or s.name in only]
    provided = set(getattr(ctx, "provided", ()) or ())
    ready = {n for n in names if run.is_complete(n)} | provided
    for stage in chosen:
        missing = [n for n in stage.needs if n not in ready]
        if missing:
            raise ConfigError(
                f"stage '{stage.name}' needs {', '.join(missing)}, which {'has' if len(missing) == 1 else 'have'} "
                f"not run in {run.path}",
                hint="run the whole pipeline, or those stages first",
            )
        ready.add(stage.name)
    ran: set[str] = set()
    say = getattr(ctx, "say", None)
    with _sigterm_interrupts():
        for stage in chosen:
            if run.is_complete(stage.name):
                stale = [n for n in stage.needs if n in ran]
                if not stale:
                    continue
                run.manifest["stages"][stage.name].pop("seconds_before", None)
                if say is not None:
                    say(f"{stage.name}: running again, since {', '.join(stale)} ran")
            reopened = run.manifest.get("stages", {}).get(stage.name, {}).get("status") == "reopened"
            with run.stage(stage.name) as entry:
                summary = stage.fn(ctx)
                if summary is not None:
                    entry["summary"] = summary
            if not reopened:
                ran.add(stage.name)
    return stage_summaries(run)
