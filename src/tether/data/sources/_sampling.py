"""Deterministic, category-balanced subsampling."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tether.errors import ConfigError

T = TypeVar("T")


def _category(record: Any) -> str:
    return record.category


def stratified_sample(
    records: Sequence[T],
    per_category: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    key: Callable[[T], str] = _category,
) -> list[T]:
    """Up to ``per_category`` records from each category, then at most ``limit`` in total.

    Which records a category contributes depends only on ``seed`` and that category's own
    records, so adding a category to a dataset does not reshuffle the others. A global
    ``limit`` is shared out round-robin over the categories (in a seeded order), so every
    category keeps an equal share, up to one, until it runs out. The result keeps the input
    order. ``None`` means no cap.
    """
    for name, value in (("per_category", per_category), ("limit", limit)):
        if value is not None and value < 0:
            raise ConfigError(f"must be >= 0 or None, got {value}", where=name)
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(key(record), []).append(index)
    chosen: dict[str, list[int]] = {}
    for cat, indices in groups.items():
        # A string seed is hashed with SHA-512 by random.Random: stable across processes,
        # unlike hash(), which PYTHONHASHSEED salts.
        shuffled = list(indices)
        random.Random(f"{seed}/{cat}").shuffle(shuffled)
        chosen[cat] = shuffled if per_category is None else shuffled[:per_category]
    picked: list[int]
    if limit is None:
        picked = [i for indices in chosen.values() for i in indices]
    else:
        order = sorted(chosen)
        random.Random(f"{seed}/categories").shuffle(order)
        picked, depth = [], 0
        while len(picked) < limit and any(depth < len(chosen[c]) for c in order):
            for cat in order:
                if depth < len(chosen[cat]) and len(picked) < limit:
                    picked.append(chosen[cat][depth])
            depth += 1
    return [records[i] for i in sorted(picked)]
