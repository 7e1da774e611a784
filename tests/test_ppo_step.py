"""PPO update on the tiny random Llama: log-probs, the value head and one update that trains."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.errors import ModelLoadError
from tether.train.ppo import (
    PolicyWithValueHead,
    PPOConfig,
    build_rollout,
    logprobs_of,
    policy_forward,
    ppo_update,
)

PROMPTS = ["Summarise the news.", "Hi", "Write a haiku about rain and wind.", "Why?"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    return tok


def load_policy(tiny_model_dir, **kwargs) -> PolicyWithValueHead:
    torch.manual_seed(0)
    return PolicyWithValueHead(AutoModelForCausalLM.from_pretrained(tiny_model_dir), **kwargs)


def synthetic_batch(tokenizer, lengths=(6, 4, 6, 5)):
    """Left-padded prompts and right-padded random responses; every row uses its own token range
    so pushing one row up and another down does not fight over the same tokens."""
    query = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = max(lengths)
    gen = torch.Generator().manual_seed(1)
    response_ids = torch.full((len(lengths), width), tokenizer.pad_token_id)
    response_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        low = 1000 + 2000 * row
        response_ids[row, :n] = torch.randint(low, low + 2000, (n,), generator=gen)
        response_mask[row, :n] = 1
    return query.input_ids, query.attention_mask, response_ids, response_mask


def test_logprobs_of_matches_full_log_softmax(tiny_model_dir, tokenizer):
    """Keeping only the response logits gives the same numbers as a full-sequence log_softmax."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q_ids, q_mask, r_ids, r_mask = synthetic_batch(tokenizer)
    ids, mask = torch.cat([q_ids, r_ids], 1), torch.cat([q_mask, r_mask], 1)
    start = q_ids.shape[1]
    with torch.no_grad():
        fast = logprobs_of(model, ids, mask, start)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.log_softmax(-1)
    naive = full[:, start - 1 : -1].gather(-1, ids[:, start:, None]).squeeze(-1) * r_mask
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    assert fast[1, 4:].abs().sum() == 0  # padding in row 1 comes back as 0


