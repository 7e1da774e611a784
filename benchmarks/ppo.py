"""One RLHF iteration (rollout + reward + update): Tether's PPO vs TRL's GRPOTrainer, same work.

Both sides train a fresh LoRA (r16, all linear, no dropout) on the same model, sample the same
number of completions per iteration (``--batch-size``) capped at the same length at the same
temperature, score them with the same reward (the AI labeler's proxy score of each summary against
its document: cheap, so the comparison is of the training machinery), compute reference log-probs
(TRL: ``beta > 0``), and take one optimizer step per iteration (Tether: ``epochs=1``,
``minibatch_size=batch``; TRL: ``num_iterations=1``). Gradient checkpointing is off on both sides.
TRL's GRPO needs groups, and Tether samples the same ones (``samples_per_prompt``): ``batch / num_generations``
prompts, ``num_generations`` samples each.

Each side runs ``--steps`` iterations; the last one is timed (the first pays one-off warm-up).
Prints where the time goes and ``ppo_iteration_vs_trl: <TRL time / Tether time>x`` (above 1: Tether
is faster), also per generated token since sampled lengths differ.

    python benchmarks/ppo.py                       # default model, batch 8, 32 new tokens, CPU
    python benchmarks/ppo.py --batch-size 4 --max-new-tokens 16 --steps 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def tether_iteration(args, docs) -> dict:
    from tether.rlhf.labeler import AILabeler
    from tether.rlhf.pipeline import ppo_prompts
    from tether.train.lora import LoRAConfig
    from tether.train.monitors import MonitorConfig
    from tether.train.ppo import PPOConfig
    from tether.train.ppo.trainer import PPOTrainConfig, train_ppo

    labeler = AILabeler()

    def reward(prompts, texts):
        extra = [p.model_extra for p in prompts]
        return labeler.quality([e["document"] for e in extra], texts, [e["question"] for e in extra])

    config = PPOTrainConfig(
        steps=args.steps,
        # The same grouping as GRPO's: batch / num_generations prompts, num_generations samples each.
        batch_size=args.batch_size // args.num_generations,
        samples_per_prompt=args.num_generations,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        lora=LoRAConfig(r=16, alpha=32, dropout=0.0),
        ppo=PPOConfig(epochs=1, minibatch_size=args.batch_size, temperature=args.temperature),
        monitor=MonitorConfig(),
        checkpoint_every=10_000,
        forward_batch_size=args.batch_size,
    )
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        train_ppo(args.model, ppo_prompts(docs), reward, out, config)
        total = time.perf_counter() - began
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    t = last["timings"]
    return {
        "iteration_s": t["rollout_s"] + t["reward_s"] + t["forward_s"] + t["update_s"] + t["monitor_s"],
        "rollout_s": t["rollout_s"],
        "reward_s": t["reward_s"],
        "update_s": t["forward_s"] + t["update_s"],
        "monitor_s": t["monitor_s"],
        "tokens_per_completion": last["response_length"],
        "total_s": total,
    }


def trl_iteration(args, docs) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tether.models import load
    from tether.rlhf.labeler import AILabeler
    from tether.train.lora import LoRAConfig, peft_config

    labeler = AILabeler()
    timings: dict[str, list[float]] = {"reward_s": [], "generate_s": [], "step_s": [], "tokens": []}

    def reward(prompts, completions, document, question, **kwargs):
        began = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores = labeler.quality(document, texts, question)
        timings["reward_s"].append(time.perf_counter() - began)
        return scores

    loaded = load(args.model)
    model = loaded.model
    generate = model.generate

    def timed_generate(*a, **kw):  # TRL calls generate on the model it was given; time it there
        began = time.perf_counter()
        out = generate(*a, **kw)
        timings["generate_s"].append(time.perf_counter() - began)
        prompt_width = (kw.get("input_ids") if "input_ids" in kw else a[0]).shape[1]
        new = out[:, prompt_width:]
        eos = loaded.tokenizer.eos_token_id
        lengths = [
            (row == eos).nonzero()[0].item() + 1 if (row == eos).any() else row.shape[0] for row in new
        ]
        timings["tokens"].append(sum(lengths) / len(lengths))
        return out

    # TRL's PEFT wrapper forwards generate() to this model: an instance attribute times every call.
    model.generate = timed_generate

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            timings["step_s"].append(time.perf_counter() - self.began)

    prompts_per_step = args.batch_size // args.num_generations
    rows = [
        {"prompt": [{"role": "user", "content": d.prompt}], "document": d.text, "question": d.question}
        for d in docs[: prompts_per_step * args.steps]
    ]
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations,
            max_completion_length=args.max_new_tokens,
            temperature=args.temperature,
            top_p=1.0,
            learning_rate=args.lr,
            beta=0.04,  # > 0: TRL computes reference log-probs, as Tether's KL penalty does
            num_iterations=1,
            gradient_checkpointing=False,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            use_cpu=not cuda,
            logging_steps=10_000,  # quiet: the callback and wrappers do the timing
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            shuffle_dataset=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=loaded.tokenizer,
            peft_config=peft_config(LoRAConfig(r=16, alpha=32, dropout=0.0)),
            callbacks=[StepTimer()],
        )
        began = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - began
    step = timings["step_s"][-1]
    gen = timings["generate_s"][-1] if timings["generate_s"] else float("nan")
    rew = timings["reward_s"][-1]
    return {
        "iteration_s": step,
        "rollout_s": gen,
        "reward_s": rew,
        "update_s": step - gen - rew,
        "tokens_per_completion": timings["tokens"][-1] if timings["tokens"] else float("nan"),
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=8, help="Completions per iteration.")
    parser.add_argument("--num-generations", type=int, default=2, help="GRPO group size (TRL side).")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=2, help="Iterations per side; the last is timed.")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.batch_size % args.num_generations:
        parser.error("--batch-size must be a multiple of --num-generations")
    if args.threads:
        torch.set_num_threads(args.threads)

    from tether.rlhf.documents import load_boolq_documents, select_split

    docs, _ = select_split(load_boolq_documents(), n_train=args.batch_size * args.steps, n_heldout=1)
    tether = tether_iteration(args, docs)
    trl = trl_iteration(args, docs)
    for name, t in (("tether PPO", tether), ("TRL GRPO", trl)):
        print(
            f"{name}: iteration {t['iteration_s']:.2f}s = rollout {t['rollout_s']:.2f}s + reward {t['reward_s']:.3f}s "
            f"+ update {t['update_s']:.2f}s; {t['tokens_per_completion']:.1f} tokens/completion "
            f"({args.batch_size} completions, {args.max_new_tokens} max new tokens); whole run {t['total_s']:.1f}s"
        )
    print(f"ppo_iteration_vs_trl: {trl['iteration_s'] / tether['iteration_s']:.2f}x")
    per_token = (trl["iteration_s"] / trl["tokens_per_completion"]) / (
        tether["iteration_s"] / tether["tokens_per_completion"]
    )
    print(f"ppo_iteration_per_token_vs_trl: {per_token:.2f}x")


if __name__ == "__main__":
    main()
