"""tether.interp hooks on the tiny random Llama: identity, clean-up, the cache, ablation and
weight orthogonalisation."""

from __future__ import annotations

import pytest
import torch

from tether.config import EngineConfig
from tether.errors import ModelLoadError
from tether.interp.directions import orthogonalised, refusal_score, separation
from tether.interp.hooks import (
    POINTS,
    ablation_hooks,
    addition_hooks,
    find_layers,
    hook_name,
    hooked,
    layer_output_kinds,
    project_out,
    run_with_cache,
    skipping_layers,
)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from tether.engine.engine import Engine

    return Engine.from_spec(str(tiny_model_dir), EngineConfig(device="cpu"))


def _ids(engine) -> torch.Tensor:
    return torch.tensor([engine.tokenizer("The cat sat on the mat")["input_ids"]])


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_identity_hooks_leave_the_logits_unchanged(engine):
    model, ids = engine.model, _ids(engine)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    layers = find_layers(model)
    seen = []

    def identity(x, name):
        seen.append(name)
        return x.clone()

    with torch.no_grad(), hooked(model, {n: identity for n in layers.names()}):
        hooked_logits = model(input_ids=ids).logits
    assert len(seen) == 4 * len(layers)
    assert torch.allclose(plain, hooked_logits, atol=1e-6, rtol=0)


def test_hooks_are_removed_after_an_exception(engine):
    model, ids = engine.model, _ids(engine)
    before = _hook_count(model)

    def boom(x, name):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"), hooked(model, {"blocks.1.hook_mlp_out": boom}):
        model(input_ids=ids)
    assert _hook_count(model) == before
    model(input_ids=ids)  # runs: the failing hook is gone


def test_skipping_layers_enters_above_the_skipped_ones_and_puts_them_back(engine):
    model, ids = engine.model, _ids(engine)
    layers = find_layers(model)
    with torch.no_grad():
        with layer_output_kinds(layers) as kinds:
            plain, cache = run_with_cache(
                model, [hook_name(i, "hook_resid_pre") for i in (0, 1)], input_ids=ids
            )
        entering = cache[hook_name(1, "hook_resid_pre")]
        # a skipped layer passes its input through unchanged
        with skipping_layers(layers, 1, kinds[0]):
            _, passed = run_with_cache(model, [hook_name(1, "hook_resid_pre")], input_ids=ids)
        assert torch.equal(passed[hook_name(1, "hook_resid_pre")], cache[hook_name(0, "hook_resid_pre")])
        # layer 0 skipped, what enters layer 1 put in place: the same logits
        with (
            skipping_layers(layers, 1, kinds[0]),
            hooked(model, {hook_name(1, "hook_resid_pre"): lambda x, _n: entering}),
        ):
            skipped = model(input_ids=ids).logits
        assert torch.allclose(plain.logits, skipped, atol=1e-5, rtol=0)
        # without the entering state the skipped layer shows: layer 0's work is really not done
        with skipping_layers(layers, 1, kinds[0]):
            assert not torch.allclose(plain.logits, model(input_ids=ids).logits, atol=1e-3)
        with pytest.raises(RuntimeError, match="inside"), skipping_layers(layers, 2, kinds[0]):
            raise RuntimeError("inside")
        assert all("forward" not in layer.__dict__ for layer in layers.layers)
        assert torch.allclose(plain.logits, model(input_ids=ids).logits, atol=1e-6, rtol=0)


