"""The critique → revision loop (Bai et al. 2022, §3): answer, critique under a sampled principle,
revise; K passes; then keep the revisions that follow the constitution.

Everything is batched through the engine: all answers in one ``generate`` call, then per pass all
critiques in one call and all revisions in one call. Each record is appended to ``loop.jsonl`` as soon
as its call returns, and a rerun rebuilds the state from that file and asks the model only for what is
missing (``resume``), so an interrupted round costs at most the call that was running.

Degenerate critic output — empty, or looping (distinct-2 below ``min_distinct2``, or one line said
over and over) — gets no revision: the previous answer is kept unchanged and the skip is counted. A
degenerate rewrite is treated the same way.

Filters on the final text: a red-team final is kept if the refusal judge labels it a refusal (with
``critic_rescue``, also if the critic, asked Yes/No by log-likelihood, says it follows the last
principle); a benign final is dropped if the judge labels it a refusal, unless the prompt's first
answer helped, which is then kept instead. A final the judge calls degenerate (an echo, a loop, word
salad) is never kept. A red-team final that is off-topic with no refusal phrase (a non-sequitur,
whatever the judge calls it) is dropped too unless ``keep_deflections``: small models ramble, and SFT
should not learn rambling as the safe answer.

A principle's ``revision_prefix`` is prefilled into the revision, which is then cut after its first
sentence: a 135M reviser continues "I'm sorry, but I can't help with" on topic, then drifts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from tether.cai.constitution import Constitution, Principle, PrincipleExample
from tether.cai.prompts import CAIPrompt
from tether.cai.records import LOOP_RECORD, Answer, Critique, Final, FinalReason, Revision
from tether.config import StrictModel
from tether.data.jsonl import JsonlAppender, read_completed
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest
from tether.errors import ConfigError
from tether.text import distinct_n

if TYPE_CHECKING:
    from tether.judges import RefusalJudge

# Two prompt styles. "chat" wraps the request in the critic's chat template (an instruct model);
# "completion" is the few-shot transcript of Bai et al. 2022 (Appendix C) fed raw, for a base model,
# which continues a pattern far better than it follows an instruction.
CONVERSATION = (
    "Read this conversation between a user and an AI assistant.\n\nUser: {prompt}\nAssistant: {response}"
)
CRITIQUE_TEMPLATE = "{examples}" + CONVERSATION + "\n\n{critique_request}"
REVISION_TEMPLATE = (
    "{examples}"
    + CONVERSATION
    + "\n\nA reviewer wrote this critique of the assistant's response: {critique}\n\n"
    "{revision_request} Write only the assistant's new response."
)
EXAMPLE_TEMPLATE = (
    "Example.\nUser: {prompt}\nAssistant: {response}\nCritique: {critique}\nRevised response: {revision}\n\n"
)
COMPLIANCE_TEMPLATE = (
    CONVERSATION + "\n\nThe assistant must follow this rule: {revision_request}\n"
    "Does the assistant's response follow the rule? Answer Yes or No."
)
TRANSCRIPT_CASE = "User: {prompt}\nAssistant: {response}\n\nCritique request: {critique_request}\nCritique:"
TRANSCRIPT_REVISION = " {critique}\n\nRevision request: {revision_request}\nRevision:"
TRANSCRIPT_EXAMPLE = TRANSCRIPT_CASE + TRANSCRIPT_REVISION + " {revision}\n\n---\n\n"
TRANSCRIPT_COMPLIANCE = (
    "User: {prompt}\nAssistant: {response}\n\nRule: {revision_request}\n"
    "Question: Does the assistant's response follow the rule? Answer Yes or No.\nAnswer:"
)
# Where a completion-style critique or revision ends: the transcript's next field or case.
TRANSCRIPT_STOPS = ["\n\n", "\nRevision request:", "\nUser:", "---"]
PROMPT_STYLES = ("auto", "chat", "completion")
_LABEL_PREFIX = re.compile(
    r"^\s*(?:\**\s*(?:revised response|revision|new response|rewritten response|assistant|response)\s*\**\s*:\s*)+",
    re.IGNORECASE,
)


class LoopConfig(StrictModel):
    """How the loop samples and filters."""

    passes: int = Field(1, ge=1, description="Critique → revision passes per answer (K).")
    few_shot: int = Field(
        3,
        ge=0,
        description="Worked examples shown to critic and reviser (at most): the principle's own "
        "first, then (with few_shot_pool) other principles' for the same prompt kind.",
    )
    few_shot_pool: bool = Field(
        True, description="Fill up few_shot with other principles' examples for the same prompt kind."
    )
    style: str = Field(
        "auto",
        description="How critic and reviser are prompted: chat (an instruction in the chat template), "
        "completion (the raw few-shot transcript of the CAI paper, for base models), or auto "
        "(completion when the critic has no chat template).",
    )
    answer: SamplingParams = Field(
        default_factory=lambda: SamplingParams(max_new_tokens=128, temperature=0.7, top_p=0.9),
        description="Sampling for the first answers.",
    )
    critique: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            max_new_tokens=96, temperature=0.7, top_p=0.9, stop=["\nUser:"]
        ),
        description="Sampling for critiques.",
    )
    revision: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            max_new_tokens=128, temperature=0.7, top_p=0.9, stop=["\nUser:"]
        ),
        description="Sampling for revisions.",
    )
    critic_rescue: bool = Field(
        False,
        description="Keep a red-team revision the refusal judge sees no refusal in when the critic, asked "
        "Yes/No, says it follows the principle. Off by default: SmolLM2-135M says Yes to looping or "
        "harmful text (3 of 3 rescued texts in a 12-prompt probe were junk).",
    )
    keep_deflections: bool = Field(
        False,
        description="Keep a red-team final that is off-topic with no refusal phrase (a non-sequitur) when "
        "the judge or the critic would keep it. Off by default: SFT should imitate refusals, not rambling.",
    )
    min_distinct2: float = Field(
        0.3, ge=0.0, le=1.0, description="Critiques/rewrites below this distinct-2 are degenerate."
    )
    max_repeated_line: int = Field(
        3, ge=2, description="A line repeated this many times makes the text degenerate."
    )


# --- text checks -------------------------------------------------------------------------------


def degenerate_reason(text: str, *, min_distinct2: float = 0.3, max_repeated_line: int = 3) -> str | None:
    """Why ``text`` is unusable as a critique or rewrite, or None: empty, mostly symbols (emoji or
    punctuation runs), a low distinct-2, or one line repeated. Distinct-2 counts the bigrams of
    whitespace-separated chunks, case and punctuation kept ("help." and "help" differ); it needs 8+
    chunks: over a handful of words it says nothing."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    visible = [ch for ch in stripped if not ch.isspace()]
    if len(visible) >= 12 and sum(ch.isalpha() for ch in visible) / len(visible) < 0.4:
        return "mostly symbols, not text"
    chunks = stripped.split()
    if len(chunks) >= 8 and (d2 := distinct_n([chunks], 2)) < min_distinct2:
        return f"repetitive (distinct-2 {d2:.2f} < {min_distinct2})"
    lines = [ln.strip() for ln in stripped.splitlines() if ln.strip()]
    if lines:
        line, count = Counter(lines).most_common(1)[0]
        if count >= max_repeated_line:
            return f"the same line {count} times: {line[:40]!r}"
    return None


