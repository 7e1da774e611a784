"""Causal tracing on the tiny random Llama: restoring clean states recovers the clean output, the
token groups, bad fact files, and the CLI's usage errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tether.cli import app
from tether.config import EngineConfig
from tether.errors import DataError
from tether.interp.config import TraceConfig
from tether.interp.hooks import find_layers, hook_name, run_with_cache
from tether.interp.trace import (
    Fact,
    _corrupted_runs,
    _Restore,
    _windows,
    aggregate,
    encode_fact,
    read_facts,
    restored_probs,
    reused_probs,
    token_groups,
    trace_fact,
)

FACT = Fact(
    id="f", prompt="The Eiffel Tower is located in the city of", subject="The Eiffel Tower", answer=" Paris"
)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from tether.engine.engine import Engine

    return Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu"))


def _setup(engine):
    ids, subject, answer = encode_fact(engine.tokenizer, FACT)
    _, clean = run_with_cache(engine.model, input_ids=torch.tensor([ids]))
    with torch.no_grad():
        p = torch.softmax(engine.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)[answer]
    d = engine.model.config.hidden_size
    noise = torch.randn(3, len(subject), d, generator=torch.Generator().manual_seed(0)) * 5.0
    return ids, subject, answer, clean, float(p), noise


def test_subject_tokens_and_answer(engine):
    ids, subject, answer = encode_fact(engine.tokenizer, FACT)
    tok = engine.tokenizer
    assert tok.decode([ids[i] for i in subject]).strip() == "The Eiffel Tower"
    assert tok.decode([answer]) == " Paris"


def test_restoring_every_token_after_layer_0_recovers_the_clean_output(engine):
    ids, subject, answer, clean, p, noise = _setup(engine)
    everything = [(hook_name(0, "hook_resid_post"), t) for t in range(len(ids))]
    last_layer = engine.model.config.num_hidden_layers - 1
    rows = [[], everything, [(hook_name(last_layer, "hook_resid_post"), len(ids) - 1)]]
    probs = restored_probs(engine.model, ids, subject, answer, noise, rows, clean)
    # a random tiny model gives the answer ~2e-5: compare relatively
    assert abs(float(probs[0]) - p) > 1e-2 * p  # the noise moved the answer's probability
    assert float(probs[1]) == pytest.approx(p, rel=1e-4)
    assert float(probs[2]) == pytest.approx(p, rel=1e-4)


def test_rows_of_one_batch_do_not_leak_into_each_other(engine):
    ids, subject, answer, clean, _, noise = _setup(engine)
    rows = [[], [(hook_name(0, "hook_resid_post"), 1)], [(hook_name(1, "hook_mlp_out"), len(ids) - 1)]]
    together = restored_probs(engine.model, ids, subject, answer, noise, rows, clean)
    alone = [
        float(restored_probs(engine.model, ids, subject, answer, noise[i : i + 1], [r], clean)[0])
        for i, r in enumerate(rows)
    ]
    assert together.tolist() == pytest.approx(alone, rel=1e-4)


def test_reusing_the_corrupted_runs_gives_the_same_numbers(engine):
    """The fast path (KV cache of the corrupted run before t, layers below the restore skipped)
    equals the plain restored run for every kind, layer and token, mixing starts in one batch."""
    ids, subject, answer, clean, _, noise = _setup(engine)
    corrupted = _corrupted_runs(engine.model, ids, subject, answer, noise)
    plain = restored_probs(engine.model, ids, subject, answer, noise, [[], [], []], clean)
    assert corrupted.probs.tolist() == pytest.approx(plain.tolist(), rel=1e-5)
    n = len(find_layers(engine.model))
    for t in range(subject[0], len(ids)):
        rows = []
        for point in ("hook_resid_post", "hook_mlp_out", "hook_attn_out"):
            for layer in range(n):
                span = [layer] if point == "hook_resid_post" else list(_windows(layer, n, 2))
                rows += [_Restore(s, t, span[0], tuple(hook_name(j, point) for j in span)) for s in range(3)]
        fast = reused_probs(engine.model, ids, answer, corrupted, rows, clean)
        plain = restored_probs(
            engine.model,
            ids,
            subject,
            answer,
            noise[[r.sample for r in rows]],
            [[(name, t) for name in r.points] for r in rows],
            clean,
        )
        assert fast.tolist() == pytest.approx(plain.tolist(), rel=1e-4), t
    # a skipped layer is put back: the model runs normally afterwards
    assert all("forward" not in layer.__dict__ for layer in find_layers(engine.model).layers)


def test_trace_fact_grids(engine):
    cfg = TraceConfig(samples=2, window=2, batch_size=7, engine=EngineConfig(device="cpu"))
    traced = trace_fact(engine.model, engine.tokenizer, FACT, 0.5, cfg)
    n_tok = len(traced["tokens"])
    for kind in ("residual", "mlp", "attention"):
        assert len(traced["grids"][kind]) == n_tok and len(traced["grids"][kind][0]) == 2
    # before the subject nothing was corrupted: those cells are the corrupted run, not computed
    short = Fact(id="g", prompt="The capital of France is", subject="France", answer=" Paris")
    skipped = trace_fact(engine.model, engine.tokenizer, short, 0.5, cfg)
    first = skipped["subject_positions"][0]
    assert first > 0
    assert all(
        v == pytest.approx(skipped["corrupted_p"]) for row in skipped["grids"]["mlp"][:first] for v in row
    )
    ids, subject, answer = encode_fact(engine.tokenizer, short)
    _, clean = run_with_cache(engine.model, input_ids=torch.tensor([ids]))
    # restoring before the subject is indeed a no-op
    noise = torch.randn(1, len(subject), 64, generator=torch.Generator().manual_seed(3))
    none, early = restored_probs(
        engine.model,
        ids,
        subject,
        answer,
        noise.expand(2, -1, -1),
        [[], [(hook_name(1, "hook_resid_post"), 0)]],
        clean,
    )
    assert float(none) == pytest.approx(float(early), rel=1e-5)
    # restoring the last layer's output at the last token is the clean run
    assert traced["grids"]["residual"][-1][-1] == pytest.approx(traced["clean_p"], rel=1e-4)
    summary = aggregate([traced, traced])
    assert set(summary["peaks"]) == {"residual", "mlp", "attention"}
    assert summary["counts"]["first subject token"] == 2


def test_token_groups_by_hand():
    groups = token_groups(8, [1, 2, 3])
    assert groups == {
        "first subject token": [1],
        "middle subject tokens": [2],
        "last subject token": [3],
        "first subsequent token": [4],
        "further tokens": [5, 6],
        "last token": [7],
    }
    assert token_groups(3, [1])["last subject token"] == []


def test_subject_not_in_prompt_names_file_and_line(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(
        json.dumps(FACT.model_dump())
        + "\n"
        + json.dumps({**FACT.model_dump(), "id": "g", "subject": "Eiffel tower"})
        + "\n"
    )
    with pytest.raises(DataError) as err:
        read_facts(path)
    assert f"{path}:2" in str(err.value) and "Eiffel tower" in str(err.value)


def test_shipped_facts_read():
    from tether.interp.cli import shipped_facts

    facts = read_facts(shipped_facts())
    assert len(facts) >= 20
    assert all(f.subject in f.prompt for f in facts)


def test_cli_usage_errors_exit_1_before_loading(tmp_path, tiny_model_dir):
    bad = tmp_path / "facts.jsonl"
    bad.write_text(
        json.dumps({"id": "a", "prompt": "The sky is", "subject": "sea", "answer": " blue"}) + "\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["interp", "trace", "defualt", "--prompts", str(bad)])
    assert result.exit_code == 1 and f"{bad}:1" in result.output
    result = runner.invoke(app, ["interp", "trace", "defualt"])
    assert result.exit_code == 1 and "default" in result.output
    result = runner.invoke(app, ["interp", "trace", str(tiny_model_dir), "--set", "noise=-1"])
    assert result.exit_code == 1 and "noise" in result.output
    result = runner.invoke(
        app, ["interp", "refusal-direction", str(tiny_model_dir), "--set", "split.n_tset=3"]
    )
    assert result.exit_code == 1 and "n_tset" in result.output


def test_cli_trace_writes_the_heatmaps(tmp_path, tiny_model_dir):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps(FACT.model_dump()) + "\n")
    out = tmp_path / "trace-run"
    result = CliRunner().invoke(
        app,
        ["interp", "trace", str(tiny_model_dir), "--prompts", str(facts), "--out", str(out), "--set", "samples=2",
         "--set", "engine.device=cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["prompts"] == 1 and set(summary["peaks"]) == {"residual", "mlp", "attention"}
    assert (out / "trace.png").stat().st_size > 0
    assert "Causal tracing" in (out / "interp.html").read_text()
    report = json.loads((out / "trace.json").read_text())
    assert len(report["kinds"]["residual"]) == 6
