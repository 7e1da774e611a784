"""Result tables on stdout (demo, CAI run): plain text that says what each number is measured on."""

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


def test_cai_summary_text_is_plain_and_counts_degenerate_drops():
    from tether.cai.cli import summary_text

    loop = {"kept": 5, "prompts": 8, "dropped_harmful_still_complies": 1, "dropped_harmful_deflection": 0,
            "dropped_benign_refused": 0, "dropped_empty": 0, "dropped_degenerate": 2,
            "degenerate_critiques": 0, "degenerate_revisions": 1}  # fmt: skip
    summary = {"rounds": [{"round": 1, "loop": loop}],
               "audit": {"base": {"harmful_refusal": 0.0, "mmlu": None}, "sft-r1": {"harmful_refusal": 0.25, "mmlu": 0.1}}}  # fmt: skip
    text = summary_text(summary)
    assert "kept 5/8" in text and "2 degenerate" in text
    assert "[" not in text.split("audit (held-out items)")[1]  # no markup, no Rich box
    assert text.splitlines()[-1].split() == ["sft-r1", "0.250", "0.100"]
    assert text.splitlines()[-2].split() == ["base", "0.000", "—"]
