"""Human preference labeling for summarization RLHF: a small FastAPI + SQLite app, agreement, export.

Flow: ``load_labelled_sets`` -> ``LabelStore.import_labelled`` -> ``create_app`` (annotators vote) ->
``agreement_report`` / ``export_pairs``. The CLI is ``tether label`` (``tether.feedback.cli.app``).
"""

from tether.data.records import PreferencePair
from tether.feedback.agreement import (
    AgreementReport,
    agreement_report,
    cohen_kappa,
    krippendorff_alpha_nominal,
)
from tether.feedback.export import ExportSummary, export_pairs, majority_pairs, vote_pairs
from tether.feedback.records import (
    REASONS,
    SUMMARIZE_INSTRUCTION,
    TIE_REASON,
    Candidate,
    CandidateSet,
    ImportedVote,
    LabelledSet,
    Vote,
    load_candidate_sets,
    load_labelled_sets,
    summarization_prompt,
)
from tether.feedback.store import LabelStore, VoteRejected


def __getattr__(name: str):
    # The web app pulls in FastAPI/Starlette; training and labeling code that only needs the records
    # (the RLHF pipeline on a GPU node, say) should not pay for or depend on them.
    if name == "create_app":
        from tether.feedback.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REASONS",
    "SUMMARIZE_INSTRUCTION",
    "TIE_REASON",
    "AgreementReport",
    "Candidate",
    "CandidateSet",
    "ExportSummary",
    "ImportedVote",
    "LabelledSet",
    "LabelStore",
    "PreferencePair",
    "Vote",
    "VoteRejected",
    "agreement_report",
    "cohen_kappa",
    "create_app",
    "export_pairs",
    "krippendorff_alpha_nominal",
    "load_candidate_sets",
    "load_labelled_sets",
    "majority_pairs",
    "summarization_prompt",
    "vote_pairs",
]
