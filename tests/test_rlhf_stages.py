"""`tether rlhf ppo` and the pipeline's PPO stage are one code path: same stage, same calls, same summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.errors import ConfigError
from tether.rlhf.cli import app
from tether.rlhf.pipeline import RLHFConfig, RLHFContext, rlhf_stages
from tether.runs import Run, run_stages
from tether.train.ppo.trainer import PPOResult


def _spy(monkeypatch) -> list[tuple]:
    """Record how the PPO stage loads the reward model and calls the trainer (no model is loaded)."""
    calls: list[tuple] = []

    def load(directory, *, device="auto", dtype="auto"):
        calls.append(("reward_model", Path(directory).name, device, dtype))
        return object()

    def train_ppo(policy, prompts, reward_fn, out_dir, config, **kw):
        calls.append(
            (
                "train_ppo",
                policy,
                [p.id for p in prompts],
                config.model_dump(),
                kw["engine_config"].model_dump(),
                kw["tracer"] is not None,
                [p.id for p in kw["eval_prompts"]],
                kw["embedder"] is None,
                sorted(reward_fn.terms),
            )
        )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.5, "kl": 0.1}) + "\n")
        return PPOResult(
            policy_dir=out_dir / "policy",
            steps=config.steps,
            stopped_early=False,
            alerts=[],
            metrics_path=out_dir / "metrics.jsonl",
            plot_path=None,
            seconds=1.0,
            best_step=1,
            best_quality=0.5,
        )

    monkeypatch.setattr("tether.train.reward.RewardModel.load", load)
    monkeypatch.setattr("tether.train.ppo.trainer.train_ppo", train_ppo)
    return calls


def test_standalone_ppo_is_the_pipeline_stage(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    reward_dir = tmp_path / "rm"
    reward_dir.mkdir()
    # What `tether rlhf ppo` checks before loading it (RewardModel.load is replaced by the spy).
    (reward_dir / "reward_model.json").write_text('{"base": "x", "max_length": 8, "mean": 0, "std": 1}')
    (reward_dir / "reward_head.safetensors").write_bytes(b"")
    monkeypatch.setattr("tether.models.spec.check_spec", lambda spec, **kw: None)  # "some-policy" is a fake

    # The pipeline's PPO stage, given a trained reward model.
    config = RLHFConfig.model_validate(
        {
            "policy": "some-policy",
            "documents": {"source": "boolq", "n_train": 4, "n_heldout": 4, "n_validation": 2},
            "ppo": {"steps": 1, "batch_size": 2, "eval_every": 1},
            "ppo_reward": {"terms": {"coverage": 2.0}},
            "compare": {"embedding_diversity": False},
            "engine": {"device": "cpu", "dtype": "float32"},
        }
    )
    run = Run.create("pipeline", root=tmp_path, job="rlhf", config=config)
    ctx = RLHFContext.for_run(config, run, say=lambda _m: None, provided={"reward"}, reward_dir=reward_dir)
    pipeline = run_stages(run, rlhf_stages(config), ctx, only=["documents", "validation", "ppo"])

    # The same through `tether rlhf ppo`.
    args = ["ppo", "--reward-model", str(reward_dir), "--out", str(tmp_path / "standalone"), "--policy"]
    args += [
        "some-policy",
        "--n",
        "4",
        "--validation",
        "2",
        "--term",
        "coverage=2",
        "--no-embedding-diversity",
    ]
    args += ["--set", "steps=1", "--set", "batch_size=2", "--set", "eval_every=1"]
    args += ["--set", "engine.device=cpu", "--set", "engine.dtype=float32"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    pipeline_calls, standalone_calls = calls[:2], calls[2:]
    assert [c[0] for c in calls] == ["reward_model", "train_ppo", "reward_model", "train_ppo"]
    assert pipeline_calls == standalone_calls  # device, dtype, tracer, documents, validation, terms
    assert pipeline_calls[0] == ("reward_model", "rm", "cpu", "float32")  # the engine's device and dtype
    assert pipeline_calls[1][5] is True  # a tracer in both
    standalone = json.loads((tmp_path / "standalone" / "manifest.json").read_text())
    assert standalone["stages"]["ppo"]["summary"] == pipeline["ppo"]
    assert pipeline["ppo"]["steps"] == 1 and pipeline["ppo"]["best_step"] == 1
    assert pipeline["ppo"]["first"] == {"reward_mean": 0.5, "kl": 0.1, "quality": None}


def test_standalone_ppo_without_a_reward_model_stage_is_refused(tmp_path):
    config = RLHFConfig()
    run = Run.create("r", root=tmp_path, job="rlhf", config=config)
    ctx = RLHFContext.for_run(config, run, say=lambda _m: None)
    with pytest.raises(ConfigError, match="stage 'ppo' needs documents, reward"):
        run_stages(run, rlhf_stages(config), ctx, only=["ppo"])
