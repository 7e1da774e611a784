"""Mitigations on the safety–capability frontier (issue #18): candidates between a base and an
aligned model, built in memory, audited, and the Pareto frontier of the results."""

from tether.frontier.config import FrontierConfig

__all__ = ["FrontierConfig"]
