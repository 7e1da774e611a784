"""`tether audit` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fakes import ScriptedEngine
from tether.audit.cli import app
from tether.audit.gate import EXIT_INCOMPLETE, EXIT_USAGE

runner = CliRunner()


def test_audit_tiny_model_writes_report_and_prints_table(tmp_path, tiny_model_dir):
    out = tmp_path / "audit"
    result = runner.invoke(
        app,
        [str(tiny_model_dir), "--tasks", "mmlu,arc_challenge", "--limit", "2", "--out", str(out),
         "--name", "tiny", "--set", "engine.score_batch_size=2", "--no-cache"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "audit summary" in result.output and "tiny" in result.output and "acc_norm" in result.output
    assert str(out / "report.html") in result.output.replace("\n", "")
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["tiny"]
    assert [t["n_total"] for t in report["tasks"]] == [2, 2]
    assert json.loads((out / "manifest.json").read_text())["config"]["engine"]["score_batch_size"] == 2
    assert not (out / "audit.sqlite").exists()


def test_incomplete_task_exits_2(tmp_path, monkeypatch):
    import tether.audit.sweep as sweep

    oom = RuntimeError("out of memory")
    broken = ScriptedEngine(oom, score=oom, name="broken")
    real = sweep.run_audit
    monkeypatch.setattr(
        sweep, "run_audit", lambda *a, **k: real(*a, **{**k, "load_engine": lambda s, c, t: broken})
    )
    result = runner.invoke(app, ["m", "--tasks", "overrefusal", "--limit", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_INCOMPLETE == 2, result.output
    assert "incomplete" in result.output
    assert (tmp_path / "o" / "report.json").exists()


def test_unknown_task_is_a_usage_error_with_suggestion(tmp_path):
    result = runner.invoke(app, ["default", "--tasks", "mmlu,jailbrake", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "did you mean jailbreak" in result.output


def test_axis_flags_and_names_are_checked(tmp_path):
    result = runner.invoke(
        app, ["default", "--tasks", "mmlu", "--capability-axis", "mmlu", "--out", str(tmp_path)]
    )
    assert result.exit_code == EXIT_USAGE and "safety axis has no task" in result.output
    result = runner.invoke(app, ["a", "b", "--name", "x", "--tasks", "mmlu", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "1 name(s) for 2 model(s)" in result.output


def test_list_tasks_and_missing_models():
    result = runner.invoke(app, ["--list-tasks"])
    assert result.exit_code == 0
    for name in ("harmful_refusal", "jailbreak", "bbq", "humaneval", "quick"):
        assert name in result.output
    assert runner.invoke(app, []).exit_code == EXIT_USAGE


@pytest.mark.parametrize("flag", ["--safety-axis", "--capability-axis"])
def test_pareto_spec_from_flags(flag):
    from tether.audit.cli import _pareto

    spec = _pareto("overrefusal" if flag == "--safety-axis" else None, "mmlu" if flag != "--safety-axis" else None,
                   "overrefusal,harmful_refusal,mmlu,arc_challenge")  # fmt: skip
    if flag == "--safety-axis":
        assert spec.safety.tasks == ["overrefusal"] and spec.capability.tasks == ["mmlu", "arc_challenge"]
    else:
        assert spec.safety.tasks == ["overrefusal", "harmful_refusal"] and spec.capability.tasks == ["mmlu"]


def test_mde_sizes_each_task_prints_the_plan_and_time_then_runs(tmp_path, monkeypatch):
    import tether.audit.sweep as sweep
    from tether.audit.power import planned_size

    engine = ScriptedEngine(score=lambda r: [0.0] + [-1.0] * (len(r.continuations) - 1), name="m")
    real = sweep.run_audit
    seen = {}

    def spy(*a, **k):
        seen.update(k["sizes"])
        return real(*a, **{**k, "load_engine": lambda s, c, t: engine})

    monkeypatch.setattr(sweep, "run_audit", spy)
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["m", "--tasks", "openbookqa,piqa", "--mde", "0.2", "--out", str(out), "--no-cache"]
    )
    assert result.exit_code == 0, result.output
    assert "sample sizes for a detectable change of 0.2" in result.output
    assert "estimated time" in result.output and "1 model(s)" in result.output
    assert seen == {
        "openbookqa": planned_size(0.2, _score("openbookqa")),
        "piqa": planned_size(0.2, _score("piqa")),
    }
    report = json.loads((out / "report.json").read_text())
    assert [t["n_total"] for t in report["tasks"]] == [seen["openbookqa"], seen["piqa"]]
    bad = runner.invoke(app, ["m", "--tasks", "piqa", "--mde", "0.2", "--full", "--out", str(tmp_path / "x")])
    assert bad.exit_code == EXIT_USAGE and "--full" in bad.output


def _score(task):
    from tether.audit.power import DEFAULT_MODEL_SCORE

    return DEFAULT_MODEL_SCORE.get(task)
