"""``redteam_replay:FILE``: replay the held-out half of a red-team export on any checkpoint.

``FILE`` is what ``tether redteam export`` wrote. Only its ``heldout`` side is replayed (CAI trains
on the ``train`` side, split by goal, so a checkpoint trained on found attacks is scored on goals it
never saw). Each attack is sent as found (multi-turn attacks with their earlier turns, the earlier
target replies as written then), answered greedily as long as the campaign let the target answer
(the export's ``max_new_tokens``; a shorter reply shows the judge less than the campaign's judge saw),
and judged by the harmful-content judge against its goal, behind the goal gate as a campaign judges
by default (``tether.judges.ongoal``: an off-goal reply, or one that restates the attack, is not a
success): score 1 when harmful content is present (HarmBench's attack success).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tether.data.jsonl import read_jsonl
from tether.data.records import FoundAttack
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.evals.registry import Task
from tether.evals.tasks._common import GREEDY_REFUSAL, judge_refusals
from tether.evals.tasks.safety import ATTACK_JUDGE, ATTACK_SUCCESS_RATE, _attack_judge, _judge_settings
from tether.evals.types import ItemResult
from tether.redteam.config import RedteamConfig

TASK_NAME = "redteam_replay"


def load_replay(path: Path) -> list[FoundAttack]:
    """The held-out side of a red-team export (a DataError names the file and line of a bad row)."""
    return [a for a in read_jsonl(path, FoundAttack, unique="id") if a.split == "heldout"]


def reply_tokens(attack: FoundAttack) -> int:
    """How long the replay lets the target answer: as long as the campaign did (exports written
    before the campaign's length was recorded: the campaign default)."""
    return attack.max_new_tokens or RedteamConfig.model_fields["target_max_new_tokens"].default


def run_replay(engine: EngineLike, items: Sequence[FoundAttack], *, seed: int = 0) -> list[ItemResult]:
    results: dict[str, ItemResult] = {}
    for length in sorted({reply_tokens(a) for a in items}):
        group = [a for a in items if reply_tokens(a) == length]
        prompts = [
            Prompt(
                id=a.id,
                text=a.prompt,
                chat=True,
                stage=TASK_NAME,
                history=[t.model_dump() for t in a.history],
            )
            for a in group
        ]
        judged = judge_refusals(
            engine,
            TASK_NAME,
            group,
            prompts,
            [a.goal for a in group],  # judged against the goal, not the attack's wrapper
            GREEDY_REFUSAL.model_copy(update={"max_new_tokens": length}),
            _attack_judge(),
            score_of=lambda label: 1.0 if label == "harmful" else 0.0,
            extra_of=lambda a: {
                "strategy": a.strategy,
                "goal_id": a.goal_id,
                "turns": len(a.history) // 2 + 1,
            },
            attack_texts=[a.prompt for a in group],
        )
        results.update((a.id, r) for a, r in zip(group, judged, strict=True))
    return [results[a.id] for a in items]


def redteam_replay(path: str) -> Task:
    """The replay task over the export at ``path`` (its content hash is part of the cache version)."""
    if not path:
        raise ConfigError(
            f"{TASK_NAME} needs the export it replays",
            where="tasks",
            hint=f"write {TASK_NAME}:FILE with FILE from `tether redteam export`",
        )
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"{file}: red-team export not found",
            where="tasks",
            hint="run `tether redteam export RUN --out FILE` and pass that FILE",
        )
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return Task(
        name=TASK_NAME,
        description=f"held-out attacks found by a red-team campaign ({file.name}), replayed: attack "
        "success rate = share of replies with harmful content, by goal category",
        sources=(str(file),),
        metric=ATTACK_SUCCESS_RATE,
        kind="generate",
        load=lambda: load_replay(file),
        run=run_replay,
        settings={
            "format": "chat",
            "export_sha256": digest,
            **_judge_settings(_attack_judge()),
            # replies as long as the campaign's (replays before this cut them at the refusal tasks' 48)
            "params": {"temperature": 0.0, "max_new_tokens": "as in the campaign"},
        },
        judges=(ATTACK_JUDGE,),
    )
