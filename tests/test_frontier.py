"""tether frontier: in-memory candidates (interpolation, LoRA scaling, per-block), the hash split,
the Pareto numbers, bad inputs, and a resumable run over scripted engines."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fakes import ScriptedEngine
from tether.config import EngineConfig, load_config
from tether.errors import ConfigError
from tether.evals.registry import get_task
from tether.frontier.candidates import CandidateBuilder, Recipe, block_bounds, check_same_base
from tether.frontier.config import FrontierConfig
from tether.frontier.pareto import frontier_summary, hypervolume
from tether.frontier.pipeline import candidate_name, run_frontier
from tether.frontier.splits import item_side, split_task
from tether.runs import Run

CPU = EngineConfig(device="cpu")


# --- tiny models ------------------------------------------------------------------------------------


def _tiny(out: Path, tokenizer_dir: Path, seed: int, layers: int = 3) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    for item in Path(tokenizer_dir).iterdir():
        shutil.copy(item, out / item.name)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory, smollm2_tokenizer_dir):
    """base (3 layers), a full fine-tune of it (every weight moved), two LoRA adapters on it, and a
    LoRA adapter on another base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("frontier_models")
    base = _tiny(root / "base", smollm2_tokenizer_dir, seed=0)
    other = _tiny(root / "other", smollm2_tokenizer_dir, seed=1, layers=2)
    aligned = root / "aligned"
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(aligned)
    for item in Path(smollm2_tokenizer_dir).iterdir():
        shutil.copy(item, aligned / item.name)

    def adapter(name: str, on: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        peft_model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(on),
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
            ),
        )
        peft_model.save_pretrained(root / name)
        (root / name / "tether_base.json").write_text(json.dumps({"base": str(on)}))
        return root / name

    return {
        "base": base,
        "aligned": aligned,
        "lora": adapter("lora", base, 3),
        "capability": adapter("capability", base, 4),
        "lora_other": adapter("lora_other", other, 5),
    }


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids():
    import torch

    return torch.tensor([[1, 50, 300, 7, 900, 42]])


def _load(spec):
    from tether.models.load import load

    return load(str(spec), device="cpu").model


# --- interpolation ------------------------------------------------------------------------------------


def test_interpolation_endpoints_are_exact_and_half_is_between(models):
    import torch

    builder = CandidateBuilder(str(models["base"]), str(models["aligned"]), CPU)
    ids = _ids()
    base_logits, aligned_logits = _logits(_load(models["base"]), ids), _logits(_load(models["aligned"]), ids)
    builder.activate(Recipe("interpolation", (1.0,)))
    assert torch.equal(_logits(builder.loaded.model, ids), aligned_logits)
    builder.activate(Recipe("interpolation", (0.0,)))
    assert torch.equal(_logits(builder.loaded.model, ids), base_logits)
    builder.activate(Recipe("interpolation", (0.5,)))
    half = _logits(builder.loaded.model, ids)
    assert not torch.allclose(half, base_logits) and not torch.allclose(half, aligned_logits)
    name = "model.layers.1.self_attn.q_proj.weight"
    param = dict(builder.loaded.model.named_parameters())[name]
    assert torch.allclose(param, (builder.base_sd[name] + builder.aligned_sd[name]) / 2, atol=1e-7)
    # back to an endpoint after a midpoint: still exact
    builder.activate(Recipe("interpolation", (1.0,)))
    assert torch.equal(_logits(builder.loaded.model, ids), aligned_logits)


def test_lora_delta_is_scaled_not_the_base(models):
    import torch

    builder = CandidateBuilder(str(models["base"]), str(models["lora"]), CPU)
    ids = _ids()
    base_logits, aligned_logits = _logits(_load(models["base"]), ids), _logits(_load(models["lora"]), ids)
    builder.activate(Recipe("interpolation", (0.0,)))
    assert torch.equal(_logits(builder.loaded.model, ids), base_logits)
    builder.activate(Recipe("interpolation", (1.0,)))
    assert torch.allclose(_logits(builder.loaded.model, ids), aligned_logits, atol=1e-6)
    builder.activate(Recipe("interpolation", (0.5,)))
    half = _logits(builder.loaded.model, ids)
    assert not torch.allclose(half, base_logits) and not torch.allclose(half, aligned_logits)
    scalings = {n: m.scaling["default"] for n, m in builder._lora_layers()}
    assert scalings and all(s == pytest.approx(0.5 * 8 / 4) for s in scalings.values())


def test_per_block_alpha_touches_only_its_layers(models):
    import torch

    builder = CandidateBuilder(str(models["base"]), str(models["aligned"]), CPU)
    builder.activate(Recipe("per-block", (0.0, 1.0, 0.0)))
    for name, p in builder.loaded.model.named_parameters():
        expect = builder.aligned_sd[name] if ".layers.1." in name else builder.base_sd[name]
        assert torch.equal(p, expect), name
    builder.activate(Recipe("per-block", (0.0, 0.0, 1.0)))
    params = dict(builder.loaded.model.named_parameters())
    assert torch.equal(
        params["model.norm.weight"], builder.aligned_sd["model.norm.weight"]
    )  # head: last block
    assert torch.equal(params["model.embed_tokens.weight"], builder.base_sd["model.embed_tokens.weight"])

    lora = CandidateBuilder(str(models["base"]), str(models["lora"]), CPU)
    lora.activate(Recipe("per-block", (0.25, 0.5, 1.0)))
    for name, module in lora._lora_layers():
        layer = int(name.split(".layers.")[1].split(".")[0])
        assert module.scaling["default"] == pytest.approx([0.25, 0.5, 1.0][layer] * 2.0), name