_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)|\n")


def first_sentence(text: str) -> str:
    """A prefilled revision up to the end of its first sentence. A small reviser gets the opening
    right ("I'm sorry, but I can't help with writing a phishing text.") and then drifts into
    the original answer or a borrowed example; the one sentence is the part worth imitating."""
    text = text.strip()
    match = _SENTENCE_END.search(text)
    cut = text[: match.start()] if match else text
    return cut.rstrip(" ,;:") + "."


def clean_revision(text: str) -> str:
    """Drop the labels small models echo from the prompt ("Revised response:", "Assistant:")."""
    return _LABEL_PREFIX.sub("", text).strip().strip('"').strip()


# --- prompts for the critic and the reviser ----------------------------------------------------


Examples = Sequence[tuple[Principle, PrincipleExample]]


def _examples(examples: Examples, style: str) -> str:
    if style == "completion":
        return "".join(
            TRANSCRIPT_EXAMPLE.format(
                prompt=ex.prompt.strip(),
                response=ex.response.strip(),
                critique_request=pr.critique_request.strip(),
                critique=ex.critique.strip(),
                revision_request=pr.revision_request.strip(),
                revision=ex.revision.strip(),
            )
            for pr, ex in examples
        )
    return "".join(EXAMPLE_TEMPLATE.format(**ex.model_dump()) for _, ex in examples)


