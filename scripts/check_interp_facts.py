"""Check factual prompts for `tether interp trace` on a model: greedy next token after each prompt.

    python3 scripts/check_interp_facts.py MODEL FACTS.jsonl > kept.jsonl

Prints, on stderr, per fact: OK/BAD, p(answer's first token), the argmax token and the subject's
tokens; writes the facts whose answer's first token is the argmax to stdout. The shipped set
(src/tether/assets/interp/facts.jsonl) was chosen this way on the default model (FACTS.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tether.config import EngineConfig
from tether.interp.refusal import load_merged
from tether.interp.trace import encode_fact, read_facts


def main(spec: str, path: str) -> None:
    engine = load_merged(spec, EngineConfig(device="cpu"), None)
    tok = engine.tokenizer
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    for fact, line in zip(read_facts(path), lines, strict=True):
        ids, subject, answer = encode_fact(tok, fact)
        with torch.no_grad():
            probs = torch.softmax(engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        top = int(probs.argmax())
        verdict = "OK " if top == answer else "BAD"
        print(
            f"{verdict} {fact.id:22s} p={float(probs[answer]):.3f} top={tok.decode([top])!r} "
            f"subject={[tok.decode([ids[i]]) for i in subject]}",
            file=sys.stderr,
        )
        if top == answer:
            print(line)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
