"""How much of the alignment tax a candidate recovers, and how much of the alignment gain it keeps.

On one task (or the pooled capability axis), on the test items that BASE, the unmitigated aligned
model REF and a candidate all scored, with oriented means b, r and c (higher is better):

* alignment shifted the task by r − b; the candidate **retains** s = (c − b) / (r − b) of that shift;
* where alignment gained (r > b, e.g. harmful refusal) s is the **gain kept**;
* where it cost (r < b, e.g. over-refusal, capability) 1 − s = (c − r) / (b − r) is the **loss
  recovered**.

A share is a ratio of two noisy differences. Its interval is a Bayesian bootstrap within each task
(Dirichlet weights over the items, the three models' scores of an item kept together) with a weak
prior: the eight corners of the score box (each model right or wrong) carry 1/8 of an item each.
Without it, a candidate that answered every item (37 of 37 over-refusal prompts) gets the interval
[1.00, 1.00], since every resample agrees; simulated at n = 37 with the candidate's true rate 0.97, a
percentile bootstrap held the true share 68% of the time and this one 99%; at n = 90 and 700 the two
agree (0.91/0.92 and 0.95/0.96), intervals 2-4% wider (``tests/test_frontier_recovery.py`` keeps
the gap). The shift (unmitigated against BASE) has its own paired test: a share of a shift that is not
significant is printed but not read (``shift_significant`` False), and the share of draws in which
the shift vanishes or reverses, where the ratio means nothing, is reported (``reversed_draws``).

An operating point **meets** ``(keep, recover)`` when every gain kept is at least ``keep`` and every
loss recovered at least ``recover`` (point estimates, over the components whose shift is
significant); ``meets_at_lower_bound`` asks the same of the intervals' lower ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tether.audit.power import weighted_paired_test
from tether.audit.stats import is_significant

Scores = Mapping[str, float]  # item id -> score, scored items only


def _strata(
    tasks: Sequence[str],
    scores: Mapping[tuple[str, str], Scores],
    higher_is_better: Mapping[str, bool],
    models: tuple[str, str, str],
) -> list[np.ndarray]:
    """Per task, ``[items, 3]`` oriented scores of (BASE, REF, candidate) on the items all three scored."""
    out = []
    for task in tasks:
        per_model = [scores.get((m, task), {}) for m in models]
        shared = sorted(set.intersection(*(set(s) for s in per_model)))
        rows = np.array([[s[i] for s in per_model] for i in shared], dtype=np.float64).reshape(-1, 3)
        if not higher_is_better[task]:
            rows = 1.0 - rows  # right/wrong stays right/wrong; a ratio of differences is unchanged
        out.append(rows)
    return out


def _means(strata: Sequence[np.ndarray], weighting: str) -> np.ndarray:
    """(b, r, c) over non-empty strata: item-weighted pools every item; task-weighted averages the
    task means."""
    if weighting == "item":
        return np.concatenate(strata).mean(0)
    return np.mean([s.mean(0) for s in strata], axis=0)


def _shift(strata: Sequence[np.ndarray], weighting: str, alpha: float, seed: int) -> dict[str, Any]:
    """REF against BASE over non-empty strata: the means, the paired test and its reading."""
    means = _means(strata, weighting)
    test = weighted_paired_test(
        [(float(len(s)) if weighting == "item" else 1.0, s[:, 1] - s[:, 0], s[:, 0]) for s in strata],
        alpha=alpha,
        seed=seed,
    )
    b, r = float(means[0]), float(means[1])
    return {
        "direction": "gain" if r > b else "loss" if r < b else "none",
        "base": b,
        "reference": r,
        "n": int(sum(len(s) for s in strata)),
        "shift": {
            "delta": test["delta"],
            "ci": [test["ci_low"], test["ci_high"]],
            "p_value": test["p_value"],
            "mde": test["mde"],
        },
        "shift_significant": is_significant(test["ci_low"], test["ci_high"]),
    }


def _share(means: np.ndarray) -> float:
    b, r, c = means
    return float((c - b) / (r - b)) if r != b else float("nan")


CORNER_PRIOR = 1 / 8  # of an item, on each corner of the score box: one item in all


def _posterior_means(stratum: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_draws, 3]`` draws of (b, r, c) means: a Bayesian bootstrap over the items and the eight
    corners of the score box (``CORNER_PRIOR`` of an item each)."""
    low, high = min(0.0, float(stratum.min())), max(1.0, float(stratum.max()))
    corners = np.array([[high if i >> k & 1 else low for k in (2, 1, 0)] for i in range(8)])
    points = np.vstack([stratum, corners])
    weights = rng.dirichlet(np.r_[np.ones(len(stratum)), np.full(8, CORNER_PRIOR)], n_draws)
    return weights @ points


