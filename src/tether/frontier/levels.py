"""Per-block interpolation against a single α at fixed safety levels: Lin et al. (2023) found that
one α per block of layers ("heterogeneous model averaging") traces a better safety–capability curve
than one α for the whole model. Issue #18 asks whether that holds below 3B.

The comparison is made so that the test side cannot flatter either family:

1. ``safety_levels``: thresholds spread over the validation-side safety gain from BASE to ALIGNED.
2. ``pick_at_levels``: at each threshold, each family's candidate with the highest *validation*
   capability among those whose validation safety reaches it.
3. The picks are audited on the test side; ``level_verdict`` reads the paired differences
   (per-block minus single α) on both axes there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Point = tuple[float, float]  # (safety, capability), both higher-is-better


def safety_levels(base: float, aligned: float, count: int) -> list[tuple[float, float]]:
    """``count`` (fraction of the gain, threshold) pairs at the midpoints of equal slices of the
    BASE → ALIGNED safety gain: 0.1, 0.3, 0.5, 0.7, 0.9 of it for five."""
    fractions = [(k + 0.5) / count for k in range(count)]
    return [(f, base + f * (aligned - base)) for f in fractions]


def best_reaching(points: Mapping[str, Point], names: Sequence[str], threshold: float) -> str | None:
    """Of ``names``, the one with the highest capability whose safety is at least ``threshold``
    (ties: the safer, then the first listed); None when none reaches it."""
    reaching = [n for n in names if n in points and points[n][0] >= threshold]
    if not reaching:
        return None
    return max(reaching, key=lambda n: (points[n][1], points[n][0], -names.index(n)))


def pick_at_levels(
    points: Mapping[str, Point],
    single: Sequence[str],
    per_block: Sequence[str],
    *,
    base_safety: float,
    aligned_safety: float,
    count: int,
) -> list[dict[str, Any]]:
    """Per level: its fraction and threshold, and each family's validation pick from ``points``."""
    return [
        {
            "fraction": round(fraction, 6),
            "threshold": threshold,
            "single": best_reaching(points, single, threshold),
            "per_block": best_reaching(points, per_block, threshold),
        }
        for fraction, threshold in safety_levels(base_safety, aligned_safety, count)
    ]


def level_verdict(safety: Mapping[str, Any] | None, capability: Mapping[str, Any] | None) -> dict[str, Any]:
    """Which family wins one level, from the paired test-side differences per-block − single α on
    each axis ({delta, significant}). ``winner`` reads point estimates: a family wins when it is at
    least as good on both axes and better on one. ``significant`` says whether some difference
    survived the paired test's multiple-comparison control with none significant the other way."""
    axes = [a for a in (safety, capability) if a is not None and a.get("delta") is not None]
    if len(axes) < 2:
        return {"winner": None, "significant": False, "reading": "no paired difference on both axes"}
    ds = [float(a["delta"]) for a in axes]
    if all(d >= 0 for d in ds) and any(d > 0 for d in ds):
        winner = "per-block"
    elif all(d <= 0 for d in ds) and any(d < 0 for d in ds):
        winner = "single"
    else:
        winner = "tie" if all(d == 0 for d in ds) else "trade-off"
    up = any(a.get("significant") and a["delta"] > 0 for a in axes)
    down = any(a.get("significant") and a["delta"] < 0 for a in axes)
    significant = (winner == "per-block" and up and not down) or (winner == "single" and down and not up)
    return {"winner": winner, "significant": significant}


def summarise(levels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over the levels and the answer to Lin et al.'s question, stated with its evidence:
    replicated when per-block wins significantly at three fifths of the levels or more."""
    n = len(levels)
    wins = sum(1 for lv in levels if lv.get("winner") == "per-block")
    wins_sig = sum(1 for lv in levels if lv.get("winner") == "per-block" and lv.get("significant"))
    losses = sum(1 for lv in levels if lv.get("winner") == "single")
    losses_sig = sum(1 for lv in levels if lv.get("winner") == "single" and lv.get("significant"))
    # One candidate can be a family's best at several levels: count the distinct comparisons too.
    distinct = len({(lv.get("single"), lv.get("per_block")) for lv in levels if lv.get("winner") is not None})
    # The smallest difference the paired tests could have seen, per axis (the largest over levels).
    mde: dict[str, float] = {}
    for lv in levels:
        for axis, d in (lv.get("per_block_minus_single") or {}).items():
            if d.get("mde") is not None:
                mde[axis] = max(mde.get(axis, 0.0), float(d["mde"]))
    need = math.ceil(0.6 * n) if n else 0
    if n and wins_sig >= need:
        answer = "replicated"
    elif n and wins >= need:
        answer = "not established (the point estimates favour per-block, the paired tests do not)"
    else:
        answer = "not replicated"
    return {
        "n_levels": n,
        "per_block_wins": wins,
        "per_block_wins_significant": wins_sig,
        "single_wins": losses,
        "single_wins_significant": losses_sig,
        "needed": need,
        "distinct_comparisons": distinct,
        "mde": mde,
        "answer": answer,
        "reading": f"per-block beats a single α at {wins} of {n} safety levels ({wins_sig} significantly); "
        f"a single α beats per-block at {losses} ({losses_sig} significantly); {distinct} distinct pairs of "
        f"candidates. Lin et al.'s finding: {answer}"
        + (
            " (the paired tests could see differences of "
            + ", ".join(f"{v:.2f} on {k}" for k, v in sorted(mde.items()))
            + " or more)."
            if mde
            else "."
        ),
    }


__all__ = ["best_reaching", "level_verdict", "pick_at_levels", "safety_levels", "summarise"]
