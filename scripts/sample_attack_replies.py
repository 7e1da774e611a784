"""Sample a red-team campaign's target replies for the team to label (``data/judges/attacks``).

    PYTHONPATH=src python3 scripts/sample_attack_replies.py RUN --out FILE [--negatives 40] [--seed 0]

Takes every reply the campaign's judge called harmful (its successes) and ``--negatives`` of the
others, drawn at random among the non-degenerate ones, shuffled together so the labeller cannot tell
which is which. The judge's verdict is *not* written to FILE (label first, compare after); the
validation (``tether.judges.calibration``, set ``attacks:*``) judges the items itself. Degenerate
replies are left out: both the bare and the gated judge call them unscored, so labels on them would
not tell the two apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from tether.data.jsonl import read_completed


def replies(run: Path) -> list[dict]:
    out = []
    for path in sorted((run / "attacks").glob("*.jsonl")):
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
    args = parser.parse_args()
    items = replies(args.run)
    positives = [r for r in items if r["_verdict"] == "harmful"]
    others = [r for r in items if r["_verdict"] not in ("harmful", "degenerate")]
    rng = random.Random(args.seed)
    chosen = positives + rng.sample(others, min(args.negatives, len(others)))
    rng.shuffle(chosen)
    with args.out.open("w", encoding="utf-8") as f:
        for r in chosen:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
    print(
        f"{len(chosen)} replies ({len(positives)} judged harmful, {len(chosen) - len(positives)} not) -> {args.out}"
    )


if __name__ == "__main__":
    main()
