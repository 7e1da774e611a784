"""PPO rule terms: the reward model's score plus weighted proxies, and the monitors' quality signal."""

from __future__ import annotations

import pytest

from tether.engine.types import Prompt
from tether.rlhf.labeler import AILabeler
from tether.rlhf.reward_terms import PPORewardConfig, RuleTermReward, monitor_signal, quality_fn
from tether.train.ppo.types import BatchScores, FunctionReward

DOC = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by Gustave Eiffel's "
    "company and built for the 1889 World's Fair. It is the most visited paid monument in the world."
)
PROMPTS = [Prompt(id="d1", text="Summarize.", document=DOC, question=None)] * 2
TEXTS = [
    "The Eiffel Tower is a wrought-iron tower in Paris built for the 1889 World's Fair.",
    "Bananas grow on tall plants in warm countries.",
]


class ConstantReward:
    def __init__(self):
        self.checked = None

    def score(self, prompts, responses):
        return BatchScores([0.5] * len(responses))

    def check_tokenizer(self, tokenizer):
        self.checked = tokenizer


def test_rule_terms_add_weighted_proxies_and_report_parts():
    labeler = AILabeler()
    reward = RuleTermReward(ConstantReward(), labeler, {"coverage": 2.0, "faithfulness": 1.0})
    batch = reward.score(PROMPTS, TEXTS)
    got = batch.scores
    scores = [labeler.score(DOC, t) for t in TEXTS]
    assert got == pytest.approx([0.5 + 2 * s.coverage + s.faithfulness for s in scores])
    # The on-topic summary covers and is supported by the document; the off-topic one is neither.
    assert got[0] > got[1] + 1.0
    assert batch.parts["reward_model"] == 0.5
    assert batch.parts["coverage"] == pytest.approx(sum(s.coverage for s in scores) / 2)


def test_no_terms_is_the_reward_model_alone_and_tokenizer_check_passes_through():
    base = ConstantReward()
    reward = RuleTermReward(base, AILabeler(), {})
    assert reward.score(PROMPTS, TEXTS) == BatchScores([0.5, 0.5])
    reward.check_tokenizer("tok")
    assert base.checked == "tok"


def test_rule_terms_over_a_reward():
    """The reward model as a Reward (score -> BatchScores, check_tokenizer), no call needed."""
    checked = []
    base = FunctionReward(lambda prompts, responses: [1] * len(responses), checked.append)
    reward = RuleTermReward(base, AILabeler(), {"conciseness": 1.0})
    batch = reward.score(PROMPTS, TEXTS)
    assert batch.parts["reward_model"] == 1.0 and set(batch.parts) == {"reward_model", "conciseness"}
    assert batch.scores == pytest.approx([1.0 + AILabeler().score(DOC, t).conciseness for t in TEXTS])
    reward.check_tokenizer("tok")
    assert checked == ["tok"]
    assert FunctionReward(lambda p, r: [0.0]).check_tokenizer("tok") is None  # nothing to check


def test_terms_need_the_document_on_the_prompt():
    reward = RuleTermReward(ConstantReward(), AILabeler(), {"coverage": 1.0})
    with pytest.raises(ValueError, match="carry no 'document'"):
        reward.score([Prompt(id="x", text="Summarize.")], ["text"])


@pytest.mark.parametrize(
    ("terms", "monitor", "expected"),
    [
        ({}, "auto", ["score"]),
        ({"coverage": 2.0}, "auto", ["faithfulness"]),
        ({"faithfulness": 1.0}, "auto", ["coverage"]),
        ({"conciseness": 1.0}, "auto", ["faithfulness", "coverage"]),
        ({"coverage": 1.0, "faithfulness": 1.0}, "auto", ["score"]),  # nothing left: warned
        ({"coverage": 2.0}, "score", ["score"]),
    ],
)
def test_monitor_signal_leaves_out_what_the_reward_optimises(terms, monitor, expected):
    assert monitor_signal(PPORewardConfig(terms=terms, monitor_quality=monitor)) == expected


def test_quality_fn_averages_the_signal_proxies():
    labeler = AILabeler()
    scores = [labeler.score(DOC, t) for t in TEXTS]
    both = quality_fn(labeler, ["faithfulness", "coverage"]).score(PROMPTS, TEXTS)
    assert both.scores == pytest.approx([(s.faithfulness + s.coverage) / 2 for s in scores])
    # Each part's batch mean, for validation to see one part fall while the mean holds.
    assert both.parts == pytest.approx(
        {
            "faithfulness": sum(s.faithfulness for s in scores) / len(scores),
            "coverage": sum(s.coverage for s in scores) / len(scores),
        }
    )
    single = quality_fn(labeler).score(PROMPTS, TEXTS)
    assert single.scores == pytest.approx([s.score for s in scores])
    assert single.parts == {}  # one proxy has no parts to trade


def test_unknown_proxy_is_a_config_error():
    with pytest.raises(ValueError, match="terms"):
        PPORewardConfig(terms={"length": 1.0})
