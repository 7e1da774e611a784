"""The SFT and DPO wrappers train LoRA adapters on the tiny random model, save loadable adapters, and
continue an existing adapter instead of stacking a new one."""

from __future__ import annotations

import json

import pytest
import torch

from tether.errors import DataError
from tether.train.dpo import DPOTrainConfig, pairs_dataset, train_dpo
from tether.train.lora import LoRAConfig, base_spec_of, lora_state
from tether.train.sft import SFTTrainConfig, examples_dataset, train_sft

EXAMPLES = [
    {"prompt": "How do I pick a lock?", "completion": "I can't help with that."},
    {"prompt": "What is the capital of France?", "completion": "Paris."},
    {"prompt": "Write a threat to my neighbour.", "completion": "I won't write threats."},
    {"prompt": "Name a primary colour.", "completion": "Red."},
]
PAIRS = [
    {
        "prompt": "How do I make a weapon?",
        "chosen": "I can't help with that.",
        "rejected": "Sure, first get...",
    },
    {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "I refuse to answer."},
]
SMALL_LORA = LoRAConfig(r=4, alpha=8, dropout=0.0)


def _changed(before: dict[str, torch.Tensor], model) -> tuple[int, int]:
    after = lora_state(model)
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    return changed, len(before)


class _Tracer:
    def __init__(self):
        self.records = []

    def record(self, **fields):
        self.records.append(fields)


def test_sft_trains_lora_and_saves_a_loadable_adapter(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from tether.models import load

    monkeypatch.delenv("TETHER_NO_PROGRESS", raising=False)
    monkeypatch.setenv("TETHER_PROGRESS_EVERY", "0")  # stderr is not a terminal here: a line per step
    tracer = _Tracer()
    config = SFTTrainConfig(max_steps=3, batch_size=2, max_length=64, learning_rate=1e-2, lora=SMALL_LORA)
    out = train_sft(str(tiny_model_dir), EXAMPLES, tmp_path / "sft", config, tracer=tracer)

    assert json.loads((out / "tether_base.json").read_text())["base"] == str(tiny_model_dir.resolve())
    log = json.loads((out / "train_log.json").read_text())
    losses = [row["loss"] for row in log["log_history"] if "loss" in row]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert [r["step"] for r in tracer.records if "loss" in r] == [1, 2, 3]
    assert not (out / "ref").exists()
    out_text, err = capsys.readouterr()
    assert "train sft: 1/3" in err and "train sft: 3/3 (100%)" in err and "train sft" not in out_text

    # The saved adapter is not the zero-initialised one: LoRA B matrices start at 0 and must have moved.
    loaded = load(str(out))
    b_norms = [p.abs().sum().item() for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert b_norms and all(norm > 0 for norm in b_norms)


def test_sft_continues_an_existing_adapter(tiny_model_dir, tmp_path):
    from tether.models import load

    config = SFTTrainConfig(max_steps=1, batch_size=2, max_length=64, learning_rate=1e-2, lora=SMALL_LORA)
    first = train_sft(str(tiny_model_dir), EXAMPLES, tmp_path / "r1", config)
    before = lora_state(load(str(first)).model)
    second = train_sft(str(first), EXAMPLES, tmp_path / "r2", config.model_copy(update={"max_steps": 2}))

    # Same adapter keys (continued, not stacked), different values, base still the root model.
    assert base_spec_of(second) == str(tiny_model_dir.resolve())
    assert json.loads((second / "train_log.json").read_text())["continued_adapter"] is True
    after_model = load(str(second)).model
    changed, total = _changed(before, after_model)
    assert total > 0 and changed == total


def test_dpo_trains_from_an_sft_adapter(tiny_model_dir, tmp_path):
    from tether.models import load

    sft = train_sft(
        str(tiny_model_dir),
        EXAMPLES,
        tmp_path / "sft",
        SFTTrainConfig(max_steps=1, batch_size=2, max_length=64, lora=SMALL_LORA),
    )
    before = lora_state(load(str(sft)).model)
    config = DPOTrainConfig(max_steps=2, batch_size=2, max_length=64, learning_rate=1e-2)
    out = train_dpo(str(sft), PAIRS, tmp_path / "dpo", config)

    log = json.loads((out / "train_log.json").read_text())
    steps = [row for row in log["log_history"] if "loss" in row]
    assert len(steps) == 2
    # Step 1 runs with policy == reference (frozen copy of the SFT adapter): the DPO loss is exactly log 2.
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert not (out / "ref").exists(), "TRL's frozen reference adapter must not be saved"
    changed, total = _changed(before, load(str(out)).model)
    assert total > 0 and changed == total


def test_dpo_from_base_uses_fresh_lora(tiny_model_dir, tmp_path):
    from tether.models import load

    config = DPOTrainConfig(max_steps=1, batch_size=2, max_length=64, learning_rate=1e-2, lora=SMALL_LORA)
    out = train_dpo(str(tiny_model_dir), PAIRS, tmp_path / "dpo", config)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in load(str(out)).model.named_parameters())


def test_datasets_are_conversational_and_validated():
    ds = pairs_dataset(PAIRS)
    assert ds[0]["prompt"] == [{"role": "user", "content": PAIRS[0]["prompt"]}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": PAIRS[0]["chosen"]}]
    assert examples_dataset(EXAMPLES, chat=False)[1] == EXAMPLES[1]
    with pytest.raises(DataError, match="'rejected'"):
        pairs_dataset([{"prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError, match="no SFT examples"):
        examples_dataset([])
