"""Evals: the task registry (safety, bias, toxicity, capability, coding and user tasks), the
lm-eval prompt formats, and the per-item result records the audit consumes."""

from tether.engine.protocol import EngineLike
from tether.evals.registry import (
    CAPABILITY_TASKS,
    SAFETY_TASKS,
    TASK_SETS,
    Task,
    get_task,
    resolve_tasks,
    task_names,
)
from tether.evals.results import error_text, make_result
from tether.evals.types import ItemResult, ItemStatus, MetricSpec

__all__ = [
    "CAPABILITY_TASKS",
    "SAFETY_TASKS",
    "TASK_SETS",
    "EngineLike",
    "ItemResult",
    "ItemStatus",
    "MetricSpec",
    "Task",
    "error_text",
    "get_task",
    "make_result",
    "resolve_tasks",
    "task_names",
]
