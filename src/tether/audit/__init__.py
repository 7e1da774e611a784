"""Audit: from per-item results to what alignment cost — summaries with confidence intervals, paired
deltas vs a baseline, flipped items, the safety/capability Pareto frontier, the HTML report, the CI gate.

``render_html`` imports matplotlib and jinja2 only when called, so importing this package stays cheap.
The typer command lives in ``tether.audit.cli_gate`` (``gate_command``) and is not re-exported here.
"""

from tether.audit.analysis import build_report, category_deltas, find_flips, is_right
from tether.audit.gate import (
    EXIT_BREACH,
    EXIT_INCOMPLETE,
    EXIT_PASS,
    EXIT_USAGE,
    GateConfig,
    GateOutcome,
    GateRow,
    GateRule,
    evaluate_gate,
    gate_table,
)
from tether.audit.pareto import (
    axis_score,
    default_pareto_spec,
    dominates,
    oriented,
    pareto_front,
    pareto_points,
)
from tether.audit.report import render_html, write_report
from tether.audit.schema import (
    AuditReport,
    AxisSpec,
    CategoryDelta,
    CategorySummary,
    DatasetInfo,
    Flip,
    FlipGroup,
    ModelInfo,
    ParetoPoint,
    ParetoResult,
    ParetoSpec,
    TaskSummary,
)
from tether.audit.stats import (
    DeltaCI,
    MeanCI,
    bootstrap_mean_ci,
    is_significant,
    newcombe_paired_interval,
    paired_delta,
    summarize_task,
)

__all__ = [
    "EXIT_BREACH",
    "EXIT_INCOMPLETE",
    "EXIT_PASS",
    "EXIT_USAGE",
    "AuditReport",
    "AxisSpec",
    "CategoryDelta",
    "CategorySummary",
    "DatasetInfo",
    "DeltaCI",
    "Flip",
    "FlipGroup",
    "GateConfig",
    "GateOutcome",
    "GateRow",
    "GateRule",
    "MeanCI",
    "ModelInfo",
    "ParetoPoint",
    "ParetoResult",
    "ParetoSpec",
    "TaskSummary",
    "axis_score",
    "bootstrap_mean_ci",
    "build_report",
    "category_deltas",
    "default_pareto_spec",
    "dominates",
    "evaluate_gate",
    "find_flips",
    "gate_table",
    "is_right",
    "is_significant",
    "oriented",
    "newcombe_paired_interval",
    "paired_delta",
    "pareto_front",
    "pareto_points",
    "render_html",
    "summarize_task",
    "write_report",
]
