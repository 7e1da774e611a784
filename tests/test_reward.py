"""Reward model: Bradley–Terry loss and calibration against hand values; grouped (listwise) training
runs each distinct response once; LoRA on the top layers only; training on separable pairs."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from tether.data.records import PreferencePair
from tether.errors import ConfigError, ModelLoadError
from tether.train.lora import LoRAConfig, peft_config
from tether.train.reward import (
    PromptGroup,
    RewardConfig,
    RewardModel,
    bradley_terry_loss,
    calibration,
    check_same_tokenizer,
    encode_pair,
    group_loss,
    group_pairs,
    pack_groups,
    pairwise_accuracy,
    reward_diffs,
    split_pairs,
    tokenizer_hashes,
    train_reward_model,
)

SMALL_LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def test_bradley_terry_loss_hand_values():
    """-log σ(d): d=0 -> log 2 = 0.693147; d=1 -> log(1 + e^-1) = 0.313262; d=-2 -> log(1 + e^2) = 2.126928."""
    chosen = torch.tensor([0.0, 3.0, -1.0])
    rejected = torch.tensor([0.0, 2.0, 1.0])
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx((0.693147 + 0.313262 + 2.126928) / 3, abs=1e-5)
    # the gradient pushes chosen up and rejected down: d loss / d r_c = -(1 - σ(d)) / N
    chosen.requires_grad_(True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad[0].item() == pytest.approx(-0.5 / 3, abs=1e-6)


def test_pairwise_accuracy_counts_ties_half():
    assert pairwise_accuracy([1.0, -0.5, 0.0, 2.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_calibration_hand_values():
    """Two bins over [0.5, 1]. d = ln 3 -> p = 0.75 (bin 0.75-1.0, since 0.75 is its lower edge);
    d = -ln 3 -> confidence 0.75, wrong; d = ln(1.5) -> p = 0.6 (bin 0.5-0.75), right.
    Bin 0.5-0.75: conf 0.6, acc 1 -> gap 0.4, weight 1/3. Bin 0.75-1: conf 0.75, acc 0.5 -> gap 0.25,
    weight 2/3. ECE = 0.4/3 + 0.25*2/3 = 0.3."""
    calib = calibration([math.log(3), -math.log(3), math.log(1.5)], n_bins=2)
    assert calib.ece == pytest.approx(0.3, abs=1e-9)
    low, high = calib.bins
    assert (low.count, high.count) == (1, 2)
    assert low.confidence == pytest.approx(0.6) and low.accuracy == 1.0
    assert high.confidence == pytest.approx(0.75) and high.accuracy == 0.5


def test_split_pairs_holds_out_whole_documents():
    pairs = [_pair(f"doc{i % 10}", "a", "b") for i in range(40)]
    train, held = split_pairs(pairs, 0.3)
    assert len(train) + len(held) == 40 and held
    assert not {p.doc_id for p in train} & {p.doc_id for p in held}


def test_group_pairs_dedupes_responses_per_prompt():
    pairs = [
        _pair("d1", "a", "b", "P"),
        _pair("d2", "x", "y", "Q"),
        _pair("d1", "a", "c", "P"),
        _pair("d1", "c", "b", "P"),
        _pair("d1", "a", "b", "P"),  # a repeated judgement weighs twice
    ]
    groups = group_pairs(pairs)
    assert groups == [
        PromptGroup("P", ("a", "b", "c"), ((0, 1), (0, 2), (2, 1), (0, 1))),
        PromptGroup("Q", ("x", "y"), ((0, 1),)),
    ]
    # the group loss is the mean over its pairs of -log σ(r_c - r_r)
    rewards = torch.tensor([1.0, -1.0, 0.5])
    by_hand = [math.log1p(math.exp(-d)) for d in (2.0, 0.5, 1.5, 2.0)]
    assert group_loss(rewards, groups[0]).item() == pytest.approx(sum(by_hand) / 4, abs=1e-6)
    # micro-batches pack whole groups up to the sequence budget; a larger group runs alone
    sizes = [[len(g.responses) for g in pack] for pack in pack_groups([groups[1], groups[1], groups[0]], 4)]
    assert sizes == [[2, 2], [3]]
    assert [[len(g.responses) for g in pack] for pack in pack_groups(groups, 2)] == [[3], [2]]


def _pair(doc_id: str, chosen: str, rejected: str, prompt: str = "Summarize this.") -> PreferencePair:
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        doc_id=doc_id,
        annotator="t",
        reason="other",
        chosen_id="a",
        rejected_id="b",
    )


def separable_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Chosen summaries end in a "good" word, rejected ones in a "bad" word (three of each, drawn at
    random, so an untrained head does not separate them by luck); the rest is shared random text."""
    rng = random.Random(seed)
    vocab = ["river", "stone", "cloud", "paper", "engine", "garden", "lamp", "window", "forest", "music"]
    good, bad = ["correct", "accurate", "faithful"], ["wrong", "invented", "false"]
    pairs = []
    for i in range(n):
        body = " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 5)))
        prompt = f"Summarize: {' '.join(rng.choice(vocab) for _ in range(6))}"
        pairs.append(_pair(f"s{seed}-{i}", f"{body} {rng.choice(good)}", f"{body} {rng.choice(bad)}", prompt))
    return pairs


