"""A CI gate over report.json: threshold rules in, a table and an exit code out.

Exit codes (what a CI pipeline branches on):
    EXIT_PASS = 0        every fail-severity rule holds (warnings never change the code)
    EXIT_USAGE = 1       bad config, bad flag, unreadable report, a rule naming an unknown task/model,
                         a rule that checks nothing (e.g. --max-drop on a baseline-only report)
    EXIT_INCOMPLETE = 2  a gated model has an incomplete task (too many unscored items, or no score):
                         the numbers cannot be trusted, so this wins over EXIT_BREACH
    EXIT_BREACH = 3      a fail-severity rule is breached
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tether.audit.schema import AuditReport, TaskSummary
from tether.errors import ConfigError

EXIT_PASS = 0
EXIT_USAGE = 1
EXIT_INCOMPLETE = 2
EXIT_BREACH = 3

RuleKind = Literal["min", "max", "max_drop", "max_rise"]
RELATIVE_KINDS = ("max_drop", "max_rise")
# Metric values are means of scores in [0, 1]; equal-looking floats must not breach a threshold.
_TOL = 1e-9


class GateRule(BaseModel):
    """One threshold on one task's headline metric, or on one category of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(description='"<task>" or "<task>:<category>"')
    kind: RuleKind = Field(
        description="min/max: absolute bound on the value; max_drop/max_rise: bound on baseline - value / "
        "value - baseline, in absolute points of the metric (0.02 = two percentage points)"
    )
    threshold: float = Field(description="a fraction in [0, 1]: write 0.8 for 80%")
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
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"threshold {v} is outside [0, 1]; metrics are fractions, so write 0.8 for 80%")
        return v

    @field_validator("metric")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip() or v.startswith(":") or v.endswith(":"):
            raise ValueError(f"metric '{v}' must be '<task>' or '<task>:<category>'")
        return v

    def describe(self) -> str:
        op = {"min": ">=", "max": "<=", "max_drop": "drop <=", "max_rise": "rise <="}[self.kind]
        return f"{self.metric} {op} {self.threshold:g}"


class GateConfig(BaseModel):
    """The gate's rules, usually from YAML: ``rules: [{metric: harmful_refusal, kind: min, threshold: 0.8}, ...]``."""

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
        if not path.exists():
            raise ConfigError("gate config not found", where=str(path), hint="check the path")
        text = path.read_text(encoding="utf-8")
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


Status = Literal["pass", "warn", "fail", "incomplete", "skipped"]


class GateRow(BaseModel):
    """The verdict of one rule on one model."""

    model_config = ConfigDict(frozen=True)

    rule: str
    task: str
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
    incomplete: list[str]  # "model:task" for every incomplete task of a gated model
    exit_code: int

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "PASS", EXIT_INCOMPLETE: "INCOMPLETE", EXIT_BREACH: "FAIL"}.get(
            self.exit_code, "ERROR"
        )


def _resolve_metric(metric: str, tasks: list[str]) -> tuple[str, str | None]:
    if metric in tasks:
        return metric, None
    task, sep, category = metric.rpartition(":")
    if sep and task in tasks:
        return task, category
    close = difflib.get_close_matches(metric.partition(":")[0], tasks, n=3)
    raise ConfigError(
        f"rule metric '{metric}' names no task in the report",
        where="rules.metric",
        hint=(f"did you mean {', '.join(close)}? " if close else "")
        + f"tasks in the report: {', '.join(tasks)}",
    )


def _value(summary: TaskSummary | None, category: str | None) -> float | None:
    if summary is None:
        return None
    if category is None:
        return summary.value
    cat = summary.per_category.get(category)
    return cat.value if cat else None


def evaluate_gate(report: AuditReport, config: GateConfig) -> GateOutcome:
    """Apply every rule to every model it covers. Raises ConfigError for rules that name a task,
    category or model the report does not have, or that would check no model (a relative rule on a
    report with only the baseline): a typo must not pass silently."""
    tasks = report.task_names()
    models = report.model_names()
    rows: list[GateRow] = []
    gated: set[str] = set()
    for rule in config.rules:
        task, category = _resolve_metric(rule.metric, tasks)
        if category is not None and not any(
            category in s.per_category for s in report.tasks if s.task == task
        ):
            cats = sorted({c for s in report.tasks if s.task == task for c in s.per_category})
            close = difflib.get_close_matches(category, cats, n=3)
            raise ConfigError(
                f"task '{task}' has no category '{category}'",
                where="rules.metric",
                hint=(f"did you mean {', '.join(close)}? " if close else "")
                + f"categories: {', '.join(cats)}",
            )
        relative = rule.kind in RELATIVE_KINDS
        targets = rule.model or [m for m in models if not (relative and m == report.baseline)]
        for m in targets:
            if m not in models:
                raise ConfigError(
                    f"rule '{rule.describe()}' names unknown model '{m}'",
                    where="rules.model",
                    hint=f"models in the report: {', '.join(models)}",
                )
        if relative and all(m == report.baseline for m in targets):
            if len(models) == 1:
                why = f"the report has only the baseline '{report.baseline}' (audit a checkpoint next to it)"
            else:
                why = f"it names only the baseline '{report.baseline}', which is not compared with itself"
            raise ConfigError(f"rule '{rule.describe()}' compares models with the baseline, but {why}")
        gated.update(targets)
        if relative and targets:
            gated.add(report.baseline)
        base_value = _value(report.summary(report.baseline, task), category) if relative else None
        for m in targets:
            value = _value(report.summary(m, task), category)
            rows.append(_judge(rule, task, category, m, value, base_value, report.baseline))

    incomplete = [f"{s.model}:{s.task}" for s in report.tasks if s.model in gated and not s.complete]
    # A rule with nothing to compare (e.g. a category one model never saw) must not pass silently.
    for r in rows:
        if r.status == "incomplete" and f"{r.model}:{r.task}" not in incomplete:
            incomplete.append(f"{r.model}:{r.task}:{r.category}")
    if not any(r.status != "skipped" for r in rows):  # unreachable while each rule is checked above
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
    task: str,
    category: str | None,
    model: str,
    value: float | None,
    base: float | None,
    baseline: str,
) -> GateRow:
    common = dict(
        rule=rule.describe(),
        task=task,
        category=category,
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