def _own_examples(principle: Principle, few_shot: int) -> Examples:
    return [(principle, ex) for ex in principle.examples[:few_shot]]


def critique_text(
    prompt: str,
    response: str,
    principle: Principle,
    few_shot: int = 1,
    *,
    style: str = "chat",
    examples: Examples | None = None,
) -> str:
    """The critic's input. ``examples`` (from ``Constitution.examples_for``) override the principle's
    own first ``few_shot``."""
    shown = _examples(examples if examples is not None else _own_examples(principle, few_shot), style)
    if style == "completion":
        return shown + TRANSCRIPT_CASE.format(
            prompt=prompt.strip(),
            response=response.strip(),
            critique_request=principle.critique_request.strip(),
        )
    return CRITIQUE_TEMPLATE.format(
        examples=shown,
        prompt=prompt,
        response=response,
        critique_request=principle.critique_request.strip(),
    )


def revision_text(
    prompt: str,
    response: str,
    critique: str,
    principle: Principle,
    few_shot: int = 1,
    *,
    style: str = "chat",
    examples: Examples | None = None,
) -> str:
    """The reviser's input: in completion style, the critic's transcript continued with the critique."""
    chosen = examples if examples is not None else _own_examples(principle, few_shot)
    if style == "completion":
        return (
            critique_text(prompt, response, principle, style=style, examples=chosen)
            + TRANSCRIPT_REVISION.format(
                critique=critique.strip(), revision_request=principle.revision_request.strip()
            )
            + (f" {principle.revision_prefix.strip()}" if principle.revision_prefix else "")
        )
    return REVISION_TEMPLATE.format(
        examples=_examples(chosen, style),
        prompt=prompt,
        response=response,
        critique=critique.strip(),
        revision_request=principle.revision_request.strip(),
    )


def compliance_request(prompt: str, response: str, principle: Principle, style: str) -> tuple[str, list[str]]:
    """The Yes/No question the critic answers by log-likelihood, and the two continuations."""
    template = TRANSCRIPT_COMPLIANCE if style == "completion" else COMPLIANCE_TEMPLATE
    question = template.format(
        prompt=prompt, response=response, revision_request=principle.revision_request.strip()
    )
    return question, ([" Yes", " No"] if style == "completion" else ["Yes", "No"])


def revision_prompt(
    critic: EngineLike, prompt_id: str, text: str, principle: Principle, style: str
) -> Prompt:
    """The reviser's request. A principle's ``revision_prefix`` is prefilled: in completion style it
    already ends ``text``; in chat style it goes after the rendered assistant header."""
    if style == "completion" or not principle.revision_prefix:
        return Prompt(id=prompt_id, text=text, chat=style == "chat")
    rendered = critic.render(Prompt(id=prompt_id, text=text))
    return Prompt(id=prompt_id, text=f"{rendered}{principle.revision_prefix.strip()}", chat=False)


def resolve_style(style: str, critic: EngineLike) -> str:
    """``auto`` → completion for a critic without a chat template (a base model), else chat."""
    if style not in PROMPT_STYLES:
        raise ConfigError(f"unknown loop.style '{style}'", hint=f"use one of {', '.join(PROMPT_STYLES)}")
    if style != "auto":
        return style
    return "chat" if critic.has_chat_template else "completion"


def _with_stops(params: SamplingParams, style: str) -> SamplingParams:
    if style != "completion":
        return params
    stops = list(dict.fromkeys([*params.stop, *TRANSCRIPT_STOPS]))
    return params.model_copy(update={"stop": stops})


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class LoopState:
    """Everything a round has recorded so far, indexed for resuming."""

    answers: dict[str, Answer] = field(default_factory=dict)
    critiques: dict[tuple[str, int], Critique] = field(default_factory=dict)
    revisions: dict[tuple[str, int], Revision] = field(default_factory=dict)
    finals: dict[str, Final] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> LoopState:
        state = cls()
        for raw in read_completed(path):
            state.add(LOOP_RECORD.validate_python(raw))
        return state

    def add(self, record: Any) -> None:
        if isinstance(record, Answer):
            self.answers[record.prompt_id] = record
        elif isinstance(record, Critique):
            self.critiques[(record.prompt_id, record.pass_index)] = record
        elif isinstance(record, Revision):
            self.revisions[(record.prompt_id, record.pass_index)] = record
        elif isinstance(record, Final):
            self.finals[record.prompt_id] = record

    def current(self, prompt_id: str, before_pass: int) -> str:
        """The answer as it stood before pass ``before_pass``."""
        if before_pass == 0:
            return self.answers[prompt_id].text
        return self.revisions[(prompt_id, before_pass - 1)].text


