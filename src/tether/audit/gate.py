"""A CI gate over report.json: threshold rules in, a table and an exit code out.

A rule names any number the report carries for each model (``resolve_metric``):

    TASK                the task's headline metric               harmful_refusal, mmlu
    TASK:NAME           an extra metric of the task, or one of   bbq:disparate_impact,
                        its categories (whichever it has)        toxicity:expected_max_toxicity,
                                                                 mmlu:anatomy
    NAME                a report-level metric of each model      safety_axis, capability_axis,
                        (the Pareto axes, when the report has    frontier_gap
                        them, and how far behind their frontier
                        the model lies: 0 on it)

A spelling that matches two of these (a category and an extra metric of one task with the same
name, or a task named like a report metric) is refused rather than guessed; the explicit forms
``task/TASK``, ``category/TASK:NAME``, ``extra/TASK:NAME`` and ``report/NAME`` always resolve to
exactly one. A name the report lacks is a usage error with "did you mean" suggestions.

Exit codes (what a CI pipeline branches on):
    EXIT_PASS = 0        every fail-severity rule holds (warnings never change the code)
    EXIT_USAGE = 1       bad config, bad flag, unreadable report, a rule naming an unknown metric or
                         model, a rule that checks nothing (e.g. --max-drop on a baseline-only report)
    EXIT_INCOMPLETE = 2  a gated model has an incomplete task (too many unscored items), or a rule's
                         metric has no value for a model: the numbers cannot be trusted, so this wins
                         over EXIT_BREACH
    EXIT_BREACH = 3      a fail-severity rule is breached
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tether.audit.pareto import frontier_gap
from tether.audit.schema import AuditReport
from tether.errors import ConfigError
from tether.inputs import read_text

EXIT_PASS = 0
EXIT_USAGE = 1
EXIT_INCOMPLETE = 2
EXIT_BREACH = 3

RuleKind = Literal["min", "max", "max_drop", "max_rise"]
RELATIVE_KINDS = ("max_drop", "max_rise")
# Metric values are means of scores in [0, 1]; equal-looking floats must not breach a threshold.
_TOL = 1e-9

MetricSource = Literal["task", "category", "extra", "report"]
SOURCES: tuple[MetricSource, ...] = ("task", "category", "extra", "report")
# Report-level metrics: one number per model that belongs to no single task.
REPORT_METRICS = ("safety_axis", "capability_axis", "frontier_gap")


class GateRule(BaseModel):
    """One threshold on one metric of the report (see the module docstring for the names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(
        description='"<task>" (headline), "<task>:<name>" (an extra metric or a category of the task), '
        'or a report metric ("safety_axis", "capability_axis"); prefix task/, category/, extra/ or '
        "report/ when a name is ambiguous"
    )
    kind: RuleKind = Field(
        description="min/max: absolute bound on the value; max_drop/max_rise: bound on baseline - value / "
        "value - baseline, in the metric's own units (0.02 = two percentage points of a rate)"
    )
    threshold: float = Field(
        description="in the metric's units: a fraction for rates (write 0.8 for 80%), [-1, 1] for bias "
        "scores; max_drop/max_rise thresholds are >= 0"
    )
    model: list[str] | None = Field(
        default=None,
        description="models the rule applies to; default: all models for min/max, all but the baseline "
        "for max_drop/max_rise",
    )
    severity: Literal["fail", "warn"] = "fail"

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        # The range depends on the metric, so it is checked against the report (``_check_range``).
        if not math.isfinite(v):
            raise ValueError(f"threshold {v} is not a finite number")
        return v

    @field_validator("metric")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        v = v.strip()
        bare = v.split("/", 1)[1] if v.split("/", 1)[0] in SOURCES and "/" in v else v
        if not bare or bare.startswith(":") or bare.endswith(":"):
            raise ValueError(f"metric '{v}' must be '<task>', '<task>:<name>' or a report metric")
        return v

    @model_validator(mode="after")
    def _relative_is_non_negative(self) -> GateRule:
        if self.kind in RELATIVE_KINDS and self.threshold < 0:
            raise ValueError(
                f"{self.kind} threshold {self.threshold:g} is negative; it bounds a change, so write e.g. 0.02"
            )
        return self

    def describe(self) -> str:
        op = {"min": ">=", "max": "<=", "max_drop": "drop <=", "max_rise": "rise <="}[self.kind]
        return f"{self.metric} {op} {self.threshold:g}"


class GateConfig(BaseModel):
    """The gate's rules, usually from YAML: ``rules: [{metric: 'bbq:disparate_impact', kind: min, threshold: 0.8}, ...]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[GateRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_rules(self) -> GateConfig:
        if not self.rules:
            raise ValueError("no rules: add at least one entry under 'rules'")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> GateConfig:
        """Load and validate; every problem is reported at once, each with file:line and key."""
        path = Path(path)
        text = read_text(path, what="gate config", error=ConfigError)
        try:
            raw = yaml.safe_load(text)
            root = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from exc
        try:
            return cls.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = _key(err["loc"])
                line = _line_of(root, err["loc"])
                problems.append(f"{path}:{line}: '{key}': {err['msg']}" if line else f"'{key}': {err['msg']}")
            raise ConfigError(
                "invalid gate config:\n  " + "\n  ".join(problems),
                where=str(path),
                hint="each rule needs metric, kind (min|max|max_drop|max_rise) and threshold; "
                "optional: model, severity (fail|warn)",
            ) from exc


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(config)"


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node along ``loc`` (pydantic's error path)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


# --- what a rule can name -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRef:
    """One gateable number of the report, per model: a task's headline, a category of it, one of
    its extra metrics, or a report-level metric."""

    source: MetricSource
    task: str | None
    name: str  # the task for "task"; the category / extra metric / report metric otherwise

    @property
    def spelling(self) -> str:
        """How a rule names it when the name is unambiguous."""
        if self.source in ("task", "report"):
            return self.name
        return f"{self.task}:{self.name}"

    @property
    def explicit(self) -> str:
        """How a rule names it whatever else the report holds."""
        return f"{self.source}/{self.spelling}"

    def what(self) -> str:
        return {
            "task": f"the headline metric of task '{self.task}'",
            "category": f"category '{self.name}' of task '{self.task}'",
            "extra": f"extra metric '{self.name}' of task '{self.task}'",
            "report": f"report metric '{self.name}'",
        }[self.source]


def _report_values(report: AuditReport) -> dict[str, dict[str, float | None]]:
    """Report-level metrics: name -> model -> value. Today these are the Pareto axes (oriented so
    that higher is better); a new per-model aggregate only has to be added here to be gateable."""
    out: dict[str, dict[str, float | None]] = {}
    if report.pareto is not None:
        out["safety_axis"] = {p.model: p.safety for p in report.pareto.points}
        out["capability_axis"] = {p.model: p.capability for p in report.pareto.points}
        # "Is this checkpoint on the frontier, within a tolerance?" is `--max frontier_gap=TOL`.
        out["frontier_gap"] = frontier_gap(report.pareto.points)
    # No Pareto plot but capability tasks audited (no safety task, or no capability task with signal):
    # the axes come from the power section, capability_axis None where no task had signal.
    if report.pareto is None and report.power is not None and report.power.axis("capability_axis"):
        for axis in report.power.axes:
            out[axis.name] = {p.model: p.value for p in axis.points}
    return out


def report_metrics(report: AuditReport) -> list[MetricRef]:
    """Every number a gate rule can name in ``report``, in report order."""
    refs: list[MetricRef] = []
    for task in report.task_names():
        summaries = [s for s in report.tasks if s.task == task]
        refs.append(MetricRef("task", task, task))
        cats = dict.fromkeys(c for s in summaries for c in s.per_category)
        refs += [MetricRef("category", task, c) for c in cats]
        extras = dict.fromkeys(n for s in summaries for n in s.extra_metrics)
        refs += [MetricRef("extra", task, n) for n in extras]
    refs += [MetricRef("report", None, name) for name in _report_values(report)]
    return refs


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_metric(metric: str, report: AuditReport) -> MetricRef:
    """The one number ``metric`` names in ``report``. Raises a one-line ConfigError for a name the
    report lacks (with "did you mean" suggestions from the names it has) or one that is ambiguous."""
    refs = report_metrics(report)
    for ref in refs:
        if metric == ref.explicit:
            return ref
    matches = [ref for ref in refs if ref.spelling == metric]
    if len(matches) == 1:
        return matches[0]
    if matches:
        options = "; ".join(f"'{r.explicit}' for {r.what()}" for r in matches)
        raise ConfigError(f"metric '{metric}' is ambiguous in this report: write {options}")

    prefixed = metric.split("/", 1)[0] in SOURCES and "/" in metric
    bare = metric.split("/", 1)[1] if prefixed else metric
    task, sep, name = bare.partition(":")
    tasks = report.task_names()
    # "bbq:Ag" is matched against bbq's categories and extra metrics only, not every name there is.
    pool_refs = [r for r in refs if r.task == task and r.source != "task"] if sep and task in tasks else refs
    close = difflib.get_close_matches(
        bare, list(dict.fromkeys(r.spelling for r in pool_refs)), n=3, cutoff=0.6
    )
    if prefixed:  # suggest the explicit form of whatever is close, whichever kind it is
        close = [r.explicit for c in close for r in pool_refs if r.spelling == c]
    if close:
        why = f"; did you mean {', '.join(close)}?"
    elif sep and task in tasks:
        why = f"; task '{task}' has: {_listing([r.spelling for r in pool_refs])}"
    elif bare in REPORT_METRICS:
        why = (
            "; the report has no Pareto axes (audit tasks of both axes, or pass --safety-axis and "
            "--capability-axis)"
        )
    else:
        others = [r.spelling for r in refs if r.source == "report"]
        why = f"; tasks in the report: {_listing(tasks)}" + (
            f"; report metrics: {', '.join(others)}" if others else ""
        )
    kind = metric.split("/", 1)[0] if prefixed else None
    word = {None: "category or extra metric", "category": "category", "extra": "extra metric"}.get(kind)
    if sep and task in tasks and word:
        head = f"task '{task}' has no {word} '{name}'"
    elif sep and task not in tasks:
        head = f"no task '{task}' in the report (metric '{metric}')"
    else:
        head = f"unknown metric '{metric}'"
    raise ConfigError(head + why)


def metric_value(report: AuditReport, ref: MetricRef, model: str) -> float | None:
    """``ref``'s value for ``model``; None when the report has none (unscored, or never computed)."""
    if ref.source == "report":
        return _report_values(report).get(ref.name, {}).get(model)
    summary = report.summary(model, ref.task)
    if summary is None:
        return None
    if ref.source == "task":
        return summary.value
    if ref.source == "category":
        cat = summary.per_category.get(ref.name)
        return cat.value if cat else None
    return summary.extra_metrics.get(ref.name)


def _check_range(rule: GateRule, ref: MetricRef, report: AuditReport) -> None:
    """A threshold the metric can never reach is a typo (80 for 0.8), not a rule.

    Headlines, categories and the Pareto axes are means of scores in [0, 1]. Extra metrics carry no
    declared range: counts (``n_...``) take any threshold; any other extra metric whose values in the
    report all lie in [-1, 1] (rates, ratios, bias scores) takes thresholds in [-1, 1]."""
    if ref.source == "extra":
        values = [v for m in report.model_names() if (v := metric_value(report, ref, m)) is not None]
        if ref.name.startswith("n_") or not all(-1.0 <= v <= 1.0 for v in values):
            return
        low, high = -1.0, 1.0
    else:
        low, high = 0.0, 1.0
    if rule.kind in RELATIVE_KINDS:
        low, high = 0.0, high - low
    if not low <= rule.threshold <= high:
        raise ConfigError(
            f"rule '{rule.describe()}': threshold {rule.threshold:g} is outside [{low:g}, {high:g}], the "
            f"range of {ref.spelling}; metrics are fractions, so write 0.8 for 80%"
        )


# --- verdicts --------------------------------------------------------------------------------------


Status = Literal["pass", "warn", "fail", "incomplete", "skipped"]


class GateRow(BaseModel):
    """The verdict of one rule on one model."""

    model_config = ConfigDict(frozen=True)

    rule: str
    metric: str  # the resolved name, e.g. "bbq:disparate_impact"
    source: MetricSource
    task: str | None  # None for report-level metrics
    category: str | None = None
    model: str
    kind: RuleKind
    threshold: float
    severity: Literal["fail", "warn"]
    value: float | None
    baseline_value: float | None = None
    observed: float | None  # the value compared with the threshold (the drop/rise for relative rules)
    status: Status
    message: str = ""


class GateOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: list[GateRow]
    # "model:task" per incomplete task of a gated model; "model:metric" per value a rule lacked
    incomplete: list[str]
    exit_code: int

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "PASS", EXIT_INCOMPLETE: "INCOMPLETE", EXIT_BREACH: "FAIL"}.get(
            self.exit_code, "ERROR"
        )


