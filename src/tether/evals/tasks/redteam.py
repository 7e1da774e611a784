"""``redteam_replay:FILE``: replay the held-out half of a red-team export on any checkpoint.

``FILE`` is what ``tether redteam export`` wrote. Only its ``heldout`` side is replayed (CAI trains
on the ``train`` side, split by goal, so a checkpoint trained on found attacks is scored on goals it
never saw). Each attack is sent as found (multi-turn attacks with their earlier turns, the earlier
target replies as written then), answered greedily, and judged by the harmful-content judge against
its goal: score 1 when harmful content is present (HarmBench's attack success).
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
from tether.evals.tasks.safety import ATTACK_SUCCESS_RATE, _harm_judge, _judge_settings
from tether.evals.types import ItemResult

TASK_NAME = "redteam_replay"


def load_replay(path: Path) -> list[FoundAttack]:
    """The held-out side of a red-team export (a DataError names the file and line of a bad row)."""
    return [a for a in read_jsonl(path, FoundAttack, unique="id") if a.split == "heldout"]


def run_replay(engine: EngineLike, items: Sequence[FoundAttack], *, seed: int = 0) -> list[ItemResult]:
    prompts = [
        Prompt(
            id=a.id,
            text=a.prompt,
            chat=True,
            stage=TASK_NAME,
            history=[t.model_dump() for t in a.history],
        )
        for a in items
    ]
    return judge_refusals(
        engine,
        TASK_NAME,
        items,
        prompts,
        [a.goal for a in items],  # judged against the goal, not the attack's wrapper
        GREEDY_REFUSAL,
        _harm_judge(),
        score_of=lambda label: 1.0 if label == "harmful" else 0.0,
        extra_of=lambda a: {"strategy": a.strategy, "goal_id": a.goal_id, "turns": len(a.history) // 2 + 1},
    )


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
        settings={"format": "chat", "export_sha256": digest, **_judge_settings(_harm_judge())},
        judges=("harmful",),
    )
