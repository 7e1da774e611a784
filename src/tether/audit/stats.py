"""Rates with Wilson intervals, other means with percentile-bootstrap intervals, paired deltas, and
per-task summaries;
paired p-values (exact McNemar / sign-flip), the minimum detectable effect, and Benjamini-Hochberg.

Unscored items (unparsed verdicts, crashed generations, empty answers) are counted but never enter a
denominator: a judge that cannot parse half the outputs must not halve the refusal rate.

Power, in one place (``mde``): a paired comparison of two models on n items has per-item differences
d_i = new_i - base_i. Under "no change" the sign-flip null gives the mean difference the variance
m2/n with m2 = mean(d_i**2) -- for right/wrong items m2 is the discordance, the share of items that
flipped. The minimum detectable effect at power 1 - beta and two-sided level alpha is then
(z_{1-alpha/2} + z_{1-beta}) * sqrt(m2 / n): a true change that large is detected 80% of the time
(alpha = 0.05, beta = 0.2: 2.80 * sqrt(m2 / n)). Two floors: a true change of delta moves at least
delta of the items, so m2 >= delta and delta >= z**2 / n (7.85 / n); and the exact test needs at
least k = 6 one-way flips (2 * 0.5**6 = 0.031 <= 0.05 < 2 * 0.5**5). With fewer than k paired items
a comparison is untestable and is never flagged.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as _scipy_stats

from tether.audit.schema import CategorySummary, TaskSummary
from tether.evals.types import ItemResult, MetricSpec

# Bootstrap index matrices are drawn in chunks of at most this many cells, so a 14k-item MMLU run
# with 1000 resamples stays at a few MB of memory instead of ~110 MB.
_MAX_CELLS = 2_000_000


class MeanCI(NamedTuple):
    """A sample mean and its percentile-bootstrap interval over ``n`` values."""

    value: float
    ci_low: float
    ci_high: float
    n: int


class DeltaCI(NamedTuple):
    """mean(new - base) over ``n`` paired items, its interval, and whether it excludes 0."""

    delta: float
    ci_low: float
    ci_high: float
    n: int
    significant: bool


def is_significant(ci_low: float, ci_high: float) -> bool:
    """A change is significant when its confidence interval excludes zero."""
    return ci_low > 0.0 or ci_high < 0.0


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(n_boot, dtype=np.float64)
    rows = max(1, _MAX_CELLS // n)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> MeanCI:
    """Sample mean with a (1 - alpha) percentile-bootstrap interval; the same seed gives the same interval.

    Raises ValueError on an empty sequence: callers decide what "no data" means (see summarize_task).
    """
    _check(n_boot, alpha)
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    mean = float(arr.mean())
    if np.all(arr == arr[0]):
        # Every resample is the same constant; skip the work and avoid float drift in the mean.
        return MeanCI(float(arr[0]), float(arr[0]), float(arr[0]), int(arr.size))
    low, high = np.quantile(_bootstrap_means(arr, n_boot, seed), [alpha / 2, 1 - alpha / 2])
    return MeanCI(mean, float(low), float(high), int(arr.size))


def rate_or_mean_ci(
    values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> MeanCI:
    """A model's score on a task: for right/wrong items (every value 0 or 1) the rate with its Wilson
    interval, else the mean with its percentile-bootstrap interval.

    A bootstrap of 12 items that all failed resamples nothing but failures and claims [0, 0], a
    certainty 12 items cannot give; Wilson says [0, 0.24] (``tether.judges.calibration``)."""
    from tether.judges.calibration import wilson_interval

    _check(n_boot, alpha)
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and np.all((arr == 0.0) | (arr == 1.0)):
        k, n = int(arr.sum()), int(arr.size)
        low, high = wilson_interval(k, n, z=float(_scipy_stats.norm.ppf(1 - alpha / 2)))  # type: ignore[misc]
        return MeanCI(k / n, low, high, n)
    return bootstrap_mean_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)


def _right_wrong(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.all((values == 0.0) | (values == 1.0)))


def newcombe_paired_interval(
    base: Sequence[float], new: Sequence[float], alpha: float = 0.05
) -> tuple[float, float]:
    """The (1 - alpha) interval of mean(new - base) for paired right/wrong items: Newcombe's hybrid
    score interval (Newcombe 1998, Stat Med 17:2635, method 10 with his continuity-corrected phi, as
    in Altman et al., "Statistics with Confidence", 2000).

    Each model's rate gets its Wilson interval; the two are combined "square and add", with the
    correlation of the pair (phi) taken off. A bootstrap of 40 items that all agree resamples nothing
    but zeros and claims [0, 0]; this says [-0.088, +0.088], what 40 items can tell."""
    from tether.judges.calibration import wilson_interval

    b_arr, n_arr = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if b_arr.shape != n_arr.shape or not (_right_wrong(b_arr) and _right_wrong(n_arr)):
        raise ValueError("newcombe_paired_interval needs two equally long arrays of 0/1 values")
    n = int(b_arr.size)
    both = int(np.sum((b_arr == 1) & (n_arr == 1)))
    gained = int(np.sum((b_arr == 0) & (n_arr == 1)))
    lost = int(np.sum((b_arr == 1) & (n_arr == 0)))
    neither = n - both - gained - lost
    z = float(_scipy_stats.norm.ppf(1 - alpha / 2))
    p_new, p_base = (both + gained) / n, (both + lost) / n
    l_new, u_new = wilson_interval(both + gained, n, z=z)  # type: ignore[misc]
    l_base, u_base = wilson_interval(both + lost, n, z=z)  # type: ignore[misc]
    margins = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - gained * lost
        cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
        phi = cross / math.sqrt(margins)
    delta = p_new - p_base
    below = (p_new - l_new) ** 2 - 2 * phi * (p_new - l_new) * (u_base - p_base) + (u_base - p_base) ** 2
    above = (p_base - l_base) ** 2 - 2 * phi * (p_base - l_base) * (u_new - p_new) + (u_new - p_new) ** 2
    return max(-1.0, delta - math.sqrt(max(below, 0.0))), min(1.0, delta + math.sqrt(max(above, 0.0)))


def paired_delta(
    base: Mapping[str, float],
    new: Mapping[str, float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> DeltaCI:
    """mean(new[i] - base[i]) over item ids present in both, with its interval: Newcombe's paired
    interval when every score is right/wrong (0 or 1), else a bootstrap resampling items (not
    models) jointly.

    Pairing removes the between-item variance that dominates unpaired comparisons: two checkpoints that
    differ on three items out of a thousand get a tight interval around 0.003, not one as wide as each
    model's own interval. Raises ValueError when no item id is shared.
    """
    _check(n_boot, alpha)
    shared = sorted(base.keys() & new.keys())  # sorted: resampling must not depend on dict order
    if not shared:
        raise ValueError("paired_delta: the two result sets share no item id")
    b_arr = np.array([base[i] for i in shared], dtype=np.float64)
    n_arr = np.array([new[i] for i in shared], dtype=np.float64)
    low, high = paired_interval(b_arr, n_arr, n_boot=n_boot, alpha=alpha, seed=seed)
    return DeltaCI(float((n_arr - b_arr).mean()), low, high, len(shared), is_significant(low, high))


def paired_interval(
    base: np.ndarray, new: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """The interval of mean(new - base) over aligned arrays: Newcombe's when every score is right/wrong,
    else the percentile bootstrap of the differences."""
    if _right_wrong(base) and _right_wrong(new):
        return newcombe_paired_interval(base, new, alpha)
    ci = bootstrap_mean_ci(new - base, n_boot=n_boot, alpha=alpha, seed=seed)
    return ci.ci_low, ci.ci_high


# --- paired tests, power and multiple comparisons ------------------------------------------------


class PairedTest(NamedTuple):
    """A paired comparison: the interval of mean(new - base) (``paired_delta``), the exact McNemar /
    sign-flip p-value, the discordance m2 = mean(d**2), and the minimum detectable effect at the
    observed discordance (None when ``n`` is below ``min_testable_n``: never significant)."""

    delta: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float
    discordance: float
    mde: float | None

    @property
    def testable(self) -> bool:
        return self.mde is not None


def min_testable_n(alpha: float = 0.05) -> int:
    """The fewest paired items on which a two-sided exact sign-flip test can reach ``alpha``: every
    item flips the same way, p = 2 * 0.5**n. 6 at alpha = 0.05."""
    return math.ceil(math.log2(2.0 / alpha) - 1e-12)


def mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Minimum detectable paired effect: z * sqrt(discordance / n) with z = z_{1-alpha/2} + z_{power},
    but at least max(z**2, k) / n, k = ``min_testable_n(alpha)``; None when ``n < k``.

    ``discordance`` is mean(d**2) of the paired differences (right/wrong items: the share that
    flipped). The floors: a change of delta flips at least delta of the items (so delta >= z**2 / n),
    and the exact test cannot see fewer than k one-way flips."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    _check(1, alpha)
    k = min_testable_n(alpha)
    if n < k:
        return None
    z = float(_scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power))
    return max(z * math.sqrt(max(discordance, 0.0) / n), max(z * z, k) / n)


def planned_discordance(variance: float, correlation: float = 0.5) -> float:
    """The discordance to plan with before a checkpoint exists: two models with the baseline's item
    variance (p(1-p) for right/wrong items) whose item scores correlate ``correlation`` differ by
    mean(d**2) = 2 * variance * (1 - correlation); at the assumed 0.5 that is the variance itself."""
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    return 2.0 * variance * (1.0 - correlation)


def sign_flip_pvalue(diffs: Sequence[float], n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric about 0".

    Right/wrong items (differences in {-1, 0, 1}) get the exact McNemar test: with b items lost
    and c gained, p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2) -- the exact
    sign-flip distribution. Other scores: exact over all sign patterns of up to 16 non-zero
    differences, else ``n_perm`` random ones ((1 + hits) / (1 + n_perm), never 0)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0.0]
    k = int(d.size)
    if k == 0:
        return 1.0
    if np.all(np.isclose(np.abs(d), np.abs(d[0]))):
        lost, gained = int((d < 0).sum()), int((d > 0).sum())
        return float(min(1.0, 2.0 * _scipy_stats.binom.cdf(min(lost, gained), k, 0.5)))
    observed = abs(d.sum()) - 1e-12
    if k <= 16:
        signs = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1) * 2 - 1
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng = np.random.default_rng(seed)
    hits = 0
    rows = max(1, _MAX_CELLS // k)
    for start in range(0, n_perm, rows):
        signs = rng.integers(0, 2, size=(min(rows, n_perm - start), k)) * 2 - 1
        hits += int((np.abs(signs @ d) >= observed).sum())
    return (1 + hits) / (1 + n_perm)


def paired_test(
    base: Mapping[str, float],
    new: Mapping[str, float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    power: float = 0.8,
) -> PairedTest:
    """``paired_delta`` plus the paired p-value, discordance and minimum detectable effect."""
    d = paired_delta(base, new, n_boot=n_boot, alpha=alpha, seed=seed)
    shared = sorted(base.keys() & new.keys())
    diffs = np.array([new[i] - base[i] for i in shared], dtype=np.float64)
    m2 = float(np.mean(diffs**2))
    return PairedTest(
        delta=d.delta,
        ci_low=d.ci_low,
        ci_high=d.ci_high,
        n=d.n,
        p_value=sign_flip_pvalue(diffs, seed=seed),
        discordance=m2,
        mde=mde(d.n, m2, alpha=alpha, power=power),
    )


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order: reject where q <= alpha
    to keep the expected share of false discoveries among the flagged at alpha.

    q_(i) = min over j >= i of min(1, m * p_(j) / j), with p_(1) <= ... <= p_(m)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    q = np.empty(m, dtype=np.float64)
    q[order] = q_sorted
    return q.tolist()


def _summarize_category(scores: list[float], n_boot: int, alpha: float, seed: int, n_unscored: int):
    if not scores:
        return CategorySummary(value=None, ci_low=None, ci_high=None, n=0, n_unscored=n_unscored)
    ci = rate_or_mean_ci(scores, n_boot=n_boot, alpha=alpha, seed=seed)
    return CategorySummary(
        value=ci.value, ci_low=ci.ci_low, ci_high=ci.ci_high, n=ci.n, n_unscored=n_unscored
    )


def summarize_task(
    items: Sequence[ItemResult],
    metric: MetricSpec,
    incomplete_threshold: float = 0.1,
    *,
    task: str | None = None,
    model: str | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    extra_metrics: Mapping[str, float] | None = None,
    degenerate_threshold: float = 0.1,
) -> TaskSummary:
    """Headline metric of one task for one model, with per-category intervals.

    The task is incomplete when the unscored fraction exceeds ``incomplete_threshold`` or nothing was
    scored; with nothing scored ``value`` is None. ``task``/``model`` name the summary when ``items``
    is empty (a task that produced no results at all must still appear, as incomplete). It is
    ``too_degenerate`` when more than ``degenerate_threshold`` of its items are degenerate (status
    "degenerate", or ``extra["degenerate"]`` set by the sweep on a scored item).
    """
    if not 0.0 <= incomplete_threshold <= 1.0:
        raise ValueError(f"incomplete_threshold must be in [0, 1], got {incomplete_threshold}")
    if not 0.0 <= degenerate_threshold <= 1.0:
        raise ValueError(f"degenerate_threshold must be in [0, 1], got {degenerate_threshold}")
    tasks = {it.task for it in items} | ({task} if task else set())
    models = {it.model for it in items} | ({model} if model else set())
    if len(tasks) != 1 or len(models) != 1:
        raise ValueError(
            f"summarize_task needs the items of exactly one task and one model, got tasks={sorted(tasks)} "
            f"models={sorted(models)}"
        )
    status_counts = Counter(it.status for it in items)
    scored = [it for it in items if it.status == "scored" and it.score is not None]
    # A "scored" item without a score is a scorer bug; count it as unparsed rather than inventing a 0.
    n_unparsed = status_counts["unparsed"] + (status_counts["scored"] - len(scored))

    by_cat_scores: dict[str, list[float]] = defaultdict(list)
    by_cat_unscored: Counter[str] = Counter()
    for it in items:
        if it.status == "scored" and it.score is not None:
            by_cat_scores[it.category].append(float(it.score))
        else:
            by_cat_unscored[it.category] += 1
    per_category = {
        cat: _summarize_category(by_cat_scores.get(cat, []), n_boot, alpha, seed, by_cat_unscored[cat])
        for cat in sorted(by_cat_scores.keys() | by_cat_unscored.keys())
    }

    n_total = len(items)
    n_scored = len(scored)
    if scored:
        ci = rate_or_mean_ci([float(it.score) for it in scored], n_boot=n_boot, alpha=alpha, seed=seed)
        value, low, high = ci.value, ci.ci_low, ci.ci_high
    else:
        value = low = high = None
    complete = n_scored > 0 and (n_total - n_scored) / n_total <= incomplete_threshold
    n_degenerate = sum(it.status == "degenerate" or bool(it.extra.get("degenerate")) for it in items)
    return TaskSummary(
        task=next(iter(tasks)),
        model=next(iter(models)),
        metric=metric,
        value=value,
        ci_low=low,
        ci_high=high,
        n_scored=n_scored,
        n_unparsed=n_unparsed,
        n_error=status_counts["error"],
        n_empty=status_counts["empty"],
        n_total=n_total,
        complete=complete,
        per_category=per_category,
        extra_metrics=dict(extra_metrics or {}),
        n_degenerate=n_degenerate,
        too_degenerate=bool(n_total) and n_degenerate / n_total > degenerate_threshold,
    )