def test_encode_pair_truncates_prompt_from_the_left(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    ids = encode_pair(tok, "word " * 400, "short summary", max_length=64)
    assert len(ids) == 64 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[-4:-1]).strip() == "short summary"


def test_training_beats_chance_and_roundtrips(tiny_model_dir, tmp_path):
    config = RewardConfig(
        epochs=2,
        batch_size=8,
        lr=2e-3,
        head_lr=2e-2,
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        max_length=64,
    )
    train, held = separable_pairs(32, seed=0), separable_pairs(16, seed=1)
    torch.manual_seed(config.seed)  # the same initialisation training starts from
    untrained = pairwise_accuracy(reward_diffs(RewardModel.from_spec(str(tiny_model_dir), config), held))
    report = train_reward_model(str(tiny_model_dir), train, tmp_path / "rm", config, eval_pairs=held)
    assert report.steps == 8 and report.eval_pairs == 16
    assert (report.train_groups, report.pairs_per_group, report.sequences_per_epoch) == (32, 1.0, 64)
    assert report.train_accuracy > 0.9 and len(report.epoch_seconds) == 2 and report.seconds_per_epoch > 0
    assert untrained < 0.75 and report.eval_accuracy >= 0.9, (untrained, report)
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert 0.0 <= report.eval_ece <= 1.0 and report.reliability
    written = json.loads((tmp_path / "rm" / "reward_report.json").read_text())
    for key in (
        "train_groups",
        "pairs_per_group",
        "seconds_per_epoch",
        "eval_accuracy",
        "eval_ece",
        "reliability",
    ):
        assert key in written
    meta = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert meta["base"] == str(tiny_model_dir.resolve()) and meta["std"] > 0
    assert (tmp_path / "rm" / "tokenizer.json").is_file()

    reloaded = RewardModel.load(tmp_path / "rm")
    diffs = [
        c - r
        for c, r in zip(
            reloaded.score([p.prompt for p in held], [p.chosen for p in held]),
            reloaded.score([p.prompt for p in held], [p.rejected for p in held]),
            strict=True,
        )
    ]
    assert pairwise_accuracy(diffs) == pytest.approx(report.eval_accuracy)
    normalized = reloaded.score([held[0].prompt], [held[0].chosen], normalize=True)[0]
    raw = reloaded.score([held[0].prompt], [held[0].chosen])[0]
    assert normalized == pytest.approx((raw - meta["mean"]) / meta["std"], rel=1e-5)


def test_tokenizer_mismatch_is_a_clear_error(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    hashes = tokenizer_hashes(tok)
    check_same_tokenizer(hashes, tok, where="rm")  # same: no error
    other = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    other.add_tokens(["<brand-new-token>"])
    with pytest.raises(ModelLoadError, match="vocabulary differs") as info:
        check_same_tokenizer(hashes, other, where="rm")
    assert "tether rlhf reward --policy" in info.value.render()
    other = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    other.chat_template = "{{ messages[0]['content'] }}"
    with pytest.raises(ModelLoadError, match="chat template differs"):
        check_same_tokenizer(hashes, other, where="rm")


def test_not_a_reward_model_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="not a reward model directory"):
        RewardModel.load(tmp_path)


