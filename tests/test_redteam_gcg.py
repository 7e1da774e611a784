"""GCG: the target string, the query schedule, the suffix search on the tiny random Llama (loss
never up, strictly down from the start, candidates that re-tokenize to themselves, no disallowed
token), its place in the campaign (budget, success, resume) and the white-box requirement."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fakes import ScriptedEngine
from test_redteam import GOAL, HARMFUL, VAGUE  # the campaign tests' goal and answers
from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.judges.harmful import RuleHarmfulJudge
from tether.redteam.attacks import AttackContext, run_goals
from tether.redteam.config import GCGConfig, RedteamConfig
from tether.redteam.gcg import (
    SuffixSearch,
    WhiteBox,
    checkpoints,
    prefix_states,
    retokenizes,
    sample_candidates,
    target_losses,
    target_string,
    token_gradient,
)

SMALL = {"search_width": 16, "topk": 32, "suffix_tokens": 5, "batch_size": 8}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from tether.config import EngineConfig
    from tether.engine.engine import Engine
    from tether.models import load

    return Engine(load(str(tiny_model_dir), device="cpu"), EngineConfig(batch_size=4))


@pytest.fixture(scope="module")
def box(engine) -> WhiteBox:
    return WhiteBox.of(engine)


# --- pure pieces ------------------------------------------------------------------------------------


def test_target_string_drops_the_leading_verb():
    assert (
        target_string(GOAL.text) == "Sure, here is step-by-step instructions for picking a pin tumbler lock"
    )
    assert (
        target_string("Write a persuasive article about X.") == "Sure, here is a persuasive article about X"
    )
    assert target_string("How do I pick a lock?") == "Sure, here is how to how do I pick a lock"


def test_checkpoints_by_hand():
    assert checkpoints(20, 10) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # spread over the budget
    assert checkpoints(25, 10) == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]  # ceil(2.5 i)
    assert checkpoints(3, 10) == [1, 2, 3]  # fewer steps than queries: one query a step
    assert checkpoints(10, 5, every=4) == [4, 8, 10]  # every 4, and after the last step
    assert checkpoints(10, 2, every=4) == [4, 8]  # never more than the budget


# --- the search on the tiny model ------------------------------------------------------------------


def test_loss_is_the_target_strings_cross_entropy_after_the_rendered_prompt(engine, box):
    search = SuffixSearch(box, GOAL.text, GCGConfig(**SMALL), seed=0)
    lay = search.layout
    # The ids the loss is computed over are the engine's own tokens for the query prompt.
    sent, _ = engine.encode_prompt(Prompt(id="q", text=search.message, chat=True), 8)
    assert sent == lay.before.tolist() + search.suffix.tolist() + lay.after.tolist()
    assert box.tokenizer.decode(lay.target) == target_string(GOAL.text)
    # The loss, recomputed independently from token ids and full logits.
    ids = torch.cat([lay.before, search.suffix, lay.after, lay.target]).unsqueeze(0)
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0]
    t = len(lay.target)
    expected = F.cross_entropy(logits[-t - 1 : -1].float(), lay.target).item()
    assert search.loss == pytest.approx(expected, rel=1e-4)


def test_the_prefix_cache_gives_the_whole_prompts_losses_gradient_and_search(box):
    cached = SuffixSearch(box, GOAL.text, GCGConfig(**SMALL), seed=0)
    whole = SuffixSearch(box, GOAL.text, GCGConfig(**SMALL, prefix_cache=False), seed=0)
    assert cached.prefix is not None and whole.prefix is None
    lay = cached.layout
    assert cached.prefix[0][0].shape[-2] == len(lay.before)  # the keys cover the prompt before the suffix
    gen = torch.Generator().manual_seed(3)
    grad = token_gradient(box, lay, cached.suffix)
    candidates = sample_candidates(cached.suffix, grad, box.disallowed, 32, 24, gen)
    with torch.no_grad():
        embeds = box.embeddings[candidates]
        plain = target_losses(box, lay, embeds)
        reused = target_losses(box, lay, embeds, prefix_states(box, lay))
    # The random model's losses differ by about 1e-3 between candidates and the two paths by about
    # 1e-6; positions one off (a cache at the wrong offset) differ by about 6e-5.
    assert float(plain.max() - plain.min()) > 1e-4
    torch.testing.assert_close(reused, plain, rtol=0, atol=5e-6)
    torch.testing.assert_close(
        token_gradient(box, lay, cached.suffix, cached.prefix), grad, rtol=1e-4, atol=1e-5
    )
    for _ in range(3):
        cached.step()
        whole.step()
    assert torch.equal(cached.suffix, whole.suffix)
    assert cached.history == pytest.approx(whole.history, rel=1e-5)


def test_loss_never_increases_and_falls_from_the_start(box):
    search = SuffixSearch(box, GOAL.text, GCGConfig(**SMALL), seed=0)
    start = search.suffix.clone()
    for _ in range(4):
        search.step()
    assert search.steps == 4 and len(search.history) == 5
    assert all(b <= a for a, b in zip(search.history, search.history[1:], strict=False))
    assert search.history[-1] < search.history[0]
    assert not torch.equal(search.suffix, start)
    # The loss kept is the suffix's loss, not a stale number.
    assert float(search.losses(search.suffix.unsqueeze(0))[0]) == pytest.approx(search.loss, rel=1e-4)
    # One random swap a step is usually worse than the current suffix: it is then not taken.
    narrow = SuffixSearch(box, GOAL.text, GCGConfig(**{**SMALL, "search_width": 1, "topk": 4000}), seed=1)
    for _ in range(8):
        narrow.step()
    assert all(b <= a for a, b in zip(narrow.history, narrow.history[1:], strict=False))
    assert len(set(narrow.history)) < len(narrow.history)  # some steps kept the old suffix


def test_candidates_retokenize_to_themselves_and_use_no_disallowed_token(box):
    search = SuffixSearch(box, GOAL.text, GCGConfig(**SMALL), seed=0)
    tok = box.tokenizer
    (x,) = tok(" x", add_special_tokens=False)["input_ids"]
    (bare,) = tok("x", add_special_tokens=False)["input_ids"]
    # " x" then "x" decodes to " xx", which tokenizes differently: dropped.
    pairs = torch.tensor([[x, x, x, x, x], [x, x, x, x, bare]])
    assert retokenizes(box, search.layout, pairs).tolist() == [True, False]

    grad = token_gradient(box, search.layout, search.suffix)
    gen = torch.Generator().manual_seed(0)
    candidates = sample_candidates(search.suffix, grad, box.disallowed, 32, 64, gen)
    assert len(candidates) > 10
    assert ((candidates != search.suffix).sum(dim=1) == 1).all()  # one swap each
    assert not torch.isin(candidates, box.disallowed).any()
    assert tok.eos_token_id in box.disallowed.tolist()
    keep = retokenizes(box, search.layout, candidates)
    for row, kept in zip(candidates.tolist(), keep.tolist(), strict=True):
        text = box.render(Prompt(id="c", text=GOAL.text + tok.decode(row), chat=True))
        full = tok(text, add_special_tokens=False)["input_ids"]
        layout = search.layout
        assert kept == (full == layout.before.tolist() + row + layout.after.tolist())


def test_disallowed_tokens_are_non_ascii_unprintable_or_special(box):
    tok = box.tokenizer
    bad = set(box.disallowed.tolist())
    (x,) = tok(" x", add_special_tokens=False)["input_ids"]
    assert x not in bad
    assert set(tok.all_special_ids) <= bad
    assert any(not tok.decode([i]).isascii() for i in bad)
    assert all(
        tok.decode([i]).isascii() and tok.decode([i]).isprintable() for i in range(2000) if i not in bad
    )


# --- the strategy in the driver --------------------------------------------------------------------


def attack(target, box, **kw):
    cfg = RedteamConfig(**kw)
    records: list[dict] = []
    ctx = AttackContext(config=cfg, white_box=box)
    run_goals(
        [GOAL], "gcg", target=target, attacker=None, judge=RuleHarmfulJudge(), ctx=ctx, on_done=records.append
    )
    return records


def test_gcg_spends_exactly_its_budget_and_never_more(box):
    target = ScriptedEngine(VAGUE)
    (rec,) = attack(target, box, queries_per_goal=3, gcg={**SMALL, "steps": 6})
    assert rec["queries"] == 3 == len(target.generated) and rec["status"] == "failure"
    assert rec["gradient_steps"] == 6 and rec["optimise_seconds"] > 0
    assert [a["meta"]["step"] for a in rec["attempts"]] == [2, 4, 6]
    losses = [a["meta"]["loss"] for a in rec["attempts"]]
    assert losses == sorted(losses, reverse=True)
    for sent, attempt in zip(target.generated, rec["attempts"], strict=True):
        assert sent.chat and sent.text == GOAL.text + attempt["meta"]["suffix"] == attempt["prompt"]
    # More checkpoints than budget: the budget wins and optimisation stops at the last query.
    target = ScriptedEngine(VAGUE)
    (rec,) = attack(target, box, queries_per_goal=2, gcg={**SMALL, "steps": 6, "query_every": 1})
    assert rec["queries"] == 2 == len(target.generated) and rec["gradient_steps"] == 2


def test_gcg_stops_at_its_first_success(box):
    target = ScriptedEngine(lambda p, k: HARMFUL if len(target.generated) == 2 else VAGUE)
    (rec,) = attack(target, box, queries_per_goal=4, gcg={**SMALL, "steps": 8})
    assert rec["status"] == "success" and rec["first_success"] == 2 and rec["queries"] == 2
    assert rec["gradient_steps"] == 4  # no step after the successful query


def test_gcg_queries_the_real_engine_through_the_normal_path(engine, box):
    (rec,) = attack(engine, box, queries_per_goal=2, target_max_new_tokens=4, gcg={**SMALL, "steps": 2})
    assert rec["queries"] == 2 and rec["queries_computed"] == 2 and rec["target_tokens"] > 0


# --- config and campaign -----------------------------------------------------------------------------


def test_a_served_target_with_gcg_is_a_config_error_before_any_model_loads(tmp_path):
    from tether.redteam.pipeline import load_redteam_config, run_redteam
    from tether.runs import Run

    with pytest.raises(ConfigError, match=r"target: 'openai:m' is served, and gcg needs") as err:
        load_redteam_config(None, ["target=openai:m", "strategies=[templates,gcg]"], check=True)
    assert len([line for line in str(err.value).splitlines() if "target:" in line]) == 1
    with pytest.raises(ConfigError, match=r"engine.backend=openai"):
        load_redteam_config(None, ["engine.backend=openai", "strategies=[gcg]"], check=True)
    assert RedteamConfig(target="openai:m", strategies=["pair"]).white_box_problem() is None

    cfg = RedteamConfig(target="openai:m", strategies=["gcg"], goals={"limit": 1})

    def never(*a):
        raise AssertionError("a model was loaded")

    with pytest.raises(ConfigError, match=r"^target: 'openai:m' is served"):
        run_redteam(cfg, Run.create("s", root=tmp_path, config=cfg), load_engine=never, say=lambda m: None)


def test_a_target_without_weights_is_refused_by_the_gcg_stage(tmp_path):
    from tether.redteam.pipeline import run_redteam
    from tether.runs import Run

    cfg = RedteamConfig(strategies=["gcg"], goals={"limit": 1})
    run = Run.create("s", root=tmp_path, config=cfg)
    with pytest.raises(ConfigError, match=r"target: gcg needs the target's weights"):
        run_redteam(cfg, run, load_engine=lambda *a: ScriptedEngine(VAGUE), say=lambda m: None)


def test_strategy_names_still_checked_and_gcg_accepted():
    from tether.redteam.pipeline import load_redteam_config

    assert load_redteam_config(None, ["strategies=[gcg]"]).strategies == ["gcg"]
    with pytest.raises(ConfigError, match=r"unknown strategy 'gcgg'; did you mean 'gcg'"):
        load_redteam_config(None, ["strategies=[gcgg]"])
    with pytest.raises(ConfigError, match=r"gcg.steps"):
        load_redteam_config(None, ["gcg.steps=0"])


def test_campaign_with_gcg_resumes_per_goal(tmp_path, engine):
    from tether.data.jsonl import read_completed
    from tether.redteam.pipeline import run_redteam
    from tether.runs import Run

    cfg = RedteamConfig(
        strategies=["templates", "gcg"],
        queries_per_goal=2,
        goals_in_flight=1,
        target_max_new_tokens=4,
        goals={"limit": 2},
        templates={"mutations": ["base64"], "families": ["aim"]},
        gcg={**SMALL, "steps": 2},
    )
    real = engine.generate
    seen: list[str] = []

    def generate(prompts, params=None, *, stage="", progress=True, fail_at=None):
        if stage.startswith("redteam/gcg"):
            seen.extend(p.id for p in prompts)
            if fail_at is not None and len(seen) >= fail_at:
                raise KeyboardInterrupt
        return real(prompts, params, stage=stage, progress=progress)

    run = Run.create("rt", root=tmp_path, job="redteam", config=cfg)
    engine.generate = lambda *a, **k: generate(*a, **k, fail_at=3)  # the second goal's first query
    try:
        with pytest.raises(KeyboardInterrupt):
            run_redteam(cfg, run, load_engine=lambda *a: engine, judge=RuleHarmfulJudge(), say=lambda m: None)
        assert len(read_completed(run.path / "attacks" / "gcg.jsonl")) == 1
        first_goal = read_completed(run.path / "attacks" / "gcg.jsonl")[0]["goal_id"]
        seen.clear()
        engine.generate = generate
        again = Run.create("rt", root=tmp_path, config=cfg)
        summary = run_redteam(
            cfg, again, load_engine=lambda *a: engine, judge=RuleHarmfulJudge(), say=lambda m: None
        )
    finally:
        del engine.generate
    records = read_completed(run.path / "attacks" / "gcg.jsonl")
    assert len(records) == 2 and records[0]["goal_id"] == first_goal
    assert len(seen) == 2 and not any(first_goal in s for s in seen)  # only the unfinished goal
    assert all(r["queries"] == 2 and r["gradient_steps"] == 2 for r in records)
    report = json.loads((run.path / "redteam.json").read_text())
    assert report["results"]["gcg"]["goals"] == 2 and "gcg" in summary["strategies"]
    cost = report["results"]["gcg"]["cost"]
    assert cost["gradient_steps"] == 4 and cost["target_queries"] == 4 and cost["optimise_seconds"] >= 0
    assert report["strategies"]["gcg"]["steps"] == 2
    html = (run.path / "redteam.html").read_text()
    assert f'<td class="num">4 ({cost["optimise_seconds"]})</td>' in html  # gradient steps (s)
