"""The records of report.json: what an audit measured, as data the HTML report and the gate both read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether.data.jsonl import atomic_writer
from tether.errors import DataError
from tether.evals.types import MetricSpec
from tether.inputs import read_text

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategorySummary(_Record):
    """One category of one task for one model. ``n`` counts scored items only."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_unscored: int = 0


class TaskSummary(_Record):
    """The headline metric of one task for one model, with its bootstrap CI and how many items it rests on.

    ``value`` is None when no item was scored: a failed task never reads as a score. ``complete`` is
    False when too many items went unscored (see ``tether.audit.stats.summarize_task``)."""

    task: str
    model: str
    metric: MetricSpec
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unparsed: int
    n_error: int
    n_empty: int
    n_total: int
    complete: bool
    per_category: dict[str, CategorySummary] = Field(default_factory=dict)
    extra_metrics: dict[str, float] = Field(default_factory=dict)
    # Degenerate answers (echoed system prompt, loop, word salad, …; tether.judges.degenerate): those a
    # judge set apart (status "degenerate", unscored) plus scored ones the sweep flagged. Above the
    # report's degenerate threshold the task is flagged: its model is broken, not safe or unsafe.
    n_degenerate: int = 0
    too_degenerate: bool = False

    @property
    def n_unscored(self) -> int:
        return self.n_unparsed + self.n_error + self.n_empty + self.n_degenerate_unscored

    @property
    def n_degenerate_unscored(self) -> int:
        return self.n_total - self.n_scored - self.n_unparsed - self.n_error - self.n_empty

    @property
    def degenerate_rate(self) -> float | None:
        return self.n_degenerate / self.n_total if self.n_total else None


class CategoryDelta(_Record):
    """Checkpoint minus baseline on the items both scored (paired), in the metric's own units.

    ``category`` None means the whole task. ``regressed`` is True when the change is significant
    and in the metric's worse direction."""

    task: str
    category: str | None
    model: str
    baseline: str
    delta: float
    ci_low: float
    ci_high: float
    significant: bool
    n: int
    regressed: bool = False


FlipDirection = Literal["regressed", "improved"]


class Flip(_Record):
    """An item the baseline got right and the checkpoint got wrong ("regressed"), or the reverse."""

    task: str
    item_id: str
    category: str
    model: str
    prompt: str
    baseline_output: str
    output: str
    direction: FlipDirection


class FlipGroup(_Record):
    """All flips of one model on one task category: full counts, and a capped list of examples."""

    task: str
    category: str
    model: str
    baseline: str
    n_paired: int
    n_regressed: int
    n_improved: int
    examples: list[Flip] = Field(default_factory=list)


class AxisSpec(_Record):
    """The tasks whose headline metrics, oriented so that higher is better, average into one axis."""

    tasks: list[str] = Field(min_length=1)


class ParetoSpec(_Record):
    safety: AxisSpec
    capability: AxisSpec


class ParetoPoint(_Record):
    """One model on the safety/capability plane. An axis is None when one of its tasks has no value."""

    model: str
    safety: float | None
    capability: float | None
    on_frontier: bool = False
    complete: bool = True  # False when a task behind either axis is incomplete


class ParetoResult(_Record):
    spec: ParetoSpec
    points: list[ParetoPoint]


class ModelInfo(_Record):
    name: str
    spec: str
    fingerprint: str = ""


class DatasetInfo(_Record):
    name: str
    source_package: str
    license: str
    n_items: int


class AuditReport(_Record):
    """Everything one audit produced. ``report.html`` is rendered from this alone."""

    schema_version: int = SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    models: list[ModelInfo]
    baseline: str
    tasks: list[TaskSummary]
    deltas: list[CategoryDelta] = Field(default_factory=list)
    flips: list[FlipGroup] = Field(default_factory=list)
    pareto: ParetoResult | None = None
    judge_validation: dict[str, Any] = Field(default_factory=dict)
    datasets: list[DatasetInfo] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    def summary(self, model: str, task: str) -> TaskSummary | None:
        for s in self.tasks:
            if s.model == model and s.task == task:
                return s
        return None

    def task_names(self) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.tasks))

    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a crash never leaves a truncated report.json that a CI gate would read."""
        path = Path(path)
        with atomic_writer(path) as handle:
            handle.write(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> AuditReport:
        path = Path(path)
        text = read_text(path, what="report", hint="run `tether audit` to write report.json")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"not valid JSON ({exc.msg} at line {exc.lineno})",
                where=f"{path}:{exc.lineno}",
                hint="the file is damaged; re-run the audit to rewrite it",
            ) from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "(report)"
            raise DataError(
                f"not a Tether audit report: field '{loc}': {first['msg']}"
                + (f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""),
                where=str(path),
                hint="pass the report.json written by `tether audit` (same Tether version)",
            ) from exc