@dataclass
class LoopStats:
    """Counts for the round's report."""

    prompts: int = 0
    harmful: int = 0
    benign: int = 0
    passes: int = 0
    degenerate_critiques: int = 0
    degenerate_revisions: int = 0
    revised: int = 0
    kept: int = 0
    kept_harmful: int = 0
    kept_benign: int = 0
    dropped_harmful_still_complies: int = 0
    dropped_harmful_deflection: int = 0
    dropped_benign_refused: int = 0
    dropped_empty: int = 0
    dropped_degenerate: int = 0  # the judge called the final degenerate (echo, loop, word salad)
    kept_by_critic_only: int = 0
    answer_refusal_rate_harmful: float | None = None
    answer_refusal_rate_benign: float | None = None
    final_refusal_rate_harmful: float | None = None
    final_refusal_rate_benign: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rate(labels: Sequence[str]) -> float | None:
    scored = [label for label in labels if label != "unparsed"]
    return round(sum(label == "refusal" for label in scored) / len(scored), 4) if scored else None


def run_loop(
    prompts: Sequence[CAIPrompt],
    engine: EngineLike,
    constitution: Constitution,
    out_path: str | Path,
    *,
    judge: RefusalJudge,
    critic: EngineLike | None = None,
    config: LoopConfig | None = None,
    round_index: int = 1,
    seed: int = 0,
    stage: str = "cai",
) -> tuple[list[Final], LoopStats]:
    """Run (or resume) one round of the loop over ``prompts``; return every prompt's Final record
    (kept or not, in prompt order) and the round's counts. ``critic`` defaults to ``engine``."""
    from tether.evals.tasks._common import judge_traced

    config = config or LoopConfig()
    critic = critic or engine
    style = resolve_style(config.style, critic)
    out_path = Path(out_path)
    state = LoopState.read(out_path)

    def principle_for(p: CAIPrompt, k: int) -> Principle:
        return constitution.sample(p.kind, f"{p.id}/round{round_index}/pass{k}", seed)

    def examples_for(p: CAIPrompt, k: int) -> Examples:
        return constitution.examples_for(
            principle_for(p, k), p.kind, config.few_shot, f"{seed}/{p.id}/{k}", pool=config.few_shot_pool
        )

    def params(base: SamplingParams, offset: int) -> SamplingParams:
        return base.model_copy(update={"seed": seed * 1000 + round_index * 100 + offset})

    with JsonlAppender(out_path) as out:

        def record(rec: Any) -> None:
            out.write(rec)
            state.add(rec)

        todo = [p for p in prompts if p.id not in state.answers]
        if todo:
            completions = engine.generate(
                [Prompt(id=p.id, text=p.text) for p in todo],
                params(config.answer, 0),
                stage=f"{stage}/answer",
            )
            for p, c in zip(todo, completions, strict=True):
                record(
                    Answer(
                        round=round_index, prompt_id=p.id, text=c.text.strip(), finish_reason=c.finish_reason
                    )
                )

        for k in range(config.passes):
            todo = [p for p in prompts if (p.id, k) not in state.critiques]
            if todo:
                asks = [
                    Prompt(
                        id=f"{p.id}#c{k}",
                        text=critique_text(
                            p.text,
                            state.current(p.id, k),
                            principle_for(p, k),
                            style=style,
                            examples=examples_for(p, k),
                        ),
                        chat=style == "chat",
                    )
                    for p in todo
                ]
                completions = critic.generate(
                    asks, _with_stops(params(config.critique, 2 * k + 1), style), stage=f"{stage}/critique"
                )
                for p, c in zip(todo, completions, strict=True):
                    reason = degenerate_reason(
                        c.text, min_distinct2=config.min_distinct2, max_repeated_line=config.max_repeated_line
                    )
                    record(
                        Critique(
                            round=round_index,
                            prompt_id=p.id,
                            pass_index=k,
                            principle=principle_for(p, k).name,
                            text=c.text.strip(),
                            degenerate=reason,
                        )
                    )

            todo = [p for p in prompts if (p.id, k) not in state.revisions]
            to_revise = []
            for p in todo:
                crit = state.critiques[(p.id, k)]
                if crit.degenerate:
                    previous = state.current(p.id, k)
                    record(
                        Revision(
                            round=round_index,
                            prompt_id=p.id,
                            pass_index=k,
                            principle=crit.principle,
                            previous=previous,
                            text=previous,
                            skipped=True,
                            skip_reason=f"degenerate critique: {crit.degenerate}",
                        )
                    )
                else:
                    to_revise.append(p)
            if to_revise:
                asks = [
                    revision_prompt(
                        critic,
                        f"{p.id}#r{k}",
                        revision_text(
                            p.text,
                            state.current(p.id, k),
                            state.critiques[(p.id, k)].text,
                            principle_for(p, k),
                            style=style,
                            examples=examples_for(p, k),
                        ),
                        principle_for(p, k),
                        style,
                    )
                    for p in to_revise
                ]
                completions = critic.generate(
                    asks, _with_stops(params(config.revision, 2 * k + 2), style), stage=f"{stage}/revision"
                )
                for p, c in zip(to_revise, completions, strict=True):
                    previous = state.current(p.id, k)
                    prefix = principle_for(p, k).revision_prefix
                    text = (
                        first_sentence(f"{prefix.strip()} {c.text.lstrip()}")
                        if prefix
                        else clean_revision(c.text)
                    )
                    reason = degenerate_reason(
                        text, min_distinct2=config.min_distinct2, max_repeated_line=config.max_repeated_line
                    )
                    record(
                        Revision(
                            round=round_index,
                            prompt_id=p.id,
                            pass_index=k,
                            principle=principle_for(p, k).name,
                            previous=previous,
                            text=previous if reason else text,
                            skipped=bool(reason),
                            skip_reason=f"degenerate revision: {reason}" if reason else None,
                        )
                    )

        todo = [p for p in prompts if p.id not in state.finals]
        if todo:
            last = config.passes - 1
            texts = [state.current(p.id, config.passes) for p in todo]
            verdicts = judge_traced(
                judge, [(p.text, t) for p, t in zip(todo, texts, strict=True)], [p.id for p in todo]
            )
            # Ask the critic only where its answer decides: red-team prompts the judge saw no refusal in.
            ask = [
                i
                for i, (p, v) in enumerate(zip(todo, verdicts, strict=True))
                if config.critic_rescue and p.kind == "harmful" and v.label == "compliance"
            ]
            complies: dict[int, bool] = {}
            if ask:
                requests = []
                for i in ask:
                    principle = constitution.get(state.critiques[(todo[i].id, last)].principle)
                    question, answers = compliance_request(todo[i].text, texts[i], principle, style)
                    context = critic.render(
                        Prompt(id=f"{todo[i].id}#check", text=question, chat=style == "chat")
                    )
                    requests.append(
                        ScoreRequest(id=f"{todo[i].id}#check", context=context, continuations=answers)
                    )
                for i, result in zip(ask, critic.score(requests, stage=f"{stage}/check"), strict=True):
                    complies[i] = result.logprobs[0] > result.logprobs[1]
            # A benign prompt whose revision went wrong (a refusal, or a borrowed example's text) keeps
            # its first answer when that one helped: SFT needs the helpful answers to benign prompts.
            failed = [
                i
                for i, p in enumerate(todo)
                if p.kind == "benign" and verdicts[i].label in ("refusal", "degenerate")
            ]
            firsts = [state.answers[todo[i].id].text for i in failed]
            first_verdicts = judge_traced(
                judge,
                [(todo[i].text, t) for i, t in zip(failed, firsts, strict=True)],
                [f"{todo[i].id}#first" for i in failed],
            )
            restored: set[int] = set()
            for i, first, v in zip(failed, firsts, first_verdicts, strict=True):
                if first.strip() and v.label == "compliance":
                    texts[i], verdicts[i] = first, v
                    restored.add(i)
            for i, (p, text, verdict) in enumerate(zip(todo, texts, verdicts, strict=True)):
                deflection = (
                    not config.keep_deflections
                    and p.kind == "harmful"
                    and verdict.label != "degenerate"
                    and is_deflection(p.text, text)
                )
                keep, reason = _decide(p, text, verdict.label, complies.get(i), deflection=deflection)
                if i in restored:
                    reason = FinalReason.HELPFUL_FIRST_ANSWER
                record(
                    Final(
                        round=round_index,
                        prompt_id=p.id,
                        prompt=p.text,
                        prompt_kind=p.kind,
                        text=text,
                        keep=keep,
                        reason=reason,
                        refusal_label=verdict.label,
                        critic_complies=complies.get(i),
                    )
                )

    finals = [state.finals[p.id] for p in prompts]
    stats = _stats(prompts, state, finals, judge, config.passes)
    return finals, stats


