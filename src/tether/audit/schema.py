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

    ``category`` None means the whole task (in ``AuditReport.prompt_type_deltas``, ``category`` is
    the prompt type). ``significant`` is a claim: the change survives Benjamini-Hochberg at the
    report's alpha within its family (``q_value``), the comparison is ``testable`` (enough paired
    items for the exact test ever to reach alpha) and its task has signal. ``regressed`` is a
    significant change in the metric's worse direction. The interval is ``stats.paired_delta``'s;
    ``p_value`` the exact McNemar / sign-flip test's; ``mde`` the change detectable with 80% power
    at the observed ``discordance`` (mean squared paired difference)."""

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
    # --- power and multiple comparisons (issue #15) ---
    p_value: float | None = None
    q_value: float | None = None
    mde: float | None = None
    discordance: float | None = None
    testable: bool = True
    signal: bool | None = None  # the task's: False = baseline at chance, no claims


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
    prompt_type: str = ""  # Task.prompt_type of the item, where the data has one


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
    """The tasks whose headline metrics, oriented so that higher is better, average into one axis.

    ``weighting`` "task" gives each task the same weight; "item" weights each by its scored items
    (the default capability axis: the mean over every scored item of its tasks). ``excluded`` names
    tasks left out and why (no signal: the baseline's interval covers chance)."""

    tasks: list[str] = Field(min_length=1)
    weighting: Literal["task", "item"] = "task"
    excluded: dict[str, str] = Field(default_factory=dict)


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


# --- power and multiple comparisons (issue #15) ------------------------------------------------


class ModelPower(_Record):
    """One checkpoint against the baseline on one task: paired items, the discordance observed
    (mean squared paired difference; for right/wrong items the share that flipped) and the
    minimum detectable effect it gives. ``mde`` None: too few items for any test to succeed."""

    model: str
    n: int
    discordance: float
    mde: float | None


class TaskPower(_Record):
    """What one task can claim. ``signal`` False: the baseline's interval covers ``chance``, so the
    task stays out of the capability axis and flags nothing; None: the task has no chance level.
    ``planned_mde`` assumes a checkpoint with the baseline's item variance whose item scores
    correlate 0.5 with the baseline's (discordance = variance; p(1-p) for right/wrong items)."""

    task: str
    metric: str
    chance: float | None
    baseline_value: float | None
    baseline_ci: tuple[float, float] | None
    n: int
    signal: bool | None
    planned_mde: float | None
    checkpoints: list[ModelPower] = Field(default_factory=list)


class AxisPoint(_Record):
    """One model on an axis; for a checkpoint also its paired change against the baseline."""

    model: str
    value: float | None
    n: int
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    q_value: float | None = None
    discordance: float | None = None
    mde: float | None = None
    significant: bool = False
    regressed: bool = False


class AxisSummary(_Record):
    """A report-level axis (``capability_axis``, ``safety_axis``): which tasks it pools and how,
    each model's value (the same as the Pareto point's), and the paired comparison."""

    name: str
    spec: AxisSpec | None
    planned_mde: float | None
    points: list[AxisPoint]
    note: str = ""


class ComparisonFamily(_Record):
    """One set of comparisons Benjamini-Hochberg controls together: ``m`` tests, plus ``untestable``
    comparisons shown but too small ever to be significant (left out of m) and ``no_signal`` ones of
    tasks at chance (left out too)."""

    family: str
    model: str
    m: int
    untestable: int = 0
    no_signal: int = 0
    flagged: int = 0


class PowerReport(_Record):
    alpha: float
    power: float
    assumed_correlation: float
    min_testable_n: int
    tasks: list[TaskPower]
    axes: list[AxisSummary]
    families: list[ComparisonFamily]

    def task(self, name: str) -> TaskPower | None:
        return next((t for t in self.tasks if t.task == name), None)

    def axis(self, name: str) -> AxisSummary | None:
        return next((a for a in self.axes if a.name == name), None)


class StageTiming(_Record):
    """One stage of the audit run, from its OpenTelemetry span: when it started, how long it took,
    and the model calls and tokens beneath it."""

    stage: str
    start: datetime
    seconds: float
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


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
    # --- power and multiple comparisons (issue #15) ---
    power: PowerReport | None = None
    prompt_type_deltas: list[CategoryDelta] = Field(default_factory=list)
    # --- stage timeline from the run's spans (issue #21) ---
    timeline: list[StageTiming] = Field(default_factory=list)
    # --- mitigation frontier (issue #18): `tether frontier`'s frontier.json, when this report is its audit ---
    frontier: dict[str, Any] | None = None

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
