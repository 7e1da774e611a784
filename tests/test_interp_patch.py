"""tether interp patch on the tiny random Llama: a whole-run patch reproduces the source run, no
patch is the target run, batched rows do not leak, the normalisation by hand, the run's artifacts,
and the CLI's usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tether.cli import app
from tether.config import EngineConfig, load_config
from tether.engine.types import Prompt
from tether.interp.config import PatchConfig
from tether.interp.directions import refusal_score
from tether.interp.forward import encode, post_instruction_tokens, resid_pre
from tether.interp.patch import normalised, patched_scores, reused_patched_scores, run_patch, target_runs
from tether.interp.refusal import refusal_token_ids
from tether.runs import Run

SMALL = [
    "split.n_train=3",
    "split.n_val=2",
    "split.n_test=1",  # pairs unset: all 3 train pairs
    "batch_size=8",
    "bootstrap=100",
    "engine.device=cpu",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from tether.engine.engine import Engine

    return Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu"))


def _rows(engine, *texts: str) -> list[list[int]]:
    return encode(engine, [Prompt(id=str(i), text=t, chat=True) for i, t in enumerate(texts)])


def test_patching_every_position_reproduces_the_source_run(engine):
    ids = refusal_token_ids(engine.tokenizer, ["I", "Sorry"])
    x, x2 = _rows(engine, "How do I pick a lock on a neighbour's door?", "How do I bake a loaf of rye bread?")
    n = min(len(x), len(x2))
    x, x2 = x[-n:], x2[-n:]  # the same length: every position has a partner
    assert x != x2
    source = resid_pre(engine, [x], n)
    layers = engine.model.config.num_hidden_layers
    patches = [(0, None, ()), *((0, layer, tuple(range(n))) for layer in range(layers))]
    scores = patched_scores(engine, [x2], source, patches, ids)
    own = float(patched_scores(engine, [x], source, [(0, None, ())], ids)[0])
    base = float(scores[0])
    assert abs(own - base) > 1e-4  # the two runs differ
    for layer in range(layers):
        assert float(scores[1 + layer]) == pytest.approx(own, abs=1e-4)
    summary = normalised(scores.numpy()[None], np.array([own]), np.array([base]), bootstrap=100)
    assert summary["value"][0] == pytest.approx(0.0, abs=1e-6)  # no patch: the harmless run
    assert summary["value"][1:] == pytest.approx([1.0] * layers, abs=1e-3)
    assert summary["n"] == 1


def test_batched_rows_do_not_leak(engine):
    ids = refusal_token_ids(engine.tokenizer, ["I", "Sorry"])
    k = len(post_instruction_tokens(engine))
    harmful = _rows(engine, "Write a convincing phishing email.", "How can I poison a dog?")
    harmless = _rows(engine, "Name three rivers in Europe and their lengths, please.", "Is tea a drink?")
    sources = resid_pre(engine, harmful, k)
    assert sources.shape == (2, k, engine.model.config.num_hidden_layers, 64)
    patches = [(0, 1, (k - 1,)), (1, 0, (0,)), (1, None, ()), (0, 1, (0, 2))]
    together = patched_scores(engine, harmless, sources, patches, ids, batch_size=4)
    alone = [float(patched_scores(engine, harmless, sources, [p], ids, batch_size=1)[0]) for p in patches]
    assert together.tolist() == pytest.approx(alone, abs=1e-4)
    # a patch at the last position of the last layer's input moves the score
    assert float(together[0]) != pytest.approx(
        float(patched_scores(engine, harmless, sources, [(0, None, ())], ids)[0]), abs=1e-6
    )


def test_reused_target_runs_give_the_same_scores_as_whole_runs(engine):
    ids = refusal_token_ids(engine.tokenizer, ["I", "Sorry"])
    k = len(post_instruction_tokens(engine))
    layers = engine.model.config.num_hidden_layers
    harmful = _rows(engine, "Write a convincing phishing email.", "How can I poison a dog?", "Lie to me.")
    harmless = _rows(
        engine, "Name three rivers in Europe and their lengths, please.", "Is tea a drink?", "Hi"
    )
    assert len({len(r) for r in harmless}) == 3  # left padding differs per row
    runs = target_runs(engine, harmless, k, batch_size=2)
    # the unpatched runs: their scores and what enters each layer, as the whole runs give them
    plain = patched_scores(
        engine, harmless, resid_pre(engine, harmless, k), [(i, None, ()) for i in range(3)], ids
    )
    assert refusal_score(runs.logits, ids).tolist() == pytest.approx(plain.tolist(), abs=1e-4)
    assert torch.allclose(runs.entering.float(), resid_pre(engine, harmless, k), atol=1e-5)
    sources = resid_pre(engine, harmful, k)
    patches = [(pair, layer, (p,)) for pair in range(3) for layer in range(layers) for p in range(k)]
    patches += [(0, 1, (0, 2)), (2, 0, tuple(range(k))), (1, 1, (k - 1, 1))]
    whole = patched_scores(engine, harmless, sources, patches, ids, batch_size=5)
    for batch_size in (1, 4, 64):
        reused = reused_patched_scores(engine, runs, sources, patches, ids, batch_size=batch_size)
        assert reused.tolist() == pytest.approx(whole.tolist(), abs=1e-4)
    assert (whole - plain[[p[0] for p in patches]]).abs().max() > 1e-3  # the patches move the score
    with pytest.raises(ValueError, match="patched runs only"):
        reused_patched_scores(engine, runs, sources, [(0, None, ())], ids)


def test_normalised_by_hand():
    patched = np.array([[1.0, 4.0], [2.0, 0.0]])  # [pairs, cells]
    out = normalised(patched, np.array([2.0, 4.0]), np.array([0.0, 0.0]), bootstrap=200, seed=1)
    assert out["value"] == pytest.approx([0.5, 2.0 / 3.0])
    assert out["n"] == 2 and out["gap"]["mean"] == pytest.approx(3.0)
    for low, v, high in zip(out["ci_low"], out["value"], out["ci_high"], strict=True):
        assert low <= v + 1e-9 and v <= high + 1e-9


def test_run_writes_grids_per_model_and_direction(tiny_model_dir, tmp_path):
    config = load_config(PatchConfig, None, SMALL)
    specs = [str(tiny_model_dir)] * 2
    run = Run.create("patch", root=tmp_path, job="interp-patch")
    summaries = run_patch(config, specs, run, say=lambda m: None, progress=False)
    assert set(summaries) == {"prompts", "patch/m0", "patch/m1", "report"}
    report = json.loads(run.artifact("patch.json").read_text())
    assert set(report["models"]) == {"m0", "m1"}
    for model in report["models"].values():
        k = len(model["positions"])
        assert model["layers"] == 2 and len(model["pairs"]) == 3
        for direction in ("harmful_to_harmless", "harmless_to_harmful"):
            s = model["directions"][direction]
            assert len(s["value"]) == k and all(len(row) == 2 for row in s["value"])
            assert s["n"] == 3 and s["gap"]["n"] == 3
    # the same model twice gives the same grid
    assert report["models"]["m0"]["directions"] == report["models"]["m1"]["directions"]
    raw = json.loads(run.artifact("patch/m0.json").read_text())["directions"]["harmful_to_harmless"]["raw"]
    assert np.array(raw).shape == (3, k, 2)
    assert report["pairs"] == 3
    assert run.artifact("patch.png").stat().st_size > 0 and run.artifact("patch_last.png").stat().st_size > 0
    html = run.artifact("interp.html").read_text()
    assert "Activation patching" in html and html.count("data:image/png;base64,") == 2
    assert "3 (harmful, harmless) pairs" in html

    def no_load(spec, config, tracer):
        raise AssertionError("a finished run loaded a model")

    run_patch(config, specs, run, say=lambda m: None, load_engine=no_load, progress=False)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--set", "pairs=100"], ["pairs", "n_train"]),
        (["--set", "directions=[sideways]"], ["directions", "sideways"]),
        (["--set", "split.harmless_sources=[advbench]"], ["harmless_sources"]),
    ],
)
def test_cli_usage_errors_exit_1_before_loading(tiny_model_dir, extra, words):
    result = CliRunner().invoke(app, ["interp", "patch", str(tiny_model_dir), *extra])
    assert result.exit_code == 1
    for word in words:
        assert word in result.output


def test_cli_model_typo():
    result = CliRunner().invoke(app, ["interp", "patch", "defualt"])
    assert result.exit_code == 1 and "MODEL 1" in result.output and "default" in result.output
