"""Constitutional AI (Bai et al. 2022): a constitution of principles, the critique → revision loop,
SFT on the revisions, AI-feedback preference labels and DPO, each round audited.

Entry points: ``run_cai(config, run)`` (the whole job) and ``tether cai run CONFIG`` (``tether.cai.cli``).
"""

from tether.cai.constitution import Constitution, Principle, PrincipleExample, load_constitution
from tether.cai.loop import LoopConfig, LoopStats, degenerate_reason, run_loop
from tether.cai.pipeline import CAIConfig, CAIContext, cai_stages, load_cai_config, run_cai
from tether.cai.prompts import CAIPrompt, PromptSplit, load_benign, load_harmful, make_split, split_side
from tether.cai.records import Answer, Critique, Final, FinalReason, LabeledPair, Revision
from tether.cai.rlaif import RLAIFConfig, debiased_preference, label_pairs, sample_answer_pairs

__all__ = [
    "Answer",
    "CAIConfig",
    "CAIContext",
    "CAIPrompt",
    "Constitution",
    "Critique",
    "Final",
    "FinalReason",
    "LabeledPair",
    "LoopConfig",
    "LoopStats",
    "Principle",
    "PrincipleExample",
    "PromptSplit",
    "RLAIFConfig",
    "Revision",
    "cai_stages",
    "debiased_preference",
    "degenerate_reason",
    "label_pairs",
    "load_benign",
    "load_cai_config",
    "load_constitution",
    "load_harmful",
    "make_split",
    "run_cai",
    "run_loop",
    "sample_answer_pairs",
    "split_side",
]