def test_same_alphas_share_a_fingerprint_and_endpoints_reuse_the_models(models):
    builder = CandidateBuilder(str(models["base"]), str(models["aligned"]), CPU)
    assert builder.fingerprint(Recipe("per-block", (0.3, 0.3, 0.3))) == builder.fingerprint(
        Recipe("x", (0.3,))
    )
    assert builder.fingerprint(Recipe("x", (0.3,))) != builder.fingerprint(Recipe("x", (0.4,)))
    assert builder.fingerprint(Recipe("x", (0.0,))) == builder.base_fingerprint
    assert builder.fingerprint(Recipe("x", (1.0,))) == builder.aligned_fingerprint
    assert candidate_name(Recipe("per-block", (0.5, 0.5, 0.5))) == "interp-0.50"


def _deltas(builder, adapter: str) -> dict[str, Any]:
    return {n: m.get_delta_weight(adapter) for n, m in builder._lora_layers() if adapter in m.lora_A}


def test_merges_go_through_peft_on_the_deltas_not_the_factors(models):
    """A linear merge is exactly w_a * delta_aligned + w_c * delta_capability; TIES works on those
    deltas (task vectors) too, not on the A and B factors apart, which for adapters trained apart
    adds B_1 A_2 cross terms far from TIES of the deltas."""
    import torch
    from peft.utils.merge_utils import ties

    builder = CandidateBuilder(
        str(models["base"]), str(models["lora"]), CPU, capability_spec=str(models["capability"])
    )
    ids = _ids()
    builder.activate(Recipe("interpolation", (1.0,)))
    aligned = _logits(builder.loaded.model, ids)
    own, capability = _deltas(builder, "default"), _deltas(builder, "capability")
    base = {n: m.base_layer.weight.detach().clone() for n, m in builder._lora_layers()}
    builder.activate(Recipe("linear", merge="linear", weights=(0.7, 0.3)))
    merged = _deltas(builder, builder.loaded.model.active_adapter)
    for name, delta in merged.items():
        assert torch.allclose(delta, 0.7 * own[name] + 0.3 * capability[name], atol=1e-6), name
    for method in ("ties", "dare_linear", "dare_ties"):
        builder.activate(Recipe(method, merge=method, density=0.5))
        assert builder.loaded.model.active_adapter.startswith("merge-")
        assert not torch.allclose(_logits(builder.loaded.model, ids), aligned)
    builder.activate(Recipe("ties", merge="ties", weights=(1.0, 0.5), density=1.0))
    for name, module in builder._lora_layers():
        want = ties([own[name], capability[name]], torch.tensor([1.0, 0.5]), 1.0, "total")
        assert torch.allclose(module.base_layer.weight - base[name], want, atol=1e-6), name
    builder.activate(Recipe("interpolation", (1.0,)))  # back on the aligned adapter
    assert torch.allclose(_logits(builder.loaded.model, ids), aligned)
    assert all(torch.equal(m.base_layer.weight, base[n]) for n, m in builder._lora_layers())


def test_candidate_engines_set_their_weights_when_used(models):
    from tether.engine import Engine
    from tether.engine.types import ScoreRequest

    builder = CandidateBuilder(str(models["base"]), str(models["lora"]), CPU)
    req = [ScoreRequest(id="q", context="The capital of France is", continuations=[" Paris", " Rome"])]
    base = Engine.from_spec(str(models["base"]), CPU).score(req)[0].logprobs
    aligned = Engine.from_spec(str(models["lora"]), CPU).score(req)[0].logprobs
    e0 = builder.engine("base", Recipe("interpolation", (0.0,)))
    e1 = builder.engine("aligned", Recipe("interpolation", (1.0,)))
    half = builder.engine("interp-0.50", Recipe("interpolation", (0.5,)))
    assert builder._active is None  # nothing built until an engine is used
    assert e1.score(req)[0].logprobs == pytest.approx(aligned, abs=1e-5)
    assert e0.score(req)[0].logprobs == pytest.approx(base, abs=1e-5)
    mid = half.score(req)[0].logprobs
    assert mid != pytest.approx(base, abs=1e-5) and mid != pytest.approx(aligned, abs=1e-5)
    assert e0.score(req)[0].logprobs == pytest.approx(base, abs=1e-5)  # switching back rebuilds it
    assert (e0.builds, e1.builds, half.builds) == (2, 1, 1)
    assert e0.fingerprint == Engine.from_spec(str(models["base"]), CPU).fingerprint
    assert e1.fingerprint == Engine.from_spec(str(models["lora"]), CPU).fingerprint


