"""Built-in eval tasks, one factory per task, grouped by what they measure."""

from __future__ import annotations

from tether.evals.registry import Task


def builtin_tasks() -> list[Task]:
    """Every built-in task, safety first. Building one reads no data (loaders run on first use)."""
    from tether.evals.tasks import bias, capability, coding, safety, toxicity

    factories = [*safety.TASKS, *toxicity.TASKS, *bias.TASKS, *capability.TASKS, *coding.TASKS]
    return [make() for make in factories]


__all__ = ["builtin_tasks"]
