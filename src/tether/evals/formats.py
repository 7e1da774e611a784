"""Multiple-choice prompt formats, character for character as lm-evaluation-harness builds them.

Each ``*_request`` turns one record into a ScoreRequest: the context lm-eval feeds the model at
0 shots without a chat template, and one continuation per choice with lm-eval's target
delimiter (a single space) in front. Scored this way, our accuracies are comparable to
published lm-eval numbers and to lm-eval run on the same items.

Checked against lm-eval's task files at commit 4e7e0d4 (``lm_eval/tasks/mmlu/default``,
``hellaswag``, ``arc``, ``bbq``) and its ``Task.fewshot_context`` / ``construct_requests``; the
commonsense and science sets against ``piqa/piqa.yaml``, ``sciq/sciq.yaml``,
``openbookqa/openbookqa.yaml``, ``super_glue/boolq/default.yaml``, ``siqa/siqa.yaml`` and
``winogrande/default.yaml`` with its ``preprocess_winogrande.py``.

acc vs acc_norm: lm-eval's ``acc`` takes the choice with the highest summed log-probability;
``acc_norm`` divides each by the length in characters of the choice text *without* the
delimiter. Use :func:`predict` with ``normalized=True`` for the latter (``ScoreResult.
best_normalized`` divides by the continuation's length, space included, which can differ).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tether.data.records import BBQItem, MCItem
from tether.engine.types import ScoreRequest, ScoreResult
from tether.errors import DataError

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter, put before every choice

_MMLU_LETTERS = ("A", "B", "C", "D")


def mmlu_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``mmlu_<subject>`` (group ``mmlu``), 0-shot; headline metric ``acc``.

    Context: the subject description (underscores read as spaces), then
    ``question.strip()``, the four lettered choices and ``Answer:``; continuations " A" … " D".
    """
    if len(item.choices) != 4:
        raise DataError(f"MMLU items have 4 choices, this one has {len(item.choices)}", where=item.id)
    subject = item.category.replace("_", " ")
    description = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    body = item.question.strip()
    for letter, choice in zip(_MMLU_LETTERS, item.choices, strict=True):
        body += f"\n{letter}. {choice}"
    body += "\nAnswer:"
    return ScoreRequest(
        id=item.id,
        context=description + body,
        continuations=[TARGET_DELIMITER + letter for letter in _MMLU_LETTERS],
    )


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py:preprocess``: strip, turn WikiHow's " [title]" into ". ",
    drop any other ``[...]`` tag, then collapse double spaces once."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``hellaswag``, 0-shot; headline metric ``acc_norm``.

    Context: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``;
    continuations: " " + ``preprocess(ending)``. Needs the raw fields in ``item.extra``.
    """
    try:
        label, ctx_a, ctx_b = (item.extra[k] for k in ("activity_label", "ctx_a", "ctx_b"))
    except KeyError as exc:
        raise DataError(f"HellaSwag item lacks extra field {exc}", where=item.id) from None
    query = hellaswag_preprocess(label + ": " + ctx_a + " " + ctx_b.capitalize())
    return ScoreRequest(
        id=item.id,
        context=query,
        continuations=[TARGET_DELIMITER + hellaswag_preprocess(e) for e in item.choices],
    )


def arc_request(item: MCItem) -> ScoreRequest:
    """lm-eval tasks ``arc_challenge`` (headline ``acc_norm``) and ``arc_easy`` (lm-eval reports
    acc and acc_norm; we headline ``acc``), 0-shot.

    Context ``Question: {question}\\nAnswer:``; continuations " " + choice text."""
    return ScoreRequest(
        id=item.id,
        context=f"Question: {item.question}\nAnswer:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def bbq_request(item: BBQItem) -> ScoreRequest:
    """lm-eval task ``bbq`` (multiple_choice), 0-shot; headline metric ``acc``, with BBQ's bias
    scores computed from the predictions (``biased_index``, ``unknown_index``).

    Context ``{context}\\n\\nQ: {question}\\nA:``; continuations " " + each of the 3 answers."""
    return ScoreRequest(
        id=item.id,
        context=f"{item.context}\n\nQ: {item.question}\nA:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def piqa_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``piqa``, 0-shot; lm-eval reports acc and acc_norm, we headline ``acc_norm``.

    Context ``Question: {goal}\nAnswer:``; continuations " " + sol1, " " + sol2."""
    return ScoreRequest(
        id=item.id,
        context=f"Question: {item.question}\nAnswer:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def sciq_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``sciq``, 0-shot; acc and acc_norm, we headline ``acc_norm``.

    Context ``{support.lstrip()}\nQuestion: {question}\nAnswer:`` (an empty support leaves the
    context starting with the newline, as in lm-eval); continuations " " + each of distractor1-3
    and the correct answer."""
    support = item.extra.get("support", "")
    return ScoreRequest(
        id=item.id,
        context=f"{support.lstrip()}\nQuestion: {item.question}\nAnswer:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def openbookqa_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``openbookqa``, 0-shot; acc and acc_norm, we headline ``acc_norm``.

    Context: the bare question stem; continuations " " + each choice text."""
    return ScoreRequest(
        id=item.id, context=item.question, continuations=[TARGET_DELIMITER + c for c in item.choices]
    )


def boolq_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``boolq`` (SuperGLUE), 0-shot; headline ``acc``.

    Context ``{passage}\nQuestion: {question}?\nAnswer:``; continuations " no", " yes" (the item's
    ``choices``, answer 1 = yes). Needs the passage in ``item.extra["passage"]``."""
    if "passage" not in item.extra:
        raise DataError("BoolQ item lacks extra field 'passage'", where=item.id)
    return ScoreRequest(
        id=item.id,
        context=f"{item.extra['passage']}\nQuestion: {item.question}?\nAnswer:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def social_iqa_request(item: MCItem) -> ScoreRequest:
    """lm-eval task ``social_iqa``, 0-shot; headline ``acc``.

    Context ``Q: {context} {question}\nA:``; continuations " " + answerA, answerB, answerC. Needs
    the situation in ``item.extra["context"]``."""
    if "context" not in item.extra:
        raise DataError("Social IQa item lacks extra field 'context'", where=item.id)
    return ScoreRequest(
        id=item.id,
        context=f"Q: {item.extra['context']} {item.question}\nA:",
        continuations=[TARGET_DELIMITER + c for c in item.choices],
    )


def winogrande_requests(item: MCItem) -> list[ScoreRequest]:
    """lm-eval task ``winogrande``, 0-shot, partial scoring; headline ``acc``.

    One request per option: the context is the sentence up to the "_" blank with the option put
    in its place, the single continuation " " + the rest of the sentence (stripped), the same for
    both options. The option whose context makes the rest likelier wins. Request ids are
    ``{item.id}#{k}``; with one shared continuation acc_norm equals acc."""
    if item.question.count("_") != 1:
        raise DataError("WinoGrande sentence needs exactly one '_' blank", where=item.id)
    idx = item.question.index("_")
    target = TARGET_DELIMITER + item.question[idx + 1 :].strip()
    return [
        ScoreRequest(id=f"{item.id}#{k}", context=item.question[:idx] + option, continuations=[target])
        for k, option in enumerate(item.choices)
    ]


def predict(result: ScoreResult, request: ScoreRequest, *, normalized: bool = False) -> int:
    """The chosen index as lm-eval computes it: argmax of the log-likelihoods (``acc``), or of
    log-likelihood per character of the choice text without the delimiter (``acc_norm``).
    Ties go to the first choice, like ``np.argmax``."""
    if len(result.logprobs) != len(request.continuations):
        raise ValueError(
            f"{request.id}: {len(result.logprobs)} scores for {len(request.continuations)} choices"
        )
    if not normalized:
        scores = list(result.logprobs)
    else:
        lengths = [len(c.removeprefix(TARGET_DELIMITER)) or 1 for c in request.continuations]
        scores = [lp / n for lp, n in zip(result.logprobs, lengths, strict=True)]
    return max(range(len(scores)), key=scores.__getitem__)


# A format returns one request per item, or (partial scoring) one request per choice.
FORMATS: dict[str, Callable[[Any], ScoreRequest | list[ScoreRequest]]] = {
    "mmlu": mmlu_request,
    "hellaswag": hellaswag_request,
    "arc_challenge": arc_request,
    "arc_easy": arc_request,
    "bbq": bbq_request,
    "piqa": piqa_request,
    "sciq": sciq_request,
    "openbookqa": openbookqa_request,
    "boolq": boolq_request,
    "social_iqa": social_iqa_request,
    "winogrande": winogrande_requests,
}

# The metric each task's published numbers usually quote.
HEADLINE_METRIC: dict[str, str] = {
    "mmlu": "acc",
    "hellaswag": "acc_norm",
    "arc_challenge": "acc_norm",
    "arc_easy": "acc",
    "bbq": "acc",
    "piqa": "acc_norm",
    "sciq": "acc_norm",
    "openbookqa": "acc_norm",
    "boolq": "acc",
    "social_iqa": "acc",
    "winogrande": "acc",
}

__all__ = [
    "FORMATS",
    "HEADLINE_METRIC",
    "TARGET_DELIMITER",
    "arc_request",
    "bbq_request",
    "boolq_request",
    "hellaswag_preprocess",
    "hellaswag_request",
    "mmlu_request",
    "openbookqa_request",
    "piqa_request",
    "predict",
    "sciq_request",
    "social_iqa_request",
    "winogrande_requests",
]
