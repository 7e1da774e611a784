"""`tether gate`: check report.json against thresholds and exit with a code a CI pipeline can act on.

Mount with ``app.command("gate")(gate_command)``; ``gate_app`` is the same command as a standalone app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tether.audit.gate import (
    EXIT_USAGE,
    GateConfig,
    GateRule,
    evaluate_gate,
    gate_table,
)
from tether.audit.schema import AuditReport
from tether.errors import ConfigError, TetherError

_METRIC_HELP = (
    "METRIC is a task (its headline metric: harmful_refusal, mmlu), TASK:NAME (an extra metric of the "
    "task, bbq:disparate_impact or toxicity:expected_max_toxicity, or one of its categories, "
    "mmlu:anatomy), or a report metric (safety_axis, capability_axis: the Pareto axes; frontier_gap: "
    "how far a model lies behind the Pareto frontier, 0 on it, so --max frontier_gap=0.02 requires a "
    "checkpoint within 0.02 of the frontier). A name the "
    "report holds twice, say a category and an extra metric of one task, is refused, not guessed: "
    "write task/, category/, extra/ or report/ before it. Repeatable."
)
_EXAMPLE = "--min bbq:disparate_impact=0.8 --max-drop mmlu=0.02"


def _quick_rules(flag: str, kind: str, specs: list[str], models: list[str] | None) -> list[GateRule]:
    rules = []
    for spec in specs:
        metric, sep, number = spec.rpartition("=")
        metric = metric.strip()
        try:
            threshold = float(number)
        except ValueError:
            threshold = None
        if not sep or not metric or threshold is None:
            raise ConfigError(
                f"{flag} expects METRIC=VALUE, got '{spec}'",
                where=flag,
                hint=f"for example: {flag} harmful_refusal=0.8  or  {flag} bbq:disparate_impact=0.8",
            )
        try:
            rules.append(GateRule(metric=metric, kind=kind, threshold=threshold, model=models))
        except ValueError as exc:  # pydantic's ValidationError; say which flag, not which field
            msg = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            raise ConfigError(f"{flag} {spec}: {msg.removeprefix('Value error, ')}") from exc
    return rules


def gate_command(
    report: Annotated[Path, typer.Argument(help="report.json written by `tether audit`.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML file with a `rules:` list of {metric, kind: min|max|max_drop|max_rise, threshold, "
            "model, severity: fail|warn}.",
        ),
    ] = None,
    min_: Annotated[
        list[str] | None,
        typer.Option(
            "--min",
            metavar="METRIC=VALUE",
            help="Absolute lower bound, e.g. --min bbq:disparate_impact=0.8 (the four-fifths rule). "
            + _METRIC_HELP,
        ),
    ] = None,
    max_: Annotated[
        list[str] | None,
        typer.Option(
            "--max",
            metavar="METRIC=VALUE",
            help="Absolute upper bound, e.g. --max toxicity:expected_max_toxicity=0.3. METRIC as for --min.",
        ),
    ] = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            "--max-drop",
            metavar="METRIC=VALUE",
            help="Largest allowed fall below the baseline, in the metric's units (0.02 = two points of a "
            "rate), e.g. --max-drop mmlu=0.02. Needs a checkpoint next to the baseline. METRIC as for --min.",
        ),
    ] = None,
    max_rise: Annotated[
        list[str] | None,
        typer.Option(
            "--max-rise",
            metavar="METRIC=VALUE",
            help="Largest allowed rise above the baseline, in the metric's units, e.g. --max-rise "
            "jailbreak=0.05. METRIC as for --min.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", metavar="MODEL", help="Apply the quick-flag rules only to these models."
        ),
    ] = None,
    warn_only: Annotated[
        bool,
        typer.Option(
            "--warn-only", help="Report breaches as warnings; exit 0 unless a result is incomplete."
        ),
    ] = False,
) -> None:
    """Check an audit report against thresholds and exit with a code a CI pipeline can act on.

    Example: tether gate report.json --min harmful_refusal=0.8 --min bbq:disparate_impact=0.8 --max toxicity:expected_max_toxicity=0.3 --max-drop mmlu=0.02

    Exit codes: 0 pass, 1 usage or config error (bad rule, unknown metric or model, unreadable report, or a rule that checks nothing, such as --max-drop on a report with only the baseline), 2 incomplete evaluation, 3 threshold breached.

    A gated model with an incomplete task (too many unscored items), or a rule's metric with no value for a model, always gives 2; warnings never change the code. The verdict table goes to stdout, errors to stderr.
    """
    try:
        rules: list[GateRule] = list(GateConfig.from_yaml(config).rules) if config else []
        for flag, kind, specs in (
            ("--min", "min", min_),
            ("--max", "max", max_),
            ("--max-drop", "max_drop", max_drop),
            ("--max-rise", "max_rise", max_rise),
        ):
            rules += _quick_rules(flag, kind, specs or [], model or None)
        if not rules:
            raise ConfigError(
                "no gate rules given", hint=f"pass --config gate.yaml or quick flags such as {_EXAMPLE}"
            )
        if warn_only:
            rules = [r.model_copy(update={"severity": "warn"}) for r in rules]
        outcome = evaluate_gate(AuditReport.load(report), GateConfig(rules=rules))
    except TetherError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from exc

    lines = [gate_table(outcome)]
    if outcome.incomplete:
        lines.append(
            "incomplete evaluation (too many unscored items, or no value): " + ", ".join(outcome.incomplete)
        )
    lines.append(f"{outcome.verdict}: exit {outcome.exit_code}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    raise typer.Exit(outcome.exit_code)


gate_app = typer.Typer(add_completion=False, help="Check an audit report against thresholds.")
gate_app.command("gate")(gate_command)
