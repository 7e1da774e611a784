"""The PPO training loop for RLHF, top to bottom (after cleanrl's ``ppo.py``).

Per iteration:

1. **rollout** — sample one response per prompt through the Engine, which wraps the very policy
   model being trained (LoRA active), at ``ppo.temperature`` with ``top_p=1`` and no top-k, so the
   log-probs PPO recomputes are those of the distribution that sampled; under ``decode_loop: auto``
   in Tether's decode loop (``transformers`` keeps transformers' generate);
2. **reward** — a reward model (or any ``reward_fn``) scores prompt + response, plus optional rule
   terms: a length penalty and a penalty for responses cut off before EOS;
3. **update** — :func:`rollout_and_update`: the rollout (policy log-probs and values, reference
   log-probs with the adapter disabled, each prompt's query run once for all its samples) and
   :func:`ppo_update`, sharing the policy's forward when the first optimizer step covers the whole
   batch; then the KL controller moves its coefficient;
4. **monitor** — reward mean/std, KL, entropy, length, distinct-1/2, embedding diversity and an
   independent quality score go to :class:`MonitorState`; alerts are logged, and with
   ``monitor.early_stop`` a critical one ends training;
5. **validate** — with ``eval_every``, before the first iteration and every N after: greedy responses
   to held-out validation prompts, scored by ``eval_fn`` (quality) and ``reward_fn``. The monitors
   compare them with the start; the best-scoring state is kept in ``best/``;
6. **checkpoint** — every ``checkpoint_every`` iterations: adapter + value head + optimizer + KL
   controller + step + RNG state. A restarted run resumes from the newest checkpoint.

Outputs in ``out_dir``: ``metrics.jsonl`` (one line per iteration), ``validation.jsonl`` (one line
per validation), ``monitors.png``, ``checkpoints/step-NNNNNN/``, ``best/`` and the final policy
adapter in ``policy/`` (loadable with ``tether.models.load``): the last state, or with ``keep_best``
the best-validated one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from pydantic import Field

from tether import tracing
from tether.config import EngineConfig, StrictModel
from tether.data.jsonl import JsonlAppender, read_completed, write_jsonl
from tether.engine import Engine, Prompt, SamplingParams
from tether.models.padding import left_pad, right_pad
from tether.runs import Tracer
from tether.train.lora import LoRAConfig, base_spec_of, is_adapter_dir, peft_config, write_base_file
from tether.train.monitors import (
    Alert,
    MonitorConfig,
    MonitorState,
    StepMetrics,
    TextEmbedder,
    diversity_metrics,
    plot_monitors,
)
from tether.train.ppo.step import PPOConfig, make_kl_controller, rollout_and_update
from tether.train.ppo.types import BatchScores, FunctionReward, ResponseScorer, Reward
from tether.train.ppo.value_head import PolicyWithValueHead

log = logging.getLogger(__name__)

RewardFn = Callable[[Sequence[Prompt], Sequence[str]], Sequence[float]]
"""A plain reward function: one score per response. Wrapped as a :class:`Reward` (no parts)."""
QualityFn = Callable[[Sequence[Prompt], Sequence[str]], Sequence[float]]
"""An independent quality score per response (not trained on), for the reward-hacking monitor."""


def as_scorer(fn: Reward | ResponseScorer | RewardFn | QualityFn) -> Reward:
    """A :class:`Reward` (``score`` returning :class:`BatchScores`, ``check_tokenizer``) from a typed
    scorer or a plain function of (prompts, responses)."""
    if isinstance(fn, Reward):
        return fn
    if callable(getattr(fn, "score", None)):
        return _ScorerReward(fn)
    return FunctionReward(fn, getattr(fn, "check_tokenizer", None))


@dataclass(frozen=True)
class _ScorerReward:
    """A quality :class:`ResponseScorer` (no tokenizer to check) seen as a :class:`Reward`."""

    scorer: ResponseScorer

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        return self.scorer.score(prompts, responses)

    def check_tokenizer(self, tokenizer) -> None:
        return None


STATE_FILE = "trainer_state.pt"
BEST_FILE = "best.json"


class PPOTrainConfig(StrictModel):
    """The PPO loop around :class:`PPOConfig` (which holds the update's hyperparameters)."""

    steps: int = Field(20, ge=1, description="PPO iterations (rollout + reward + update).")
    batch_size: int = Field(8, ge=1, description="Prompts per iteration.")
    samples_per_prompt: int = Field(
        1,
        ge=1,
        description="Responses sampled per prompt: an iteration trains on batch_size * samples_per_prompt "
        "rollouts. Above 1, each score is taken relative to its prompt's other samples (see group_baseline).",
    )
    group_baseline: bool = Field(
        True,
        description="With samples_per_prompt > 1, subtract from each score the mean score of the other "
        "samples of its prompt (RLOO's leave-one-out baseline) before GAE.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Response length cap in tokens.")
    lr: float = Field(5e-5, gt=0, description="Learning rate of the LoRA weights.")
    value_lr: float = Field(
        1e-3, gt=0, description="Learning rate of the value head (it starts from scratch)."
    )
    lora: LoRAConfig = Field(
        default_factory=lambda: LoRAConfig(dropout=0.0),
        description="Fresh adapter shape (an adapter spec keeps training its own). Dropout is forced off: "
        "PPO ratios must start at exactly 1.",
    )
    ppo: PPOConfig = Field(
        default_factory=PPOConfig, description="The update's hyperparameters, sampling temperature included."
    )
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    length_penalty: float = Field(
        0.0, ge=0, description="Subtract this * response tokens / max_new_tokens from each score."
    )
    missing_eos_penalty: float | None = Field(
        None, description="Subtract this from responses that hit max_new_tokens without ending (None: off)."
    )
    eval_every: int = Field(
        0,
        ge=0,
        description="Before the first iteration and every N after, answer the validation prompts greedily "
        "and score the answers (0: never). Greedy answers to unseen prompts are what users get; the "
        "sampled training batch can look healthy while they degrade.",
    )
    keep_best: bool = Field(
        False,
        description="With eval_every: the final policy is the validated state (the starting one included) "
        "with the best validation quality, not the last.",
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Wall-time budget: after the step that crosses it, validate (with eval_every), "
        "checkpoint and stop, keeping what keep_best chose so far. For job schedulers and a fixed GPU lease; "
        "train_ppo(resume=True) continues from that checkpoint.",
    )
    checkpoint_every: int = Field(5, ge=1, description="Save a resumable checkpoint every N iterations.")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep.")
    forward_batch_size: int = Field(
        8, ge=1, description="Sequences per no-grad forward when building rollouts."
    )
    seed: int = Field(0, description="Seeds LoRA init, prompt order and sampling.")


@dataclass
class PPOResult:
    policy_dir: Path
    steps: int
    stopped_early: bool
    alerts: list[Alert]
    metrics_path: Path
    plot_path: Path | None
    seconds: float
    history: list[StepMetrics] = field(default_factory=list)
    best_step: int | None = None
    """The validated step whose policy is kept in ``best/`` (0: the starting policy); None without validation."""
    best_quality: float | None = None
    stop_reason: str | None = None
    """Why PPO ended before ``steps``: "monitor" (a critical alert) or "time" (``max_minutes``)."""


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------


def batch_indices(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Prompt indices for 1-based iteration ``step``: walk seeded permutations, one per epoch.

    Depends only on its arguments, so a resumed run sees the prompts an uninterrupted one would.
    """
    out = []
    for position in range((step - 1) * batch_size, step * batch_size):
        epoch, offset = divmod(position, n_prompts)
        order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(order[offset]))
    return out


def leave_one_out(scores: Sequence[float], group: int) -> list[float]:
    """Each score minus the mean of the other scores of its group (consecutive runs of ``group``).

    Samples of one prompt share its difficulty; subtracting their mean leaves what this response did
    better or worse than its siblings (RLOO, Ahmadian et al. 2024), which a value head that starts from
    scratch cannot tell in a few iterations.
    """
    if group < 2:
        raise ValueError(f"a leave-one-out baseline needs groups of 2 or more, got {group}")
    if len(scores) % group:
        raise ValueError(f"{len(scores)} scores do not split into groups of {group}")
    out = []
    for start in range(0, len(scores), group):
        chunk = scores[start : start + group]
        total = sum(chunk)
        out += [s - (total - s) / (group - 1) for s in chunk]
    return out


def checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (they have a trainer state), oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())


def _save_policy(policy: PolicyWithValueHead, directory: Path, base_spec: str) -> None:
    policy.save(directory)
    write_base_file(directory, base_spec)


def _replace_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Have ``fill`` write a staging directory, then swap it in for ``target``: it appears complete or not at all."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    fill(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _save_checkpoint(out_dir: Path, step: int, policy, optimizer, kl_ctl, base_spec: str, keep: int) -> Path:
    target = out_dir / "checkpoints" / f"step-{step:06d}"

    def fill(staging: Path) -> None:
        _save_policy(policy, staging, base_spec)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "kl_coef": kl_ctl.coef,
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, staging / STATE_FILE)

    _replace_dir(target, fill)
    for old in checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def validate(
    engine: Engine,
    prompts: Sequence[Prompt],
    reward: Reward,
    quality: ResponseScorer,
    max_new_tokens: int,
) -> dict:
    """Greedy responses to ``prompts``, their mean quality, reward and length, and one example."""
    completions = engine.generate(
        prompts,
        SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0),
        stage="ppo-eval",
        progress=False,
    )
    texts = [c.text for c in completions]
    quality_scores = quality.score(prompts, texts)
    # A quality made of parts (tether.rlhf.reward_terms.ProxyQuality) reports each part's mean.
    parts = dict(quality_scores.parts)
    rewards = reward.score(prompts, texts).scores
    n = len(texts)
    return {
        "eval_quality": sum(quality_scores.scores) / n,
        "eval_reward": sum(rewards) / n,
        **({"eval_parts": parts} if parts else {}),
        "eval_length": sum(c.completion_tokens for c in completions) / n,
        "eval_cut_off": sum(c.finish_reason == "length" for c in completions) / n,
        "sample": texts[0][:500],
    }


def _start_metrics(validation: dict) -> StepMetrics:
    """The starting policy's validation as the monitors' step 0 (it has no training metrics)."""
    return StepMetrics(
        step=0,
        eval_quality=validation["eval_quality"],
        eval_reward=validation["eval_reward"],
        eval_parts=validation.get("eval_parts"),
    )


def _read_best(out_dir: Path) -> dict | None:
    path = out_dir / "best" / BEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _save_best(out_dir: Path, policy, base_spec: str, step: int, quality: float) -> None:
    def fill(staging: Path) -> None:
        _save_policy(policy, staging, base_spec)
        (staging / BEST_FILE).write_text(json.dumps({"step": step, "eval_quality": quality}) + "\n")

    _replace_dir(out_dir / "best", fill)


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


def train_ppo(
    policy_spec: str,
    prompts: Sequence[Prompt],
    reward_fn: RewardFn,
    out_dir: str | Path,
    config: PPOTrainConfig | None = None,
    *,
    quality_fn: QualityFn | None = None,
    eval_prompts: Sequence[Prompt] = (),
    eval_fn: QualityFn | None = None,
    embedder: TextEmbedder | None = None,
    engine_config: EngineConfig | None = None,
    tracer: Tracer | None = None,
    resume: bool = True,
    on_step: Callable[[dict], None] | None = None,
) -> PPOResult:
    """Train a LoRA policy on ``policy_spec`` with PPO against ``reward_fn``; see the module docstring.

    ``eval_prompts`` and ``eval_fn`` (default: ``quality_fn``) are the validation of
    ``config.eval_every``: prompts the policy does not train on. ``on_step`` receives each iteration's
    metrics row (the line written to ``metrics.jsonl``).
    """
    from peft import PeftModel, get_peft_model

    from tether.models import load

    config = config or PPOTrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not prompts:
        raise ValueError("train_ppo needs at least one prompt")
    eval_fn = eval_fn or quality_fn
    reward = as_scorer(reward_fn)
    quality_scorer = as_scorer(quality_fn) if quality_fn is not None else None
    eval_scorer = as_scorer(eval_fn) if eval_fn is not None else None
    if config.eval_every and (not eval_prompts or eval_fn is None):
        raise ValueError(
            f"eval_every={config.eval_every} needs eval_prompts and an eval_fn (or quality_fn) to score them; "
            "set eval_every to 0 to train without validation"
        )
    if config.keep_best and not config.eval_every:
        raise ValueError("keep_best needs eval_every > 0: without validation there is no best state")
    began = time.perf_counter()
    base_spec = base_spec_of(policy_spec)  # adapters we save sit on the root base model
    engine_config = engine_config or EngineConfig()
    if engine_config.decode_loop == "auto":
        # Rollouts are training data, not an artifact anyone replays sample for sample: they sample in
        # Tether's decode loop, which draws other samples for a seed than transformers' generate and
        # takes 0.67x its time at PPO's shape (README, "RLHF for summarization")
        engine_config = engine_config.model_copy(update={"decode_loop": "tether"})
    device_args = {"device": engine_config.device, "dtype": engine_config.dtype}

    # --- Setup: LoRA policy with a value head, reference, optimizer, KL controller, monitors -------------
    latest = checkpoints(out_dir)[-1] if resume and checkpoints(out_dir) else None
    torch.manual_seed(config.seed)
    ref_model = None  # None: the policy's base with the adapter disabled is the reference
    if is_adapter_dir(policy_spec):
        # Starting from a trained adapter (e.g. SFT): keep training it; the reference is that adapter
        # as it was, merged into a frozen copy, so the KL penalty pulls towards the starting policy.
        start_model = load(policy_spec, **device_args)
        ref_model = start_model.model.merge_and_unload().requires_grad_(False).eval()
        loaded = load(str(latest or policy_spec), trainable=True, **device_args)
        model = loaded.model
    else:
        loaded = load(policy_spec, **device_args)
        if latest is not None:
            model = PeftModel.from_pretrained(loaded.model, str(latest), is_trainable=True)
        else:
            model = get_peft_model(loaded.model, peft_config(config.lora))
    tokenizer = loaded.tokenizer
    reward.check_tokenizer(tokenizer)
    policy = PolicyWithValueHead(model)
    if latest is not None:
        policy.load_value_head(latest)
    policy.train()
    # The engine samples from the same module object, so rollouts always come from the current policy.
    engine = Engine(replace(loaded, model=model), engine_config, tracer)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr},
            {"params": list(policy.value_head.parameters()), "lr": config.value_lr},
        ]
    )
    kl_ctl = make_kl_controller(config.ppo)
    monitor = MonitorState(config.monitor)
    metrics_path = out_dir / "metrics.jsonl"
    validation_path = out_dir / "validation.jsonl"
    start = 0
    if latest is not None:
        state = torch.load(latest / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        kl_ctl.coef = float(state["kl_coef"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        # Iterations after the checkpoint are redone: drop their lines, replay the rest into the monitors.
        rows = [r for r in read_completed(metrics_path) if r["step"] <= start]
        write_jsonl(metrics_path, rows)
        kept = [r for r in read_completed(validation_path) if r["step"] <= start]
        write_jsonl(validation_path, kept)
        # The starting policy's validation has no metrics line; the monitors compare every later one to it.
        for row in kept[:1]:
            if row["step"] == 0:
                monitor.history.append(_start_metrics(row))
        for row in rows:
            monitor.history.append(StepMetrics(**{k: row.get(k) for k in StepMetrics.model_fields}))
            monitor.alerts.extend(Alert(**a) for a in row.get("alerts", []))
        log.warning("resuming PPO from %s (step %d, KL coef %.4g)", latest, start, kl_ctl.coef)
    else:
        metrics_path.unlink(missing_ok=True)
        validation_path.unlink(missing_ok=True)
        shutil.rmtree(out_dir / "best", ignore_errors=True)
    # A best state saved after the checkpoint stays: it was measured, and a redone step must beat it.
    best = _read_best(out_dir)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = (
        tokenizer.eos_token_id if tokenizer.eos_token_id in engine.eos_token_ids else engine.eos_token_ids[0]
    )
    device = next(policy.parameters()).device

    def run_validation(step: int) -> dict:
        """Validate the current policy, log it, and keep it in ``best/`` if it beats the best so far."""
        nonlocal best
        policy.eval()
        result = validate(engine, eval_prompts, reward, eval_scorer, config.max_new_tokens)
        policy.train()
        validations.write({"step": step, **result})
        # A state that bought its quality by giving up one part of it (coverage for faithfulness, say)
        # is not kept, however good the sum. The monitors hold the start to compare with.
        fell = monitor.fallen_parts(result.get("eval_parts"))
        if fell:
            log.warning(
                "PPO step %d is not eligible as the best state: %s fell below the start",
                step,
                ", ".join(f"{name} by {drop:.3f}" for name, drop in fell.items()),
            )
        elif best is None or result["eval_quality"] > best["eval_quality"]:
            _save_best(out_dir, policy, base_spec, step, result["eval_quality"])
            best = {"step": step, "eval_quality": result["eval_quality"]}
        log.info(
            "PPO validation at step %d: quality %.4f, reward %+.4f (best: step %d, %.4f)",
            step,
            result["eval_quality"],
            result["eval_reward"],
            best["step"],
            best["eval_quality"],
        )
        return result

    stopped_early, stop_reason = False, None
    step = start
    with JsonlAppender(metrics_path) as appender, JsonlAppender(validation_path) as validations:
        if config.eval_every and start == 0:
            monitor.check(_start_metrics(run_validation(0)))
        for step in range(start + 1, config.steps + 1):
            timings: dict[str, float] = {}
            batch = [prompts[i] for i in batch_indices(len(prompts), config.batch_size, step, config.seed)]

            # --- 1. Rollout through the engine (token ids, not text: re-tokenising would change them) ---
            t0 = time.perf_counter()
            n_samples = config.samples_per_prompt
            params = SamplingParams(
                max_new_tokens=config.max_new_tokens,
                temperature=config.ppo.temperature,
                top_p=1.0,
                n=n_samples,
                seed=config.seed * 1_000_003 + step,
            )
            policy.eval()
            # Prompts in order on a fixed plan: the decode loop seeds each prompt's samples, transformers'
            # generate each batch of engine.batch_size prompts.
            completions = engine.generate(
                batch,
                params,
                stage=f"ppo/step{step}",
                progress=False,
                batch_size=engine.config.batch_size,
                sort_by_length=False,
            )
            policy.train()
            # From here on everything is per rollout: each prompt repeated once per sample, in order.
            batch = [p for p in batch for _ in range(n_samples)]
            queries = [c.prompt_token_ids for c in completions]
            # PPO passes no stop strings, so "stop" means the policy wrote EOS: it is part of the response.
            hit_eos = [c.finish_reason == "stop" for c in completions]
            responses = [
                c.token_ids + ([eos_id] if eos else []) for c, eos in zip(completions, hit_eos, strict=True)
            ]
            texts = [c.text for c in completions]
            timings["rollout_s"] = time.perf_counter() - t0

            # --- 2. Reward: model score plus rule terms ----------------------------------------------
            t0 = time.perf_counter()
            batch_scores = reward.score(batch, texts)
            raw = [float(r) for r in batch_scores.scores]
            # A composite reward (e.g. tether.rlhf.reward_terms.RuleTermReward) reports its parts.
            reward_terms = dict(batch_scores.parts)
            scores = []
            for r, resp, eos in zip(raw, responses, hit_eos, strict=True):
                r -= config.length_penalty * len(resp) / config.max_new_tokens
                if config.missing_eos_penalty is not None and not eos:
                    r -= config.missing_eos_penalty
                scores.append(r)
            baselined_scores = (
                leave_one_out(scores, n_samples) if n_samples > 1 and config.group_baseline else scores
            )
            timings["reward_s"] = time.perf_counter() - t0

            # --- 3. PPO update ----------------------------------------------------------------------
            t0 = time.perf_counter()
            update_began = time.time_ns()
            query_ids, query_mask = left_pad(queries, pad_id, device)
            response_ids, response_mask = right_pad(responses, pad_id, device)
            ppo_step = rollout_and_update(
                policy,
                ref_model,
                optimizer,
                query_ids,
                query_mask,
                response_ids,
                response_mask,
                torch.tensor(baselined_scores),
                config.ppo,
                kl_coef=kl_ctl.coef,
                forward_batch_size=config.forward_batch_size,
            )
            stats = ppo_step.stats
            kl_ctl.update(stats.kl_to_ref, len(batch))  # rollouts: the controller's horizon counts samples
            timings["forward_s"] = ppo_step.forward_s
            timings["update_s"] = time.perf_counter() - t0 - ppo_step.forward_s
            # The update as a training-step span (rollouts and rewards are spans of their own).
            tracing.item_span(
                "train_step ppo",
                update_began,
                time.time_ns(),
                {
                    "tether.stage": "ppo",
                    "tether.train.step": step,
                    "tether.train.rollouts": len(batch),
                    **{f"tether.train.{k}": float(v) for k, v in stats._asdict().items()},
                },
            )

            # --- 4. Validation and monitors ----------------------------------------------------------
            out_of_time = (
                config.max_minutes is not None
                and time.perf_counter() - began >= config.max_minutes * 60
                and step < config.steps
            )
            validation = {}
            # Out of time, the last state is validated too, so keep_best can choose it.
            if config.eval_every and (step % config.eval_every == 0 or out_of_time):
                t0 = time.perf_counter()
                validation = run_validation(step)
                timings["validation_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            quality = None
            if quality_scorer is not None:
                values = quality_scorer.score(batch, texts).scores
                quality = sum(values) / len(values)
            mean = sum(scores) / len(scores)
            std = math.sqrt(sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1))
            metrics = StepMetrics(
                step=step,
                reward_mean=mean,
                reward_std=std,
                kl=stats.kl_to_ref,
                entropy=stats.entropy,
                response_length=stats.response_length,
                quality=quality,
                eval_quality=validation.get("eval_quality"),
                eval_reward=validation.get("eval_reward"),
                eval_parts=validation.get("eval_parts"),
                **diversity_metrics(texts, embedder),
            )
            alerts = monitor.check(metrics)
            for alert in alerts:
                log.warning("PPO step %d [%s/%s] %s", step, alert.kind, alert.severity, alert.message)
            timings["monitor_s"] = time.perf_counter() - t0
            row = {
                **metrics.model_dump(),
                "raw_reward_mean": sum(raw) / len(raw),
                "reward_terms": reward_terms,
                "kl_coef": stats.kl_coef,
                "kl_coef_next": kl_ctl.coef,
                "ppo": stats._asdict(),
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "alerts": [a.model_dump() for a in alerts],
                "sample": texts[0][:500],
            }
            appender.write(row)
            if on_step is not None:
                on_step(row)

            # --- 5. Checkpoint, and stop early when a monitor asks ------------------------------------
            stop = monitor.should_stop and step < config.steps  # at the last step there is nothing to stop
            if step % config.checkpoint_every == 0 or step == config.steps or stop or out_of_time:
                _save_checkpoint(out_dir, step, policy, optimizer, kl_ctl, base_spec, config.keep_checkpoints)
            if stop:
                stopped_early, stop_reason = True, "monitor"
                log.warning(
                    "PPO stopped early at step %d: a critical monitor alert (monitor.early_stop)", step
                )
                break
            if out_of_time:
                stopped_early, stop_reason = True, "time"
                log.warning(
                    "PPO stopped at step %d of %d: max_minutes=%g reached (train_ppo on this directory "
                    "resumes from here; `tether rlhf run` moves on to the next stage)",
                    step,
                    config.steps,
                    config.max_minutes,
                )
                break

    policy_dir = out_dir / "policy"
    if config.keep_best and best is not None:
        _replace_dir(policy_dir, lambda staging: shutil.copytree(out_dir / "best", staging))
        if best["step"] != step:
            log.warning(
                "PPO keeps the policy of step %d (validation quality %.4f), not the last step's",
                best["step"],
                best["eval_quality"],
            )
    else:
        _save_policy(policy, policy_dir, base_spec)
    plot_path = (
        plot_monitors(monitor.history, out_dir / "monitors.png", monitor.alerts) if monitor.history else None
    )
    return PPOResult(
        policy_dir=policy_dir,
        steps=step,
        stopped_early=stopped_early,
        stop_reason=stop_reason,
        alerts=list(monitor.alerts),
        metrics_path=metrics_path,
        plot_path=plot_path,
        seconds=round(time.perf_counter() - began, 2),
        history=list(monitor.history),
        best_step=best["step"] if best else None,
        best_quality=best["eval_quality"] if best else None,
    )


class RewardModelScorer:
    """A :class:`Reward` backed by a trained reward model (normalised to the training mean/std)."""

    def __init__(self, reward_model, *, normalize: bool = True, batch_size: int = 8):
        self.reward_model = reward_model
        self.normalize = normalize
        self.batch_size = batch_size

    def check_tokenizer(self, tokenizer) -> None:
        from tether.train.reward import check_same_tokenizer

        check_same_tokenizer(
            self.reward_model.hashes, tokenizer, where=f"reward model on {self.reward_model.base}"
        )

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        return BatchScores(
            self.reward_model.score(
                [p.text for p in prompts],
                list(responses),
                batch_size=self.batch_size,
                normalize=self.normalize,
            )
        )
