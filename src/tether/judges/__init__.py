"""Judges turn model text into labels: refusal, toxicity, and pass/fail of sandboxed code.

Each judge is validated against labelled data (``validate_refusal_judge``) so reports can print
how far to trust it.
"""

from tether.judges.refusal import (
    LLM_JUDGE_TEMPLATE,
    LLMRefusalJudge,
    RefusalJudge,
    RefusalLabel,
    RefusalVerdict,
    RuleRefusalJudge,
    TrainedRefusalJudge,
    default_refusal_judge,
    is_off_topic,
    judge_many,
)
from tether.judges.sandbox import (
    SandboxResult,
    SandboxStatus,
    check_humaneval,
    humaneval_program,
    run_untrusted,
)
from tether.judges.toxicity import ToxicityScorer, expected_max_toxicity, toxic_rate, toxicity_probability
from tether.judges.validation import (
    PYRIT_REFUSAL_SETS,
    JudgeValidation,
    RefusalExample,
    binary_metrics,
    load_pyrit_refusals,
    read_refusal_csv,
    split_examples,
    validate_refusal_judge,
)

__all__ = [
    "LLM_JUDGE_TEMPLATE",
    "PYRIT_REFUSAL_SETS",
    "JudgeValidation",
    "LLMRefusalJudge",
    "RefusalExample",
    "RefusalJudge",
    "RefusalLabel",
    "RefusalVerdict",
    "RuleRefusalJudge",
    "SandboxResult",
    "SandboxStatus",
    "ToxicityScorer",
    "TrainedRefusalJudge",
    "binary_metrics",
    "check_humaneval",
    "default_refusal_judge",
    "expected_max_toxicity",
    "humaneval_program",
    "is_off_topic",
    "judge_many",
    "load_pyrit_refusals",
    "read_refusal_csv",
    "run_untrusted",
    "split_examples",
    "toxic_rate",
    "toxicity_probability",
    "validate_refusal_judge",
]
