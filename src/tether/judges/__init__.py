"""Judges turn model text into labels: refusal, harmful content, degenerate output, toxicity, and
pass/fail of sandboxed code.

Refusal and harmful-content judges come as rules, a trained head and an LLM yes/no question; every one
asks ``detect_degenerate`` first, so broken text is ``degenerate``, never a refusal or a compliance.
Each is validated on labelled data it was not built from (``calibration``: the team's labelled
outputs in ``data/judges/`` and PyRIT's human-scored sets), and reports print those figures.
"""

from tether.judges.calibration import (
    EVAL_SETS,
    Example,
    Figures,
    cached_validate,
    format_row,
    validate,
    wilson_interval,
)
from tether.judges.degenerate import DEGENERATE_KINDS, DegenerateFinding, DegenerateKind, detect_degenerate
from tether.judges.harmful import (
    HarmJudge,
    HarmVerdict,
    LLMHarmfulJudge,
    RuleHarmfulJudge,
    default_harmful_judge,
    judge_harm_many,
)
from tether.judges.labelled import LabelledItem, composition, read_labelled, split_of
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
from tether.judges.trained import TrainedJudge
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
    "DEGENERATE_KINDS",
    "EVAL_SETS",
    "LLM_JUDGE_TEMPLATE",
    "DegenerateFinding",
    "DegenerateKind",
    "Example",
    "Figures",
    "HarmJudge",
    "HarmVerdict",
    "LLMHarmfulJudge",
    "LabelledItem",
    "RuleHarmfulJudge",
    "cached_validate",
    "composition",
    "default_harmful_judge",
    "detect_degenerate",
    "format_row",
    "judge_harm_many",
    "read_labelled",
    "split_of",
    "validate",
    "wilson_interval",
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
    "TrainedJudge",
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
