"""Reward model: Bradley–Terry loss and calibration against hand values; training on separable pairs."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from tether.errors import ModelLoadError
from tether.feedback.records import PreferencePair
from tether.train.reward import (
    RewardConfig,
    RewardModel,
    bradley_terry_loss,
    calibration,
    check_same_tokenizer,
    encode_pair,
    pairwise_accuracy,
    reward_diffs,
    split_pairs,
    tokenizer_hashes,
    train_reward_model,
)


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
    assert untrained < 0.75 and report.eval_accuracy >= 0.9, (untrained, report)
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert 0.0 <= report.eval_ece <= 1.0 and report.reliability
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
    """Accumulating 4 micro-batches of 1 pair gives the step one batch of 4 gives (memory, not result)."""
    from safetensors.torch import load_file

    pairs, held = separable_pairs(4, seed=2), separable_pairs(2, seed=3)
    heads, losses = [], []
    for micro in (4, 1):
        config = RewardConfig(
            max_steps=1,
            batch_size=4,
            micro_batch_size=micro,
            max_length=64,
            lora={"r": 4, "alpha": 8, "dropout": 0.0},
        )
        train_reward_model(str(tiny_model_dir), pairs, tmp_path / str(micro), config, eval_pairs=held)
        heads.append(load_file(tmp_path / str(micro) / "reward_head.safetensors")["weight"])
        losses.append(json.loads((tmp_path / str(micro) / "reward_train_log.jsonl").read_text())["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the logged loss is the batch mean either way
    torch.testing.assert_close(heads[0], heads[1], atol=1e-6, rtol=1e-5)
