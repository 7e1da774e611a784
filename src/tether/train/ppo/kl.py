"""KL penalty coefficients: fixed, or adapted towards a target KL (Ziegler et al. 2019, sec. 2.2)."""

from __future__ import annotations

from typing import Protocol


class KLController(Protocol):
    """Holds the current KL coefficient ``coef`` and updates it after each PPO batch."""

    coef: float

    def update(self, current_kl: float, n_steps: int) -> float: ...


class FixedKLController:
    """A constant KL coefficient; ``update`` leaves it unchanged."""

    def __init__(self, coef: float):
        self.coef = float(coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.coef

    def __repr__(self) -> str:
        return f"FixedKLController(coef={self.coef})"


class AdaptiveKLController:
    """Proportional control of the KL coefficient towards ``target`` nats (per sequence).

    ``error = clip(KL / target - 1, -0.2, 0.2)`` and ``coef *= 1 + error * n_steps / horizon``: a KL
    above target raises the penalty, below lowers it. The clip bounds how much one batch can move
    the coefficient, so a single noisy KL estimate cannot swing it; ``horizon`` (in samples) sets
    how fast it reacts. ``n_steps`` is the number of samples the KL was measured on.
    """

    ERROR_CLIP = 0.2

    def __init__(self, init_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target ({target}) and horizon ({horizon}) must be positive")
        self.coef = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef

    def __repr__(self) -> str:
        return f"AdaptiveKLController(coef={self.coef}, target={self.target}, horizon={self.horizon})"
