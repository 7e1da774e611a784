"""Building :class:`~tether.evals.types.ItemResult` records: what tasks return and what the audit
sweep writes for an item it could not run."""

from __future__ import annotations

from typing import Any

from tether.engine.protocol import EngineLike
from tether.evals.types import ItemResult, ItemStatus


def make_result(
    engine: EngineLike,
    task: str,
    item: Any,
    *,
    status: ItemStatus,
    score: float | None = None,
    prompt: str = "",
    output: str = "",
    reference: str = "",
    extra: dict[str, Any] | None = None,
) -> ItemResult:
    """An ItemResult for ``item`` under the engine's own name; the sweep relabels it with the display
    name. ``score`` is dropped unless the item was scored (an unscored item never carries a value)."""
    return ItemResult(
        task=task,
        item_id=item.id,
        model=engine.name or "",
        model_fingerprint=engine.fingerprint or "",
        category=getattr(item, "category", "all") or "all",
        status=status,
        score=score if status == "scored" else None,
        prompt=prompt,
        output=output,
        reference=reference,
        extra=extra or {},
    )


def error_text(exc: BaseException) -> str:
    """An exception as one short line for an ``error`` item: its type and message, at most 500 characters."""
    return f"{type(exc).__name__}: {exc}"[:500]