def _targets(rule: GateRule, report: AuditReport) -> list[str]:
    """The models ``rule`` checks. Raises when it names an unknown model or would check none."""
    models = report.model_names()
    relative = rule.kind in RELATIVE_KINDS
    targets = rule.model or [m for m in models if not (relative and m == report.baseline)]
    for m in targets:
        if m not in models:
            close = difflib.get_close_matches(m, models, n=3)
            raise ConfigError(
                f"rule '{rule.describe()}' names unknown model '{m}'"
                + (f"; did you mean {', '.join(close)}?" if close else f"; models: {', '.join(models)}")
            )
    if relative and all(m == report.baseline for m in targets):
        if len(models) == 1:
            why = f"the report has only the baseline '{report.baseline}' (audit a checkpoint next to it)"
        else:
            why = f"it names only the baseline '{report.baseline}', which is not compared with itself"
        raise ConfigError(f"rule '{rule.describe()}' compares models with the baseline, but {why}")
    return targets


def evaluate_gate(report: AuditReport, config: GateConfig) -> GateOutcome:
    """Apply every rule to every model it covers.

    Raises ConfigError for a rule that names a metric or model the report does not have, a threshold
    outside the metric's range, or a rule that would check no model: a typo must not pass silently."""
    rows: list[GateRow] = []
    gated: set[str] = set()
    missing: list[tuple[str, MetricRef]] = []
    for rule in config.rules:
        ref = resolve_metric(rule.metric, report)
        _check_range(rule, ref, report)
        targets = _targets(rule, report)
        relative = rule.kind in RELATIVE_KINDS
        gated.update(targets)
        if relative:
            gated.add(report.baseline)
        base = metric_value(report, ref, report.baseline) if relative else None
        for m in targets:
            value = metric_value(report, ref, m)
            row = _judge(rule, ref, m, value, base, report.baseline)
            rows.append(row)
            if row.status == "incomplete":
                missing.append((m if value is None else report.baseline, ref))

    incomplete = [f"{s.model}:{s.task}" for s in report.tasks if s.model in gated and not s.complete]
    # A value a rule needs and the report lacks (a category one model never saw, a bias score that
    # could not be computed) must not pass silently; it is named unless its whole task is.
    for model, ref in dict.fromkeys(missing):
        entry = f"{model}:{ref.spelling}"
        if entry not in incomplete and f"{model}:{ref.task}" not in incomplete:
            incomplete.append(entry)
    if not any(r.status != "skipped" for r in rows):  # unreachable while _targets guards each rule
        raise ConfigError("no rule checked any model", hint="check the rules' metrics and models")
    if incomplete:
        code = EXIT_INCOMPLETE
    elif any(r.status == "fail" for r in rows):
        code = EXIT_BREACH
    else:
        code = EXIT_PASS
    return GateOutcome(rows=rows, incomplete=incomplete, exit_code=code)


