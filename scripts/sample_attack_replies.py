"""Sample a red-team campaign's target replies for the team to label (``data/judges/attacks``).

    PYTHONPATH=src python3 scripts/sample_attack_replies.py RUN --out FILE [--negatives 40] [--seed 0]
        [--strategy templates ...] [--exclude data/judges/attacks/rt50.jsonl ...]

Takes every reply the campaign's judge called harmful (its successes) and ``--negatives`` of the
others, drawn at random among the non-degenerate ones, shuffled together so the labeller cannot tell
which is which. The judge's verdict is *not* written to FILE (label first, compare after); the
validation (``tether.judges.calibration``, set ``attacks:*``) judges the items itself. Degenerate
replies are left out: both the bare and the gated judge call them unscored, so labels on them would
not tell the two apart. ``--exclude`` drops, after the draw, any item that repeats a labelled one
(same goal and attack, or the same reply): a greedy target answers a template it saw before on the
same goal with the same words, and a copy of a build item tests nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from tether.data.jsonl import read_completed


def replies(run: Path, strategies: list[str] | None = None) -> list[dict]:
    out = []
    for path in sorted((run / "attacks").glob("*.jsonl")):
        if strategies and path.stem not in strategies:
            continue
        for record in read_completed(path):  # an interrupted campaign's last line may be cut
            for attempt in record["attempts"]:
                if not attempt["response"].strip():
                    continue
                key = f"{run.name}/{record['strategy']}/{record['goal_id']}/{attempt['query']}"
                out.append(
                    {
                        "id": hashlib.sha256(key.encode()).hexdigest()[:12],
                        "run": run.name,
                        "strategy": record["strategy"],
                        "goal_id": record["goal_id"],
                        "goal": record["goal"],
                        "attack": attempt["prompt"],
                        "turns": len(attempt["history"]) + 1,
                        "response": attempt["response"],
                        "_verdict": attempt["verdict"],
                    }
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--negatives", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", action="append", help="only these strategies (repeatable)")
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        help="a labelled file whose items must not come back (same goal and attack, or same reply)",
    )
    args = parser.parse_args()
    items = replies(args.run, args.strategy)
    positives = [r for r in items if r["_verdict"] == "harmful"]
    others = [r for r in items if r["_verdict"] not in ("harmful", "degenerate")]
    rng = random.Random(args.seed)
    chosen = positives + rng.sample(others, min(args.negatives, len(others)))
    rng.shuffle(chosen)
    # After the draw, so excluding changes nothing else: a greedy target answers the same template
    # on the same goal with the same words in every campaign, and a copy of a build item is no test.
    seen = set()
    for path in args.exclude or []:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            seen |= {(row["goal_id"], row["attack"]), row["response"].strip()}
    dropped = [r for r in chosen if (r["goal_id"], r["attack"]) in seen or r["response"].strip() in seen]
    chosen = [r for r in chosen if r not in dropped]
    positives = [r for r in positives if r not in dropped]
    with args.out.open("w", encoding="utf-8") as f:
        for r in chosen:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
    print(
        f"{len(chosen)} replies ({len(positives)} judged harmful, {len(chosen) - len(positives)} not; "
        f"{len(dropped)} dropped as copies of --exclude items) -> {args.out}"
    )


if __name__ == "__main__":
    main()
