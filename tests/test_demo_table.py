"""`tether demo`'s result table: plain text that says what each number is measured on."""

from tether.demo import demo_table


def test_demo_table_marks_significance_and_says_the_change_is_paired():
    summary = {
        "answers": {"harmful_refusal_rate": 0.0, "benign_compliance_rate": 1.0, "answers": 8},
        "mmlu": {"mmlu_acc": 0.125, "mmlu_items": 16},
        "cai": {
            "kept": 24,
            "prompts": 32,
            "report": "runs/x/cai/audit/report.html",
            "deltas": [
                {
                    "task": "harmful_refusal",
                    "metric": "refusal_rate",
                    "baseline": 0.0,
                    "value": 0.264,
                    "delta": 0.288,
                    "ci": [0.197, 0.394],
                    "n": 66,
                    "significant": True,
                },
                {
                    "task": "overrefusal",
                    "metric": "compliance_rate",
                    "baseline": 1.0,
                    "value": 0.917,
                    "delta": -0.083,
                    "ci": [-0.194, 0.0],
                    "n": 36,
                    "significant": False,
                },
            ],  # fmt: skip
        },
        "rlhf": {"score": {"base": 0.52, "ppo": 0.52}},
    }
    text = demo_table(summary)
    rows = {
        line.split()[0]: line
        for line in text.splitlines()
        if line.startswith("  harmful") or line.startswith("  over")
    }
    assert "+0.288* [+0.197, +0.394]" in rows["harmful_refusal"] and rows["harmful_refusal"].endswith("66")
    assert "-0.083  [-0.194, +0.000]" in rows["overrefusal"]  # no star: the CI touches 0
    assert "paired, on the items both scored" in text and "degenerate ones unscored" in text
    assert "kept 24 of 32" in text and "too small to learn" in text
