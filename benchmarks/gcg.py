"""GCG's optimisation with the prefix cache (``gcg.prefix_cache: true``, the default) against every
candidate running its whole prompt (``false``): same goals, same seed, same steps.

Each side runs in its own process (so its peak RSS is its own; both include the model), A-B-B-A
(cached, whole, whole, cached) so load from other processes falls on both. A side loads the target,
takes the first ``--goals`` HarmBench validation goals of the campaign's selection and runs
``--steps`` GCG steps on each at the CPU config's width; the searches are timed (each one's set-up,
the prefix states and the first loss, with its steps), not the model load. Prints the load average
before and after, each run's seconds per step and peak RSS, whether both sides ended on the
same suffixes and losses, and ``cached_time_over_whole: X`` (the cached side's time / the whole
side's: below 1 means the cache is faster).

    python benchmarks/gcg.py                                    # default model, 2 goals x 3 steps
    python benchmarks/gcg.py --target runs/cai-tax/round1/sft --goals 3 --steps 4
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch
from children import child_result, load, print_result  # benchmarks/children.py, beside this script


def one_side(args) -> dict:
    from tether.engine import Engine
    from tether.redteam.config import RedteamConfig
    from tether.redteam.gcg import SuffixSearch, WhiteBox
    from tether.redteam.goals import select_goals

    config = RedteamConfig(target=args.target, goals={"limit": args.goals})
    goals, _ = select_goals(config.goals, config.seed)
    gcg = config.gcg.model_copy(update={"prefix_cache": args.side == "cached"})
    box = WhiteBox.of(Engine.from_spec(args.target))
    seconds, out = 0.0, []
    for goal in goals:
        began = time.perf_counter()
        search = SuffixSearch(box, goal.text, gcg, seed=config.seed)
        for _ in range(args.steps):
            search.step()
        seconds += time.perf_counter() - began
        out.append({"goal": goal.id, "suffix": search.suffix.tolist(), "history": search.history})
    return {
        "seconds": seconds,
        "per_step": seconds / (args.steps * len(goals)),
        "prompt_tokens": int(search.layout.before.numel() + gcg.suffix_tokens + search.layout.after.numel()),
        "prefix_tokens": int(search.layout.before.numel()),
        "goals": out,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def run_side(side: str, args) -> dict:
    command = [sys.executable, __file__, "--side", side, "--target", args.target]
    command += ["--goals", str(args.goals), "--steps", str(args.steps), "--threads", str(args.threads)]
    result = child_result(command)
    if "failed" in result:
        raise SystemExit(f"{side} side failed: {result['failed']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target", default="default", help="A model spec (default, an adapter directory, ...)."
    )
    parser.add_argument("--goals", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=("cached", "whole"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TETHER_NO_PROGRESS", "1")
    if args.side:
        print_result(one_side(args))
        return

    print(f"before: {load()}", flush=True)
    runs: dict[str, list[dict]] = {"cached": [], "whole": []}
    for side in ("cached", "whole", "whole", "cached"):
        runs[side].append(run_side(side, args))
        r = runs[side][-1]
        print(f"  {side}: {r['per_step']:.2f} s a step, peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
    print(f"after: {load()}")
    first = runs["cached"][0]
    print(
        f"prompt: {first['prompt_tokens']} tokens before the target string, {first['prefix_tokens']} of them "
        f"before the suffix (last goal); {args.goals} goals x {args.steps} steps a run"
    )
    same = all(
        a["suffix"] == b["suffix"]
        for a, b in zip(runs["cached"][0]["goals"], runs["whole"][0]["goals"], strict=True)
    )
    gap = max(
        abs(x - y)
        for a, b in zip(runs["cached"][0]["goals"], runs["whole"][0]["goals"], strict=True)
        for x, y in zip(a["history"], b["history"], strict=True)
    )
    print(f"same suffixes on both sides: {same}; largest loss difference along the search: {gap:.2e}")
    mean = {side: sum(r["seconds"] for r in rs) / len(rs) for side, rs in runs.items()}
    print(
        f"cached_time_over_whole: {mean['cached'] / mean['whole']:.2f}x "
        "(the prefix cache's optimisation time / the whole prompt's: below 1 means the cache is faster)"
    )


if __name__ == "__main__":
    main()