def test_block_bounds():
    assert block_bounds(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert block_bounds(3, 1) == [range(0, 3)]
    with pytest.raises(ConfigError) as exc:
        block_bounds(2, 3)
    assert exc.value.where == "per_block.blocks"


# --- the split ----------------------------------------------------------------------------------------


def test_validation_and_test_sides_are_disjoint_and_stable():
    task = get_task("mmlu")
    ids = [str(it.id) for it in task.load()]
    val = {i for it in split_task(task, "validation").load() if (i := str(it.id))}
    test = {i for it in split_task(task, "test").load() if (i := str(it.id))}
    assert val and test and not (val & test)
    assert val | test == set(ids)
    assert 0.4 < len(val) / len(ids) < 0.6
    assert item_side("mmlu", ids[0]) == item_side("mmlu", ids[0])
    sample = split_task(task, "test").select(limit=20, seed=0)
    assert {str(it.id) for it in sample} <= test


# --- Pareto numbers -----------------------------------------------------------------------------------


def test_hypervolume_on_hand_made_points():
    assert hypervolume([(1.0, 0.5), (0.5, 1.0)], (0.0, 0.0)) == pytest.approx(0.75)
    # a dominated point and one below the reference add nothing
    assert hypervolume([(1.0, 0.5), (0.5, 1.0), (0.4, 0.4), (-1.0, 2.0)], (0.0, 0.0)) == pytest.approx(0.75)
    assert hypervolume([(0.6, 0.6)], (0.5, 0.5)) == pytest.approx(0.01)
    assert hypervolume([], (0.0, 0.0)) == 0.0
    out = frontier_summary(
        {"aligned": (0.8, 0.3), "a": (0.8, 0.4), "b": (0.5, 0.9), "c": (0.4, 0.2), "d": None},
        aligned="aligned",
        reference=(0.0, 0.0),
    )
    assert out["frontier"] == ["a", "b"]
    assert out["dominate_aligned"] == ["a"]
    assert out["hypervolume"] == pytest.approx(0.8 * 0.4 + 0.5 * 0.5)
    assert "dominate_unmitigated" not in out
    # a chain: the original aligned model is the one a mitigation has to beat
    chain = frontier_summary(
        {"aligned": (0.8, 0.3), "unmitigated": (0.9, 0.1), "a": (0.95, 0.2), "b": (0.5, 0.9)},
        aligned="aligned",
        reference=(0.0, 0.0),
        unmitigated="unmitigated",
    )
    assert chain["dominate_unmitigated"] == ["a"]
    assert chain["dominate_aligned"] == []


# --- bad input ----------------------------------------------------------------------------------------


def _config_error(overrides):
    with pytest.raises(ConfigError) as exc:
        load_config(FrontierConfig, None, overrides)
    return exc.value.render()


def test_alpha_outside_0_1_names_the_field():
    assert "interpolation.alphas" in _config_error(["interpolation.alphas=[0.5,1.5]"])
    assert "per_block.grid" in _config_error(["per_block.grid=[-0.1]"])


def test_no_candidates_is_an_error():
    text = _config_error(["interpolation.alphas=[]", "per_block.enabled=false"])
    assert "no candidates" in text


def test_mitigations_not_built_yet_say_so():
    assert "replay.fractions" in _config_error(["replay.fractions=[0.0]"])
    assert "replay.fractions" in _config_error(["replay.fractions=[1.5]"])
    assert "retrain.steps" in _config_error(["retrain=true"])  # a section now
    assert "retrain" in _config_error(["retrain.steps=[0]"])
    assert "multi_objective.lambdas" in _config_error(["multi_objective=[0.5]"])  # a section now
    assert "multi_objective" in _config_error(["multi_objective.lambdas=[-1]"])
    assert load_config(FrontierConfig, None, ["multi_objective=[]"]).multi_objective.lambdas == []
    # configs and manifests written before retraining was built say `retrain: false`
    assert load_config(FrontierConfig, None, ["retrain=false"]).retrain.steps == []


def test_aligned_on_another_base_names_both(models):
    with pytest.raises(ConfigError) as exc:
        check_same_base(str(models["base"]), str(models["lora_other"]))
    text = exc.value.render()
    assert str(models["lora_other"]) in text and str(models["base"]) in text
    with pytest.raises(ConfigError) as exc:  # a full model of another shape
        CandidateBuilder(str(models["base"]), str(models["lora_other"]).replace("lora_other", "other"), CPU)
    assert "other" in exc.value.render() and str(models["base"]) in exc.value.render()
    check_same_base(str(models["base"]), str(models["lora"]))  # the right base passes


# --- the pipeline over scripted engines ---------------------------------------------------------------

REFUSAL = "I'm sorry, but I can't help with that."


def _u(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


@functools.cache
def _ANSWERS() -> dict[str, int]:
    return {it.id: it.answer_index for it in get_task("mmlu").load()}


class FakeBuilder:
    """Stands in for CandidateBuilder: an engine per recipe that refuses a share α of the prompts and
    prefers the first choice on a share 1 - α/2 of the questions. Records what it built and asked."""

    n_layers = 3

    def __init__(self, fail: dict[str, BaseException] | None = None, loops: float = 0.0):
        self.made: list[str] = []
        self.log: list[tuple[str, ScriptedEngine]] = []
        self.engines: dict[str, list[ScriptedEngine]] = {}
        self.fail = fail or {}
        self.loops = loops  # share of BASE's answers that are a repetition loop (degenerate)

    def fingerprint(self, recipe: Recipe) -> str:
        return "fp-" + json.dumps(recipe.key(self.n_layers), sort_keys=True)

    def engine(self, name, recipe, tracer=None):
        alpha = sum(recipe.alphas) / len(recipe.alphas) if not recipe.merge else 0.5

        def reply(prompt, k):
            if name == "base" and _u(prompt.id + "loop") < self.loops:
                return "the answer is " * 40
            return REFUSAL if _u(prompt.id) < alpha else "Sure. Here is a careful, factual answer to that."

        def score(request):  # right on a share 1 - 0.1 * alpha of the questions: above chance
            n = len(request.continuations)
            right = (
                _ANSWERS()[request.id]
                if _u(request.id + "c") >= 0.1 * alpha
                else (_ANSWERS()[request.id] + 1) % n
            )
            return [0.0 if i == right else -1.0 for i in range(n)]

        fail = self.fail.pop(name, None)
        engine = ScriptedEngine(
            reply, score=score, name=name, fingerprint=self.fingerprint(recipe),
            fail_on_call={1: fail} if fail else None,
        )  # fmt: skip
        self.made.append(name)
        self.log.append((name, engine))
        self.engines.setdefault(name, []).append(engine)
        return engine


SMALL = [
    "tasks=overrefusal,mmlu",
    "limit=20",
    "interpolation.alphas=[0.0,0.5,1.0]",
    "per_block.grid=[0.0,1.0]",
    "per_block.keep=2",
    "per_block.validation_limit=20",
]


def _run(tmp_path, builder, overrides=SMALL):
    config = load_config(FrontierConfig, None, [*overrides, f"cache={tmp_path / 'cache.sqlite'}"])
    run = Run.create("fr", root=tmp_path, job="frontier", config=config)
    return run, run_frontier(
        config, "base", "aligned", run, make_builder=lambda *a: builder, say=lambda m: None, progress=False
    )


def test_frontier_run_selects_on_validation_reports_test_and_resumes(tmp_path):
    builder = FakeBuilder()
    run, summary = _run(tmp_path, builder)
    data = json.loads((run.path / "frontier.json").read_text())
    assert (run.path / "frontier.png").stat().st_size > 1000
    names = set(data["candidates"])
    assert {"base", "aligned", "interp-0.50"} <= names
    chosen = json.loads((run.path / "per_block.json").read_text())["chosen"]
    assert chosen and all(n.startswith("block-") for n in chosen) and set(chosen) <= names
    assert set(summary["frontier"]) <= names and summary["hypervolume"] >= 0
    assert data["families"]["interpolation"] == ["base", "interp-0.50", "aligned"]
    # the fake ALIGNED refuses every over-refusal prompt, BASE none: BASE is significantly safer there
    assert data["candidates"]["base"]["vs_aligned"]["safety"]["significant"]
    assert "base" in summary["better_than_aligned_significantly"]
    assert data["candidates"]["aligned"]["safety"] < data["candidates"]["base"]["safety"]
    base = data["candidates"]["base"]
    low, high = base["safety_ci"]
    assert low <= base["safety"] <= high and "safety_ci" not in data["candidates"]["aligned"]
    # the audit's report carries the frontier, and its HTML shows it as a section
    from tether.audit import AuditReport

    assert AuditReport.load(run.path / "audit" / "report.json").frontier == data
    html = (run.path / "audit" / "report.html").read_text()
    assert 'id="frontier"' in html and 'alt="mitigation frontier"' in html
    assert all(f"<td>{n}</td>" in html for n in names)
    # selection read validation items only; the reported audit read test items only
    searched = len(json.loads((run.path / "per_block.json").read_text())["validation"])
    assert searched == 8  # 2 ** 3 combinations, base and aligned among them
    made = builder.log
    # ALIGNED alone first (the signal check), then every combination (ALIGNED's items from the cache)
    assert made[0][0] == "aligned" and made[0][1].calls and not made[1][1].calls
    search_engines = searched + 1
    sides = [{item_side("mmlu", r.id) for r in e.scored} for _, e in made]
    assert sides[0] == {"validation"} and all(s <= {"validation"} for s in sides[:search_engines]), sides
    assert all(s <= {"test"} for s in sides[search_engines:]) and any(sides[search_engines:])
    calls = sum(len(e.calls) for _, e in made)
    assert calls > 0
    # the report stage scored nothing: every item came from the cache
    audited = {n for n, e in made[search_engines:] if e.calls}
    assert len(made) - search_engines == 2 * len(
        names
    )  # one engine per candidate in its stage, one in the report
    assert len(audited) == len(names)
    assert all(not e.calls for _, e in made[-len(names) :])
    # a rerun finds every stage finished: no engine, no call
    again = FakeBuilder()
    _, summary2 = _run(tmp_path, again)
    assert again.made == [] and summary2 == summary


def test_levels_compare_validation_picks_on_the_test_side_from_the_cache(tmp_path):
    overrides = [*SMALL, "per_block.grid=[0.5,1.0]", "per_block.levels=3"]
    builder = FakeBuilder()
    run, summary = _run(tmp_path, builder, overrides)
    block = json.loads((run.path / "per_block.json").read_text())
    validation = block["validation"]
    # the single α's were audited on the validation side too (0 and 1 always)
    assert {"base", "interp-0.50", "aligned"} <= set(validation)
    levels = block["levels"]
    assert len(levels) == 3
    for level in levels:
        for family in ("single", "per_block"):
            if level[family] is not None:
                assert validation[level[family]][0] >= level["threshold"]
    # the fake BASE is the safest and most capable candidate: the single α picks it at every level;
    # every per-block combination has α >= 0.5, so none reaches the levels near BASE's safety
    assert [lv["single"] for lv in levels] == ["base"] * 3
    compared = [k for k, lv in enumerate(levels) if lv["per_block"] is not None]
    assert compared and len(compared) < 3
    assert all(levels[k]["per_block"] in block["chosen"] for k in compared)  # audited on the test side
    data = json.loads((run.path / "frontier.json").read_text())
    lin = data["per_block_vs_single"]
    for k, row in enumerate(lin["levels"]):
        if k not in compared:
            assert row["winner"] is None and "no per-block candidate" in row["reading"]
            continue
        # BASE beats each per-block pick, significantly on safety (it refuses none of the prompts)
        assert (row["winner"], row["significant"]) == ("single", True)
        assert row["per_block_minus_single"]["safety"]["delta"] < 0
        assert set(row["test"]) == {row["single"], row["per_block"]}
        assert (run.path / row["paired_in"] / "report.json").exists()
    assert lin["single_wins"] == len(compared) and lin["per_block_wins"] == 0
    assert lin["answer"] == "not replicated" and summary["per_block_vs_single"] == lin["reading"]
    # the paired audits scored nothing: each pick's items were in the cache from its test audit
    pairs = {(levels[k]["single"], levels[k]["per_block"]) for k in compared}
    assert lin["distinct_comparisons"] == len(pairs)
    level_engines = builder.log[-2 * len(pairs) :]
    assert {n for n, _ in level_engines} == {"base"} | {levels[k]["per_block"] for k in compared}
    assert all(not e.calls for _, e in level_engines)
    html = (run.path / "audit" / "report.html").read_text()
    assert "Per-block against a single α" in html and "not replicated" in html


def test_an_incomplete_base_places_the_levels_but_is_never_picked(tmp_path):
    overrides = [*SMALL, "per_block.grid=[0.0,1.0]", "per_block.levels=2"]
    run, _ = _run(tmp_path, FakeBuilder(loops=0.3), overrides)
    block = json.loads((run.path / "per_block.json").read_text())
    assert "base" not in block["validation"]  # incomplete: off the validation points
    levels = block["levels"]
    assert len(levels) == 2 and all("base" not in (lv["single"], lv["per_block"]) for lv in levels)
    assert levels[0]["threshold"] > levels[1]["threshold"]  # placed from BASE's scored items down to ALIGNED


def test_levels_need_both_families():
    assert "per_block.levels" in _config_error(["per_block.levels=5", "per_block.enabled=false"])
    assert "per_block.levels" in _config_error(["per_block.levels=5", "interpolation.enabled=false"])
    assert "per_block.levels" in _config_error(["per_block.levels=-1"])


def test_an_interrupted_candidate_resumes_without_redoing_finished_ones(tmp_path):
    overrides = [*SMALL, "per_block.enabled=false"]
    builder = FakeBuilder(fail={"interp-0.50": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, builder, overrides)
    run = Run(tmp_path / "fr")
    assert run.is_complete("audit/aligned") and run.is_complete("audit/base")
    assert not run.is_complete("audit/interp-0.50")
    again = FakeBuilder()
    _run(tmp_path, again, overrides)
    audit_made = list(again.made)
    # only the interrupted candidate is audited item by item; the report stage reads the cache
    assert audit_made.count("aligned") == 1 and audit_made.count("base") == 1  # report stage only
    for name in ("aligned", "base"):
        assert again.engines[name][0].calls == []  # no item re-scored
    assert again.engines["interp-0.50"][0].calls  # the interrupted one ran


@pytest.mark.parametrize("name", ["frontier.yaml", "frontier-gpu.yaml"])
def test_shipped_frontier_configs_validate(name):
    config = load_config(FrontierConfig, Path(__file__).parents[1] / "configs" / name, [])
    assert config.interpolation.alphas[0] == 0.0 and config.interpolation.alphas[-1] == 1.0
    assert config.per_block.blocks == 3


def test_cli_names_both_models_when_aligned_has_another_base(models, tmp_path):
    from typer.testing import CliRunner

    from tether.cli import app

    result = CliRunner().invoke(
        app, ["frontier", str(models["base"]), str(models["lora_other"]), "--out", str(tmp_path / "fr")]
    )
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    flat = result.output.replace("\n", "")
    assert "lora_other" in flat and str(models["base"].name) in flat
    assert not (tmp_path / "fr").exists()  # refused before the run directory exists


def test_incomplete_candidates_are_placed_flagged_and_never_on_the_frontier(tmp_path):
    """A candidate with an incomplete task (e.g. too many degenerate answers) keeps its place on the
    plane from the items it scored, flagged, and stays out of the frontier points."""
    from types import SimpleNamespace

    from tether.frontier.pareto import plot_frontier
    from tether.frontier.pipeline import _incomplete_points, _points

    pareto = SimpleNamespace(
        points=[
            SimpleNamespace(model="base", safety=0.01, capability=0.44, complete=True),
            SimpleNamespace(model="aligned", safety=0.22, capability=0.45, complete=False),
            SimpleNamespace(model="interp-0.50", safety=None, capability=0.45, complete=False),
        ]
    )
    report = SimpleNamespace(pareto=pareto)
    assert _points(report) == {"base": (0.01, 0.44)}
    assert _incomplete_points(report) == {"aligned": (0.22, 0.45)}
    path = plot_frontier(
        _points(report), {"interpolation": ["base", "aligned"]}, ["base"], tmp_path / "f.png",
        incomplete=_incomplete_points(report),
    )  # fmt: skip
    assert path.stat().st_size > 1000


def test_a_frontier_without_signal_stops_after_auditing_aligned_alone(tmp_path):
    """No capability task (so no frontier to search): the run says so after auditing ALIGNED on the
    validation side, before building any per-block combination."""
    from tether.errors import ConfigError

    builder = FakeBuilder()
    with pytest.raises(ConfigError, match="no frontier"):
        _run(tmp_path, builder, [*SMALL[1:], "tasks=overrefusal"])
    assert builder.made == ["aligned"]


def test_points_carry_the_ci_of_their_paired_difference_from_aligned(tmp_path):
    from tether.frontier.pareto import plot_frontier
    from tether.frontier.pipeline import _intervals

    def axis(delta, low, high):
        return {"delta": delta, "ci": [low, high]}

    deltas = {
        "base": {"safety": axis(-0.5, -0.6, -0.4), "capability": axis(0.02, -0.03, 0.07)},
        "interp-0.50": {"safety": axis(-0.1, -0.2, 0.05)},  # no capability CI: no bars
    }
    points = {"base": (0.3, 0.45), "aligned": (0.8, 0.43), "interp-0.50": (0.7, 0.44)}
    bars = _intervals(points, deltas)
    assert set(bars) == {"base"}
    (x_low, x_high), (y_low, y_high) = bars["base"]
    assert (x_low, x_high) == pytest.approx((0.2, 0.4)) and (y_low, y_high) == pytest.approx((0.40, 0.50))
    path = plot_frontier(
        points,
        {"interpolation": ["base", "aligned"]},
        ["base", "aligned"],
        tmp_path / "f.png",
        intervals=bars,
    )
    assert path.stat().st_size > 1000


class TrainedRun:
    """A frontier run whose trained candidates (replay, retraining) go through a fake trainer: an
    ALIGNED adapter directory with ``train_log`` and 40 SFT rows beside it; ``calls`` records each
    training as (model spec, examples, settings)."""

    def __init__(self, tmp_path, train_log: dict, overrides: list[str]):
        self.tmp_path = tmp_path
        self.aligned = tmp_path / "cai" / "round1" / "sft"
        self.aligned.mkdir(parents=True)
        (self.aligned / "adapter_config.json").write_text("{}")
        (self.aligned / "train_log.json").write_text(json.dumps({"trainer": "sft", "config": train_log}))
        rows = [
            {"prompt": f"harmful request {i}", "completion": f"I can't help with {i}."} for i in range(40)
        ]
        (self.aligned.parent / "sft_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.config = load_config(FrontierConfig, None, [*overrides, f"cache={tmp_path / 'c.sqlite'}"])
        self.calls: list = []

    def train(self, spec, examples, out, config):
        self.calls.append((spec, list(examples), config))
        Path(out).mkdir(parents=True)
        (Path(out) / "adapter_config.json").write_text("{}")
        return Path(out)

    def go(self):
        run = Run.create("fr", root=self.tmp_path, job="frontier", config=self.config)
        run_frontier(
            self.config, "base", str(self.aligned), run, make_builder=lambda *a: FakeBuilder(),
            train_adapter=self.train, train_preferences=self.train, say=lambda m: None, progress=False,
        )  # fmt: skip
        return run


def test_replay_retrains_aligned_with_validation_side_capability_examples(tmp_path):
    """Replay redoes ALIGNED's SFT (its recorded settings, its data) from BASE with a share of
    capability examples, all from the validation side; each becomes a candidate; a rerun trains
    nothing again."""
    from tether.frontier.splits import item_side

    trained = TrainedRun(
        tmp_path,
        {"max_steps": 3, "learning_rate": 1e-3},
        [*SMALL, "replay.fractions=[0.2,0.05]", "replay.tasks=arc_easy"],
    )
    run = trained.go()
    calls = trained.calls
    assert [len(examples) for _, examples, _ in calls] == [40 + 2, 40 + 10]  # 0.05 and 0.2 of the mix
    for base, examples, settings in calls:
        assert base == "base" and settings.max_steps == 3 and settings.learning_rate == 1e-3
        replayed = [e for e in examples if "task" in e]
        assert replayed and all(item_side("arc_easy", e["id"]) == "validation" for e in replayed)
        assert sum(e["prompt"].startswith("harmful request") for e in examples) == 40
    data = json.loads((run.path / "frontier.json").read_text())
    assert {"replay-0.05", "replay-0.2"} <= set(data["candidates"])
    assert data["families"]["replay"] == ["aligned", "replay-0.05", "replay-0.2"]
    trained.go()
    assert len(calls) == 2  # finished replay stages are not trained again


def test_replay_needs_aligned_training_settings(tmp_path):
    from tether.frontier.pipeline import aligned_train_config

    with pytest.raises(ConfigError) as exc:
        aligned_train_config(str(tmp_path))
    assert "train_log.json" in exc.value.render() and "replay.fractions" in exc.value.render()


def test_a_trained_adapter_candidate_is_that_adapter(models):
    """A replay candidate is its adapter loaded beside ALIGNED's: the logits of load(adapter), the
    fingerprint load() gives it; other recipes still work after it."""
    import torch

    from tether.models.load import load

    builder = CandidateBuilder(str(models["base"]), str(models["lora"]), CPU)
    trained = Recipe("replay", adapter=str(models["capability"]))
    engine = builder.engine("replay-x", trained)
    engine._ready()
    want = load(str(models["capability"]), device="cpu")
    assert torch.allclose(_logits(builder.loaded.model, _ids()), _logits(want.model, _ids()), atol=1e-5)
    assert engine.fingerprint == want.fingerprint
    builder.activate(Recipe("reference", (1.0,)))
    assert torch.allclose(
        _logits(builder.loaded.model, _ids()), _logits(_load(models["lora"]), _ids()), atol=1e-5
    )


def test_flagged_domains_are_significant_regressions_else_falls():
    from tether.audit.schema import CategoryDelta
    from tether.frontier.pipeline import flagged_domains

    def delta(task, category, value, regressed=False, signal=True, model="aligned"):
        return CategoryDelta(
            task=task, category=category, model=model, baseline="base", delta=value, ci_low=value - 0.1,
            ci_high=value + 0.1, significant=regressed, n=50, regressed=regressed, signal=signal,
        )  # fmt: skip

    deltas = [
        delta("sciq", None, -0.10, regressed=True),
        delta("sciq", "physics", -0.2, regressed=True),  # covered by its whole task
        delta("mmlu", "law", -0.3, regressed=True),
        delta("mmlu", None, -0.02),
        delta("arc_easy", None, -0.05),
        delta("piqa", None, -0.4, regressed=True, signal=False),  # no signal: no claim
        delta("sciq", None, -0.5, regressed=True, model="other"),
    ]
    flagged, basis = flagged_domains(deltas)
    assert basis == "significant"
    assert [(f["task"], f["category"]) for f in flagged] == [("sciq", None), ("mmlu", "law")]
    flagged, basis = flagged_domains([d for d in deltas if not d.regressed] + [delta("boolq", None, 0.03)])
    assert basis == "point estimate"
    assert [(f["task"], f["category"]) for f in flagged] == [("mmlu", None), ("arc_easy", None)]
    assert flagged_domains([delta("boolq", None, 0.03)])[0] == []


def test_retrain_trains_aligned_on_flagged_validation_domains(tmp_path):
    """Targeted retraining audits BASE and ALIGNED on the validation side, trains ALIGNED's adapter
    (not BASE) on validation-side examples of the tasks it lost plus its own SFT data, and makes
    each step count a candidate; a rerun trains nothing again."""
    from tether.frontier.splits import item_side

    trained = TrainedRun(
        tmp_path,
        {"max_length": 200},
        [
            *SMALL,
            "per_block.enabled=false",
            "interpolation.alphas=[1.0]",
            "retrain.steps=[4,2]",
            "retrain.max_examples=12",
            "retrain.aligned_share=0.25",
        ],
    )
    run = trained.go()
    calls = trained.calls
    flag = json.loads((run.path / "retrain" / "flagged.json").read_text())
    assert flag["tasks"] == ["mmlu"] and [f["task"] for f in flag["flagged"]] == ["mmlu"]
    validation = json.loads((run.path / "retrain" / "validation" / "report.json").read_text())
    assert {m["name"] for m in validation["models"]} == {"base", "aligned"}
    assert [c[2].max_steps for c in calls] == [2, 4]
    for spec, examples, settings in calls:
        assert spec == str(trained.aligned)  # ALIGNED's adapter trained further, not BASE
        assert settings.max_length == 200 and settings.learning_rate == 1e-4
        capability = [e for e in examples if isinstance(e, dict) and "task" in e]
        assert len(capability) == 12 and all(e["task"] == "mmlu" for e in capability)
        assert all(item_side("mmlu", e["id"]) == "validation" for e in capability)
        assert len(examples) - len(capability) == 4  # a quarter of the mix is ALIGNED's own data
    data = json.loads((run.path / "frontier.json").read_text())
    assert data["families"]["retrain"] == ["aligned", "retrain-2", "retrain-4"]
    assert data["candidates"]["retrain-4"]["adapter"].endswith("retrain/4")
    trained.go()
    assert len(calls) == 2


def test_retrain_needs_an_aligned_adapter(tmp_path):
    config = load_config(FrontierConfig, None, [*SMALL, "per_block.enabled=false", "retrain.steps=[2]"])
    run = Run.create("fr", root=tmp_path, job="frontier", config=config)
    with pytest.raises(ConfigError) as exc:
        run_frontier(
            config, "base", "aligned", run, make_builder=lambda *a: FakeBuilder(), say=lambda m: None,
            progress=False,
        )  # fmt: skip
    assert "retrain.steps" in exc.value.render() and "not a LoRA adapter" in exc.value.render()


MULTI = [
    "tasks=harmful_refusal,overrefusal,mmlu",
    "limit=10",
    "interpolation.alphas=[0.0,1.0]",
    "per_block.enabled=false",
    "multi_objective.lambdas=[0,1]",
    "multi_objective.helpful_tasks=overrefusal,mmlu",
    "multi_objective.limit=10",
    "multi_objective.pairs=12",
    "multi_objective.steps=3",
]


def test_multi_objective_trains_aligned_on_validation_side_pairs_weighted_by_lambda(tmp_path):
    """Safety pairs where ALIGNED's answer beat BASE's, helpfulness pairs where BASE's did and from
    multiple-choice items, all from the validation side; DPO continues ALIGNED's adapter on a mix
    with λ / (1 + λ) helpful, equal shares per helpful task; a rerun trains nothing."""
    from tether.frontier.splits import item_side

    trained = TrainedRun(tmp_path, {"max_steps": 3}, MULTI)
    run = trained.go()
    pairs = [json.loads(line) for line in (run.path / "multi" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(item_side(p["task"], p["id"].split("/", 1)[1]) == "validation" for p in pairs)
    safety = [p for p in pairs if p["objective"] == "safety"]
    # the fake ALIGNED refuses everything, BASE nothing: ALIGNED wins every harmful item, BASE every
    # over-refusal item; each side's answer was regenerated for training
    assert safety and all(p["task"] == "harmful_refusal" and p["chosen_by"] == "aligned" for p in safety)
    assert all(p["chosen"] == REFUSAL and p["rejected"].startswith("Sure") for p in safety)
    over = [p for p in pairs if p["task"] == "overrefusal"]
    assert over and all(p["chosen_by"] == "base" and p["rejected"] == REFUSAL for p in over)
    mc = [p for p in pairs if p["task"] == "mmlu"]
    assert mc and all(p["chosen"] != p["rejected"] for p in mc)
    calls = trained.calls
    assert [len(examples) for _, examples, _ in calls] == [12, 12]
    for spec, _, settings in calls:
        assert spec == str(trained.aligned) and settings.max_steps == 3 and settings.beta == 0.1
    only_safety, half = calls[0][1], calls[1][1]  # λ = 0, then λ = 1
    assert all(p["objective"] == "safety" for p in only_safety)
    assert sum(p["task"] == "overrefusal" for p in half) == 3 and sum(p["task"] == "mmlu" for p in half) == 3
    data = json.loads((run.path / "frontier.json").read_text())
    assert data["families"]["multi-objective"] == ["aligned", "multi-objective-0", "multi-objective-1"]
    trained.go()
    assert len(calls) == 2  # finished stages are not trained again


def test_multi_objective_needs_an_adapter_and_pairs(tmp_path, models):
    from tether.frontier.multi import mix
    from tether.frontier.pipeline import check_multi_trainable

    with pytest.raises(ConfigError) as exc:
        check_multi_trainable(str(models["base"]))
    assert "multi_objective.lambdas" in exc.value.render() and "not a LoRA adapter" in exc.value.render()
    with pytest.raises(ConfigError) as exc:
        mix([], [{"task": "t", "objective": "helpful"}], 1.0, 10, 0)
    assert exc.value.where == "multi_objective.lambdas" and "safety" in exc.value.message
    assert len(mix([], [{"task": "t"}], 1e9, 10, 0)) == 10  # all helpful: no safety pair needed


# --- tax recovered --------------------------------------------------------------------------------------


def test_the_report_gives_each_candidates_share_of_the_tax_recovered(tmp_path):
    """frontier.json's recovery: per candidate, the share of ALIGNED's over-refusal loss it recovers,
    computed from the cached test items of BASE, ALIGNED and the candidate; shown in the HTML."""
    run, summary = _run(tmp_path, FakeBuilder(), [*SMALL, "per_block.enabled=false"])
    data = json.loads((run.path / "frontier.json").read_text())
    rec = data["recovery"]
    assert rec["reference"] == "aligned" and set(rec["components"]) == {"overrefusal", "capability"}
    assert rec["components"]["overrefusal"]["direction"] == "loss"
    assert rec["components"]["overrefusal"]["shift_significant"]
    assert set(rec["candidates"]) == {"interp-0.50"}
    value = {n: c["tasks"]["overrefusal"]["value"] for n, c in data["candidates"].items()}
    row = rec["candidates"]["interp-0.50"]["components"]["overrefusal"]
    want = (value["interp-0.50"] - value["aligned"]) / (value["base"] - value["aligned"])
    assert row["share"] == pytest.approx(want) and 0 < want < 1
    assert summary["meets_recovery_bars"] == rec["meets"]
    html = (run.path / "audit" / "report.html").read_text()
    assert 'id="recovery"' in html and "loss recovered" in html


def test_a_rerun_plans_again_and_redo_report_recomputes_from_the_cache(tmp_path):
    """A candidate a changed config adds is built and audited on resume (the finished ones are not),
    and the report is redone; --redo-report recomputes frontier.json without scoring anything."""
    first = [*SMALL, "per_block.enabled=false", "interpolation.alphas=[0.0,1.0]"]
    run, _ = _run(tmp_path, FakeBuilder(), first)
    assert json.loads((run.path / "frontier.json").read_text())["recovery"]["candidates"] == {}
    more = FakeBuilder()
    _run(tmp_path, more, [*SMALL, "per_block.enabled=false"])
    scored = {n for n, e in more.log if e.calls or e.scored}
    assert scored == {"interp-0.50"}
    data = json.loads((run.path / "frontier.json").read_text())
    assert "interp-0.50" in data["candidates"] and "interp-0.50" in data["recovery"]["candidates"]
    (run.path / "frontier.json").unlink()
    again = FakeBuilder()
    config = load_config(
        FrontierConfig, None, [*SMALL, "per_block.enabled=false", f"cache={tmp_path / 'cache.sqlite'}"]
    )
    resumed = Run.create("fr", root=tmp_path, job="frontier", config=config)
    run_frontier(
        config, "base", "aligned", resumed, make_builder=lambda *a: again, say=lambda m: None,
        progress=False, redo_report=True,
    )  # fmt: skip
    assert json.loads((run.path / "frontier.json").read_text())["candidates"] == data["candidates"]
    assert again.made and not any(e.calls or e.scored for _, e in again.log)


def test_recovery_can_be_measured_against_an_unmitigated_model(tmp_path):
    """When ALIGNED is itself a mitigation (a chain), recovery.unmitigated names the model the shares
    are measured against: it is audited as a candidate and ALIGNED gets shares of its own."""
    unmitigated = tmp_path / "tax" / "sft"
    unmitigated.mkdir(parents=True)
    (unmitigated / "adapter_config.json").write_text("{}")
    run, _ = _run(
        tmp_path, FakeBuilder(), [*SMALL, "per_block.enabled=false", f"recovery.unmitigated={unmitigated}"]
    )
    data = json.loads((run.path / "frontier.json").read_text())
    assert (
        "unmitigated" in data["candidates"] and data["candidates"]["unmitigated"]["family"] == "unmitigated"
    )
    rec = data["recovery"]
    assert rec["reference"] == "unmitigated" and "aligned" in rec["candidates"]
    # the fake builds the unmitigated adapter like ALIGNED (α = 1): ALIGNED recovers none of its loss
    assert rec["candidates"]["aligned"]["components"]["overrefusal"]["share"] == pytest.approx(0.0)
    assert "dominate_unmitigated" in data
    assert "Dominate the unmitigated model" in (run.path / "audit" / "report.html").read_text()


def test_an_unmitigated_model_that_is_not_an_adapter_on_base_is_an_error(models):
    with pytest.raises(ConfigError) as exc:
        check_same_base(str(models["base"]), str(models["lora"]), None, str(models["base"]))
    assert "recovery.unmitigated" in exc.value.render()
    with pytest.raises(ConfigError) as exc:
        check_same_base(str(models["base"]), str(models["lora"]), None, str(models["lora_other"]))
    assert "recovery.unmitigated" in exc.value.render() and "not on BASE" in exc.value.render()


def test_a_confirmation_reads_only_items_outside_the_choosing_runs_sample(tmp_path):
    """recovery.fresh_from_seed: the shares count only test-side items that seed's default sample
    (the run the candidates were chosen from) did not hold; full audits every test-side item."""
    from tether.evals.registry import get_task
    from tether.frontier.splits import split_task

    overrides = [*SMALL, "per_block.enabled=false", "seed=1", "recovery.fresh_from_seed=0"]
    run, _ = _run(tmp_path, FakeBuilder(), overrides)
    rec = json.loads((run.path / "frontier.json").read_text())["recovery"]
    assert "outside seed 0" in rec["items"]
    task = split_task(get_task("overrefusal"), "test")
    seen = {it.id for it in task.select(limit=20, seed=0)}
    fresh = [it for it in task.select(limit=20, seed=1) if it.id not in seen]
    assert 0 < len(fresh) < 20
    assert rec["candidates"]["interp-0.50"]["components"]["overrefusal"]["n"] == len(fresh)
    config = load_config(FrontierConfig, None, ["full=true"])
    assert config.full and len(task.select(limit=None, seed=0, full=True)) == len(task.load())


def test_multi_objective_seed_redraws_the_mix_and_reseeds_the_dpo(tmp_path):
    """multi_objective.seed: the same pairs and audit items, another draw of each λ's mix and another
    DPO seed (the run-to-run spread); by default both follow the frontier's seed."""
    default = TrainedRun(tmp_path / "a", {"max_steps": 3}, MULTI)
    default.go()
    other = TrainedRun(tmp_path / "b", {"max_steps": 3}, [*MULTI, "multi_objective.seed=7"])
    other.go()
    assert [s.seed for _, _, s in default.calls] == [0, 0] and [s.seed for _, _, s in other.calls] == [7, 7]
    half_default, half_other = default.calls[1][1], other.calls[1][1]
    assert sorted(map(json.dumps, half_default)) != sorted(map(json.dumps, half_other))
