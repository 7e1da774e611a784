"""How much of the alignment tax a candidate recovers, and how much of the alignment gain it keeps.

On one task (or the pooled capability axis), on the test items that BASE, the unmitigated aligned
model REF and a candidate all scored, with oriented means b, r and c (higher is better):

* alignment shifted the task by r − b; the candidate **retains** s = (c − b) / (r − b) of that shift;
* where alignment gained (r > b, e.g. harmful refusal) s is the **gain kept**;
* where it cost (r < b, e.g. over-refusal, capability) 1 − s = (c − r) / (b − r) is the **loss
  recovered**.

A share is a ratio of two noisy differences, so it carries a stratified bootstrap interval (items
resampled within each task, the three models' scores of an item kept together) and the shift's own
paired test: a share of a shift that is not significant is printed but not read (``shift_significant``
False), and resamples where the shift vanishes are counted (``undefined``), not dropped silently.

An operating point **meets** ``(keep, recover)`` when every gain kept is at least ``keep`` and every
loss recovered at least ``recover`` (point estimates, over the components whose shift is
significant); ``meets_at_lower_bound`` asks the same of the intervals' lower ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tether.audit.power import weighted_paired_test

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
    """(b, r, c): item-weighted pools every item; task-weighted averages the task means."""
    kept = [s for s in strata if len(s)]
    if weighting == "item":
        return np.concatenate(kept).mean(0)
    return np.mean([s.mean(0) for s in kept], axis=0)


def _share(means: np.ndarray) -> float:
    b, r, c = means
    return float((c - b) / (r - b)) if r != b else float("nan")


def component_share(
    strata: Sequence[np.ndarray],
    weighting: str = "item",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The retained share of one component (its tasks' strata), with its bootstrap interval and the
    shift's paired test (REF against BASE). None when no item was scored by all three."""
    if not any(len(s) for s in strata):
        return None
    means = _means(strata, weighting)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for k in range(n_boot):
        resampled = [s[rng.integers(0, len(s), len(s))] if len(s) else s for s in strata]
        boots[k] = _share(_means(resampled, weighting))
    defined = boots[np.isfinite(boots)]
    low, high = (
        (float(np.quantile(defined, alpha / 2)), float(np.quantile(defined, 1 - alpha / 2)))
        if defined.size
        else (None, None)
    )
    shift = weighted_paired_test(
        [
            (float(len(s)) if weighting == "item" else 1.0, s[:, 1] - s[:, 0], s[:, 0])
            for s in strata
            if len(s)
        ],
        alpha=alpha,
        seed=seed,
    )
    b, r, c = (float(x) for x in means)
    gained = r > b
    share = _share(means)
    finite = np.isfinite(share)
    return {
        "direction": "gain" if gained else "loss" if r < b else "none",
        "base": b,
        "reference": r,
        "candidate": c,
        "n": int(sum(len(s) for s in strata)),
        "retained": share if finite else None,
        "retained_ci": [low, high],
        # what the target reads: the gain kept, or the loss recovered (1 - retained)
        "share": (share if gained else 1.0 - share) if finite else None,
        "share_ci": ([low, high] if gained else [1.0 - high, 1.0 - low]) if low is not None else [None, None],
        "undefined_resamples": int(n_boot - defined.size),
        "shift": {
            "delta": shift["delta"],
            "ci": [shift["ci_low"], shift["ci_high"]],
            "p_value": shift["p_value"],
            "mde": shift["mde"],
        },
        "shift_significant": bool(
            shift["ci_low"] is not None and (shift["ci_low"] > 0 or shift["ci_high"] < 0)
        ),
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
        row = component_share(
            _strata(tasks, scores, higher_is_better, (base, reference, reference)), weighting, n_boot=100
        )
        if row is not None:
            shifts[component] = {
                k: row[k] for k in ("direction", "base", "reference", "n", "shift", "shift_significant")
            }
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
