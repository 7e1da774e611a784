"""The PPO loop on the tiny random Llama: iterations run, monitors record, checkpoints resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tether.engine import Prompt
from tether.train.monitors import MonitorConfig
from tether.train.ppo import PPOConfig
from tether.train.ppo import trainer as trainer_module
from tether.train.ppo.trainer import PPOTrainConfig, batch_indices, checkpoints, leave_one_out, train_ppo
from tether.train.ppo.types import BatchScores

PROMPTS = [
    Prompt(id=f"p{i}", text=f"Summarize: item {i} is a small {w} thing.")
    for i, w in enumerate(["red", "blue", "green", "gold"])
]
TARGET = "the"


def toy_reward(prompts, texts):
    """Fraction of words equal to ``TARGET``: cheap, deterministic, and it depends on the samples."""
    return [sum(w == TARGET for w in t.lower().split()) / max(len(t.split()), 1) for t in texts]


class FakeEmbedder:
    """Bag-of-characters vectors: enough for embedding diversity without loading MiniLM."""

    def embed(self, texts):
        vecs = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for ch in t:
                vecs[i, ord(ch) % 64] += 1
        return torch.nn.functional.normalize(vecs + 1e-3, dim=-1)


def config(**kw) -> PPOTrainConfig:
    base = dict(
        steps=3,
        batch_size=2,
        max_new_tokens=6,
        checkpoint_every=2,
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        ppo=PPOConfig(
            epochs=1, minibatch_size=2, temperature=0.9, init_kl_coef=0.1, target_kl=0.5, kl_horizon=10
        ),
        monitor=MonitorConfig(baseline_steps=1, window=3),
    )
    base.update(kw)
    return PPOTrainConfig(**base)


def test_batch_indices_cover_every_prompt_each_epoch():
    seen = [i for step in (1, 2) for i in batch_indices(4, 2, step, seed=3)]
    assert sorted(seen) == [0, 1, 2, 3]  # steps 1-2 are exactly one epoch
    assert batch_indices(4, 2, 3, seed=3) == batch_indices(4, 2, 3, seed=3)


def test_leave_one_out_subtracts_the_siblings_mean():
    # group [1, 2, 3]: 1 - (2+3)/2, 2 - (1+3)/2, 3 - (1+2)/2; a group of equal scores gives zeros
    assert leave_one_out([1.0, 2.0, 3.0, 10.0, 10.0, 10.0], 3) == [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]
    assert leave_one_out([0.2, 0.8], 2) == pytest.approx([-0.6, 0.6])
    with pytest.raises(ValueError, match="groups of 2"):
        leave_one_out([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="2 or more"):
        leave_one_out([1.0], 1)


def test_samples_per_prompt_scores_each_sample_against_its_siblings(tiny_model_dir, tmp_path, monkeypatch):
    seen_prompts, raw_scores, rollout_scores = [], [], []

    def reward(prompts, texts):
        seen_prompts.append([p.id for p in prompts])
        scores = [float(len(t)) for t in texts]  # differs between samples of one prompt
        raw_scores.append(scores)
        return scores

    real_step = trainer_module.rollout_and_update

    def spy_step(*args, **kwargs):
        rollout_scores.append(args[7].tolist())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "rollout_and_update", spy_step)
    cfg = config(steps=1, samples_per_prompt=3, ppo=PPOConfig(epochs=1, minibatch_size=3, temperature=1.0))
    result = train_ppo(str(tiny_model_dir), PROMPTS, reward, tmp_path / "ppo", cfg)
    assert result.steps == 1
    (ids,) = seen_prompts
    assert len(ids) == 6 and ids[0] == ids[1] == ids[2] and ids[3] == ids[4] == ids[5] != ids[0]
    assert rollout_scores == [pytest.approx(leave_one_out(raw_scores[0], 3))]
    row = json.loads((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    # The monitors see the scores themselves, not the baselined ones.
    assert row["reward_mean"] == pytest.approx(sum(raw_scores[0]) / 6)


def test_rollouts_sample_in_the_decode_loop_unless_told_otherwise(tiny_model_dir, tmp_path, monkeypatch):
    from tether.config import EngineConfig
    from tether.engine.engine import Engine

    sampled_in_loop = []
    real = Engine._uses_decode_loop

    def spy(self, params, prompts):
        used = real(self, params, prompts)
        if params.temperature > 0:
            sampled_in_loop.append(used)
        return used

    monkeypatch.setattr(Engine, "_uses_decode_loop", spy)
    train_ppo(str(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "auto", config(steps=1))
    assert sampled_in_loop == [True]
    sampled_in_loop.clear()
    train_ppo(
        str(tiny_model_dir),
        PROMPTS,
        toy_reward,
        tmp_path / "transformers",
        config(steps=1),
        engine_config=EngineConfig(decode_loop="transformers"),
    )
    assert sampled_in_loop == [False]


def test_train_resume_and_monitors(tiny_model_dir, tmp_path):
    out = tmp_path / "ppo"
    quality_calls = []

    def quality(prompts, texts):
        quality_calls.append(len(texts))
        return [0.5] * len(texts)

    result = train_ppo(
        str(tiny_model_dir),
        PROMPTS,
        toy_reward,
        out,
        config(),
        quality_fn=quality,
        embedder=FakeEmbedder(),
    )
    assert result.steps == 3 and not result.stopped_early
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["distinct_1"] is not None and r["embedding_diversity"] is not None
        assert r["quality"] == 0.5 and r["kl"] is not None and r["entropy"] > 0
        assert set(r["timings"]) >= {"rollout_s", "reward_s", "update_s"}
        assert 1 <= r["response_length"] <= 6 + 1
    assert quality_calls == [2, 2, 2]
    assert (out / "monitors.png").stat().st_size > 1000
    assert (out / "policy" / "adapter_config.json").is_file()
    assert (out / "policy" / "value_head.safetensors").is_file()
    assert json.loads((out / "policy" / "tether_base.json").read_text())["base"] == str(tiny_model_dir)
    # The adaptive controller moved the coefficient away from its start.
    assert rows[-1]["kl_coef_next"] != 0.1
    # checkpoints at 2 and 3 (the last step always saves)
    assert [c.name for c in checkpoints(out)] == ["step-000002", "step-000003"]

    # Simulate a crash after step 2: delete the step-3 checkpoint, resume, and redo step 3.
    import shutil

    shutil.rmtree(checkpoints(out)[-1])
    state = torch.load(checkpoints(out)[-1] / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["kl_coef"] == pytest.approx(rows[1]["kl_coef_next"])
    resumed = train_ppo(
        str(tiny_model_dir), PROMPTS, toy_reward, out, config(), quality_fn=quality, embedder=FakeEmbedder()
    )
    rows2 = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [1, 2, 3]
    assert rows2[:2] == rows[:2]  # earlier lines kept verbatim
    # Step 3 restarted with the KL coefficient the checkpoint held, and the same RNG state -> same samples.
    assert rows2[2]["kl_coef"] == pytest.approx(rows[1]["kl_coef_next"])
    assert rows2[2]["sample"] == rows[2]["sample"]
    assert rows2[2]["ppo"]["policy_loss"] == pytest.approx(rows[2]["ppo"]["policy_loss"], rel=1e-4, abs=1e-6)
    assert len(resumed.history) == 3


def test_early_stop_on_critical_alert(tiny_model_dir, tmp_path):
    # kl_max tiny: after the first update the policy differs from the reference -> critical alert -> stop.
    cfg = config(
        steps=4,
        lr=5e-2,
        monitor=MonitorConfig(kl_max=1e-9, early_stop=True, distinct2_min=0.0),
    )
    result = train_ppo(str(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "ppo", cfg)
    assert result.stopped_early and result.steps < 4
    assert any(a.kind == "kl" and a.severity == "critical" for a in result.alerts)
    assert checkpoints(tmp_path / "ppo")[-1].name == f"step-{result.steps:06d}"
    # A critical alert at the last step ends nothing: the run is not reported as stopped early. (The
    # same seed stops at the same step, so a run that ends there has that alert at its last step.)
    stop = result.steps
    last = train_ppo(
        str(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "last", cfg.model_copy(update={"steps": stop})
    )
    assert last.steps == stop and not last.stopped_early
    assert any(a.step == stop and a.severity == "critical" for a in last.alerts)


def test_reward_tokenizer_check_runs_first(tiny_model_dir, tmp_path):
    class Mismatched:
        def check_tokenizer(self, tokenizer):
            raise RuntimeError("tokenizers differ")

        def score(self, prompts, texts):  # pragma: no cover - never reached
            return BatchScores([0.0] * len(texts))

    with pytest.raises(RuntimeError, match="tokenizers differ"):
        train_ppo(str(tiny_model_dir), PROMPTS, Mismatched(), tmp_path / "ppo", config())


def test_from_adapter_spec_the_reference_is_that_adapter(tiny_model_dir, tmp_path):
    """Starting from a trained adapter (e.g. SFT), KL is measured against it, not against the raw base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tether.train.lora import write_base_file

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    with torch.no_grad():  # a "trained" adapter: far from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    sft = tmp_path / "sft"
    model.save_pretrained(sft)
    write_base_file(sft, str(tiny_model_dir))

    result = train_ppo(str(sft), PROMPTS, toy_reward, tmp_path / "ppo", config(steps=1))
    row = json.loads((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(row["kl"]) < 1e-3  # the policy starts as the reference
    assert json.loads((result.policy_dir / "tether_base.json").read_text())["base"] == str(tiny_model_dir)


def _scripted_quality(values):
    """An eval_fn returning the next scripted quality for every call, and recording the prompts it saw."""
    calls = []

    def quality(prompts, texts):
        calls.append([p.id for p in prompts])
        return [values[len(calls) - 1]] * len(texts)

    return quality, calls


def test_validation_keeps_the_best_state_and_flags_a_held_out_drop(tiny_model_dir, tmp_path):
    out = tmp_path / "ppo"
    held_out = [
        Prompt(id="v0", text="Summarize: a held-out thing."),
        Prompt(id="v1", text="Summarize: another."),
    ]
    # Validation quality per call: start 0.5, step 1 0.9 (the best), step 2 0.1 and step 3 0.2 (far below the start).
    eval_fn, calls = _scripted_quality([0.5, 0.9, 0.1, 0.2])
    rewards = iter(range(100))

    def rising_reward(prompts, texts):  # every call scores higher: the validation reward rises too
        value = next(rewards)
        return [float(value)] * len(texts)

    cfg = config(steps=3, eval_every=1, keep_best=True, checkpoint_every=1)
    result = train_ppo(
        str(tiny_model_dir), PROMPTS, rising_reward, out, cfg, eval_prompts=held_out, eval_fn=eval_fn
    )
    assert calls == [["v0", "v1"]] * 4  # before step 1, then after each step, on the validation prompts only
    checks = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [c["step"] for c in checks] == [0, 1, 2, 3]
    assert [c["eval_quality"] for c in checks] == [0.5, 0.9, 0.1, 0.2]
    assert (result.best_step, result.best_quality) == (1, 0.9)
    assert json.loads((out / "best" / "best.json").read_text()) == {"step": 1, "eval_quality": 0.9}
    # The final policy is step 1's adapter, not the last step's.
    best_weights = (out / "best" / "adapter_model.safetensors").read_bytes()
    assert (out / "policy" / "adapter_model.safetensors").read_bytes() == best_weights
    assert (out / "checkpoints" / "step-000003" / "adapter_model.safetensors").read_bytes() != best_weights
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval_quality"] for r in rows] == [0.9, 0.1, 0.2]
    # Steps 2 and 3 fell 0.4 and 0.3 below the start while the reward of those summaries rose: hacking.
    hacking = [a for a in result.alerts if a.metric == "eval_quality"]
    assert [(a.step, a.kind, a.severity) for a in hacking] == [
        (2, "hacking", "critical"),
        (3, "hacking", "critical"),
    ]
    assert result.history[0].step == 0 and result.history[0].eval_quality == 0.5

    # Resume after step 2 (as if step 3 never finished): validation lines after the checkpoint are redone,
    # the start is replayed into the monitors, and the best state (step 1) survives.
    import shutil

    shutil.rmtree(checkpoints(out)[-1])
    eval_fn2, calls2 = _scripted_quality([0.3])
    resumed = train_ppo(
        str(tiny_model_dir), PROMPTS, rising_reward, out, cfg, eval_prompts=held_out, eval_fn=eval_fn2
    )
    assert len(calls2) == 1  # only step 3 validated again
    checks = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [(c["step"], c["eval_quality"]) for c in checks] == [(0, 0.5), (1, 0.9), (2, 0.1), (3, 0.3)]
    assert resumed.best_step == 1 and resumed.history[0].step == 0
    assert [a.step for a in resumed.alerts if a.metric == "eval_quality"] == [2, 3]


def test_validation_settings_need_what_they_use(tiny_model_dir, tmp_path):
    held_out = [Prompt(id="v0", text="Summarize: a held-out thing.")]
    with pytest.raises(ValueError, match="needs eval_prompts"):
        train_ppo(str(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "a", config(eval_every=1))
    with pytest.raises(ValueError, match="needs eval_prompts"):
        train_ppo(
            str(tiny_model_dir),
            PROMPTS,
            toy_reward,
            tmp_path / "b",
            config(eval_every=1),
            eval_prompts=held_out,
        )
    with pytest.raises(ValueError, match="keep_best needs eval_every"):
        train_ppo(str(tiny_model_dir), PROMPTS, toy_reward, tmp_path / "c", config(keep_best=True))


def test_max_minutes_validates_checkpoints_and_stops_then_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "ppo"
    held_out = [Prompt(id="v0", text="Summarize: a held-out thing.")]
    # The start 0.5, then step 1 0.7: step 1 is off the eval_every=2 grid, but out of time it is validated.
    eval_fn, calls = _scripted_quality([0.5, 0.7])
    cfg = config(steps=4, eval_every=2, keep_best=True, checkpoint_every=2, max_minutes=1e-6)
    result = train_ppo(
        str(tiny_model_dir), PROMPTS, toy_reward, out, cfg, eval_prompts=held_out, eval_fn=eval_fn
    )
    assert (result.steps, result.stopped_early, result.stop_reason) == (1, True, "time")
    assert len(calls) == 2
    assert [c.name for c in checkpoints(out)] == ["step-000001"]  # off the checkpoint grid, saved anyway
    assert result.best_step == 1
    assert (out / "policy" / "adapter_model.safetensors").read_bytes() == (
        out / "best" / "adapter_model.safetensors"
    ).read_bytes()

    # Without a budget the same directory resumes from step 1 and finishes.
    eval_fn2, calls2 = _scripted_quality([0.6, 0.4])
    resumed = train_ppo(
        str(tiny_model_dir),
        PROMPTS,
        toy_reward,
        out,
        cfg.model_copy(update={"max_minutes": None}),
        eval_prompts=held_out,
        eval_fn=eval_fn2,
    )
    assert (resumed.steps, resumed.stopped_early, resumed.stop_reason) == (4, False, None)
    assert len(calls2) == 2  # steps 2 and 4, back on the grid
    assert resumed.best_step == 1  # the time-stopped state's 0.7 still beats 0.6 and 0.4


def test_a_state_that_trades_one_quality_part_for_another_is_never_kept(tiny_model_dir, tmp_path):
    out = tmp_path / "ppo"
    held_out = [Prompt(id="v0", text="Summarize: a held-out thing.")]
    # (quality, parts) per validation: the start; step 1 better on both; step 2 the best sum, but
    # coverage fell 0.2 below the start; step 3 a little worse than step 1.
    script = [
        (0.50, {"faithfulness": 0.50, "coverage": 0.50}),
        (0.55, {"faithfulness": 0.55, "coverage": 0.55}),
        (0.60, {"faithfulness": 0.90, "coverage": 0.30}),
        (0.54, {"faithfulness": 0.55, "coverage": 0.53}),
    ]

    class PartedQuality:
        def __init__(self):
            self.calls = 0

        def score(self, prompts, texts):
            quality, parts = script[self.calls]
            self.calls += 1
            return BatchScores([quality] * len(texts), parts)

    cfg = config(steps=3, eval_every=1, keep_best=True, checkpoint_every=1)
    result = train_ppo(
        str(tiny_model_dir), PROMPTS, toy_reward, out, cfg, eval_prompts=held_out, eval_fn=PartedQuality()
    )
    checks = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [c["eval_parts"]["coverage"] for c in checks] == [0.5, 0.55, 0.3, 0.53]
    assert (result.best_step, result.best_quality) == (1, 0.55)  # not step 2's 0.60
    traded = [a for a in result.alerts if a.metric == "eval_parts.coverage"]
    assert [(a.step, a.severity) for a in traded] == [(2, "warning")]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["eval_parts"] == {"faithfulness": 0.9, "coverage": 0.3}
