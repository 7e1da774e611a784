"""tether interp refusal-direction on the tiny random Llama: the splits, that choosing never reads a
test prompt, the artifacts of a whole run, and resume."""

from __future__ import annotations

import json

import pytest

from tether.config import EngineConfig, load_config
from tether.errors import ConfigError
from tether.frontier.splits import item_side
from tether.interp.config import RefusalDirectionConfig
from tether.interp.prompts import AUDIT_TASK, make_splits, prompt_split
from tether.interp.refusal import load_merged, run_refusal_direction
from tether.runs import Run

SMALL = [
    "split.n_train=4",
    "split.n_val=3",
    "split.n_test=3",
    "capability_tasks=arc_easy",
    "capability_limit=3",
    "engine.device=cpu",
    "batch_size=4",
    "selection.max_layer_fraction=1.0",
]


def _config(*extra: str) -> RefusalDirectionConfig:
    return load_config(RefusalDirectionConfig, None, [*SMALL, *extra])


def test_splits_are_disjoint_and_avoid_the_audit_test_side():
    splits, info = make_splits(_config().split, seed=0)
    ids = {s: {str(r.id) for k in kinds.values() for r in k} for s, kinds in splits.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    for split, kinds in splits.items():
        for records in kinds.values():
            for r in records:
                assert prompt_split(str(r.id)) == split
                task = AUDIT_TASK.get("boolq_questions" if r.source == "boolq" else r.source)
                if task:
                    assert item_side(task, str(r.id)) == "validation", r.id
    assert info["harmful"]["dropped"]["audit_test_side"] > 0
    # the same seed gives the same prompts; the split of an id never depends on the seed
    again, _ = make_splits(_config().split, seed=0)
    assert [r.id for r in again["test"]["harmful"]] == [r.id for r in splits["test"]["harmful"]]
    other, _ = make_splits(_config().split, seed=1)
    assert all(prompt_split(str(r.id)) == "test" for r in other["test"]["harmful"])


def test_too_few_prompts_names_the_field():
    with pytest.raises(ConfigError, match="split.n_test"):
        make_splits(_config("split.n_test=100000").split, seed=0)


def test_unknown_source_is_a_config_error():
    with pytest.raises(ConfigError, match="harmful_sources"):
        _config("split.harmful_sources=[harmbench]")


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A whole run over two copies of the tiny model, recording every prompt the engine encoded per
    stage."""
    seen: dict[str, set[str]] = {}
    current = {"stage": ""}

    def loader(spec, config, tracer):
        engine = load_merged(spec, config, tracer)
        encode = engine.encode_prompt

        def recording(prompt, max_new_tokens):
            seen.setdefault(current["stage"], set()).add(prompt.id)
            return encode(prompt, max_new_tokens)

        engine.encode_prompt = recording
        return engine

    def say(message: str) -> None:
        pass

    run = Run.create("interp", root=tmp_path_factory.mktemp("runs"), job="interp-direction")
    config = _config()
    import tether.interp.refusal as refusal

    stages = refusal.direction_stages([str(tiny_model_dir)] * 2)
    ctx = refusal.DirectionContext(
        run=run, say=say, config=config, specs=[str(tiny_model_dir)] * 2, load_engine=loader, progress=False
    )
    from tether.runs import run_stages

    for stage in stages:
        current["stage"] = stage.name.split("/")[0]
        run_stages(run, stages, ctx, only=[stage.name])
    return run, seen, config


def test_choosing_never_reads_a_test_prompt(finished):
    run, seen, _ = finished
    splits = json.loads(run.artifact("prompts.json").read_text())["splits"]
    test_ids = {r["id"] for kinds in splits["test"].values() for r in kinds}
    chosen_from = seen["directions"] | seen["select"]
    assert chosen_from, "the stages encoded no prompt"
    assert not chosen_from & test_ids
    assert test_ids <= seen["evaluate"]  # and evaluation reads them all


def test_run_writes_directions_rates_and_the_report(finished):
    from safetensors.torch import load_file

    run, _, config = finished
    cands = load_file(str(run.artifact("directions/m0.safetensors")))["candidates"]
    assert cands.shape[1] == 2 and cands.shape[2] == 64  # [positions, layers, d]
    direction = load_file(str(run.artifact("direction/m0.safetensors")))["direction"]
    chosen = json.loads(run.artifact("select/m0.json").read_text())["chosen"]
    assert direction.allclose(cands[chosen["position"], chosen["layer"]])
    ev = json.loads(run.artifact("evaluate/m0.json").read_text())
    for kind, conds in (
        ("harmful", ("clean", "ablated", "random_ablated")),
        ("harmless", ("clean", "added", "random_added")),
    ):
        for cond in conds:
            r = ev["refusal"][kind][cond]
            assert r["items"] == config.split.n_test
            assert r["n"] + r["unscored"] == r["items"]
    assert ev["judge"]["name"] == "rules"
    assert ev["kl_harmless"]["ablated"]["n"] == config.split.n_test
    assert ev["kl_harmless"]["ablated"]["mean"] >= 0
    drift = json.loads(run.artifact("drift.json").read_text())
    # the same model twice: the same directions, cosine 1 wherever there is a direction (layer 0's
    # input is the template token's embedding, the same for both classes: no direction there)
    cos = drift["models"]["m1"]["cosine_to_reference"]
    assert cos[0] is None and cos[1] == pytest.approx(1.0, abs=1e-5)
    html = run.artifact("interp.html").read_text()
    assert "Refusal direction" in html and "data:image/png;base64," in html
    assert run.artifact("drift.png").stat().st_size > 0


def test_a_rerun_skips_every_finished_stage(finished, tiny_model_dir):
    run, _, config = finished

    def no_load(spec, config, tracer):
        raise AssertionError("a finished run loaded a model")

    summaries = run_refusal_direction(
        config,
        [str(tiny_model_dir)] * 2,
        Run(run.path),
        load_engine=no_load,
        say=lambda m: None,
        progress=False,
    )
    assert summaries["report"] == {"report": "interp.html"}


def test_engine_config_reaches_the_loader():
    assert _config().engine == EngineConfig(device="cpu")


def test_load_merged_merges_an_adapter_whatever_the_engine_config_says(tiny_model_dir, tmp_path):
    """Weight orthogonalisation needs every write to be a plain Linear, so interp merges an adapter
    even with engine.merge_adapter off; in float32 the fingerprint stays the adapter's."""
    from peft import LoraConfig, get_peft_model

    from tether.config import EngineConfig
    from tether.models import load
    from tether.runs import NULL_TRACER

    lora = get_peft_model(load(str(tiny_model_dir)).model, LoraConfig(r=4, target_modules=["o_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    engine = load_merged(str(tmp_path / "adapter"), EngineConfig(merge_adapter=False), NULL_TRACER)
    assert not hasattr(engine.model, "peft_config")
    assert engine.fingerprint == load(str(tmp_path / "adapter")).fingerprint