def test_left_padding_does_not_change_logprobs(tiny_model_dir, tokenizer):
    """A short prompt scored in a padded batch gives the same log-probs as scored alone."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q_ids, q_mask, r_ids, r_mask = synthetic_batch(tokenizer)
    with torch.no_grad():
        batched = logprobs_of(
            model, torch.cat([q_ids, r_ids], 1), torch.cat([q_mask, r_mask], 1), q_ids.shape[1]
        )
        alone_q = tokenizer([PROMPTS[1]], return_tensors="pt")
        ids = torch.cat([alone_q.input_ids, r_ids[1:2]], 1)
        mask = torch.cat([alone_q.attention_mask, r_mask[1:2]], 1)
        alone = logprobs_of(model, ids, mask, alone_q.input_ids.shape[1])
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-4)


def test_value_head_forward_and_save_load(tiny_model_dir, tokenizer, tmp_path):
    policy = load_policy(tiny_model_dir)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    logits, values = policy(enc.input_ids, enc.attention_mask)
    assert logits.shape == (*enc.input_ids.shape, policy.config.vocab_size)
    assert values.shape == enc.input_ids.shape and values.dtype == torch.float32
    assert values.abs().max() < 1.0  # small init: values start near 0

    with torch.no_grad():
        policy.value_head.weight.fill_(0.5)
    policy.save(tmp_path, save_model=False)
    fresh = PolicyWithValueHead.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path
    )
    torch.testing.assert_close(fresh.value_head.weight, policy.value_head.weight)
    torch.testing.assert_close(
        fresh(enc.input_ids, enc.attention_mask)[1], policy(enc.input_ids, enc.attention_mask)[1]
    )
    with pytest.raises(ModelLoadError, match="no value head"):
        fresh.load_value_head(tmp_path / "missing")


def test_ppo_update_trains(tiny_model_dir, tokenizer):
    """Positive-score rows become more likely, negative ones less; the value head moves."""
    policy = load_policy(tiny_model_dir)
    ref = copy.deepcopy(policy.model).requires_grad_(False)
    q_ids, q_mask, r_ids, r_mask = synthetic_batch(tokenizer)
    scores = torch.tensor([1.0, 1.0, -1.0, -1.0])
    rollout = build_rollout(policy, ref, q_ids, q_mask, r_ids, r_mask, scores)
    head_before = [p.detach().clone() for p in policy.value_head.parameters()]
    config = PPOConfig(epochs=4, minibatch_size=2, whiten_advantages=False, init_kl_coef=0.0, target_kl=None)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    torch.manual_seed(0)
    stats = ppo_update(policy, optimizer, rollout, config)

    assert stats.n_updates == 8
    for name, value in stats._asdict().items():
        assert torch.isfinite(torch.tensor(float(value))), name
    with torch.no_grad():
        new_logprobs, _, _ = policy_forward(
            policy, rollout.input_ids, rollout.attention_mask, rollout.response_start
        )
    gain = (new_logprobs - rollout.old_logprobs).sum(dim=1)
    assert (gain[:2] > 0).all() and (gain[2:] < 0).all(), gain
    for before, after in zip(head_before, policy.value_head.parameters(), strict=True):
        assert not torch.equal(before, after)
    assert stats.score_mean == 0.0
    assert stats.response_length == pytest.approx(21 / 4)


def test_first_minibatch_ratio_is_exactly_one(tiny_model_dir, tokenizer):
    """One epoch, one minibatch: the policy has not moved yet, so no token is clipped and KL(old||new) = 0."""
    policy = load_policy(tiny_model_dir)
    rollout = build_rollout(
        policy, policy.model, *synthetic_batch(tokenizer), torch.tensor([1.0, 0.0, -1.0, 2.0])
    )
    config = PPOConfig(epochs=1, minibatch_size=4)
    stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=1e-2), rollout, config, kl_coef=0.1)
    assert stats.n_updates == 1
    assert stats.clipfrac == 0.0
    assert stats.approx_kl == pytest.approx(0.0, abs=1e-7)
    assert stats.kl_to_ref == 0.0 and stats.kl_coef == 0.1
    # Returns start from values near 0, so the value loss is about half the mean squared return.
    assert stats.value_loss > 0


def test_micro_batches_match_one_big_batch(tiny_model_dir, tokenizer):
    """Gradient accumulation over micro-batches of 2 takes the same step as the minibatch of 4."""
    batch = synthetic_batch(tokenizer)
    results = []
    for micro in (None, 1):
        policy = load_policy(tiny_model_dir)
        rollout = build_rollout(policy, policy.model, *batch, torch.tensor([1.0, 0.5, -1.0, 2.0]))
        config = PPOConfig(epochs=1, minibatch_size=4, micro_batch_size=micro, max_grad_norm=1e6)
        torch.manual_seed(0)
        stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), rollout, config)
        results.append((stats, torch.cat([p.detach().flatten() for p in policy.parameters()])))
    (stats_a, params_a), (stats_b, params_b) = results
    assert stats_a.grad_norm == pytest.approx(stats_b.grad_norm, rel=1e-4)
    assert stats_a.value_loss == pytest.approx(stats_b.value_loss, rel=1e-5)
    torch.testing.assert_close(params_a, params_b, atol=1e-6, rtol=1e-5)


def test_lora_policy_uses_disabled_adapter_as_reference(tiny_model_dir, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.1)
    )
    policy = PolicyWithValueHead(lora)
    q_ids, q_mask, r_ids, r_mask = synthetic_batch(tokenizer)
    rollout = build_rollout(policy, None, q_ids, q_mask, r_ids, r_mask, torch.tensor([1.0, 1.0, -1.0, -1.0]))
    # LoRA's B matrices start at zero: the adapted policy equals its base.
    torch.testing.assert_close(rollout.old_logprobs, rollout.ref_logprobs)
    config = PPOConfig(epochs=2, minibatch_size=4, whiten_advantages=False)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    ppo_update(policy, torch.optim.Adam(trainable, lr=1e-2), rollout, config)
    moved = build_rollout(policy, None, q_ids, q_mask, r_ids, r_mask, rollout.scores)
    assert not torch.allclose(moved.old_logprobs, moved.ref_logprobs)
    torch.testing.assert_close(moved.ref_logprobs, rollout.ref_logprobs)  # the base did not move

    policy.save(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "value_head.safetensors").is_file()


def grouped_batch(tokenizer):
    """Two prompts sampled three times each (rows 0-2 and 3-5 share a query), responses of 2 to 6 tokens."""
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[2]] * 3
    query = tokenizer(prompts, return_tensors="pt", padding=True)
    gen = torch.Generator().manual_seed(2)
    lengths = (6, 2, 5, 4, 6, 3)
    response_ids = torch.full((6, 6), tokenizer.pad_token_id)
    response_mask = torch.zeros(6, 6, dtype=torch.long)
    for row, n in enumerate(lengths):
        response_ids[row, :n] = torch.randint(1000, 9000, (n,), generator=gen)
        response_mask[row, :n] = 1
    return query.input_ids, query.attention_mask, response_ids, response_mask


def test_fused_rollout_pass_matches_separate_passes(tiny_model_dir, tokenizer):
    """build_rollout's one pass (a query shared by its samples, value and log-probs from one trunk
    pass, head on the response only) gives the numbers of a plain full-sequence pass per quantity."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0),
    )
    for module in lora.modules():  # move the adapter off zero so the policy differs from its reference
        if hasattr(module, "lora_B"):
            for weight in module.lora_B.values():
                torch.nn.init.normal_(weight.weight, std=0.5)
    policy = PolicyWithValueHead(lora)
    q_ids, q_mask, r_ids, r_mask = grouped_batch(tokenizer)
    rollout = build_rollout(
        policy, None, q_ids, q_mask, r_ids, r_mask, torch.zeros(6), temperature=0.7, batch_size=4
    )
    ids, mask = rollout.input_ids, rollout.attention_mask
    with torch.no_grad():
        logprobs, values, _ = policy_forward(policy, ids, mask, rollout.response_start, 0.7)
        with lora.disable_adapter():
            ref = logprobs_of(lora, ids, mask, rollout.response_start, 0.7)
    torch.testing.assert_close(rollout.old_logprobs, logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rollout.values, values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rollout.ref_logprobs, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rollout.old_logprobs, rollout.ref_logprobs)
    assert rollout.old_logprobs[1, 2:].abs().sum() == 0 and rollout.values[1, 2:].abs().sum() == 0


