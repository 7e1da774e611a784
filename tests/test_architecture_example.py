"""docs/architecture.md's example pipeline runs as written (so the doc cannot rot)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from fakes import ScriptedEngine
from tether.engine import Prompt

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _example() -> dict:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Writing a new pipeline") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 15 <= len([line for line in code.splitlines() if line.strip()]) <= 40, "keep the example short"
    module = types.ModuleType("architecture_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(code, str(DOC), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def test_the_documented_pipeline_runs_and_resumes(tmp_path):
    example = _example()
    engine = ScriptedEngine(lambda prompt, k: f"an answer to {prompt.text}")
    prompts = [Prompt(id="p1", text="one two"), Prompt(id="p2", text="three")]
    summaries = example["run_answers"](engine, prompts, root=str(tmp_path))
    assert summaries == {"answer": {"answers": 2}, "length": {"mean_words": 4.5}}
    assert (tmp_path / "answers" / "answers.jsonl").is_file()
    calls = len(engine.calls)
    assert example["run_answers"](engine, prompts, root=str(tmp_path)) == summaries
    assert len(engine.calls) == calls  # both stages were complete: nothing ran again
