"""One RLHF iteration (rollout + reward + update): Tether's PPO vs TRL's GRPOTrainer, same work.

Both sides train a fresh LoRA (r16, all linear, no dropout) on the same model, sample the same
number of completions per iteration (``--batch-size``) capped at the same length at the same
temperature, score them with the same reward (the AI labeler's proxy score of each summary against
its document: cheap, so the comparison is of the training machinery), compute reference log-probs
(TRL: ``beta > 0``), and take one optimizer step per iteration (Tether: ``epochs=1``,
``minibatch_size=batch``; TRL: ``num_iterations=1``), ``--micro-batch-size`` sequences a
forward/backward on both sides (Tether: ``micro_batch_size``; TRL: ``per_device_train_batch_size``
with gradient accumulation over the batch). Gradient checkpointing is off on both sides. TRL's GRPO
needs groups, and Tether samples the same ones (``samples_per_prompt``): ``batch / num_generations``
prompts, ``num_generations`` samples each.

Each side runs in its own process, so their memory does not mix, ``--steps`` iterations; the last
one is timed (the first pays one-off warm-up). The sides run A-B-B-A (Tether, TRL, TRL, Tether) so
load from other processes falls on both; ``--rounds 1`` runs each once. Prints the load average
before and after, where each side's time goes, each side's peak RSS, and
``tether_time_over_trl: X`` (Tether's iteration time / TRL's: below 1 means Tether is faster), also
per generated token since sampled lengths differ.

    python benchmarks/ppo.py                                                   # 8 completions x 32 tokens
    python benchmarks/ppo.py --batch-size 32 --num-generations 4 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from children import child_result, load, print_result  # benchmarks/children.py, beside this script


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
        ppo=PPOConfig(
            epochs=1,
            minibatch_size=args.batch_size,
            micro_batch_size=args.micro_batch_size,
            temperature=args.temperature,
        ),
        monitor=MonitorConfig(),
        checkpoint_every=10_000,
        forward_batch_size=args.micro_batch_size,
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
            # Micro-batches of --micro-batch-size, gradients accumulated over the batch: one
            # generation of --batch-size completions and one optimizer step per iteration.
            per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=args.batch_size // args.micro_batch_size,
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


SIDES = {"tether": ("tether PPO", tether_iteration), "trl": ("TRL GRPO", trl_iteration)}


def run_side(side: str, args) -> dict:
    """One side in a child process of its own; its result, or why it failed (an OOM kill, say)."""
    command = [sys.executable, __file__, "--side", side]
    for name in ("model", "batch_size", "num_generations", "max_new_tokens", "micro_batch_size", "steps"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--temperature", str(args.temperature), "--lr", str(args.lr)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    return child_result(command)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=8, help="Completions per iteration.")
    parser.add_argument("--num-generations", type=int, default=2, help="GRPO group size (TRL side).")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--micro-batch-size", type=int, default=8, help="Sequences per forward/backward, both sides."
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=2, help="Iterations per side; the last is timed.")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2, help="2: A-B-B-A; 1: A-B.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.batch_size % args.num_generations:
        parser.error("--batch-size must be a multiple of --num-generations")
    args.micro_batch_size = min(args.micro_batch_size, args.batch_size)
    if args.batch_size % args.micro_batch_size:
        parser.error("--batch-size must be a multiple of --micro-batch-size")

    if args.side:
        if args.threads:
            torch.set_num_threads(args.threads)
        from tether.rlhf.documents import load_boolq_documents, select_split

        docs, _ = select_split(load_boolq_documents(), n_train=args.batch_size * args.steps, n_heldout=1)
        result = SIDES[args.side][1](args, docs)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print_result(result)
        return

    print(f"before: {load()}", flush=True)
    order = ["tether", "trl"] if args.rounds == 1 else ["tether", "trl", "trl", "tether"]
    runs: dict[str, list[dict]] = {"tether": [], "trl": []}
    for side in order:
        runs[side].append(run_side(side, args))
        print(f"  {SIDES[side][0]} run {len(runs[side])}: {json.dumps(runs[side][-1])}", flush=True)
    print(f"after: {load()}")
    shape = f"{args.batch_size} completions x {args.max_new_tokens} max new tokens, micro-batch {args.micro_batch_size}"
    means = {}
    for side, results in runs.items():
        name = SIDES[side][0]
        failed = [r["failed"] for r in results if "failed" in r]
        if failed:
            print(f"{name}: FAILED ({shape}): {failed[0]}")
            continue
        t = {key: sum(r[key] for r in results) / len(results) for key in results[0]}
        t["peak_rss_gb"] = max(r["peak_rss_gb"] for r in results)
        means[side] = t
        print(
            f"{name}: iteration {t['iteration_s']:.2f}s = rollout {t['rollout_s']:.2f}s + reward {t['reward_s']:.3f}s "
            f"+ update {t['update_s']:.2f}s; {t['tokens_per_completion']:.1f} tokens/completion ({shape}); "
            f"peak RSS {t['peak_rss_gb']:.2f} GB; whole run {t['total_s']:.1f}s (mean of {len(results)})"
        )
    if len(means) < 2:
        print("tether_time_over_trl: n/a (a side failed)")
        return
    tether, trl = means["tether"], means["trl"]
    print(
        f"tether_time_over_trl: {tether['iteration_s'] / trl['iteration_s']:.2f} (below 1: Tether is faster)"
    )
    per_token = (tether["iteration_s"] / tether["tokens_per_completion"]) / (
        trl["iteration_s"] / trl["tokens_per_completion"]
    )
    print(f"tether_time_per_token_over_trl: {per_token:.2f} (below 1: Tether is faster)")
    print(f"peak_rss_gb: tether {tether['peak_rss_gb']:.2f}, trl {trl['peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()
