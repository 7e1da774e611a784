"""K candidate summaries per document, sampled at spread temperatures, written resumably.

The output is the canonical ``CandidateSet`` JSONL that ``tether label import`` reads, so the same
file feeds the human labeling app and the AI labeler. Candidate ``k`` is sampled at the k-th of K
temperatures spaced evenly over ``[t_min, t_max]``: low temperatures give safe, near-greedy
summaries, high ones riskier ones, so pairs differ enough to be worth a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tether.data.jsonl import JsonlAppender, read_completed
from tether.engine.types import Completion, Prompt, SamplingParams
from tether.errors import ConfigError
from tether.feedback.records import MAX_CANDIDATES, MIN_CANDIDATES, Candidate, CandidateSet
from tether.progress import progress_bar
from tether.rlhf.documents import SummaryDocument


class Generator(Protocol):
    """What candidate generation needs of an engine (``tether.engine.Engine`` fits)."""

    name: str

    def generate(
        self, prompts: list[Prompt], params: SamplingParams, *, stage: str = "", progress: bool = True
    ) -> list[Completion]: ...


def temperatures(k: int, t_min: float, t_max: float) -> list[float]:
    """``k`` temperatures evenly spaced from ``t_min`` to ``t_max`` (both included), rounded to 3 places."""
    if not MIN_CANDIDATES <= k <= MAX_CANDIDATES:
        raise ConfigError(
            f"k={k} candidates per document; the labeling app shows {MIN_CANDIDATES}-{MAX_CANDIDATES}",
            hint=f"set candidates.k between {MIN_CANDIDATES} and {MAX_CANDIDATES}",
        )
    if not 0 < t_min <= t_max:
        raise ConfigError(f"temperatures must satisfy 0 < t_min <= t_max, got {t_min}, {t_max}")
    return [round(t_min + (t_max - t_min) * i / (k - 1), 3) for i in range(k)]


def summary_prompt(doc: SummaryDocument) -> Prompt:
    """The chat prompt for ``doc``; ``id`` is the document id so completions map back."""
    return Prompt(id=doc.id, text=doc.prompt)


def generate_candidates(
    engine: Generator,
    docs: Sequence[SummaryDocument],
    out: str | Path,
    *,
    k: int = 4,
    t_min: float = 0.3,
    t_max: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    chunk_size: int = 16,
) -> list[CandidateSet]:
    """Write one ``CandidateSet`` per document to ``out`` and return all sets (old and new) in ``docs`` order.

    Resumable: documents already in ``out`` are skipped. Documents go in fixed chunks of the full
    list, and each chunk's seed depends only on its position, so an interrupted run that resumes
    samples what an uninterrupted one would have (up to batch composition of partial chunks).
    """
    temps = temperatures(k, t_min, t_max)
    out = Path(out)
    done = {s.doc_id: s for s in read_completed(out, CandidateSet)}
    todo = [d for d in docs if d.id not in done]
    with JsonlAppender(out) as appender, progress_bar("candidates", total=len(todo)) as bar:
        for chunk_index, start in enumerate(range(0, len(docs), chunk_size)):
            chunk = [d for d in docs[start : start + chunk_size] if d.id not in done]
            if not chunk:
                continue
            prompts = [summary_prompt(d) for d in chunk]
            per_temp = []
            for j, t in enumerate(temps):
                params = SamplingParams(
                    max_new_tokens=max_new_tokens,
                    temperature=t,
                    top_p=1.0,
                    seed=seed * 1_000 + chunk_index * len(temps) + j,
                )
                per_temp.append(engine.generate(prompts, params, stage="rlhf.candidates", progress=False))
            for i, doc in enumerate(chunk):
                record = CandidateSet(
                    doc_id=doc.id,
                    document=doc.text,
                    candidates=[
                        Candidate(
                            id=f"s{j}",
                            text=per_temp[j][i].text.strip(),
                            temperature=t,
                            completion_tokens=per_temp[j][i].completion_tokens,
                            finish_reason=per_temp[j][i].finish_reason,
                        )
                        for j, t in enumerate(temps)
                    ],
                    model=engine.name,
                    source=doc.source,
                    # The key fact travels with the set so the AI labeler can check coverage of it.
                    **({"question": doc.question} if doc.question else {}),
                )
                appender.write(record)
                done[doc.id] = record
                bar.advance()
    return [done[d.id] for d in docs]
