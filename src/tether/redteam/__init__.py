"""Red teaming (``tether redteam``): attack strategies over the shared engine, a campaign of stages
(``tether.redteam.pipeline``), a report of ASR against query budget, and an export of what was found
for CAI training and the audit's ``redteam_replay`` task. ``docs/architecture.md`` has the stages."""

from tether.redteam.config import STRATEGIES, RedteamConfig

__all__ = ["STRATEGIES", "RedteamConfig"]