def test_run_with_cache_names_and_shapes(engine):
    model, ids = engine.model, _ids(engine)
    out, cache = run_with_cache(model, input_ids=ids)
    layers = find_layers(model)
    assert sorted(cache) == sorted(hook_name(i, p) for i in range(len(layers)) for p in POINTS)
    d = model.config.hidden_size
    assert all(t.shape == (1, ids.shape[1], d) for t in cache.values())
    # the stream leaving layer 0 is the stream entering layer 1, and it is the input plus both writes
    assert torch.allclose(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    total = (
        cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"]
    )
    assert torch.allclose(total, cache["blocks.0.hook_resid_post"], atol=1e-5)
    assert out.logits.shape[:2] == ids.shape
    assert _hook_count(model) == 0


def test_unknown_hook_name_is_an_error(engine):
    with (
        pytest.raises(KeyError, match="blocks.9.hook_resid_pre"),
        hooked(engine.model, {"blocks.9.hook_resid_pre": None}),
    ):
        pass
    assert _hook_count(engine.model) == 0


def test_ablation_removes_the_direction_everywhere(engine):
    model, ids = engine.model, _ids(engine)
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    unit = direction / direction.norm()
    layers = find_layers(model)
    _, clean = run_with_cache(model, input_ids=ids)
    _, ablated = run_with_cache(model, hooks=ablation_hooks(layers, direction), input_ids=ids)
    assert clean["blocks.1.hook_resid_pre"].matmul(unit).abs().max() > 1e-2  # it was there
    for name, act in ablated.items():
        assert act.matmul(unit).abs().max() < 1e-4, name


def test_project_out_by_hand():
    x = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(project_out(x, torch.tensor([0.0, 2.0])), torch.tensor([[3.0, 0.0]]))


def test_weight_orthogonalisation_equals_hook_ablation(engine):
    model, ids = engine.model, _ids(engine)
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    layers = find_layers(model)
    embed_before = model.get_input_embeddings().weight.clone()
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with hooked(model, ablation_hooks(layers, direction)):
            by_hooks = model(input_ids=ids).logits
        with orthogonalised(model, direction):
            by_weights = model(input_ids=ids).logits
        restored = model(input_ids=ids).logits
    assert (by_hooks - clean).abs().max() > 1e-3  # the ablation does something
    assert torch.allclose(by_hooks, by_weights, atol=1e-4), (by_hooks - by_weights).abs().max()
    assert torch.equal(restored, clean)
    assert torch.equal(model.get_input_embeddings().weight, embed_before)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tie restored


def test_addition_moves_the_stream_by_the_vector(engine):
    model, ids = engine.model, _ids(engine)
    vector = torch.ones(model.config.hidden_size)
    _, clean = run_with_cache(model, names=["blocks.1.hook_resid_pre"], input_ids=ids)
    _, added = run_with_cache(
        model, names=["blocks.1.hook_resid_pre"], hooks=addition_hooks(1, vector), input_ids=ids
    )
    assert torch.allclose(
        added["blocks.1.hook_resid_pre"] - clean["blocks.1.hook_resid_pre"],
        vector.expand(1, ids.shape[1], -1),
    )


def test_unsupported_structure_names_the_missing_module():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = torch.nn.Linear(2, 2)
            self.ffn = torch.nn.Linear(2, 2)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Block(), Block()])

    with pytest.raises(ModelLoadError, match=r"layers\.0\.mlp"):
        find_layers(Model())
    with pytest.raises(ModelLoadError, match="no ModuleList"):
        find_layers(torch.nn.Linear(2, 2))


def test_refusal_score_and_separation_by_hand():
    # p(refusal) = 0.5 over tokens {0, 1}: log-odds 0
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    assert refusal_score(logits, [0, 1]).item() == pytest.approx(0.0, abs=1e-6)
    assert refusal_score(logits, [0]).item() == pytest.approx(
        torch.log(torch.tensor(0.25 / 0.75)).item(), abs=1e-6
    )
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[-1.0, 5.0], [-3.0, 5.0]])
    # projections 1,3 vs -1,-3: means 2 and -2, variances 2 and 2 → d = 4 / sqrt(2)
    assert separation(a, b, torch.tensor([2.0, 0.0])) == pytest.approx(4 / 2**0.5)


def test_last_logits_run_the_head_on_the_last_positions_only(engine):
    """last_logits equals the full forward's last column, while the head sees one contiguous row
    per prompt (a CPU F.linear on the strided last-position view runs about 10x slower)."""
    from tether.engine.types import Prompt
    from tether.interp.forward import encode, last_logits
    from tether.models.padding import left_pad, positions_from_mask

    rows = encode(
        engine, [Prompt(id=str(i), text=t) for i, t in enumerate(["Hi", "Tell me a long story", "Why?"])]
    )
    head = engine.model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(
        lambda _, args, out: seen.append((tuple(args[0].shape), args[0].is_contiguous()))
    )
    try:
        kept = last_logits(engine, rows, batch_size=3)
    finally:
        handle.remove()
    assert seen == [((3, 1, engine.model.config.hidden_size), True)]
    ids, mask = left_pad(rows, engine.tokenizer.pad_token_id, engine.loaded.device)
    with torch.no_grad():
        full = engine.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    assert torch.allclose(kept, full[:, -1].float(), atol=1e-5)
