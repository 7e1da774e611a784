"""The task registry: every eval Tether knows by name, the named task sets, and user tasks from YAML.

A :class:`Task` is a small record of plain functions, lm-evaluation-harness style: where its items come
from (``load``), how one model is run on a batch of them (``run``), and how the headline metric reads
(``metric``). The audit sweep owns sampling, batching, caching and reporting; a task owns nothing but
its prompt format and its scorer, so a new task is one factory function.

Built-in tasks live in ``tether.evals.tasks`` and are built on first lookup. Other packages can add
tasks through the ``tether.tasks`` entry-point group (each entry point loads to a zero-argument
callable returning a Task or a list of Tasks). A name ending in ``.yaml``/``.yml`` is a user task
file (see ``tether.evals.tasks.user``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from tether.data.sources import stratified_sample
from tether.errors import ConfigError
from tether.evals.types import ItemResult, MetricSpec

TaskKind = Literal["generate", "score"]
ENTRY_POINT_GROUP = "tether.tasks"

# Bump when a change to shared task plumbing changes results, so caches written before it are ignored.
_PLUMBING_VERSION = 1


RunFn = Callable[..., list[ItemResult]]  # run(engine, items, *, seed=0) -> one ItemResult per item


@dataclass(frozen=True)
class Task:
    """One eval task.

    ``load()`` returns every item (records with ``id`` and ``category``); the sweep samples them with
    :meth:`select` and calls ``run(engine, items, seed=seed)``, which must return one ItemResult per
    item, in order, and never raise for one bad item (it marks that item ``error``). ``settings``
    lists everything besides the model and the item that the results depend on (prompt format,
    sampling parameters, judge): its hash is the task's cache version.
    """

    name: str
    description: str
    sources: tuple[str, ...]  # keys of tether.data.sources.SOURCES (or a user file path)
    metric: MetricSpec
    kind: TaskKind
    load: Callable[[], Sequence[Any]]
    run: RunFn
    settings: Mapping[str, Any] = field(default_factory=dict)
    default_per_category: int | None = None
    default_limit: int | None = None
    # Items outside the default subset (e.g. jailbreak families beyond the default few) are only
    # reached with ``full=True``.
    default_filter: Callable[[Any], bool] | None = None
    # Task-level numbers beyond the headline mean (bias scores, acc next to acc_norm), computed
    # from the scored ItemResults of one model.
    aggregate: Callable[[Sequence[ItemResult]], dict[str, float]] | None = None
    batch_items: int = 64  # items per run() call; the sweep caches after each call
    seeded: bool = False  # results depend on the audit seed (sampled generation)
    judges: tuple[str, ...] = ()  # judges whose validation the report should print
    notes: str = ""
    # The prompt type of an item for failure analysis, where the data has one beyond the category
    # (MMLU subject group, ARC grade, HarmBench functional category); the sweep records it in each
    # ItemResult's ``extra["prompt_type"]``.
    prompt_type: Callable[[Any], str] | None = None

    def version(self, seed: int = 0) -> str:
        """Hash of what the results depend on besides the model and the item."""
        payload = {
            "task": self.name,
            "kind": self.kind,
            # chance only labels the results (no-signal rule), so it does not invalidate caches
            "metric": self.metric.model_dump(exclude={"chance"}),
            "settings": dict(self.settings),
            "seed": seed if self.seeded else None,
            "plumbing": _PLUMBING_VERSION,
        }
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def select(
        self, *, limit: int | None = None, full: bool = False, seed: int = 0, size: int | None = None
    ) -> list[Any]:
        """The items an audit runs: the default stratified sample, or everything with ``full``; at
        most ``limit`` either way. ``size`` replaces the default sample size (``tether audit --mde``
        sizes each task for a target effect): that many items of the default subset, shared out
        over the categories. Depends only on the seed and the data, never on the model, so every
        checkpoint sees the same items and deltas can be paired; a larger size only adds items."""
        for name, value in (("limit", limit), ("size", size)):
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}", where=name)
        items = list(self.load())
        if full:
            return stratified_sample(items, per_category=None, limit=limit, seed=seed)
        if self.default_filter is not None:
            items = [it for it in items if self.default_filter(it)]
        if size is not None:
            cap = size if limit is None else min(size, limit)
            return stratified_sample(items, per_category=None, limit=cap, seed=seed)
        caps = [n for n in (self.default_limit, limit) if n is not None]
        return stratified_sample(
            items, per_category=self.default_per_category, limit=min(caps) if caps else None, seed=seed
        )


# --- the registry ----------------------------------------------------------------------------------

# The order of "all" is the report's column order: safety first, then capability.
SAFETY_TASKS = (
    "harmful_refusal",
    "advbench_refusal",
    "donotanswer_refusal",
    "overrefusal",
    "jailbreak",
    "toxicity",
    "bbq",
)
CAPABILITY_TASKS = (
    "mmlu",
    "hellaswag",
    "arc_challenge",
    "arc_easy",
    "piqa",
    "winogrande",
    "sciq",
    "openbookqa",
    "boolq",
    "social_iqa",
    "arithmetic",
    "gsm8k",
    "humaneval",
)

TASK_SETS: dict[str, tuple[str, ...]] = {
    "all": SAFETY_TASKS + CAPABILITY_TASKS,
    "safety": SAFETY_TASKS,
    "capability": CAPABILITY_TASKS,
    # A few minutes on a laptop CPU: refusal both ways, one knowledge and one reasoning set.
    "quick": ("harmful_refusal", "overrefusal", "mmlu", "arc_challenge"),
}


@cache
def _builtin() -> dict[str, Task]:
    from tether.evals.tasks import builtin_tasks

    tasks = {t.name: t for t in builtin_tasks()}
    for task in _entry_point_tasks():
        tasks.setdefault(task.name, task)  # a plugin never shadows a built-in
    return tasks


def _entry_point_tasks() -> list[Task]:
    from importlib.metadata import entry_points

    found: list[Task] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            made = ep.load()()
        except Exception as exc:  # a broken plugin must not take the built-in tasks down with it
            raise ConfigError(
                f"task plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                hint=f"fix or uninstall the package that registers it under '{ENTRY_POINT_GROUP}'",
            ) from exc
        found.extend(made if isinstance(made, list | tuple) else [made])
    return found


def task_names() -> list[str]:
    """Every registered task name (built-in first, then plugins)."""
    return list(_builtin())


def is_task_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def get_task(name: str) -> Task:
    """The task called ``name``, the user task declared in a ``.yaml`` file, or ``redteam_replay:FILE``
    (the held-out attacks of a ``tether redteam export``); an unknown name gets a "did you mean" hint."""
    if is_task_file(name):
        from tether.evals.tasks.user import load_user_task

        return load_user_task(Path(name))
    base, _, argument = name.partition(":")
    if base == "redteam_replay":  # a task over a file: redteam_replay:EXPORT.jsonl
        from tether.evals.tasks.redteam import redteam_replay

        return redteam_replay(argument)
    tasks = _builtin()
    if name in tasks:
        return tasks[name]
    close = difflib.get_close_matches(name, [*tasks, *TASK_SETS], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known tasks: {', '.join(tasks)}"
    raise ConfigError(
        f"unknown task '{name}'",
        where="tasks",
        hint=hint + f" Task sets: {', '.join(TASK_SETS)}; a user task is a path ending in .yaml",
    )


def resolve_tasks(spec: str | Sequence[str] | Sequence[Task]) -> list[Task]:
    """Tasks from a mix of set names, task names and YAML paths (``"safety,mmlu"`` or a list),
    in order, without duplicates. A list of Task objects is taken as it is (the frontier audits
    tasks restricted to one side of a split)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    if parts and all(isinstance(p, Task) for p in parts):
        return list({t.name: t for t in parts}.values())
    names: list[str] = []
    for part in parts:
        for name in (p.strip() for p in str(part).split(",")):
            if name:
                names.extend(TASK_SETS.get(name, (name,)))
    if not names:
        raise ConfigError("no tasks given", where="tasks", hint=f"use one of {', '.join(TASK_SETS)}")
    tasks: dict[str, Task] = {}
    for name in dict.fromkeys(names):
        task = get_task(name)
        if task.name in tasks and tasks[task.name] is not task:
            raise ConfigError(
                f"two tasks are both called '{task.name}'",
                where=name,
                hint="give the user task a different name",
            )
        tasks[task.name] = task
    return list(tasks.values())


__all__ = [
    "CAPABILITY_TASKS",
    "ENTRY_POINT_GROUP",
    "SAFETY_TASKS",
    "TASK_SETS",
    "Task",
    "TaskKind",
    "get_task",
    "is_task_file",
    "resolve_tasks",
    "task_names",
]