def _judge(
    rule: GateRule,
    ref: MetricRef,
    model: str,
    value: float | None,
    base: float | None,
    baseline: str,
) -> GateRow:
    common = dict(
        rule=rule.describe(),
        metric=ref.spelling,
        source=ref.source,
        task=ref.task,
        category=ref.name if ref.source == "category" else None,
        model=model,
        kind=rule.kind,
        threshold=rule.threshold,
        severity=rule.severity,
        value=value,
        baseline_value=base,
    )
    if rule.kind in RELATIVE_KINDS and model == baseline:
        return GateRow(
            **common, observed=0.0, status="skipped", message="the baseline is not compared with itself"
        )
    if value is None or (rule.kind in RELATIVE_KINDS and base is None):
        who = model if value is None else f"baseline {baseline}"
        return GateRow(**common, observed=None, status="incomplete", message=f"no value for {who}")
    if rule.kind == "min":
        observed, ok = value, value >= rule.threshold - _TOL
    elif rule.kind == "max":
        observed, ok = value, value <= rule.threshold + _TOL
    elif rule.kind == "max_drop":
        observed = base - value
        ok = observed <= rule.threshold + _TOL
    else:
        observed = value - base
        ok = observed <= rule.threshold + _TOL
    status: Status = "pass" if ok else rule.severity
    return GateRow(**common, observed=observed, status=status)


def gate_table(outcome: GateOutcome) -> str:
    """The outcome as plain text: a title line, then one aligned row per rule x model. No markup, so
    names with brackets print as they are."""
    header = ("rule", "model", "value", "baseline", "observed", "severity", "status")

    def fmt(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")

    lines = [header] + [
        (
            r.rule,
            r.model,
            fmt(r.value),
            fmt(r.baseline_value),
            fmt(r.observed, signed=r.kind in RELATIVE_KINDS),
            r.severity,
            r.status + (f" ({r.message})" if r.message else ""),
        )
        for r in outcome.rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {2, 3, 4}
    text = [f"tether gate: {outcome.verdict} (exit {outcome.exit_code})"]
    for line in lines:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)