def component_share(
    strata: Sequence[np.ndarray],
    weighting: str = "item",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The retained share of one component (its tasks' strata), with its interval (see the module
    docstring) and the shift's paired test (REF against BASE). None when no item was scored by all
    three."""
    strata = [s for s in strata if len(s)]
    if not strata:
        return None
    means = _means(strata, weighting)
    rng = np.random.default_rng(seed)
    sizes = np.array([len(s) for s in strata], dtype=np.float64)
    mix = sizes / sizes.sum() if weighting == "item" else np.full(len(strata), 1 / len(strata))
    draws = sum(w * _posterior_means(s, n_boot, rng) for w, s in zip(mix, strata, strict=True))
    b, r, c = draws[:, 0], draws[:, 1], draws[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = np.where(r != b, (c - b) / (r - b), np.nan)
    defined = boots[np.isfinite(boots)]
    reversed_draws = float(np.mean(np.sign(r - b) != np.sign(means[1] - means[0])))
    low, high = (
        (float(np.quantile(defined, alpha / 2)), float(np.quantile(defined, 1 - alpha / 2)))
        if defined.size
        else (None, None)
    )
    shift = _shift(strata, weighting, alpha, seed)
    gained = shift["direction"] == "gain"
    share = _share(means)
    finite = np.isfinite(share)
    return {
        **shift,
        "candidate": float(means[2]),
        "retained": share if finite else None,
        "retained_ci": [low, high],
        # what the target reads: the gain kept, or the loss recovered (1 - retained)
        "share": (share if gained else 1.0 - share) if finite else None,
        "share_ci": ([low, high] if gained else [1.0 - high, 1.0 - low]) if low is not None else [None, None],
        "reversed_draws": reversed_draws,
    }


def recovery(
    scores: Mapping[tuple[str, str], Scores],
    higher_is_better: Mapping[str, bool],
    components: Mapping[str, tuple[Sequence[str], str]],
    *,
    base: str,
    reference: str,
    candidates: Sequence[str],
    keep: float,
    recover: float,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per candidate, each component's share (``components``: name -> (tasks, weighting)), and
    whether the candidate meets ``keep`` / ``recover``; under ``"shifts"``, each component's
    unmitigated shift from BASE on every item the two scored."""
    shifts = {}
    for component, (tasks, weighting) in components.items():
        strata = _strata(tasks, scores, higher_is_better, (base, reference, reference))
        if any(len(s) for s in strata):
            shifts[component] = _shift([s for s in strata if len(s)], weighting, 0.05, 0)
    out: dict[str, Any] = {}
    for name in candidates:
        rows = {}
        for k, (component, (tasks, weighting)) in enumerate(components.items()):
            strata = _strata(tasks, scores, higher_is_better, (base, reference, name))
            row = component_share(strata, weighting, n_boot=n_boot, seed=seed + 104729 * k)
            if row is not None:
                rows[component] = row
        read = {c: r for c, r in rows.items() if r["shift_significant"] and r["share"] is not None}
        out[name] = {
            "components": rows,
            "read": sorted(read),
            "meets": _meets(read, keep, recover, lambda r: r["share"]),
            "meets_at_lower_bound": _meets(read, keep, recover, lambda r: r["share_ci"][0]),
        }
    return {"shifts": shifts, "candidates": out}


def _meets(read: Mapping[str, dict[str, Any]], keep: float, recover: float, pick) -> bool | None:
    """Every read component at its bar (``keep`` for a gain, ``recover`` for a loss); None when no
    component can be read."""
    if not read:
        return None
    return all(
        (v := pick(r)) is not None and v >= (keep if r["direction"] == "gain" else recover)
        for r in read.values()
    )


__all__ = ["component_share", "recovery"]
