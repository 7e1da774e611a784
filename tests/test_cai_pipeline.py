"""The whole CAI job wired together: a scripted engine for the model's words, the tiny random model
for real SFT/DPO training, a stand-in audit; stage-level resume; the CLI; and one real-model run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes import ScriptedEngine
from tether.cai import CAIConfig, run_cai
from tether.cai.cli import app
from tether.cai.pipeline import NothingKeptError
from tether.runs import Run

ROOT = Path(__file__).resolve().parents[1]
BENIGN_SOURCES = ("sciq/", "triviaqa/", "arc_easy/", "commonsense_qa/")


def scripted_model(questions: dict[str, str]):
    """Refuses red-team prompts, answers benign ones; critiques and revisions to match; two different
    samples per prompt for RLAIF. ``questions`` (prompt id -> question) keeps benign answers on topic
    in critiques and revisions; the critic's score always prefers the first continuation."""

    def say(prompt, k: int) -> str:
        base = prompt.id.split("#")[0]
        if "#" not in prompt.id:
            questions[base] = prompt.text
        if "#c" in prompt.id:
            return "The response could be more careful and more direct."
        if base.startswith(BENIGN_SOURCES):
            return f"About '{questions[base]}': here is a direct answer, version {k}."
        return (
            "I'm sorry, but I can't help with that." if k == 0 else "Sure, here are the steps you asked for."
        )

    return say


class FakeReport:
    def __init__(self, names, tasks):
        self.names, self.tasks = names, tasks

    def task_names(self):
        return list(self.tasks)

    def summary(self, model, task):
        class S:
            value = 0.5 + 0.1 * self.names.index(model)

        return S()


def _config(tiny_model_dir: Path, **extra) -> CAIConfig:
    data = {
        "model": str(tiny_model_dir),
        "constitution": str(ROOT / "configs" / "constitution.yaml"),
        "rounds": 2,
        "prompts": {"harmful_count": 4, "benign_count": 2},
        "loop": {"passes": 1},
        "sft": {"max_steps": 1, "batch_size": 2, "max_length": 64, "lora": {"r": 4, "alpha": 8}},
        "rlaif": {"dpo": {"max_steps": 1, "batch_size": 2, "max_length": 64}},
        "audit": {"tasks": ["harmful_refusal"], "limit": 5},
        **extra,
    }
    return CAIConfig.model_validate(data)


@pytest.fixture
def fake_audit(monkeypatch):
    calls = []

    def run_audit(models, tasks, out_dir, *, limit=None, seed=0, engine_config=None, names=None, **kw):
        calls.append({"models": list(models), "names": list(names), "tasks": list(tasks), "limit": limit})
        return FakeReport(list(names), tasks)

    monkeypatch.setattr("tether.audit.sweep.run_audit", run_audit)
    return calls