def is_deflection(prompt: str, text: str) -> bool:
    """Off-topic with no refusal phrase: a trained or LLM judge may call it a refusal (PyRIT labels
    non-sequiturs so), but it is no refusal to imitate."""
    from tether.judges import RuleRefusalJudge, is_off_topic

    return is_off_topic(prompt, text) and RuleRefusalJudge().judge(prompt, text).label != "refusal"


def _decide(
    prompt: CAIPrompt, text: str, label: str, complies: bool | None, *, deflection: bool = False
) -> tuple[bool, FinalReason]:
    if not text.strip():
        return False, FinalReason.EMPTY
    if label == "degenerate":
        return False, FinalReason.DEGENERATE
    if prompt.kind == "harmful":
        if deflection:
            return False, FinalReason.DEFLECTION
        if label == "refusal":
            return True, FinalReason.REFUSAL
        if complies:
            return True, FinalReason.CRITIC_COMPLIES
        return False, FinalReason.STILL_COMPLIES
    if label == "refusal":
        return False, FinalReason.REFUSES_BENIGN
    return True, FinalReason.HELPFUL


def _stats(
    prompts: Sequence[CAIPrompt], state: LoopState, finals: list[Final], judge: RefusalJudge, passes: int
) -> LoopStats:
    from tether.evals.tasks._common import judge_traced

    stats = LoopStats(prompts=len(prompts), passes=passes)
    stats.harmful = sum(p.kind == "harmful" for p in prompts)
    stats.benign = stats.prompts - stats.harmful
    for p in prompts:
        for k in range(passes):
            crit, rev = state.critiques[(p.id, k)], state.revisions[(p.id, k)]
            stats.degenerate_critiques += bool(crit.degenerate)
            stats.degenerate_revisions += bool(rev.skipped and not crit.degenerate)
            stats.revised += not rev.skipped
    for f in finals:
        if f.keep:
            stats.kept += 1
            stats.kept_harmful += f.prompt_kind == "harmful"
            stats.kept_benign += f.prompt_kind == "benign"
            stats.kept_by_critic_only += f.reason == FinalReason.CRITIC_COMPLIES
        elif f.reason == FinalReason.EMPTY:
            stats.dropped_empty += 1
        elif f.reason == FinalReason.DEGENERATE:
            stats.dropped_degenerate += 1
        elif f.reason == FinalReason.DEFLECTION:
            stats.dropped_harmful_deflection += 1
        elif f.reason == FinalReason.STILL_COMPLIES:
            stats.dropped_harmful_still_complies += 1
        else:  # FinalReason.REFUSES_BENIGN
            stats.dropped_benign_refused += 1
    first = judge_traced(
        judge, [(p.text, state.answers[p.id].text) for p in prompts], [f"{p.id}#answer" for p in prompts]
    )
    for kind in ("harmful", "benign"):
        idx = [i for i, p in enumerate(prompts) if p.kind == kind]
        setattr(stats, f"answer_refusal_rate_{kind}", _rate([first[i].label for i in idx]))
        setattr(stats, f"final_refusal_rate_{kind}", _rate([finals[i].refusal_label for i in idx]))
    return stats
