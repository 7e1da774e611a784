"""tether interp reward on a tiny reward model: gradient x input attributions, the features and their
Spearman CIs by hand, a whole run from an RLHF-shaped directory (escaped text), and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.errors import DataError
from tether.interp.reward import attribution, copied_bigrams, read_rlhf_run, spearman_ci

DOCS = [
    {
        "id": f"d{i}",
        "text": f"The river {name} floods every spring and the town of {town} builds walls against it.",
    }
    for i, (name, town) in enumerate(
        [("Avon", "Bath"), ("Tay", "Perth"), ("Exe", "Exeter"), ("Ouse", "York"), ("Wye", "Hay")]
    )
]


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir, tmp_path_factory):
    from tether.train.reward import RewardModel

    path = tmp_path_factory.mktemp("rm") / "reward_model"
    RewardModel.from_spec(str(tiny_model_dir), device="cpu").save(path)
    return RewardModel.load(path, device="cpu")


@pytest.fixture
def rlhf_run(reward_model, tmp_path):
    run = tmp_path / "rlhf"
    reward_model.save(run / "reward_model")
    (run / "heldout_docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    summaries = run / "compare" / "summaries"
    summaries.mkdir(parents=True)
    for model, suffix, finish in (("base", "floods.", "stop"), ("ppo", "floods every spring and", "length")):
        rows = [
            {"doc_id": d["id"], "model": model, "text": f"<b>{d['text'].split()[2]}</b> {suffix}",
             "tokens": 4 + i, "finish_reason": finish}
            for i, d in enumerate(DOCS)
        ]  # fmt: skip
        (summaries / f"{model}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_attribution_matches_the_reward_and_covers_every_token(reward_model):
    from tether.feedback.records import summarization_prompt

    prompt, response = summarization_prompt(DOCS[0]["text"]), "The Avon floods."
    out = attribution(reward_model, prompt, response)
    assert out["reward_raw"] == pytest.approx(reward_model.score([prompt], [response])[0], abs=1e-4)
    assert len(out["tokens"]) == len(out["scores"])
    response_text = "".join(out["tokens"][out["response_start"] :])
    assert response_text == response + reward_model.tokenizer.eos_token
    scores = np.array(out["scores"])
    assert np.isfinite(scores).all() and np.abs(scores).sum() > 0
    assert 0.0 < out["response_share"] < 1.0


def test_copied_bigrams_by_hand():
    assert copied_bigrams("the cat sat on the mat", "The cat sat quietly") == pytest.approx(2 / 3)
    assert copied_bigrams("a b c", "x y") == 0.0
    assert copied_bigrams("a b c", "one") is None


def test_spearman_ci():
    assert spearman_ci([1, 2, 3, 4], [2, 4, 6, 9], bootstrap=200)["rho"] == pytest.approx(1.0)
    assert spearman_ci([1, 2, 3, 4], [9, 6, 4, 2], bootstrap=200)["rho"] == pytest.approx(-1.0)
    assert spearman_ci([1, 1, 1], [1, 2, 3], bootstrap=200)["rho"] is None
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    out = spearman_ci(x, y, bootstrap=500)
    assert out["rho"] == pytest.approx(spearmanr(x, y).statistic)
    assert out["ci"][0] <= out["rho"] <= out["ci"][1] and out["n"] == 40


def test_cli_writes_the_report(rlhf_run, tmp_path):
    out = tmp_path / "interp-reward"
    result = CliRunner().invoke(
        app, ["interp", "reward", str(rlhf_run), "--out", str(out), "--set", "top=2", "--set", "bootstrap=100",
              "--set", "engine.device=cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 10
    report = json.loads((out / "reward_attribution.json").read_text())
    assert [e["end"] for e in report["examples"]] == ["highest"] * 2 + ["lowest"] * 2
    rewards = [s["reward"] for s in report["summaries"]]
    assert report["examples"][0]["reward"] == pytest.approx(max(rewards))
    assert report["examples"][2]["reward"] == pytest.approx(min(rewards))  # each end from its extreme
    trunc = report["correlations"]["truncated"]
    assert trunc["n"] == 10 and trunc["rho"] is not None and len(trunc["ci"]) == 2
    assert report["truncation"]["truncated"]["n"] == 5
    html = (out / "interp.html").read_text()
    assert "Reward-model attribution" in html
    assert "&lt;" in html and "<b>" not in html  # summaries are untrusted text


def test_bad_run_directories(rlhf_run, tmp_path):
    with pytest.raises(DataError, match="reward_model"):
        read_rlhf_run(tmp_path / "nowhere")
    bad = rlhf_run / "compare" / "summaries" / "ppo.jsonl"
    bad.write_text(bad.read_text() + json.dumps({"doc_id": "zz", "text": "x"}) + "\n")
    with pytest.raises(DataError) as err:
        read_rlhf_run(rlhf_run)
    assert "ppo.jsonl:6" in str(err.value) and "zz" in str(err.value)
    result = CliRunner().invoke(app, ["interp", "reward", str(rlhf_run)])
    assert result.exit_code == 1 and "ppo.jsonl:6" in result.output
