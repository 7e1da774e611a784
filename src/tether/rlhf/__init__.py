"""RLHF for summarization: documents -> candidates -> AI or human labels -> reward model -> PPO / DPO -> comparison.

Read in this order: ``documents`` (what is summarized, the fixed split), ``candidates`` (K samples
per document), ``labeler`` (the AI labeler and its proxies), ``pipeline`` (the stages in one run
directory), ``compare`` (base vs PPO vs DPO). The reward model and the PPO loop live in
``tether.train.reward`` and ``tether.train.ppo.trainer``; the CLI is ``tether rlhf``.

Names are imported lazily so that mounting the CLI does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "SummaryDocument": "documents",
    "load_documents": "documents",
    "select_split": "documents",
    "split_of": "documents",
    "generate_candidates": "candidates",
    "temperatures": "candidates",
    "AILabeler": "labeler",
    "HumanAgreement": "labeler",
    "LLMJudge": "labeler",
    "LabelerConfig": "labeler",
    "ProxyConfig": "labeler",
    "SummaryScores": "labeler",
    "agreement_with_humans": "labeler",
    "proxy_scores": "labeler",
    "CompareReport": "compare",
    "compare_models": "compare",
    "comparison_table": "compare",
    "RLHFConfig": "pipeline",
    "RLHFContext": "pipeline",
    "rlhf_stages": "pipeline",
    "run_pipeline": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"tether.rlhf.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tether.rlhf' has no attribute {name!r}")