def test_shared_queries_micro_batches_match_one_big_batch(tiny_model_dir, tokenizer):
    """With samples sharing queries, micro-batches of 2 take the same step as one pass over all 6."""
    batch = grouped_batch(tokenizer)
    results = []
    for micro in (None, 2):
        policy = load_policy(tiny_model_dir)
        rollout = build_rollout(policy, policy.model, *batch, torch.tensor([1.0, 0.5, -1.0, 2.0, 0.0, -0.5]))
        config = PPOConfig(epochs=2, minibatch_size=6, micro_batch_size=micro, max_grad_norm=1e6)
        torch.manual_seed(0)
        stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), rollout, config)
        results.append((stats, torch.cat([p.detach().flatten() for p in policy.parameters()])))
    (stats_a, params_a), (stats_b, params_b) = results
    assert stats_a.grad_norm == pytest.approx(stats_b.grad_norm, rel=1e-4)
    assert stats_a.policy_loss == pytest.approx(stats_b.policy_loss, rel=1e-4, abs=1e-7)
    torch.testing.assert_close(params_a, params_b, atol=1e-6, rtol=1e-5)


def test_minibatch_that_does_not_divide_the_batch_is_rounded(tiny_model_dir, tokenizer):
    """6 rollouts, minibatch_size=4: rounded down to 3 (2 steps an epoch), and the warning says so."""
    policy = load_policy(tiny_model_dir)
    rollout = build_rollout(policy, policy.model, *grouped_batch(tokenizer), torch.zeros(6))
    config = PPOConfig(epochs=2, minibatch_size=4)
    with pytest.warns(
        UserWarning, match=r"minibatch_size=4 does not divide the batch of 6 .*minibatch_size=3"
    ):
        stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=1e-3), rollout, config)
    assert stats.n_updates == 4


def test_rollout_and_update_reuses_the_first_forward(tiny_model_dir, tokenizer, monkeypatch):
    """One minibatch in one micro-batch: the rollout's log-probs and values come from the update's
    own first forward (the policy has not changed yet), and the step equals build_rollout followed
    by ppo_update, one policy pass fewer."""
    from peft import LoraConfig, get_peft_model

    from tether.train.ppo import step as step_module
    from tether.train.ppo.step import rollout_and_update

    calls = []
    real_forward = step_module.response_forward

    def counting_forward(*args, **kwargs):
        calls.append(args[-1] if len(args) > 6 else kwargs.get("value_head"))
        return real_forward(*args, **kwargs)

    def lora_policy() -> PolicyWithValueHead:
        torch.manual_seed(0)
        lora = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
        return PolicyWithValueHead(lora)

    batch = grouped_batch(tokenizer)
    scores = torch.tensor([1.0, 0.5, -1.0, 2.0, 0.0, -0.5])
    config = PPOConfig(epochs=2, minibatch_size=6, micro_batch_size=6, init_kl_coef=0.1)
    results = []
    for fused in (True, False):
        policy = lora_policy()
        optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.1)
        monkeypatch.setattr(step_module, "response_forward", counting_forward)
        calls.clear()
        torch.manual_seed(1)
        if fused:
            rollout, stats, _ = rollout_and_update(
                policy, None, optimizer, *batch, scores, config, kl_coef=0.1
            )
        else:
            rollout = build_rollout(policy, None, *batch, scores, temperature=config.temperature)
            stats = ppo_update(policy, optimizer, rollout, config, kl_coef=0.1)
        policy_passes = sum(head is not None for head in calls)
        results.append((rollout, stats, policy_passes, [p.detach().clone() for p in policy.parameters()]))
    (fused_rollout, fused_stats, fused_passes, fused_params), (rollout, stats, passes, params) = results
    assert (fused_passes, passes) == (2, 3)  # one per epoch, plus build_rollout's when not fused
    torch.testing.assert_close(fused_rollout.old_logprobs, rollout.old_logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_rollout.values, rollout.values, atol=1e-5, rtol=1e-5)
    assert fused_stats.approx_kl == pytest.approx(stats.approx_kl, abs=1e-6)
    assert fused_stats.value_loss == pytest.approx(stats.value_loss, rel=1e-4)
    for a, b in zip(fused_params, params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
