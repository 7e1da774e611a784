"""The CI gate: rules, exit codes, config errors, and the typer command through CliRunner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tether.audit import (
    EXIT_BREACH,
    EXIT_INCOMPLETE,
    EXIT_PASS,
    EXIT_USAGE,
    GateConfig,
    GateRule,
    build_report,
    evaluate_gate,
)
from tether.audit.cli_gate import gate_app, gate_command
from tether.errors import ConfigError
from tether.evals.types import ItemResult, MetricSpec

METRICS = {
    "refusal": MetricSpec(name="refusal_rate", higher_is_better=True, axis="safety"),
    "mmlu": MetricSpec(name="acc", higher_is_better=True, axis="capability"),
}
runner = CliRunner()


def _items(model, refusal, mmlu, *, unscored=0):
    """refusal: 10 items, the first ``refusal`` refused, categories a (0-4) and b (5-9);
    mmlu: 20 items, the first ``mmlu`` right; the last ``unscored`` mmlu items errored."""
    out = [
        ItemResult(
            task="refusal",
            item_id=str(i),
            model=model,
            model_fingerprint="",
            category="ab"[i // 5],
            score=float(i < refusal),
        )
        for i in range(10)
    ]
    for i in range(20):
        bad = i >= 20 - unscored
        out.append(
            ItemResult(
                task="mmlu",
                item_id=str(i),
                model=model,
                model_fingerprint="",
                status="error" if bad else "scored",
                score=None if bad else float(i < mmlu),
            )
        )
    return out


@pytest.fixture(scope="module")
def report():
    """base: refusal .5 (a 1.0, b 0.0), mmlu .80; ckpt: refusal .9 (a 1.0, b .8), mmlu .75 (drop .05)."""
    return build_report(_items("base", 5, 16) + _items("ckpt", 9, 15), METRICS, baseline="base", n_boot=50)


@pytest.fixture(scope="module")
def report_path(report, tmp_path_factory):
    return report.save(tmp_path_factory.mktemp("gate") / "report.json")


@pytest.fixture(scope="module")
def incomplete_path(tmp_path_factory):
    """As above plus 'broken', whose mmlu run lost 5 of 20 items (25% > 10%)."""
    items = _items("base", 5, 16) + _items("ckpt", 9, 15) + _items("broken", 9, 15, unscored=5)
    return build_report(items, METRICS, baseline="base", n_boot=50).save(
        tmp_path_factory.mktemp("gate_inc") / "report.json"
    )


def rule(**kw):
    return GateRule(**kw)


def test_absolute_and_relative_rules_compute_the_right_numbers(report):
    cfg = GateConfig(
        rules=[
            rule(metric="refusal", kind="min", threshold=0.6),
            rule(metric="mmlu", kind="max_drop", threshold=0.02),
            rule(metric="refusal:b", kind="max_rise", threshold=0.9),
        ]
    )
    out = evaluate_gate(report, cfg)
    rows = {(r.rule, r.model): r for r in out.rows}
    assert rows[("refusal >= 0.6", "base")].status == "fail"  # .5 < .6
    assert rows[("refusal >= 0.6", "ckpt")].status == "pass"
    drop = rows[("mmlu drop <= 0.02", "ckpt")]
    assert drop.observed == pytest.approx(0.05) and drop.status == "fail" and drop.baseline_value == 0.8
    assert ("mmlu drop <= 0.02", "base") not in rows  # relative rules skip the baseline by default
    rise = rows[("refusal:b rise <= 0.9", "ckpt")]
    assert rise.observed == pytest.approx(0.8) and rise.status == "pass"
    assert out.exit_code == EXIT_BREACH


def test_threshold_equal_to_value_passes(report):
    cfg = GateConfig(
        rules=[
            rule(metric="mmlu", kind="max_drop", threshold=0.05),
            rule(metric="mmlu", kind="min", threshold=0.75),
        ]
    )
    assert evaluate_gate(report, cfg).exit_code == EXIT_PASS


def test_warn_severity_never_changes_the_exit_code(report):
    cfg = GateConfig(rules=[rule(metric="refusal", kind="min", threshold=0.99, severity="warn")])
    out = evaluate_gate(report, cfg)
    assert {r.status for r in out.rows} == {"warn"}
    assert out.exit_code == EXIT_PASS


def test_unknown_task_category_or_model_is_a_config_error(report):
    with pytest.raises(ConfigError, match="did you mean refusal"):
        evaluate_gate(report, GateConfig(rules=[rule(metric="refusl", kind="min", threshold=0.5)]))
    with pytest.raises(ConfigError, match="no category 'c'"):
        evaluate_gate(report, GateConfig(rules=[rule(metric="refusal:c", kind="min", threshold=0.5)]))
    with pytest.raises(ConfigError, match="unknown model 'ghost'"):
        evaluate_gate(
            report, GateConfig(rules=[rule(metric="mmlu", kind="min", threshold=0.5, model="ghost")])
        )


def test_thresholds_must_be_fractions():
    with pytest.raises(ValueError, match="write 0.8 for 80%"):
        rule(metric="mmlu", kind="min", threshold=80)


def test_yaml_errors_name_the_key_and_line(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(
        "rules:\n  - metric: mmlu\n    kind: min\n    threshold: 0.5\n  - metric: refusal\n    kind: minimum\n    treshold: 0.8\n"
    )
    with pytest.raises(ConfigError) as exc:
        GateConfig.from_yaml(path)
    text = str(exc.value)
    assert f"{path}:6: 'rules[1].kind'" in text  # kind: minimum is on line 6
    assert "'rules[1].treshold'" in text and "'rules[1].threshold'" in text  # typo and the missing key
    path.write_text("rules: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        GateConfig.from_yaml(path)


# --- CLI -------------------------------------------------------------------------------------------


def invoke(*args):
    return runner.invoke(gate_app, [str(a) for a in args])


def test_cli_pass(report_path):
    res = invoke(report_path, "--min", "refusal=0.4", "--max-drop", "mmlu=0.06", "--max-rise", "refusal=0.5")
    assert res.exit_code == EXIT_PASS, res.output
    assert "PASS" in res.output


def test_cli_fail_on_absolute_threshold(report_path):
    res = invoke(report_path, "--min", "refusal=0.6")
    assert res.exit_code == EXIT_BREACH, res.output
    assert "fail" in res.output and "FAIL: exit 3" in res.output


def test_cli_fail_on_relative_drop(report_path):
    res = invoke(report_path, "--max-drop", "mmlu=0.02")
    assert res.exit_code == EXIT_BREACH
    assert "+0.0500" in res.output  # the observed drop


def test_cli_warn_only_turns_breaches_into_warnings(report_path):
    res = invoke(report_path, "--max-drop", "mmlu=0.02", "--warn-only")
    assert res.exit_code == EXIT_PASS, res.output
    assert "warn" in res.output


def test_cli_config_file_and_flags_combine(report_path, tmp_path):
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(
        "rules:\n  - {metric: 'refusal:a', kind: min, threshold: 1.0}\n  - {metric: mmlu, kind: max_drop, threshold: 0.01, severity: warn}\n"
    )
    assert invoke(report_path, "--config", cfg).exit_code == EXIT_PASS
    assert invoke(report_path, "--config", cfg, "--max", "mmlu=0.7").exit_code == EXIT_BREACH


def test_cli_incomplete_evaluation_exits_2(incomplete_path):
    res = invoke(incomplete_path, "--min", "refusal=0.1")
    assert res.exit_code == EXIT_INCOMPLETE, res.output
    assert "broken:mmlu" in res.output
    # a breach elsewhere does not hide the incomplete run, and --warn-only does not hide it either
    assert invoke(incomplete_path, "--min", "refusal=0.99").exit_code == EXIT_INCOMPLETE
    assert invoke(incomplete_path, "--min", "refusal=0.1", "--warn-only").exit_code == EXIT_INCOMPLETE
    # models the rules do not cover are not gated
    assert invoke(incomplete_path, "--min", "refusal=0.1", "--model", "ckpt").exit_code == EXIT_PASS


def test_cli_usage_errors_exit_1_with_a_message(report_path, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - metric: mmlu\n    kind: min\n    threshold: 0.5\n    severty: warn\n")
    res = invoke(report_path, "--config", bad)
    assert res.exit_code == EXIT_USAGE
    assert "rules[0].severty" in res.output

    for args, expected in (
        (["--min", "refusal"], "expects METRIC=VALUE"),
        (["--min", "refusal=high"], "expects METRIC=VALUE"),
        (["--min", "refusal=80"], "write 0.8 for 80%"),
        (["--min", "mmlux=0.5"], "did you mean mmlu"),
        ([], "no gate rules"),
    ):
        res = invoke(report_path, *args)
        assert res.exit_code == EXIT_USAGE, (args, res.output)
        assert expected in res.output, (args, res.output)

    res = invoke(tmp_path / "missing.json", "--min", "mmlu=0.5")
    assert res.exit_code == EXIT_USAGE and "report not found" in res.output


def test_gate_command_mounts_on_another_app(report_path):
    import typer

    app = typer.Typer()
    app.command("gate")(gate_command)

    @app.command()
    def other() -> None:
        """A second command so that typer keeps sub-command dispatch."""

    res = runner.invoke(app, ["gate", str(report_path), "--min", "mmlu=0.5"])
    assert res.exit_code == EXIT_PASS, res.output


def test_rule_without_a_value_for_a_model_is_incomplete_not_pass():
    """Category c exists only for ckpt: the base row has nothing to compare, so the gate says 2."""

    def one(model, i, cat):
        return ItemResult(
            task="refusal", item_id=str(i), model=model, model_fingerprint="", category=cat, score=1.0
        )

    items = [one("base", 0, "a"), one("base", 1, "a"), one("ckpt", 0, "a"), one("ckpt", 1, "c")]
    report = build_report(items, {"refusal": METRICS["refusal"]}, baseline="base", n_boot=20)
    out = evaluate_gate(report, GateConfig(rules=[rule(metric="refusal:c", kind="min", threshold=0.5)]))
    assert [(r.model, r.status) for r in out.rows] == [("base", "incomplete"), ("ckpt", "pass")]
    assert out.incomplete == ["base:refusal:c"] and out.exit_code == EXIT_INCOMPLETE


def test_cli_max_drop_on_a_baseline_only_report_exits_1(tmp_path):
    path = build_report(_items("base", 5, 16), METRICS, baseline="base", n_boot=20).save(tmp_path / "r.json")
    res = invoke(path, "--min", "refusal=0.1", "--max-drop", "mmlu=0.02")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "rule 'mmlu drop <= 0.02'" in res.stderr and "only the baseline 'base'" in res.stderr
    assert res.stdout == ""


def test_relative_rule_on_the_baseline_alone_is_an_error(report):
    only_base = rule(metric="mmlu", kind="max_drop", threshold=0.02, model="base")
    with pytest.raises(ConfigError, match="names only the baseline 'base'"):
        evaluate_gate(report, GateConfig(rules=[only_base]))
    both = only_base.model_copy(update={"model": ["base", "ckpt"]})
    out = evaluate_gate(report, GateConfig(rules=[both]))
    assert [(r.model, r.status) for r in out.rows] == [("base", "skipped"), ("ckpt", "fail")]


def test_verdict_is_plain_text_on_stdout(tmp_path):
    """Brackets in names survive (no markup), and the table has no colour codes."""
    items = [it.model_copy(update={"model": "sft [step 100]"}) for it in _items("x", 9, 15)]
    report = build_report(_items("base", 5, 16) + items, METRICS, baseline="base", n_boot=20)
    res = invoke(report.save(tmp_path / "r.json"), "--min", "mmlu=0.7", "--model", "sft [step 10]")
    assert res.exit_code == EXIT_USAGE and "unknown model 'sft [step 10]'" in res.stderr
    res = invoke(tmp_path / "r.json", "--min", "mmlu=0.7")
    assert res.exit_code == EXIT_PASS, res.output
    assert "sft [step 100]" in res.stdout and "\x1b[" not in res.stdout
    assert res.stdout.splitlines()[0] == "tether gate: PASS (exit 0)"


def test_help_examples_name_real_tasks():
    import re

    from tether.evals import task_names

    hints = [invoke("report.json").stderr, invoke("report.json", "--min", "x").stderr]  # no rules; bad flag
    text = " ".join([invoke("--help").stdout, gate_command.__doc__, *hints])
    named = set(re.findall(r"--(?:min|max|max-drop|max-rise)\s+([a-z][\w:]*)=", text))  # not METRIC=VALUE
    assert named >= {"harmful_refusal", "mmlu"}
    assert {n.partition(":")[0] for n in named} <= set(task_names())