def test_full_job_trains_audits_and_resumes(tiny_model_dir, tmp_path, fake_audit, monkeypatch):
    from tether.evals.registry import get_task
    from tether.models import load

    loads: list[str] = []
    engines: list[ScriptedEngine] = []
    say = scripted_model({})

    def loader(spec, config, tracer):
        loads.append(spec)
        engines.append(ScriptedEngine(say, name=spec))
        return engines[-1]

    config = _config(tiny_model_dir)
    run = Run.create("cai-test", root=tmp_path, job="cai", config=config)
    summary = run_cai(config, run, load_engine=loader)

    # The split: train prompts never held out, and none of the audit's items.
    split = json.loads((run.path / "prompts" / "split.json").read_text())
    train_ids = {p["id"] for p in split["train"]}
    assert len(train_ids) == 6 and summary["prompts"]["train_harmful"] == 4
    assert not train_ids & set(split["heldout_ids"])
    audit_ids = {it.id for it in get_task("harmful_refusal").select(limit=5, seed=0)}
    assert not train_ids & audit_ids

    # Round 2 starts from round 1's adapter; DPO from round 2's; all three load as adapters on the base.
    assert loads[:2] == [str(tiny_model_dir), str(run.path / "round1" / "sft")]
    for rel in ("round1/sft", "round2/sft", "dpo"):
        assert json.loads((run.path / rel / "tether_base.json").read_text())["base"] == str(
            tiny_model_dir.resolve()
        )
        assert load(str(run.path / rel)).adapter_path is not None
    assert json.loads((run.path / "round2" / "sft" / "train_log.json").read_text())["continued_adapter"]
    assert json.loads((run.path / "dpo" / "train_log.json").read_text())["model_spec"] == str(
        run.path / "round2" / "sft"
    )

    # Every round kept the refusals and the helpful answers (the scripted model behaves).
    for r in summary["rounds"]:
        assert r["loop"]["kept"] == 6 and r["sft_examples"] == 6
    pairs = [json.loads(line) for line in (run.path / "rlaif" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 6 and {"prompt", "chosen", "rejected", "principle", "p_chosen"} <= set(pairs[0])
    assert summary["rlaif"]["harmful_disagreements_judged"] == 4

    # Audited after round 1 and at the end, with every checkpoint named.
    assert [c["names"] for c in fake_audit] == [["base", "sft-r1"], ["base", "sft-r1", "sft-r2", "dpo"]]
    assert fake_audit[-1]["models"][-1] == str(run.path / "dpo")
    assert summary["audit"]["dpo"]["harmful_refusal"] == pytest.approx(0.8)
    assert json.loads((run.path / "cai_summary.json").read_text())["models"][0] == {
        "name": "base",
        "spec": str(tiny_model_dir),
    }

    # The loop's judge calls are spans under the loop stage, one child per prompt with its verdict.
    from tether.tracing import SPANS_FILENAME, check_spans, read_spans

    spans = read_spans(run.path / SPANS_FILENAME)
    assert check_spans(spans) == []
    by_id = {s["spanId"]: s for s in spans}
    judged = [s for s in spans if "tether.judge.verdict" in s["attributes"]]

    def stage_of(span):
        while span is not None and not span["name"].startswith("stage "):
            span = by_id.get(span["parentSpanId"])
        return span and span["name"]

    loop_items = [s for s in judged if stage_of(s) == "stage round1/loop"]
    assert {s["attributes"]["tether.item.id"] for s in loop_items} >= train_ids  # each final, judged

    # A rerun finds every stage complete: no model is loaded, nothing is retrained.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr("tether.train.sft.train_sft", no_training)
    monkeypatch.setattr("tether.train.dpo.train_dpo", no_training)
    assert all(e.calls for e in engines)
    loads.clear()
    engines.clear()
    again = run_cai(
        config, Run.create("cai-test", root=tmp_path, job="cai", config=config), load_engine=loader
    )
    assert loads == [] and engines == []
    assert again["rounds"] == summary["rounds"]


def test_cli_run_parses_config_and_overrides(tmp_path, monkeypatch):
    seen = {}

    def fake_run_cai(config, run, *, config_path=None, **kw):
        seen["config"], seen["run"] = config, run
        return {"rounds": [], "models": [{"name": "base", "spec": config.model}]}

    monkeypatch.setattr("tether.cai.pipeline.run_cai", fake_run_cai)
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(ROOT / "configs" / "cai.yaml"),
            "--set",
            "rounds=3",
            "--set",
            "loop.passes=2",
            "--set",
            f"constitution={ROOT / 'configs' / 'constitution.yaml'}",
            "--name",
            "x",
            "--root",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["config"].rounds == 3 and seen["config"].loop.passes == 2
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["rounds"] == 3

    bad = CliRunner().invoke(
        app, ["run", str(ROOT / "configs" / "cai.yaml"), "--set", "loop.passes=0", "--root", str(tmp_path)]
    )
    assert bad.exit_code != 0 and "loop.passes" in str(bad.exception)


@pytest.mark.integration
def test_one_round_on_the_default_model(tmp_path):
    """4 red-team + 2 benign prompts, K=1, 2 SFT steps, no DPO, no audit, on SmolLM2-135M."""
    config = CAIConfig.model_validate(
        {
            "model": "default",
            "constitution": str(ROOT / "configs" / "constitution.yaml"),
            "rounds": 1,
            "prompts": {"harmful_count": 4, "benign_count": 2},
            "loop": {
                "passes": 1,
                "answer": {"max_new_tokens": 48, "temperature": 0.7},
                "critique": {"max_new_tokens": 48, "temperature": 0.7},
                "revision": {"max_new_tokens": 48, "temperature": 0.7},
            },
            "sft": {"max_steps": 2, "batch_size": 2, "max_length": 192},
            "rlaif": {"enabled": False},
            "audit": {"enabled": False},
        }
    )
    run = Run.create("cai-int", root=tmp_path, job="cai", config=config)
    try:
        summary = run_cai(config, run)
    except NothingKeptError as exc:  # a 135M model may fail every filter on 6 prompts: an honest outcome
        pytest.skip(f"the loop kept nothing on this tiny sample: {exc}")
    records = [json.loads(line) for line in (run.path / "round1" / "loop.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("final") == 6
    loop = summary["rounds"][0]["loop"]
    assert (
        loop["kept"]
        + loop["dropped_harmful_still_complies"]
        + loop["dropped_harmful_deflection"]
        + loop["dropped_benign_refused"]
        + loop["dropped_empty"]
        + loop["dropped_degenerate"]
        == 6
    )
    assert (run.path / "round1" / "sft" / "adapter_config.json").exists()
    traces = (run.path / "traces.jsonl").read_text().splitlines()
    assert any('"stage": "cai/round1/critique"' in line for line in traces)
