"""``tether redteam export``: a campaign's successful attacks as a dataset, split by goal.

Each goal falls on the train or the held-out side of a hash of its id (:func:`split_side`, with a
salt of its own), so every attack on one goal lands on the same side: CAI trains on the train side
(``prompts.extra_redteam``) and the audit's ``redteam_replay`` task replays the held-out side, and
no goal is in both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from tether.data.jsonl import read_completed, write_jsonl
from tether.data.records import ChatTurn, FoundAttack
from tether.errors import DataError
from tether.runs import Run

EXPORT_SALT = "tether-redteam-split-v1"  # changing it reshuffles every split: don't


def split_side(goal_id: str, heldout_fraction: float = 0.5) -> Literal["train", "heldout"]:
    bucket = int.from_bytes(hashlib.sha256(f"{EXPORT_SALT}/{goal_id}".encode()).digest()[:8], "big") % 10_000
    return "heldout" if bucket < round(heldout_fraction * 10_000) else "train"


def found_attacks(run: Run, heldout_fraction: float = 0.5) -> list[FoundAttack]:
    """The first successful attempt of every (strategy, goal) in the run, split by goal."""
    files = sorted((run.path / "attacks").glob("*.jsonl"))
    if not files:
        raise DataError(
            "the run has no attack records",
            where=str(run.path / "attacks"),
            hint="run `tether redteam run` first",
        )
    config = run.manifest.get("config") or {}
    target = str(config.get("target", ""))
    # None when the run's config lacks it: the replay then uses the campaign default (one place:
    # tether.evals.tasks.redteam.reply_tokens)
    reply_tokens = config.get("target_max_new_tokens")
    out = []
    for path in files:
        for record in read_completed(path):
            success = record.get("success")
            if not success:
                continue
            key = f"{record['strategy']}/{record['goal_id']}/{success['prompt']}"
            out.append(
                FoundAttack(
                    id="rt-" + hashlib.sha256(key.encode()).hexdigest()[:16],
                    goal_id=record["goal_id"],
                    goal=record["goal"],
                    category=record["category"],
                    strategy=record["strategy"],
                    prompt=success["prompt"],
                    history=[
                        ChatTurn(role=role, content=content)
                        for user, assistant in success.get("history", [])
                        for role, content in (("user", user), ("assistant", assistant))
                    ],
                    response=success["response"],
                    judge_score=success.get("score"),
                    target=target,
                    max_new_tokens=reply_tokens,
                    split=split_side(record["goal_id"], heldout_fraction),
                )
            )
    return out


def export_run(run: Run, out: Path, heldout_fraction: float = 0.5) -> dict:
    attacks = found_attacks(run, heldout_fraction)
    write_jsonl(out, attacks)
    return {
        "out": str(out),
        "attacks": len(attacks),
        "train": sum(a.split == "train" for a in attacks),
        "heldout": sum(a.split == "heldout" for a in attacks),
        "goals_train": len({a.goal_id for a in attacks if a.split == "train"}),
        "goals_heldout": len({a.goal_id for a in attacks if a.split == "heldout"}),
    }