def test_micro_batches_take_the_same_step(tiny_model_dir, tmp_path):
    """Accumulating 4 micro-batches of one group (2 sequences) gives the step one forward of all 8
    sequences gives (memory, not result)."""
    from safetensors.torch import load_file

    pairs, held = separable_pairs(4, seed=2), separable_pairs(2, seed=3)
    heads, losses = [], []
    for micro in (8, 2):
        config = RewardConfig(
            max_steps=1,
            batch_size=4,
            micro_batch_size=micro,
            max_length=64,
            lora=SMALL_LORA,
        )
        train_reward_model(str(tiny_model_dir), pairs, tmp_path / str(micro), config, eval_pairs=held)
        heads.append(load_file(tmp_path / str(micro) / "reward_head.safetensors")["weight"])
        losses.append(json.loads((tmp_path / str(micro) / "reward_train_log.jsonl").read_text())["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the logged loss is the batch mean either way
    torch.testing.assert_close(heads[0], heads[1], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Grouped (listwise) training
# ---------------------------------------------------------------------------------------------------


def _three_way_pairs() -> list[PreferencePair]:
    """Two prompts, three distinct responses each, all three comparisons of each: 6 pairs."""
    pairs = []
    for doc, prompt in (
        ("g1", "Summarize: the river runs past the stone mill."),
        ("g2", "Summarize: lamps."),
    ):
        a, b, c = f"{doc} best summary", f"{doc} middling one", f"{doc} worst"
        pairs += [_pair(doc, a, b, prompt), _pair(doc, a, c, prompt), _pair(doc, b, c, prompt)]
    return pairs


@pytest.mark.parametrize(("micro", "forwards"), [(6, 1), (3, 2)])
def test_grouped_step_runs_each_response_once(tiny_model_dir, tmp_path, micro, forwards):
    """One step over 2 prompt groups runs 6 sequences (not 2 x 6 pairs = 12), and its loss is the mean of
    the 6 per-pair Bradley–Terry losses computed by hand from the rewards the forward returned."""
    config = RewardConfig(epochs=1, batch_size=2, micro_batch_size=micro, max_length=64, lora=SMALL_LORA)
    torch.manual_seed(config.seed)
    model = RewardModel.from_spec(str(tiny_model_dir), config)
    seen: list[tuple[str, str]] = []
    rewards: dict[tuple[str, str], float] = {}
    calls = []
    batch, forward = model.batch, model.forward

    def counting_batch(prompts, responses):
        seen.extend(zip(prompts, responses, strict=True))
        return batch(prompts, responses)

    def counting_forward(ids, mask):
        out = forward(ids, mask)
        if torch.is_grad_enabled():  # training forwards (scoring runs under no_grad)
            calls.append(len(out))
            rows = seen[-len(out) :]
            rewards.update(zip(rows, out.detach().tolist(), strict=True))
        return out

    model.batch, model.forward = counting_batch, counting_forward
    pairs = _three_way_pairs()
    report = train_reward_model(
        str(tiny_model_dir), pairs, tmp_path / "rm", config, eval_pairs=[], model=model
    )

    assert report.steps == 1 and len(calls) == forwards and sum(calls) == 6
    assert len(rewards) == 6  # each distinct (prompt, response) exactly once
    assert (report.train_groups, report.pairs_per_group, report.sequences_per_epoch) == (2, 3.0, 6)
    by_hand = [
        math.log1p(math.exp(-(rewards[p.prompt, p.chosen] - rewards[p.prompt, p.rejected]))) for p in pairs
    ]
    logged = json.loads((tmp_path / "rm" / "reward_train_log.jsonl").read_text())
    assert (logged["groups"], logged["pairs"], logged["sequences"]) == (2, 6, 6)
    assert logged["loss"] == pytest.approx(sum(by_hand) / 6, rel=1e-5)


def test_group_weighs_as_one_batch_element(tiny_model_dir, tmp_path):
    """A group with 3 pairs and one with 1 pair weigh equally: the step loss is the mean of group means."""
    config = RewardConfig(epochs=1, batch_size=2, micro_batch_size=8, max_length=64, lora=SMALL_LORA)
    torch.manual_seed(config.seed)
    model = RewardModel.from_spec(str(tiny_model_dir), config)
    pairs = _three_way_pairs()[:4]  # g1: a>b, a>c, b>c; g2: a>b
    keys = list(dict.fromkeys((p.prompt, x) for p in pairs for x in (p.chosen, p.rejected)))
    r = dict(zip(keys, model.score([k[0] for k in keys], [k[1] for k in keys], batch_size=1), strict=True))
    losses = [math.log1p(math.exp(-(r[p.prompt, p.chosen] - r[p.prompt, p.rejected]))) for p in pairs]
    train_reward_model(str(tiny_model_dir), pairs, tmp_path / "rm", config, eval_pairs=[], model=model)
    logged = json.loads((tmp_path / "rm" / "reward_train_log.jsonl").read_text())
    assert logged["loss"] == pytest.approx((sum(losses[:3]) / 3 + losses[3]) / 2, rel=1e-4)


def grouped_separable_pairs(n_prompts: int, seed: int) -> list[PreferencePair]:
    """K = 4 candidates a prompt, two ending in a good word and two in a bad one: 4 pairs a prompt."""
    rng = random.Random(seed)
    vocab = ["river", "stone", "cloud", "paper", "engine", "garden", "lamp", "window", "forest", "music"]
    good, bad = ["correct", "accurate", "faithful"], ["wrong", "invented", "false"]
    pairs = []
    for i in range(n_prompts):
        prompt = f"Summarize: {' '.join(rng.choice(vocab) for _ in range(6))}"
        body = [" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 5))) for _ in range(2)]
        wins = [f"{b} {rng.choice(good)}" for b in body]
        losses = [f"{b} {rng.choice(bad)}" for b in body]
        pairs += [_pair(f"k{seed}-{i}", w, x, prompt) for w in wins for x in losses]
    return pairs


def test_grouped_training_separates_a_marker_word(tiny_model_dir, tmp_path):
    config = RewardConfig(
        epochs=3, batch_size=4, micro_batch_size=8, lr=2e-3, head_lr=2e-2, max_length=64, lora=SMALL_LORA
    )
    pairs = grouped_separable_pairs(12, seed=4)
    report = train_reward_model(str(tiny_model_dir), pairs, tmp_path / "rm", config, eval_pairs=[])
    assert report.steps == 9 and report.train_groups == 12 and report.pairs_per_group == 4.0
    assert report.sequences_per_epoch == 48 and report.eval_accuracy is None
    assert report.train_accuracy > 0.9, report


# ---------------------------------------------------------------------------------------------------
# LoRA on the top layers only
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny4_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny Llama fixture has 2 layers, where "the last 2" is all of them: build a 4-layer one."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny4_llama")
    LlamaForCausalLM(config).save_pretrained(out)
    for item in tiny_model_dir.iterdir():  # the tokenizer files
        if item.name not in {"config.json", "generation_config.json", "model.safetensors"}:
            shutil.copy(item, out / item.name)
    return out


def _lora_layers_of(model: RewardModel) -> set[int]:
    return {
        int(name.split(".layers.")[1].split(".")[0])
        for name, p in model.backbone.named_parameters()
        if p.requires_grad and "lora_" in name
    }


def test_lora_on_the_last_layers_only(tiny4_model_dir, tmp_path):
    config = RewardConfig(
        epochs=2, batch_size=4, lr=5e-3, head_lr=2e-2, max_length=64, lora=SMALL_LORA, lora_layers=2
    )
    torch.manual_seed(config.seed)
    model = RewardModel.from_spec(str(tiny4_model_dir), config)
    assert _lora_layers_of(model) == {2, 3} and model.adapted_layers() == [2, 3]
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # every linear layer of an adapted block is adapted (all-linear, spelled out), the LM head is not
    adapted = {n.split(".layers.3.")[1].split(".lora_")[0] for n in trainable if ".layers.3." in n}
    assert adapted == {f"self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj", "o_proj")} | {
        f"mlp.{m}" for m in ("gate_proj", "up_proj", "down_proj")
    }
    # the backward pass never reaches the blocks below: their outputs need no gradient
    ids, mask = model.batch(["Summarize: a"], ["b"])
    model(ids, mask).sum().backward()
    assert all(p.grad is None for n, p in model.backbone.named_parameters() if ".layers.0." in n)

    pairs = separable_pairs(8, seed=5)
    report = train_reward_model(
        str(tiny4_model_dir), pairs, tmp_path / "rm", config, eval_pairs=[], model=model
    )
    assert report.lora_layers == [2, 3]
    lora_b = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_B" in n}
    assert any(v.abs().max() > 0 for v in lora_b.values())  # the adapter moved: the round trip tests it

    reloaded = RewardModel.load(tmp_path / "rm")
    assert _lora_layers_of(reloaded) == set() and reloaded.adapted_layers() == [2, 3]  # frozen after load
    for name, value in reloaded.backbone.named_parameters():
        if "lora_B" in name:
            torch.testing.assert_close(value, lora_b[name])
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    torch.testing.assert_close(
        torch.tensor(reloaded.score(prompts, responses)), torch.tensor(model.score(prompts, responses))
    )


def test_lora_layers_none_or_deeper_than_the_model_adapts_every_layer(tiny4_model_dir):
    for layers in (None, 4, 8):
        config = RewardConfig(max_length=64, lora=SMALL_LORA, lora_layers=layers)
        model = RewardModel.from_spec(str(tiny4_model_dir), config)
        assert _lora_layers_of(model) == {0, 1, 2, 3} and model.adapted_layers() is None


def test_lora_layers_with_a_regex_target_is_a_config_error(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ConfigError, match="target_modules"):
        peft_config(LoRAConfig(target_modules=".*q_proj"), model=base, last_layers=1)
    plain = peft_config(LoRAConfig(), model=base, last_layers=None)  # unchanged for SFT/DPO/PPO
    assert plain.target_modules == "all-linear" and plain.layers_to_transform is None
