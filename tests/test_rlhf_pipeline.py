"""`tether rlhf` end to end: the CLI's step commands and `run CONFIG` on the tiny model (resumable),
plus one integration test of a minimal pipeline on the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tether.data.jsonl import read_jsonl, write_jsonl
from tether.data.records import PreferencePair
from tether.errors import ConfigError
from tether.feedback.records import CandidateSet, load_candidate_sets
from tether.rlhf.cli import app
from tether.rlhf.documents import load_documents, select_split

runner = CliRunner()
BAD = "Aliens invaded the moon base yesterday and nobody noticed."


def _invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _config(tmp_path: Path, policy: str, **overrides) -> Path:
    config = {
        "name": "t",
        "runs_root": str(tmp_path / "runs"),
        "policy": policy,
        "engine": {"batch_size": 4},
        "documents": {"source": "boolq", "n_train": 6, "n_heldout": 2, "n_validation": 2},
        "candidates": {"k": 2, "max_new_tokens": 4},
        "reward": {
            "epochs": 1,
            "batch_size": 2,
            "max_length": 128,
            "eval_fraction": 0.3,
            "lora": {"r": 4, "alpha": 8},
        },
        "ppo": {
            "steps": 2,
            "batch_size": 2,
            "max_new_tokens": 4,
            "checkpoint_every": 1,
            "eval_every": 1,
            "keep_best": True,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "ppo": {"epochs": 1, "minibatch_size": 2},
        },
        "ppo_reward": {"terms": {"coverage": 1.0}},
        "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 128, "lora": {"r": 4, "alpha": 8}},
        "compare": {"max_new_tokens": 4, "embedding_diversity": False},
        "checks": {"reader": policy, "judge": policy},
        **overrides,
    }
    path = tmp_path / "rlhf.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _seed_candidates(run_dir: Path, n_train: int = 6) -> list[str]:
    """Write the candidates stage's output in advance (the tiny model writes noise the labeler ties):
    a lead-sentence summary against an invented one, for every training document."""
    train, _ = select_split(load_documents("boolq"), n_train=n_train, n_heldout=2, heldout_fraction=0.2)
    sets = [
        CandidateSet(
            doc_id=d.id,
            document=d.text,
            candidates=[{"id": "s0", "text": BAD}, {"id": "s1", "text": " ".join(d.text.split()[:25])}],
        )
        for d in train
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(run_dir / "candidates.jsonl", sets)
    return [d.id for d in train]


def test_run_config_all_stages_then_resume(tiny_model_dir, tmp_path):
    config = _config(tmp_path, str(tiny_model_dir))
    run_dir = tmp_path / "runs" / "t"
    train_ids = _seed_candidates(run_dir)
    result = _invoke("run", str(config))
    assert "done:" in result.output

    split = json.loads((run_dir / "split.json").read_text())
    assert split["train"] == train_ids and len(split["heldout"]) == 2
    # The seeded candidates were complete, so nothing was regenerated; the labeler preferred the lead.
    pairs = read_jsonl(run_dir / "pairs.jsonl", PreferencePair)
    assert len(pairs) == 6 and all(p.chosen_id == "s1" for p in pairs)
    assert len(read_jsonl(run_dir / "ai_scores.jsonl")) == 12
    report = json.loads((run_dir / "reward_model" / "reward_report.json").read_text())
    assert report["train_pairs"] + report["eval_pairs"] == 6
    metrics = [json.loads(line) for line in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    # Each PPO update is a training-step span under the ppo stage, carrying its losses.
    from tether.tracing import SPANS_FILENAME, check_spans, read_spans

    spans = read_spans(run_dir / SPANS_FILENAME)
    assert check_spans(spans) == []
    updates = [s for s in spans if s["name"] == "train_step ppo"]
    assert [s["attributes"]["tether.train.step"] for s in updates] == [1, 2]
    assert all("tether.train.policy_loss" in s["attributes"] for s in updates)
    stage = {s["spanId"]: s["name"] for s in spans if s["name"].startswith("stage ")}
    assert {stage.get(s["parentSpanId"]) for s in updates} == {"stage ppo"}
    # The coverage rule term is logged beside the reward model's part.
    assert all(set(m["reward_terms"]) == {"reward_model", "coverage"} for m in metrics)
    assert all(0 <= m["reward_terms"]["coverage"] <= 1 for m in metrics)
    assert (run_dir / "ppo" / "monitors.png").is_file()
    # PPO validated on two held-out documents that are neither trained on nor compared.
    validation_ids = [d["id"] for d in read_jsonl(run_dir / "validation_docs.jsonl")]
    assert len(validation_ids) == 2 and not set(validation_ids) & {*split["train"], *split["heldout"]}
    checks = read_jsonl(run_dir / "ppo" / "validation.jsonl")
    assert [c["step"] for c in checks] == [0, 1, 2]
    kept = max(checks, key=lambda c: c["eval_quality"])  # ties keep the earliest
    ppo_summary = json.loads((run_dir / "manifest.json").read_text())["summary"]["ppo"]
    assert ppo_summary["kept_step"] == kept["step"] and len(ppo_summary["validation"]) == 3
    assert (run_dir / "dpo" / "adapter_config.json").is_file()
    compare = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert [r["name"] for r in compare["rows"]] == ["base", "ppo", "dpo"]
    assert compare["rows"][0]["win_rate"] is None and 0 <= compare["rows"][1]["win_rate"] <= 1
    assert compare["rows"][1]["train_seconds"] > 0
    # The score change is paired over the same documents: the mean of per-document differences.
    base_docs, ppo = compare["rows"][0]["per_document"], compare["rows"][1]
    diffs = [ppo["per_document"][d]["score"] - base_docs[d]["score"] for d in base_docs]
    assert ppo["score_delta"] == pytest.approx(sum(diffs) / len(diffs))
    assert ppo["score_delta_ci"][0] <= ppo["score_delta"] <= ppo["score_delta_ci"][1]
    assert compare["rows"][0]["score_delta"] is None
    coverage_diffs = [ppo["per_document"][d]["coverage"] - base_docs[d]["coverage"] for d in base_docs]
    assert ppo["proxy_deltas"]["coverage"]["delta"] == pytest.approx(sum(coverage_diffs) / len(base_docs))
    assert set(ppo["proxy_deltas"]) == {"faithfulness", "coverage", "conciseness"}
    assert compare["rows"][0]["proxy_deltas"] == {}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert all(
        stages[s]["status"] == "complete" for s in ("documents", "labels", "reward", "ppo", "dpo", "compare")
    )
    assert "candidates" not in stages or stages["candidates"]["status"] == "complete"
    assert manifest["summary"]["reward"]["eval_pairs"] == report["eval_pairs"]

    # The checks stage: the QA reader and the judge (the tiny model here), and the labelling sheet.
    independent = json.loads((run_dir / "checks" / "independent.json").read_text())
    assert independent["models"] == ["base", "dpo", "ppo"]
    assert [m["model"] for m in independent["qa"]["models"]] == ["base", "dpo", "ppo"]
    assert {r["model"] for r in independent["judge"]["win_rates"]} == {"dpo", "ppo"}
    sheet = [json.loads(line) for line in (run_dir / "checks" / "to_label.jsonl").read_text().splitlines()]
    assert independent["to_label"]["pairs"] == len(sheet)  # the tiny policies often write the same text
    # Team labels (tether label import format): `tether rlhf check` adds people's win rates and agreement.
    docs = {d["id"]: d["text"] for d in read_jsonl(run_dir / "heldout_docs.jsonl")}
    summaries = {
        m: {r["doc_id"]: r["text"] for r in read_jsonl(run_dir / "compare" / "summaries" / f"{m}.jsonl")}
        for m in ("base", "ppo")
    }
    labelled = [
        {
            "doc_id": f"{doc}/base-vs-ppo",
            "document": text,
            "candidates": [
                {"id": "A", "text": summaries["ppo"][doc], "model": "ppo"},
                {"id": "B", "text": summaries["base"][doc], "model": "base"},
            ],
            "votes": [{"annotator": "team", "ranking": ["A", "B"], "reason": "other"}],
        }
        for doc, text in docs.items()
    ]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(row) + "\n" for row in labelled))
    checked = _invoke("check", str(run_dir), "--labels", str(labels), "--reader", "none")
    human = json.loads((run_dir / "checks" / "independent.json").read_text())["human"]
    assert human["pairs"] == len(docs) and human["human_ties"] == 0
    (people,) = human["win_rates"]
    assert (people["model"], people["other"], people["wins"]) == ("ppo", "base", len(docs))
    assert {a["scorer"] for a in human["agreement"]} == {
        "ai_labeler",
        "reward_model",
        f"judge:{tiny_model_dir}",
    }
    assert "Agreement with people" in checked.stdout and "QA check" not in checked.stdout

    # Rerunning the same config skips every finished stage.
    before = {s: stages[s]["ended"] for s in stages}
    _invoke("run", str(config))
    after = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert {s: after[s]["ended"] for s in after} == before

    # The PPO step command on the run's reward model, with a rule term from the command line.
    ppo_args = ["ppo", "--reward-model", str(run_dir / "reward_model"), "--out", str(tmp_path / "ppo")]
    ppo_args += ["--policy", str(tiny_model_dir), "--n", "2", "--no-embedding-diversity"]
    ppo_args += ["--set", "steps=1", "--set", "batch_size=2", "--set", "max_new_tokens=4"]
    result = runner.invoke(app, [*ppo_args, "--term", "coverage"])
    assert result.exit_code != 0 and "PROXY=WEIGHT" in result.output
    result = _invoke(*ppo_args, "--term", "coverage=1.5", "--set", "eval_every=1", "--validation", "2")
    row = json.loads((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(row["reward_terms"]) == {"reward_model", "coverage"}
    assert row["eval_quality"] is not None and "validation: best (not kept" in result.output


def test_human_pairs_path_skips_generation(tiny_model_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(
        pairs,
        [
            PreferencePair(
                prompt="p",
                chosen="a",
                rejected="b",
                doc_id="x",
                annotator="alice",
                reason="other",
                chosen_id="1",
                rejected_id="2",
            )
        ],
    )
    config = _config(
        tmp_path, str(tiny_model_dir), pairs=str(pairs), skip=["reward", "ppo", "dpo", "compare"]
    )
    _invoke("run", str(config))
    run_dir = tmp_path / "runs" / "t"
    assert not (run_dir / "candidates.jsonl").exists()
    assert read_jsonl(run_dir / "pairs.jsonl", PreferencePair)[0].annotator == "alice"


def test_a_corpus_too_small_to_validate_on_fails_before_any_model_work(tmp_path, tiny_model_dir):
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, [{"id": f"d{i}", "text": f"Document {i} is short. It says little."} for i in range(8)])
    config = _config(
        tmp_path,
        str(tiny_model_dir),  # never loaded: the check comes first
        documents={"source": str(docs), "n_train": 4, "n_heldout": 8, "n_validation": 2},
    )
    result = runner.invoke(app, ["run", str(config)])
    assert isinstance(result.exception, ConfigError)  # the CLI prints it without a traceback
    assert "ppo.eval_every needs validation documents" in str(result.exception)
    assert "documents.n_validation" in str(result.exception)
    assert not (tmp_path / "runs" / "t" / "candidates.jsonl").exists()


@pytest.mark.parametrize("name", ["rlhf.yaml", "rlhf-gpu.yaml"])
def test_shipped_rlhf_configs_validate(name):
    from tether.config import load_config
    from tether.rlhf.pipeline import RLHFConfig

    config = load_config(RLHFConfig, Path(__file__).parents[1] / "configs" / name, [])
    # What the README's measured numbers rest on: validation on held-out documents, the best state kept,
    # the reward model's pairs from the train side only.
    assert config.ppo.eval_every > 0 and config.ppo.keep_best and config.documents.n_validation > 0
    assert config.policy == "default" and not config.pairs


def test_bad_config_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("policy: default\nppo:\n  steps: 0\n  bogus: 1\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "bad.yaml:3: ppo.steps" in message and "bad.yaml:4: ppo.bogus: unknown key" in message


def test_generate_then_label_ai(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"id": f"u{i}", "text": f"Text {i}. The lake froze in winter {i}."}) + "\n"
            for i in range(8)
        )
    )
    cands = tmp_path / "cands.jsonl"
    _invoke(
        "generate",
        "--policy",
        str(tiny_model_dir),
        "--docs",
        str(docs),
        "--n",
        "3",
        "--k",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        str(cands),
    )
    sets = load_candidate_sets(cands)
    assert len(sets) == 3 and all(len(s.candidates) == 2 for s in sets)
    out = _invoke("label-ai", str(cands), "--out", str(tmp_path / "pairs.jsonl")).output
    assert "pairs from 3 sets" in out and (tmp_path / "pairs.jsonl").exists()
    assert "--model" in runner.invoke(app, ["compare", "--help"]).output


@pytest.mark.integration
def test_minimal_pipeline_on_default_model(tmp_path):
    """4 documents, K=2, reward 2 steps, PPO 1 iteration of batch 2, DPO 1 step, 16 new tokens."""
    config = _config(
        tmp_path,
        "default",
        documents={"source": "boolq", "n_train": 4, "n_heldout": 2},
        candidates={"k": 2, "max_new_tokens": 16},
        labeler={"margin": 0.0},
        reward={"epochs": 1, "max_steps": 2, "batch_size": 2, "max_length": 384, "eval_fraction": 0.0},
        ppo={"steps": 1, "batch_size": 2, "max_new_tokens": 16, "ppo": {"epochs": 1, "minibatch_size": 2}},
        dpo={"max_steps": 1, "batch_size": 2, "max_length": 384},
        compare={"max_new_tokens": 16, "embedding_diversity": True},
    )
    _invoke("run", str(config))
    run_dir = tmp_path / "runs" / "t"
    sets = read_jsonl(run_dir / "candidates.jsonl", CandidateSet)
    assert len(sets) == 4 and all(c.text for s in sets for c in s.candidates)
    row = json.loads((run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["embedding_diversity"] is not None and row["quality"] is not None
    # One epoch, one minibatch: the first ratio is exactly 1 (nothing clipped, no KL(old||new)).
    assert row["ppo"]["clipfrac"] == 0.0 and abs(row["ppo"]["approx_kl"]) < 1e-4
    compare = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert [r["name"] for r in compare["rows"]] == ["base", "ppo", "dpo"]
