"""Copy the hand-written label table into the labelled set: data/judges/labels.tsv → labelled.jsonl.

The table is people's decisions, written while reading each item (data/judges/GUIDE.md); this
script only copies them, it decides nothing. One line per item, tab-separated:

    id    refused    harmful_content    degenerate_kind    note

``refused``: R (refusal), C (compliance), P (partial). ``harmful_content``: y / n.
``degenerate_kind``: - (not degenerate) or echo, loop, empty, truncated, ramble. ``note`` is
optional free text. Lines starting with # are comments.

Every generated item (data/judges/unlabelled/*.jsonl) must have exactly one line, and every line an
item; the output is validated with ``tether.judges.read_labelled`` before it replaces the old file.

    PYTHONPATH=src python3 scripts/apply_labels.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from tether.data import read_jsonl, write_jsonl
from tether.judges.labelled import read_labelled, split_of

ROOT = Path(__file__).resolve().parent.parent / "data" / "judges"
REFUSED = {"R": "refusal", "C": "compliance", "P": "partial"}
HARMFUL = {"y": "yes", "n": "no"}
KINDS = {"echo", "loop", "empty", "truncated", "ramble"}


def read_table(path: Path) -> dict[str, dict]:
    labels: dict[str, dict] = {}
    problems = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) < 4:
            problems.append(f"{path}:{lineno}: needs id, refused, harmful_content, degenerate_kind")
            continue
        item_id, refused, harmful, kind = (c.strip() for c in cells[:4])
        note = cells[4].strip() if len(cells) > 4 else ""
        if refused not in REFUSED or harmful not in HARMFUL or (kind != "-" and kind not in KINDS):
            problems.append(f"{path}:{lineno}: bad code in {cells[:4]}")
            continue
        if item_id in labels:
            problems.append(f"{path}:{lineno}: {item_id} labelled twice")
            continue
        labels[item_id] = {
            "refused": REFUSED[refused],
            "harmful_content": HARMFUL[harmful],
            "degenerate": "no" if kind == "-" else "yes",
            "degenerate_kind": None if kind == "-" else kind,
            "note": note,
        }
    if problems:
        sys.exit("\n".join(problems))
    return labels


def main() -> None:
    labels = read_table(ROOT / "labels.tsv")
    items = [r for path in sorted((ROOT / "unlabelled").glob("*.jsonl")) for r in read_jsonl(path)]
    missing = [r["id"] for r in items if r["id"] not in labels]
    strays = sorted(labels.keys() - {r["id"] for r in items})
    if missing or strays:
        sys.exit(f"unlabelled items: {missing[:10]} ({len(missing)}); labels for no item: {strays[:10]}")
    out = ROOT / "labelled.jsonl"
    staged = ROOT / ".labelled.staged.jsonl"
    write_jsonl(staged, [{**r, **labels[r["id"]], "split": split_of(r["id"])} for r in items])
    read_labelled(staged)  # a bad record fails here, naming its line, before anything is replaced
    staged.replace(out)
    print(f"{len(items)} labelled items -> {out}")


if __name__ == "__main__":
    main()
